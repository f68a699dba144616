"""The ciphertext format of one encrypted value, and sealing/opening it.

    0x01 | key version (4 bytes, big-endian) | nonce (12) | AES-256-GCM ciphertext + tag (16)

The associated data binds the value to (tenant, table, column, row id): a ciphertext copied
to another row, column or tenant fails authentication instead of decrypting there.
"""

from __future__ import annotations

import functools
import struct
import uuid

from phi import keys
from phi.crypto import aead_decrypt, aead_encrypt
from phi.errors import DecryptionError, KeyUnavailable

FORMAT_V1 = 1
_HEADER = struct.Struct(">BI")


@functools.lru_cache(maxsize=4096)
def _aad_prefix(tenant_id, table: str, column: str) -> bytes:
    owner = tenant_id if tenant_id is not None else "platform"
    return f"caretext-field:v1|{owner}|{table}|{column}|".encode()


def _aad_row(row_id) -> bytes:
    return (row_id.hex if isinstance(row_id, uuid.UUID) else str(row_id)).encode()


def _aad(tenant_id, table: str, column: str, row_id) -> bytes:
    return _aad_prefix(tenant_id, table, column) + _aad_row(row_id)


def blob_key_version(blob: bytes) -> int:
    if len(blob) < _HEADER.size or blob[0] != FORMAT_V1:
        raise DecryptionError("unknown ciphertext format")
    return _HEADER.unpack_from(blob)[1]


def seal(*, tenant_id, table: str, column: str, row_id, plaintext: bytes) -> bytes:
    version, aead = keys.active_cipher(tenant_id)
    return _HEADER.pack(FORMAT_V1, version) + aead_encrypt(aead, plaintext, _aad(tenant_id, table, column, row_id))


def open_sealed(*, tenant_id, table: str, column: str, row_id, blob: bytes) -> bytes:
    """Decrypt, or raise naming the row and column (never the value)."""
    return open_sealed_many(tenant_id=tenant_id, table=table, column=column, items=((row_id, blob),))[0]


def open_sealed_many(*, tenant_id, table: str, column: str, items) -> list[bytes]:
    """``open_sealed`` for many values of one tenant's column, ``items`` being ``(row_id, blob)``
    pairs: each key version is looked up (and the tenant's scope checked) once, not per value.
    Raises at the first value that does not open, naming its row and column (never the value)."""
    prefix = _aad_prefix(tenant_id, table, column)
    ciphers: dict[int, object] = {}
    out = []
    for row_id, blob in items:
        try:
            version = blob_key_version(blob)
            aead = ciphers.get(version)
            if aead is None:
                aead = ciphers[version] = keys.data_cipher(tenant_id, version)
            out.append(aead_decrypt(aead, blob[_HEADER.size:], prefix + _aad_row(row_id)))
        except DecryptionError as exc:
            raise DecryptionError(f"cannot decrypt {table}.{column} of row {row_id}: {exc} (wrong key, tampered, "
                                  f"or copied from another row or tenant)") from None
        except KeyUnavailable as exc:
            raise KeyUnavailable(f"cannot decrypt {table}.{column} of row {row_id}: {exc}") from None
    return out
