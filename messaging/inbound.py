"""SMS from patients: keywords to the consent ledger, everything else into their thread.

- A keyword (STOP/START/HELP …) goes to ``consent_apply_keyword`` for every patient of the
  clinic with that number (a family may share one), and is answered once.
- Any other text is stored, encrypted, as an inbound message in the patient's newest open
  thread (a new one if none) and answered with a link notice, so the conversation continues on
  the secure page: a fresh link, unless the thread's notice has not gone yet and its link is
  live and young (``NOTICE_REUSE_WITHIN``): that one SMS then answers this text too.
- A number the clinic does not know: the text is kept for staff triage (no patient is
  created) and answered with the clinic's help text, at most once a day per number.
- Urgent words (English and Spanish) flag the thread and are answered once a day per thread
  with "if this is an emergency call 911 or 988". No reply ever carries PHI.

Idempotent on the provider's message id: Twilio retries a webhook it did not see answered.
"""

from __future__ import annotations

import datetime
import re
import unicodedata
from dataclasses import dataclass

from django.db import DEFAULT_DB_ALIAS, IntegrityError, connections, transaction
from django.utils import timezone

from accounts.selectors import RowLoader
from audit.events import AuditEventType
from audit.services import PATIENT_ACTOR, audit_record
from consent.keywords import classify_inbound
from consent.policy import SmsKind
from consent.selectors import can_sms, latest_sms_consent_join
from consent.services import consent_apply_keyword
from messaging.links import link_usable
from messaging.models import (
    Direction,
    InboundSms,
    Message,
    OutboundSms,
    SecureLink,
    SmsStatus,
    Thread,
)
from messaging.outbox import sms_enqueue
from outbound.models import EventKind
from outbound.selectors import SUBSCRIBED_EXISTS_SQL, subscribed_exists_params
from outbound.services import message_received_emit
from patients.models import Patient
from phi.blind import blind_index

INBOUND_MAX = 1600  # ten concatenated segments; longer is cut with a note to staff
UNKNOWN_REPLY_EVERY = datetime.timedelta(days=1)
URGENT_REPLY_EVERY = datetime.timedelta(days=1)
# A link notice not yet sent (quiet hours, or the worker has not got to it) already answers a
# new text in the same thread if its link is live and this young: it goes as it is, with no
# second link. An older one gets a fresh link (so the patient's link lasts its full lifetime).
NOTICE_REUSE_WITHIN = datetime.timedelta(hours=1)

# Words and phrases that may mean an emergency. Matched on lower-cased text without accents,
# as whole words. Deliberately broad: a false alarm costs a glance, a miss costs more.
URGENT_PHRASES = (
    # English
    "chest pain", "chest hurts", "can't breathe", "cant breathe", "cannot breathe", "can not breathe",
    "trouble breathing", "short of breath", "suicide", "suicidal", "kill myself", "end my life",
    "want to die", "overdose", "overdosed", "od'd", "stroke", "heart attack", "unconscious",
    "not breathing", "bleeding a lot", "heavy bleeding", "seizure", "emergency", "self harm", "self-harm",
    "hurt myself",
    # Spanish
    "dolor de pecho", "dolor en el pecho", "no puedo respirar", "me falta el aire", "falta de aire",
    "suicidio", "suicidarme", "quitarme la vida", "matarme", "quiero morir", "sobredosis",
    "derrame cerebral", "ataque al corazon", "infarto", "inconsciente", "convulsion", "convulsiones",
    "emergencia", "sangrado fuerte", "hacerme dano",
)


def _fold(text: str) -> str:
    text = unicodedata.normalize("NFKD", text.lower().replace("’", "'"))
    return "".join(c for c in text if not unicodedata.combining(c))


_URGENT_RE = re.compile(r"(?<![\w])(" + "|".join(re.escape(_fold(p)) for p in URGENT_PHRASES) + r")(?![\w])")


def is_urgent(text: str) -> bool:
    return bool(_URGENT_RE.search(_fold(text or "")))


