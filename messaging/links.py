"""Secure links and the patient's session on the secure page.

A link opens one thread for one patient. Its token is 256 bits from ``secrets``; only the
SHA-256 is stored. Opening it starts a ``PatientSession`` (a second 256-bit secret in an
HttpOnly cookie, also stored hashed) and the token leaves the address bar. Before any PHI the
patient gives their date of birth; result notices and links older than 24 hours also need a
six-digit code sent by SMS. Five wrong answers lock the link for 30 minutes and tell staff.

Answers are compared as HMACs in constant time, never with a memory-hard hash per attempt
(DESIGN: that would make every link holder a CPU-exhaustion attacker).

Every function runs inside the link's tenant scope.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from accounts.errors import ApplicationError
from audit.events import AuditEventType
from audit.services import PATIENT_ACTOR, audit_record, audit_record_in_statement
from messaging.models import MessageKind, PatientSession, SecureLink, Thread
from messaging.routing import secret_hash

DEFAULT_LIFETIME_DAYS = 7
MAX_FAILURES = 5
LOCK_MINUTES = 30
STEP_UP_AGE = datetime.timedelta(hours=24)
CODE_MINUTES = 10
CODE_RESEND_SECONDS = 60
CODES_PER_SESSION = 5
SESSION_IDLE = datetime.timedelta(minutes=10)
# The idle clock is written at most this often: each page view would otherwise be a write. The
# session can only end earlier than the full idle window, never later.
SESSION_TOUCH_EVERY = datetime.timedelta(seconds=60)
# Per-IP limits (cache counters): wrong answers, and link opens (token guessing).
IP_FAILURES_PER_WINDOW = 20
IP_OPENS_PER_WINDOW = 60
IP_WINDOW_SECONDS = 15 * 60


def new_secret() -> str:
    return secrets.token_urlsafe(32)  # 43 characters, 256 bits


def link_url(token: str) -> str:
    return f"{settings.SITE_URL}/s/{token}"


def link_lifetime(tenant) -> datetime.timedelta:
    return datetime.timedelta(days=tenant.link_lifetime_days or DEFAULT_LIFETIME_DAYS)


# --- staff side: create, supersede, revoke ---------------------------------------------------------


def link_create(*, tenant, thread: Thread, actor=None, supersede: bool = True) -> tuple[SecureLink, str]:
    """A new link for ``thread``. Returns the row and the token (which exists only here and in
    the outbox row that carries it).

    ``supersede``: older live links of the thread stop working now. A link made for a notice
    that may wait (quiet hours, the frequency cap) passes False: the outbox supersedes the
    older links when the notice actually goes, so the patient's last link keeps working
    until a newer one is in their hands.
    """
    now = timezone.now()
    if supersede:
        link_supersede_older(thread_id=thread.pk, than=None, now=now)
    token = new_secret()
    link = SecureLink(tenant=tenant, thread=thread, patient_id=thread.patient_id, token_hash=secret_hash(token),
                      expires_at=now + link_lifetime(tenant), created_by=actor if is_user(actor) else None)
    link.save(force_insert=True)
    audit_record(tenant=tenant, actor=actor, event_type=AuditEventType.LINK_CREATED, target=link,
                 patient_id=thread.patient_id, details={"thread_id": str(thread.pk)})
    return link, token


def link_supersede_older(*, thread_id, than: SecureLink | None, now=None) -> int:
    """Revoke the thread's live links other than ``than`` (created before it)."""
    now = now or timezone.now()
    older = SecureLink.objects.select_for_update().filter(thread_id=thread_id, revoked_at__isnull=True)
    if than is not None:
        older = older.exclude(pk=than.pk).filter(created_at__lte=than.created_at)
    count = 0
    for old in older:
        old.revoked_at, old.revoked_reason = now, "superseded"
        old.save(update_fields=["revoked_at", "revoked_reason", "updated_at"])
        count += 1
    return count


