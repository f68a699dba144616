"""Key-encryption keys (KEK): where tenant data keys are wrapped and unwrapped.

``EnvKekProvider`` reads ``KEK`` (or ``KEK_FILE``): comma-separated ``version:base64key``
entries, each key 32 bytes; the highest version wraps new data keys, older versions still
unwrap until ``rotate_keys --kek`` re-wraps everything. A cloud KMS or Vault transit plugs in
as another provider (``PHI_KEK_PROVIDER``) without touching models: it only needs ``wrap`` and
``unwrap``. No Django imports here at module level: settings validate ``KEK`` with it.
"""

from __future__ import annotations

import base64
import binascii
from typing import Protocol


class KekFormatError(ValueError):
    pass


def parse_kek(value: str) -> dict[int, bytes]:
    """``"1:base64,2:base64"`` → {1: key, 2: key}. Errors never include key material."""
    versions: dict[int, bytes] = {}
    for position, entry in enumerate(filter(None, (e.strip() for e in value.split(","))), start=1):
        version, sep, encoded = entry.partition(":")
        if not sep or not version.isdigit() or int(version) < 1:
            raise KekFormatError(f"KEK entry {position} must look like '<version>:<base64 key>'")
        try:
            key = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise KekFormatError(f"KEK version {version} is not valid base64") from None
        if len(key) != 32:
            raise KekFormatError(f"KEK version {version} must decode to 32 bytes, not {len(key)}")
        if int(version) in versions:
            raise KekFormatError(f"KEK version {version} appears twice")
        versions[int(version)] = key
    if not versions:
        raise KekFormatError("KEK has no keys")
    return versions


class KekProvider(Protocol):
    def current_version(self) -> int: ...

    def wrap(self, key: bytes, *, aad: bytes) -> tuple[int, bytes]: ...

    def unwrap(self, version: int, wrapped: bytes, *, aad: bytes) -> bytes: ...


class EnvKekProvider:
    """KEK versions from settings.KEK; wrapping is AES-256-GCM with the key's identity as AAD."""

    def __init__(self, value: str | None = None):
        from django.conf import settings

        self._keys = parse_kek(value if value is not None else settings.KEK)

    def current_version(self) -> int:
        return max(self._keys)

    def wrap(self, key: bytes, *, aad: bytes) -> tuple[int, bytes]:
        from phi.crypto import aead_encrypt

        version = self.current_version()
        return version, aead_encrypt(self._keys[version], key, aad)

    def unwrap(self, version: int, wrapped: bytes, *, aad: bytes) -> bytes:
        from phi.crypto import aead_decrypt
        from phi.errors import DecryptionError, KekError

        if version not in self._keys:
            raise KekError(f"KEK version {version} is not configured")
        try:
            return aead_decrypt(self._keys[version], wrapped, aad)
        except DecryptionError:
            raise KekError(f"KEK version {version} cannot unwrap this key (wrong KEK?)") from None


_provider: KekProvider | None = None


def kek_provider() -> KekProvider:
    global _provider
    if _provider is None:
        from django.conf import settings
        from django.utils.module_loading import import_string

        _provider = import_string(settings.PHI_KEK_PROVIDER)()
    return _provider


def reset_kek_provider() -> None:
    """Forget the provider (tests that change KEK; a SIGHUP-style reload)."""
    global _provider
    _provider = None