def answer_urgent(*, tenant, patient: Patient | None, thread: Thread | None, to: str | None = None) -> OutboundSms | None:
    """Text "if this is an emergency call 911 or 988" once a day per thread (or number)."""
    to = to or (patient.phone if patient is not None else None)
    if not to:
        return None
    since = timezone.now() - URGENT_REPLY_EVERY
    recent = OutboundSms.objects.filter(to_index=blind_index(tenant, "phone", to), notification="urgent_notice",
                                        created_at__gte=since)
    if recent.exists():
        return None
    return sms_enqueue(tenant=tenant, to=to, notification="urgent_notice", sms_kind=SmsKind.KEYWORD_REPLY,
                       payload="", patient=patient)


def _patients_for(from_index: str) -> list[Patient]:
    return list(Patient.objects.filter(phone_index=from_index, is_active=True).order_by("-updated_at"))


@dataclass(frozen=True)
class _Known:
    """What the thread's written-out query read with it (PostgreSQL), so it is not asked again:
    whether an endpoint takes "message.received" (``outbound.selectors.SUBSCRIBED_EXISTS_SQL``),
    the patient's newest SMS consent row (``can_sms``'s ``latest``), and whether an unsent link
    notice of the thread already answers this text (``_notice_reusable``)."""

    subscribed: bool
    consent: tuple | None
    notice_reusable: bool


_THREAD_ROWS, _PATIENT_ROWS = RowLoader(Thread), RowLoader(Patient)


def _aliased(loader: RowLoader, alias: str) -> str:
    return ", ".join(f"{alias}.{f.column} AS {alias}_{f.column}" for f in loader.fields)


def _from_cte(loader: RowLoader, alias: str) -> str:
    return ", ".join(f"th.{alias}_{f.column}" for f in loader.fields)


_NOTICE_STATUSES = f"('{SmsStatus.QUEUED.value}', '{SmsStatus.WAITING.value}')"
# Whether the thread's unsent link notice (the first, as ``notify_patient`` finds it) carries a
# live link (``links.link_usable``) made since a given time; parameters: now, now, that time.
_NOTICE_JOIN = (
    "LEFT JOIN LATERAL (SELECT (l.revoked_at IS NULL AND l.expires_at > %s "  # noqa: S608  # nosec B608  # from _meta
    "AND (l.locked_until IS NULL OR l.locked_until <= %s) AND l.created_at >= %s) AS reusable "
    f"FROM {OutboundSms._meta.db_table} o JOIN {SecureLink._meta.db_table} l ON l.id = o.link_id "
    "WHERE o.tenant_id = th.t_tenant_id AND l.thread_id = th.t_id AND o.notification = 'link_notice' "
    f"AND o.status IN {_NOTICE_STATUSES} ORDER BY o.id LIMIT 1) n ON true"
)
_CONSENT_JOIN = latest_sms_consent_join(tenant_id="th.p_tenant_id", patient_id="th.p_id",
                                        phone_index="th.p_phone_index", alias="c")
# ``_thread_for_number``'s ORM query (the thread locked, its patient joined; open threads first:
# "open" sorts after "closed"), then from that one row what ``_receive`` would ask next. Names
# from _meta and fixed choice values only; every value is a bound parameter.
_THREAD_SQL = (
    f"WITH th AS (SELECT {_aliased(_THREAD_ROWS, 't')}, {_aliased(_PATIENT_ROWS, 'p')} "  # noqa: S608  # nosec B608
    f"FROM {Thread._meta.db_table} t JOIN {Patient._meta.db_table} p ON p.id = t.patient_id "
    "WHERE t.tenant_id = %s AND p.phone_index = %s AND p.is_active "
    "ORDER BY t.status DESC, t.last_activity_at DESC LIMIT 1 FOR UPDATE OF t) "
    f"SELECT {_from_cte(_THREAD_ROWS, 't')}, {_from_cte(_PATIENT_ROWS, 'p')}, {SUBSCRIBED_EXISTS_SQL}, "
    f"c.action, c.occurred_at, COALESCE(n.reusable, false) FROM th {_CONSENT_JOIN} {_NOTICE_JOIN}"
)


