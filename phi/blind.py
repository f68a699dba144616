"""Blind indexes: exact-match lookups on encrypted values.

``blind_index(tenant, kind, value)`` is HMAC-SHA256 under the tenant's index key (separate
from its data keys) over a normalised value. Store it in a sibling column and filter on that.

What a blind index leaks, by design: whether two rows of the same tenant hold the same
normalised value (equal phones, equal MRNs), and so value frequencies within a tenant. It
does not leak the value itself without the tenant's index key, nothing across tenants (each
tenant has its own key), and nothing about order or prefixes. Index keys are not rotated
with data keys: rotating one means recomputing every index from the plaintext.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from collections.abc import Callable

from phi import keys
from phi.models import KeyPurpose

_INDEX_KEY_VERSION = 1


def _text(value: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", str(value)).casefold().split())


def _phone(value: str) -> str:
    digits = re.sub(r"\D", "", str(value))
    if not digits:
        raise ValueError("phone has no digits")
    return "+" + digits  # callers pass E.164 (phonenumbers formats it before this)


def _exact(value: str) -> str:
    return unicodedata.normalize("NFKC", str(value)).strip()  # identifiers: case matters


def _mrn(value: str) -> str:
    return re.sub(r"[\s-]", "", unicodedata.normalize("NFKC", str(value))).upper()


def _name_dob(value) -> str:
    last_name, birth_date = value
    return f"{_text(last_name)}|{birth_date.isoformat()}"


NORMALISERS: dict[str, Callable] = {
    "phone": _phone,
    "mrn": _mrn,
    "email": _text,
    "name_dob": _name_dob,
    "text": _text,
    "exact": _exact,
}


def normalise(kind: str, value) -> str:
    try:
        return NORMALISERS[kind](value)
    except KeyError:
        raise ValueError(f"unknown blind-index kind {kind!r}") from None


def blind_index(tenant, kind: str, value) -> str:
    """64 hex characters. Must be called inside ``tenant_scope(tenant)``."""
    keys.active_version(tenant.pk, KeyPurpose.INDEX)  # creates version 1 on first use
    index_key = keys.key(tenant.pk, KeyPurpose.INDEX, _INDEX_KEY_VERSION)
    message = f"{kind}\x1f{normalise(kind, value)}".encode()
    return hmac.new(index_key, message, hashlib.sha256).hexdigest()