def is_user(actor) -> bool:
    from accounts.models import User

    return isinstance(actor, User)


@transaction.atomic
def link_revoke(*, tenant, actor, thread: Thread) -> int:
    """Revoke every live link of ``thread`` (staff "Revoke link"); returns how many. Unsent
    notices carrying them are cancelled too."""
    from messaging.models import OutboundSms
    from messaging.outbox import sms_cancel

    now = timezone.now()
    links = list(SecureLink.objects.select_for_update().filter(thread=thread, revoked_at__isnull=True))
    for link in links:
        link.revoked_at, link.revoked_reason = now, "staff"
        link.save(update_fields=["revoked_at", "revoked_reason", "updated_at"])
        audit_record(tenant=tenant, actor=actor, event_type=AuditEventType.LINK_REVOKED, target=link,
                     patient_id=thread.patient_id, details={"thread_id": str(thread.pk), "reason": "staff"})
    sms_cancel(OutboundSms.objects.filter(link__in=links), code="superseded")
    PatientSession.objects.filter(thread=thread, ended_at__isnull=True).update(ended_at=now)
    return len(links)


# --- the link's state ---------------------------------------------------------------------------------


def link_usable(link: SecureLink, now: datetime.datetime | None = None) -> bool:
    """Not expired, revoked or locked. Unknown, expired, revoked and locked links all look the
    same to the patient: one neutral page, one status code."""
    now = now or timezone.now()
    if link.revoked_at is not None or link.expires_at <= now:
        return False
    return not (link.locked_until and link.locked_until > now)


def _carries_session(link: SecureLink, now: datetime.datetime) -> bool:
    """Whether a session already opened through ``link`` goes on. As ``link_usable``, except that
    a link superseded by a newer notice keeps its open session (until the session idles out): a
    patient reading the conversation is not signed out because the clinic just answered. The
    superseded token itself opens nothing any more; a staff revoke ends sessions outright."""
    if link.revoked_at is not None and link.revoked_reason != "superseded":
        return False
    if link.expires_at <= now:
        return False
    return not (link.locked_until and link.locked_until > now)


def ip_allowed(kind: str, ip: str | None, limit: int) -> bool:
    """Count one event of ``kind`` for ``ip``; False once the window's limit is passed."""
    if not ip:
        return True
    key = _ip_key(kind, ip)
    try:
        client = _counter_client()
        if client is None:
            cache.add(key, 0, IP_WINDOW_SECONDS)
            count = cache.incr(key)
        else:  # start the window if it is not running, and count: one round trip
            key = cache.make_key(key)
            count = client.pipeline(transaction=False).set(key, 0, ex=IP_WINDOW_SECONDS, nx=True).incr(key).execute()[1]
    except Exception:  # noqa: BLE001 - a cache outage must not lock every patient out
        return True
    return count <= limit


def ip_blocked(kind: str, ip: str | None, limit: int) -> bool:
    if not ip:
        return False
    key = _ip_key(kind, ip)
    try:
        client = _counter_client()
        count = cache.get(key) if client is None else client.get(cache.make_key(key))
        return int(count or 0) >= limit
    except Exception:  # noqa: BLE001
        return False


def _ip_key(kind: str, ip: str) -> str:
    return f"ct:rl:{kind}:{hashlib.sha256(ip.encode()).hexdigest()[:32]}"


# The per-IP counters go to Redis through one client per process (and cache server), on the cache's
# keys (``cache.make_key``) and its encoding of integers (Django stores an int as it is, so INCR
# works on it and ``cache.get`` reads the same number). Django's RedisCache builds a new client,
# with its several hundred response callbacks, for every call: 60 µs of the 110 µs that the identity
# check's counter read took. Any other cache (the demo's in-memory one) is used through its API.
_counter_clients: dict[str, object] = {}