def _written_out(conn) -> bool:
    """Whether ``_thread_for_number`` runs its written-out query (PostgreSQL: jsonb, LATERAL,
    a locking WITH); the demo's SQLite runs the ORM's (the tests run both)."""
    return conn.vendor == "postgresql"


def _thread_for_number(tenant, from_index: str, now) -> tuple[Thread | None, _Known | None]:
    """The thread a text from this number goes to, locked, with its patient: the newest open
    thread of the clinic's active patients with the number, else their newest thread. One query
    (the patients come joined), not the patients and then their threads.

    On PostgreSQL the query is written out (its ORM compilation cost more than running it) and
    also reads, for the thread found, what the rest of ``_receive`` would ask in three more
    queries (``_Known``); elsewhere that is None and they are asked."""
    conn = connections[DEFAULT_DB_ALIAS]
    if not _written_out(conn):
        # "-status": "open" sorts before "closed" (the only two statuses), so open threads come first.
        thread = Thread.objects.select_for_update(of=("self",)).select_related("patient").filter(
            patient__phone_index=from_index, patient__is_active=True).order_by("-status", "-last_activity_at").first()
        return thread, None
    subscribed = subscribed_exists_params(tenant_id=tenant.pk, kind=EventKind.MESSAGE_RECEIVED)
    with conn.cursor() as cursor:
        cursor.execute(_THREAD_SQL, [tenant.pk, from_index, *subscribed, now, now, now - NOTICE_REUSE_WITHIN])
        row = cursor.fetchone()
    if row is None:
        return None, None
    n_thread = len(_THREAD_ROWS.fields)
    n_patient = n_thread + len(_PATIENT_ROWS.fields)
    thread = _THREAD_ROWS.build(row[:n_thread], conn)
    Thread.patient.field.set_cached_value(thread, _PATIENT_ROWS.build(row[n_thread:n_patient], conn))
    subscribed_, action, occurred_at, reusable = row[n_patient:]
    return thread, _Known(subscribed=subscribed_, consent=None if action is None else (action, occurred_at),
                          notice_reusable=reusable)


def _notice_reusable(thread: Thread, now) -> bool:
    """The ORM's way to ``_Known.notice_reusable``: the thread's unsent link notice (the one
    ``notify_patient`` would give a new link) carries a live link made within
    ``NOTICE_REUSE_WITHIN``."""
    pending = OutboundSms.objects.select_related("link").filter(
        link__thread=thread, notification="link_notice", status__in=[SmsStatus.QUEUED, SmsStatus.WAITING]).first()
    return (pending is not None and link_usable(pending.link, now)
            and pending.link.created_at >= now - NOTICE_REUSE_WITHIN)


def inbound_sms_receive(*, tenant, provider_id: str, from_number: str, body: str) -> InboundSms:
    """Record and act on one inbound SMS (once per ``provider_id``).

    A repeat (Twilio retries a webhook it did not see answered) is not looked up first: the
    unique (tenant, provider_id) of the InboundSms row refuses it, the whole transaction
    (message, link, consent) rolls back, and the row the first delivery stored is returned.
    """
    try:
        return _receive(tenant=tenant, provider_id=provider_id, from_number=from_number, body=body)
    except IntegrityError:
        existing = InboundSms.objects.filter(provider_id=provider_id).first()
        if existing is None:
            raise
        return existing


