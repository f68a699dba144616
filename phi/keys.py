"""Per-tenant data keys: create, unwrap (cached briefly), rotate, re-wrap and destroy.

A tenant's keys are loaded only inside that tenant's scope (``tenant_scope``), so a row that
somehow escaped the other locks still cannot be decrypted in the wrong tenant. Unwrapped keys
live in process memory for ``PHI_KEY_CACHE_SECONDS`` at most; a list of 100 rows costs one
KEK unwrap, not 100.
"""

from __future__ import annotations

import threading
import time

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.tenancy import current_tenant
from phi.crypto import cipher, new_key
from phi.errors import KeyUnavailable
from phi.kek import kek_provider
from phi.models import DataKey, KeyPurpose, KeyState

PLATFORM = None  # tenant_id of platform keys

_lock = threading.Lock()
_keys: dict[tuple, tuple[bytes, float]] = {}  # (tenant_id, purpose, version) -> (key, expires)
_ciphers: dict[tuple, tuple[object, float]] = {}  # same key -> (AES-GCM context, expires)
_active: dict[tuple, tuple[int, float]] = {}  # (tenant_id, purpose) -> (version, expires)


def clear_cache() -> None:
    with _lock:
        _keys.clear()
        _ciphers.clear()
        _active.clear()


def _ttl() -> float:
    return time.monotonic() + settings.PHI_KEY_CACHE_SECONDS


def _wrap_aad(tenant_id, purpose: str, version: int) -> bytes:
    return f"caretext-datakey:v1|{tenant_id if tenant_id is not None else 'platform'}|{purpose}|{version}".encode()


def _check_scope(tenant_id) -> None:
    if tenant_id is PLATFORM:
        return
    tenant = current_tenant()
    if tenant is None or tenant.pk != tenant_id:
        raise KeyUnavailable(f"keys of tenant {tenant_id} are only usable inside its scope")


def _all_rows(tenant_id):
    if tenant_id is PLATFORM:
        return DataKey.objects.filter(tenant__isnull=True)
    return DataKey.objects.filter(tenant_id=tenant_id)


def _rows(tenant_id, purpose: str):
    return _all_rows(tenant_id).filter(purpose=purpose)


def _create(tenant_id, purpose: str, version: int) -> DataKey:
    kek_version, wrapped = kek_provider().wrap(new_key(), aad=_wrap_aad(tenant_id, purpose, version))
    try:
        with transaction.atomic():  # a savepoint: a concurrent creator wins, we re-read
            return DataKey.objects.create(tenant_id=tenant_id, purpose=purpose, version=version,
                                          kek_version=kek_version, wrapped=wrapped)
    except IntegrityError:
        return _rows(tenant_id, purpose).get(version=version)


def ensure_keys(tenant_id) -> None:
    """Create version 1 of the data and index keys if the tenant (or platform) has none."""
    for purpose in KeyPurpose.values:
        if not _rows(tenant_id, purpose).exists():
            _create(tenant_id, purpose, 1)


def active_version(tenant_id, purpose: str = KeyPurpose.DATA) -> int:
    _check_scope(tenant_id)
    cached = _active.get((tenant_id, purpose))
    if cached and cached[1] > time.monotonic():
        return cached[0]
    row = _rows(tenant_id, purpose).filter(state=KeyState.ACTIVE).order_by("-version").first()
    if row is None:
        if _rows(tenant_id, purpose).filter(state=KeyState.DESTROYED).exists():
            raise KeyUnavailable(f"keys of tenant {tenant_id} were destroyed")
        row = _create(tenant_id, purpose, 1)
    with _lock:
        _active[(tenant_id, purpose)] = (row.version, _ttl())
    return row.version


def key(tenant_id, purpose: str, version: int) -> bytes:
    """The unwrapped key; raises KeyUnavailable when missing, destroyed or out of scope."""
    _check_scope(tenant_id)
    cached = _keys.get((tenant_id, purpose, version))
    if cached and cached[1] > time.monotonic():
        return cached[0]
    row = _rows(tenant_id, purpose).filter(version=version).first()
    if row is None:
        raise KeyUnavailable(f"{purpose} key version {version} of tenant {tenant_id} does not exist")
    if row.state == KeyState.DESTROYED:
        raise KeyUnavailable(f"{purpose} key version {version} of tenant {tenant_id} was destroyed")
    plain = kek_provider().unwrap(row.kek_version, bytes(row.wrapped), aad=_wrap_aad(tenant_id, purpose, version))
    with _lock:
        _keys[(tenant_id, purpose, version)] = (plain, _ttl())
    return plain


def data_cipher(tenant_id, version: int):
    """The AES-GCM context of a data key version, cached with the key."""
    _check_scope(tenant_id)
    cached = _ciphers.get((tenant_id, version))
    if cached and cached[1] > time.monotonic():
        return cached[0]
    aead = cipher(key(tenant_id, KeyPurpose.DATA, version))
    with _lock:
        _ciphers[(tenant_id, version)] = (aead, _ttl())
    return aead


def active_cipher(tenant_id) -> tuple[int, object]:
    version = active_version(tenant_id, KeyPurpose.DATA)
    return version, data_cipher(tenant_id, version)


@transaction.atomic
def add_version(tenant_id, purpose: str = KeyPurpose.DATA) -> int:
    """Start a rotation: a new active version; older active versions become retired once
    no row uses them (see ``phi.rotation``)."""
    _check_scope(tenant_id)
    latest = _rows(tenant_id, purpose).select_for_update().order_by("-version").first()
    if latest is not None and latest.state == KeyState.DESTROYED:
        raise KeyUnavailable(f"keys of tenant {tenant_id} were destroyed")
    version = (latest.version if latest else 0) + 1
    _create(tenant_id, purpose, version)
    with _lock:
        _active.pop((tenant_id, purpose), None)
    return version


def retire(tenant_id, purpose: str, versions: list[int]) -> int:
    _check_scope(tenant_id)
    count = _rows(tenant_id, purpose).filter(version__in=versions, state=KeyState.ACTIVE).update(
        state=KeyState.RETIRED, retired_at=timezone.now())
    clear_cache()
    return count


def rewrap_all(tenant_id) -> int:
    """Re-wrap every live key of the tenant under the KEK's current version. Resumable."""
    _check_scope(tenant_id)
    provider = kek_provider()
    current = provider.current_version()
    done = 0
    for row in _all_rows(tenant_id).exclude(state=KeyState.DESTROYED).exclude(kek_version=current):
        aad = _wrap_aad(tenant_id, row.purpose, row.version)
        plain = provider.unwrap(row.kek_version, bytes(row.wrapped), aad=aad)
        kek_version, wrapped = provider.wrap(plain, aad=aad)
        DataKey.objects.filter(pk=row.pk, kek_version=row.kek_version).update(kek_version=kek_version, wrapped=wrapped)
        done += 1
    return done


def destroy_all(tenant_id) -> int:
    """Crypto-shred: overwrite every wrapped key of the tenant. Irreversible."""
    _check_scope(tenant_id)
    rows = _all_rows(tenant_id).exclude(state=KeyState.DESTROYED)
    count = rows.update(state=KeyState.DESTROYED, wrapped=b"", destroyed_at=timezone.now())
    clear_cache()
    return count


def versions_in_use_summary(tenant_id, purpose: str = KeyPurpose.DATA) -> list[tuple[int, str]]:
    _check_scope(tenant_id)
    return list(_rows(tenant_id, purpose).order_by("version").values_list("version", "state"))