def _counter_client():
    """The Redis client for the counters, or None when the default cache is not Django's Redis one
    with its own serializer (another encoding: then the cache API)."""
    config = settings.CACHES["default"]
    options = config.get("OPTIONS") or {}
    if config.get("BACKEND") != "django.core.cache.backends.redis.RedisCache" or "serializer" in options:
        return None
    location = config["LOCATION"]
    servers = location if isinstance(location, list | tuple) else location.split(",")
    client = _counter_clients.get(servers[0])
    if client is None:  # Django's RedisCache writes to its first server, with these options: so do the counters
        import redis

        connection_options = {k: v for k, v in options.items() if k not in ("pool_class", "parser_class")}
        client = _counter_clients.setdefault(servers[0], redis.Redis.from_url(servers[0], **connection_options))
    return client


# --- the patient's session ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionState:
    session: PatientSession
    link: SecureLink
    dob_ok: bool
    code_needed: bool  # step-up required and not yet passed
    code_ok: bool

    @property
    def verified(self) -> bool:
        return self.dob_ok and not self.code_needed


@transaction.atomic
def patient_session_start(*, tenant, link: SecureLink, language: str | None = None) -> tuple[PatientSession, str]:
    """Exchange a usable link for a new patient session; returns the row and its cookie value."""
    now = timezone.now()
    if link.first_opened_at is None:
        SecureLink.objects.filter(pk=link.pk, first_opened_at__isnull=True).update(first_opened_at=now)
    key = new_secret()
    patient = link.patient
    session = PatientSession(tenant=tenant, link=link, thread_id=link.thread_id, patient=patient,
                             key_hash=secret_hash(key), language=language or patient.preferred_language or "en",
                             last_seen_at=now)
    session.save(force_insert=True)
    return session, key


def step_up_required(link: SecureLink, thread: Thread, now: datetime.datetime | None = None) -> bool:
    now = now or timezone.now()
    return thread.kind == MessageKind.RESULT_NOTICE or now - link.created_at > STEP_UP_AGE


def session_state(session: PatientSession, *, now: datetime.datetime | None = None) -> SessionState | None:
    """The session's state, or None if it has ended, idled out, or its link is no longer usable."""
    now = now or timezone.now()
    if session.ended_at is not None or now - session.last_seen_at > SESSION_IDLE:
        return None
    link = session.link
    if not _carries_session(link, now):
        return None
    dob_ok = session.dob_verified_at is not None
    needs = step_up_required(link, session.thread, now)
    code_ok = session.code_verified_at is not None
    return SessionState(session=session, link=link, dob_ok=dob_ok, code_needed=needs and not code_ok, code_ok=code_ok)


def session_touch(session: PatientSession, *, now: datetime.datetime | None = None) -> None:
    """Restart the idle clock (written at most every SESSION_TOUCH_EVERY)."""
    now = now or timezone.now()
    if now - session.last_seen_at < SESSION_TOUCH_EVERY:
        return
    PatientSession.objects.filter(pk=session.pk).update(last_seen_at=now)
    session.last_seen_at = now


def patient_session_set_language(*, session: PatientSession, language: str) -> None:
    """The page's language ("en" or "es"). Not PHI and not the patient's record: not audited."""
    if language not in ("en", "es"):
        raise ApplicationError("Choose English or Spanish.", fields={"lang": ["Choose en or es."]})
    PatientSession.objects.filter(pk=session.pk).update(language=language, updated_at=timezone.now())
    session.language = language


@transaction.atomic
def patient_sign_out(*, tenant, session: PatientSession) -> None:
    now = timezone.now()
    PatientSession.objects.filter(pk=session.pk, ended_at__isnull=True).update(ended_at=now)
    audit_record(tenant=tenant, actor=PATIENT_ACTOR, event_type=AuditEventType.PATIENT_SIGNED_OUT, target=session.link,
                 patient_id=session.patient_id, details={"thread_id": str(session.thread_id)})


