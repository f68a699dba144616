"""Find a secure link or a patient session before the tenant is known.

The only place messaging reads across tenants, and only one row at a time by a SHA-256 hash
of a 256-bit secret: the ORM scope is lifted (``unscoped``, allow-listed) and the database
shows the row through the RLS read policy on its hash column (``hash_lookup``). The caller
then opens the row's tenant scope for everything else.
"""

from __future__ import annotations

import hashlib
import re

from accounts.tenancy import hash_lookup, unscoped
from messaging.models import PatientSession, SecureLink

TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{43}")


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def link_for_token(token: str) -> SecureLink | None:
    """The link whose token is ``token`` (any state), with its tenant; None if unknown."""
    if not isinstance(token, str) or not TOKEN_RE.fullmatch(token):
        return None
    digest = secret_hash(token)
    with hash_lookup("app.link_hash", digest), unscoped():
        return SecureLink.objects.select_related("tenant").filter(token_hash=digest).first()


def session_for_key(key: str) -> PatientSession | None:
    """The patient session whose cookie value is ``key`` (any state), with its tenant."""
    if not isinstance(key, str) or not TOKEN_RE.fullmatch(key):
        return None
    digest = secret_hash(key)
    with hash_lookup("app.session_hash", digest), unscoped():
        return PatientSession.objects.select_related("tenant").filter(key_hash=digest).first()
