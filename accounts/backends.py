"""Per-request reads of the staff sign-in: the session row, and the signed-in user with the
OTP device that verified them.

Every staff request reads the session, the user and (django-otp) the verifying device. Django
does that with three ORM queries whose compilation cost more than the queries; here the session
is one written-out statement and the user and device are one statement together. What is
decided is unchanged: the same rows, Django's own session-hash check (a password change or
"sign out everywhere" still ends the session), ``ModelBackend``'s inactive-user rule and
django-otp's device-user binding and confirmation check (``_finalize_device``).

- The session row: ``accounts.sessions.SessionStore`` (``SESSION_ENGINE``), the read written out.
- ``OTPMiddleware`` (in settings.MIDDLEWARE in django-otp's place): django-otp's middleware,
  with the user and the verifying device read by ``signed_in_user_with_device`` in one query.

Both use the ORM paths they replace on anything but PostgreSQL (the SQLite demo) and for any
case they don't cover (another auth backend, a backup-code device).
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.auth.models import AnonymousUser
from django.db import DEFAULT_DB_ALIAS, connections
from django.utils.crypto import constant_time_compare
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.middleware import OTPMiddleware as DjangoOTPMiddleware

from accounts.models import TotpDevice, User
from accounts.selectors import RowLoader

MODEL_BACKEND = "django.contrib.auth.backends.ModelBackend"  # the path sessions store (never change it)


_USER_ROWS = RowLoader(User)
_DEVICE_ROWS = RowLoader(TotpDevice)
_DEVICE_LABEL = TotpDevice.model_label()  # "accounts.totpdevice": what its persistent ids start with
# Names from the models' _meta only; ids are bound parameters. The device joins only when it is
# the user's own (django-otp's binding rule; _finalize_device checks it again).
_USER_DEVICE_SQL = (
    f"SELECT {_USER_ROWS.columns('u')}, {_DEVICE_ROWS.columns('d')} FROM {User._meta.db_table} u "  # noqa: S608
    f"LEFT JOIN {TotpDevice._meta.db_table} d ON d.id = %s AND d.user_id = u.id WHERE u.id = %s"
)


def _totp_device_id(persistent_id) -> int | None:
    """The TOTP device id of a session's ``otp_device_id`` ("accounts.totpdevice/12"), else None."""
    if not isinstance(persistent_id, str):
        return None
    label, _, device_id = persistent_id.rpartition("/")
    if label != _DEVICE_LABEL or not (device_id.isascii() and device_id.isdigit()) or len(device_id) > 18:
        return None  # not a plain bigint id: django-otp's own lookup decides
    return int(device_id)


def signed_in_user_with_device(request):
    """``(user, device)`` for a session signed in through ``ModelBackend`` and verified with a
    TOTP device, read in one query: what ``django.contrib.auth.get_user`` and django-otp's
    middleware would give (user None when Django's would be anonymous; device None when the
    row is not the user's), with Django's session-hash check applied as ``get_user`` applies
    it. None when this does not apply (no such session, another backend or device type,
    not PostgreSQL): the caller then goes Django's and django-otp's own way."""
    session = request.session
    try:
        raw_user_id, backend_path = session[SESSION_KEY], session[BACKEND_SESSION_KEY]
    except KeyError:
        return None
    device_id = _totp_device_id(session.get(DEVICE_ID_SESSION_KEY))
    if backend_path != MODEL_BACKEND or backend_path not in settings.AUTHENTICATION_BACKENDS or device_id is None:
        return None
    conn = connections[DEFAULT_DB_ALIAS]
    if conn.vendor != "postgresql":
        return None
    user_id = User._meta.pk.to_python(raw_user_id)
    with conn.cursor() as cursor:
        cursor.execute(_USER_DEVICE_SQL, [device_id, user_id])
        row = cursor.fetchone()
    if row is None:
        return None, None
    n = len(_USER_ROWS.fields)
    user = _USER_ROWS.build(row[:n], conn)
    device = _DEVICE_ROWS.build(row[n:], conn) if row[n] is not None else None
    if not user.is_active:  # ModelBackend.user_can_authenticate
        return None, None
    if not _session_hash_verified(request, user):
        return None, None
    return user, device


def _session_hash_verified(request, user) -> bool:
    """``django.contrib.auth.get_user``'s check (Django 5.2), unchanged: the session's hash of
    the password must match; a hash made with a fallback SECRET_KEY is renewed; anything else
    flushes the session (a password change, "sign out everywhere")."""
    session = request.session
    session_hash = session.get(HASH_SESSION_KEY)
    if session_hash:
        session_auth_hash = user.get_session_auth_hash()
        if constant_time_compare(session_hash, session_auth_hash):
            return True
        if any(constant_time_compare(session_hash, fallback) for fallback in user.get_session_auth_fallback_hash()):
            session.cycle_key()
            session[HASH_SESSION_KEY] = session_auth_hash
            return True
    session.flush()
    return False


class OTPMiddleware(DjangoOTPMiddleware):
    """django-otp's middleware (``request.user.otp_device``, ``request.user.is_verified()``),
    right after Django's AuthenticationMiddleware. For a session signed in with a password and
    verified with a TOTP device, the user and the device are read in one query
    (``signed_in_user_with_device``); every other case goes django-otp's own way. The user is
    also put in AuthenticationMiddleware's cache, so both lazy users are the same object."""

    def _verify_user_sync(self, request, user):
        if not hasattr(request, "_cached_user"):  # AuthenticationMiddleware has not loaded it yet
            loaded = signed_in_user_with_device(request)
            if loaded is not None:
                found, device = loaded
                if found is None:
                    found = AnonymousUser()
                request._cached_user = found
                self._init_user_fields(found)
                if found.is_authenticated:
                    found.otp_device = self._finalize_device(request, found, device)
                return found
        return super()._verify_user_sync(request, user)