def _answer_digest(value: str) -> bytes:
    return hmac.new(settings.SECRET_KEY.encode(), value.encode(), hashlib.sha256).digest()


def parse_birth_date(*, year, month, day) -> datetime.date:
    """The date from three form fields; ApplicationError naming the bad field otherwise."""
    fields: dict[str, list[str]] = {}
    values = {}
    for name, raw, low, high in (("year", year, 1900, 2100), ("month", month, 1, 12), ("day", day, 1, 31)):
        text = str(raw or "").strip()
        if not text.isdigit() or not low <= int(text) <= high:
            fields[name] = {"year": ["Enter the year as four digits, e.g. 1984."],
                            "month": ["Enter the month as a number from 1 to 12."],
                            "day": ["Enter the day as a number from 1 to 31."]}[name]
        else:
            values[name] = int(text)
    if not fields:
        try:
            return datetime.date(values["year"], values["month"], values["day"])
        except ValueError:
            fields["day"] = ["That day does not exist in that month."]
    raise ApplicationError("Please check your date of birth.", fields=fields, code="invalid_date")


def _fail(*, tenant, session: PatientSession, step: str) -> bool:
    """Count one wrong answer against the link; True if this one locked it."""
    link = SecureLink.objects.select_for_update().get(pk=session.link_id)
    link.failed_attempts += 1
    locked = link.failed_attempts >= MAX_FAILURES
    update = ["failed_attempts", "updated_at"]
    if locked:
        now = timezone.now()
        link.locked_until, link.failed_attempts = now + datetime.timedelta(minutes=LOCK_MINUTES), 0
        update.append("locked_until")
        Thread.objects.filter(pk=link.thread_id).update(link_locked_at=now, staff_unread=F("staff_unread") + 1,
                                                        last_activity_at=now)
        PatientSession.objects.filter(link=link, ended_at__isnull=True).update(ended_at=now)
    link.save(update_fields=update)
    audit_record(tenant=tenant, actor=PATIENT_ACTOR, event_type=AuditEventType.LINK_FAILED, target=link,
                 patient_id=link.patient_id, details={"step": step, "count": link.failed_attempts if not locked
                                                      else MAX_FAILURES})
    if locked:
        audit_record(tenant=tenant, actor=PATIENT_ACTOR, event_type=AuditEventType.LINK_LOCKED, target=link,
                     patient_id=link.patient_id, details={"step": step, "thread_id": str(link.thread_id)})
    return locked


def verify_birth_date(*, tenant, session: PatientSession, birth_date: datetime.date) -> bool:
    """True (and the session is DOB-verified) if ``birth_date`` is the patient's; otherwise the
    failure is counted against the link (five lock it)."""
    patient = session.patient
    ok = hmac.compare_digest(_answer_digest(f"dob:{birth_date.isoformat()}"),
                             _answer_digest(f"dob:{patient.birth_date.isoformat()}"))
    if not ok:
        with transaction.atomic():
            _fail(tenant=tenant, session=session, step="birth_date")
        return False
    now = timezone.now()
    details = {"step": "birth_date"}
    if connection.vendor == "postgresql":
        # The session marked, the link's counters reset and LINK_VERIFIED written in one statement,
        # atomic on its own: no transaction, so none of its BEGIN and COMMIT round trips. Prepared
        # once per connection: planning two updates under RLS cost more than running them. Both rows
        # are this clinic's (the tenant conditions are lock 2's, row-level security is lock 3).
        audit_record_in_statement(name="caretext_verify_birth_date", sql=_MARK_VERIFIED_SQL,
                                  params=[now, now, session.pk, tenant.pk, now, session.link_id, tenant.pk],
                                  tenant=tenant, actor=PATIENT_ACTOR, event_type=AuditEventType.LINK_VERIFIED,
                                  target=session.link, patient_id=session.patient_id, details=details)
        session.dob_verified_at = session.updated_at = now
        return True
    with transaction.atomic():  # the demo's SQLite
        session.dob_verified_at = now
        session.save(update_fields=["dob_verified_at", "updated_at"])
        SecureLink.objects.filter(pk=session.link_id).update(failed_attempts=0, verified_at=now)
        audit_record(tenant=tenant, actor=PATIENT_ACTOR, event_type=AuditEventType.LINK_VERIFIED, target=session.link,
                     patient_id=session.patient_id, details=details)
    return True