@transaction.atomic
def _receive(*, tenant, provider_id: str, from_number: str, body: str) -> InboundSms:
    """The work, in one transaction. The InboundSms row is inserted once its outcome, patient
    and message are known (one write, not an insert and an update); its unique provider id
    still makes a concurrent duplicate fail the whole transaction."""
    body = (body or "")[:INBOUND_MAX]
    from_index = blind_index(tenant, "phone", from_number)
    inbound = InboundSms(tenant=tenant, provider_id=provider_id, from_number=from_number, from_index=from_index,
                         body=body, outcome="message", urgent=is_urgent(body))
    keyword = classify_inbound(body) is not None
    # A text (not a keyword) from a patient with a thread, the usual case: the thread and its
    # patient in one query. Otherwise the patients with the number decide.
    now = timezone.now()
    thread, known = (None, None) if keyword else _thread_for_number(tenant, from_index, now)
    patients = [thread.patient] if thread is not None else _patients_for(from_index)
    if not patients:
        inbound.outcome = "unknown_number"
        inbound.save(force_insert=True)
        _unknown_number(tenant, inbound, from_number)
        return inbound
    if keyword:
        inbound.patient, inbound.outcome = patients[0], "keyword"
        inbound.save(force_insert=True)
        _keyword(tenant, inbound, patients, body)
        return inbound
    new_thread = thread is None
    if new_thread:  # the patients with this number have no thread yet
        thread = Thread(tenant=tenant, patient=patients[0], last_activity_at=timezone.now())
        thread.save(force_insert=True)
    patient = thread.patient
    from messaging.services import _bump, notify_patient

    message = Message(tenant=tenant, thread=thread, direction=Direction.INBOUND, kind=thread.kind,
                      body=body or "(empty message)", source="sms", urgent=inbound.urgent)
    message.save(force_insert=True)
    inbound.patient, inbound.message = patient, message
    inbound.save(force_insert=True)
    _bump(thread, now=timezone.now(), inbound=True, urgent=inbound.urgent)  # leaves ``thread`` as stored
    audit_record(tenant=tenant, actor=PATIENT_ACTOR, event_type=AuditEventType.MESSAGE_RECEIVED, target=message,
                 patient_id=patient.pk, details={"thread_id": str(thread.pk), "source": "sms", "urgent": inbound.urgent})
    message_received_emit(tenant=tenant, message=message, patient=patient,  # webhooks (outbound/)
                          subscribed=None if known is None else known.subscribed)
    if inbound.urgent:
        answer_urgent(tenant=tenant, patient=patient, thread=thread)
    if known is None:
        allowed, _reason = can_sms(tenant, patient, kind=SmsKind.STAFF_REPLY)
    else:
        allowed, _reason = can_sms(tenant, patient, kind=SmsKind.STAFF_REPLY, latest=known.consent)
    if allowed:
        # An unsent notice with a young live link already answers this text (one SMS, one
        # link); otherwise a fresh link, and the unsent notice (if any) carries it.
        if known is not None:
            reusable = known.notice_reusable
        else:
            reusable = not new_thread and _notice_reusable(thread, now)
        if not reusable:
            notify_patient(tenant=tenant, thread=thread, patient=patient, sms_kind=SmsKind.STAFF_REPLY)
    return inbound


def _keyword(tenant, inbound: InboundSms, patients: list[Patient], body: str) -> None:
    reply = None
    for patient in patients:
        answer = consent_apply_keyword(tenant=tenant, patient=patient, text=body, evidence=f"inbound SMS {inbound.pk}",
                                       actor=PATIENT_ACTOR)
        reply = reply or answer
    if reply:
        sms_enqueue(tenant=tenant, to=inbound.from_number, notification="keyword_reply", sms_kind=SmsKind.KEYWORD_REPLY,
                    payload=str(reply), patient=patients[0], language=patients[0].preferred_language)


def _unknown_number(tenant, inbound: InboundSms, from_number: str) -> None:
    audit_record(tenant=tenant, actor=None, event_type=AuditEventType.MESSAGE_RECEIVED, target=inbound,
                 details={"source": "sms", "outcome": "unknown_number", "urgent": inbound.urgent})
    if inbound.urgent:
        answer_urgent(tenant=tenant, patient=None, thread=None, to=from_number)
        return
    since = timezone.now() - UNKNOWN_REPLY_EVERY
    if OutboundSms.objects.filter(to_index=inbound.from_index, notification="keyword_reply",
                                  created_at__gte=since).exists():
        return
    if classify_inbound(inbound.body) is not None and classify_inbound(inbound.body) != "help":
        return  # STOP from a number we do not know: nothing to revoke, and no reply to send
    sms_enqueue(tenant=tenant, to=from_number, notification="keyword_reply", sms_kind=SmsKind.KEYWORD_REPLY,
                payload="help")
