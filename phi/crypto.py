"""The only module that imports ``cryptography``: AES-256-GCM and key generation."""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from phi.errors import DecryptionError

# 96-bit random nonces. NIST SP 800-38D caps random nonces at 2**32 encryptions per key; a
# clinic writes millions, not billions, of values per data-key version, and rotation resets it.
NONCE_BYTES = 12
KEY_BYTES = 32


def new_key() -> bytes:
    return os.urandom(KEY_BYTES)


def cipher(key: bytes) -> AESGCM:
    """A reusable AES-GCM context (building one costs more than a short decryption)."""
    return AESGCM(key)


def aead_encrypt(key: bytes | AESGCM, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    aead = key if isinstance(key, AESGCM) else AESGCM(key)
    return nonce + aead.encrypt(nonce, plaintext, aad)


def aead_decrypt(key: bytes | AESGCM, blob: bytes, aad: bytes) -> bytes:
    if len(blob) < NONCE_BYTES + 16:
        raise DecryptionError("ciphertext too short")
    aead = key if isinstance(key, AESGCM) else AESGCM(key)
    try:
        return aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
    except InvalidTag:
        raise DecryptionError("authentication failed") from None