_MARK_VERIFIED_SQL = (
    "UPDATE messaging_patientsession SET dob_verified_at = %s, updated_at = %s WHERE id = %s AND tenant_id = %s",
    "UPDATE messaging_securelink SET failed_attempts = 0, verified_at = %s WHERE id = %s AND tenant_id = %s",
)


def _code_digest(session: PatientSession, code: str) -> str:
    return hmac.new(settings.SECRET_KEY.encode(), f"otp:{session.pk}:{code}".encode(), hashlib.sha256).hexdigest()


@transaction.atomic
def code_send(*, tenant, session: PatientSession) -> None:
    """Text the patient a new six-digit code (after the birth date); the SMS carries no PHI.

    Limited to one a minute and five a session; ApplicationError otherwise.
    """
    from messaging.outbox import sms_enqueue

    session = PatientSession.objects.select_for_update().select_related("patient").get(pk=session.pk)
    now = timezone.now()
    if session.dob_verified_at is None:
        raise ApplicationError("Confirm your date of birth first.", code="order")
    if session.code_sent_at and (now - session.code_sent_at).total_seconds() < CODE_RESEND_SECONDS:
        raise ApplicationError("A code was just sent. Please wait a minute before asking again.", code="too_soon")
    sent = cache_count_codes(session)
    if sent >= CODES_PER_SESSION:
        raise ApplicationError("Too many codes were sent. Please open the link again later.", code="too_many")
    code = f"{secrets.randbelow(10**6):06d}"
    session.code_hmac = _code_digest(session, code)
    session.code_expires_at = now + datetime.timedelta(minutes=CODE_MINUTES)
    session.code_sent_at = now
    session.save(update_fields=["code_hmac", "code_expires_at", "code_sent_at", "updated_at"])
    patient = session.patient
    row = sms_enqueue(tenant=tenant, to=patient.phone, notification="one_time_code", sms_kind="one_time_code",
                      payload=code, patient=patient, link=session.link, language=session.language)
    audit_record(tenant=tenant, actor=PATIENT_ACTOR, event_type=AuditEventType.LINK_CODE_SENT, target=session.link,
                 patient_id=patient.pk, details={"sms_id": str(row.pk)})


def cache_count_codes(session: PatientSession) -> int:
    from messaging.models import OutboundSms

    return OutboundSms.objects.filter(link_id=session.link_id, notification="one_time_code",
                                      created_at__gte=session.created_at).count()


@transaction.atomic
def verify_code(*, tenant, session: PatientSession, code: str) -> bool:
    """True if ``code`` is the live, unused code of this session; it is spent either way when right."""
    session = PatientSession.objects.select_for_update().get(pk=session.pk)
    code = (code or "").strip().replace(" ", "")
    now = timezone.now()
    live = bool(session.code_hmac) and session.code_expires_at is not None and session.code_expires_at > now
    ok = live and len(code) == 6 and code.isdigit() and hmac.compare_digest(session.code_hmac,
                                                                           _code_digest(session, code))
    if not ok:
        _fail(tenant=tenant, session=session, step="code")
        return False
    session.code_verified_at, session.code_hmac, session.code_expires_at = now, "", None
    session.save(update_fields=["code_verified_at", "code_hmac", "code_expires_at", "updated_at"])
    audit_record(tenant=tenant, actor=PATIENT_ACTOR, event_type=AuditEventType.LINK_VERIFIED, target=session.link,
                 patient_id=session.patient_id, details={"step": "code"})
    return True
