"""Writes for broadcasts (R2): keyword-only, atomic, validated, audited in the same transaction.

A broadcast is resolved into recipient rows once, when it is created; the beat task then sends
``rate_per_minute / 6`` of them every 10 seconds (fewer if the clinic's SMS sender is slower or
busy: ``slice_size``) through ``messaging.services.message_send``,
so each recipient gets an ordinary broadcast message: a secure link by SMS, consent checked,
quiet hours and the frequency cap applied by the outbox (an SMS held by either is "waiting",
and the recipient counts as sent: the message exists and the SMS will go).

Every function must be called inside ``tenant_scope(tenant)``.
"""

from __future__ import annotations

import datetime
import logging

from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from accounts.errors import ApplicationError, ConflictError
from audit.events import AuditEventType
from audit.services import audit_record
from broadcasts.models import (
    AudienceKind,
    Broadcast,
    BroadcastRecipient,
    BroadcastStatus,
    RecipientStatus,
)
from consent.models import ConsentAction, ConsentChannel, ConsentEvent
from consent.policy import SmsKind
from consent.selectors import can_sms
from messaging.models import MessageKind, OutboundSms, SmsStatus
from patients.models import Appointment, AppointmentStatus, Patient
from patients.selectors import descriptor_filter
from patients.services import clinic_today, clinic_zone

log = logging.getLogger(__name__)

BODY_MAX = 2000
RATE_MIN, RATE_MAX, RATE_DEFAULT = 1, 600, 60
TICK_SECONDS = 10  # beat runs broadcasts_tick every 10 s (config/settings.py CELERY_BEAT_SCHEDULE)
# A slice is skipped if the previous one ran less than this long ago, so a duplicated or retried
# tick cannot send faster than the rate. A little under TICK_SECONDS: beat jitter.
MIN_SLICE_GAP = datetime.timedelta(seconds=TICK_SECONDS - 2)
TEXT_MAX = 200  # location and appointment type (patients.models.Appointment field sizes)
APPOINTMENT_STATUSES = (AppointmentStatus.BOOKED, AppointmentStatus.CONFIRMED)
CANCELLED_SMS_REASON = "The broadcast was cancelled."
FAILED_REASON = "An unexpected error stopped this message; it was not sent."


def tenant_rate(tenant) -> int:
    """The clinic's default rate (``Tenant.settings["broadcast_rate_per_minute"]``), within 1-600."""
    value = (tenant.settings or {}).get("broadcast_rate_per_minute", RATE_DEFAULT)
    try:
        return min(RATE_MAX, max(RATE_MIN, int(value)))
    except (TypeError, ValueError):
        return RATE_DEFAULT


@transaction.atomic
def broadcast_rate_set(*, tenant, actor, rate_per_minute: int) -> int:
    """The clinic's default broadcast rate (messages a minute, 1-600)."""
    if isinstance(rate_per_minute, bool) or not isinstance(rate_per_minute, int) or not (
            RATE_MIN <= rate_per_minute <= RATE_MAX):
        raise ApplicationError("Choose a sending rate.", fields={
            "broadcast_rate_per_minute": [f"A whole number from {RATE_MIN} to {RATE_MAX}."]})
    from accounts.services import tenant_setting_put

    tenant_setting_put(tenant=tenant, actor=actor, key="broadcast_rate_per_minute", value=rate_per_minute)
    return rate_per_minute


def sending_rate_per_minute(broadcast: Broadcast) -> int:
    """Texts a minute the broadcast goes at: its own rate, or its clinic's sender's if slower."""
    from messaging.pacing import sender_rate

    sender = sender_rate(broadcast.tenant)
    rate = broadcast.rate_per_minute
    return max(1, min(rate, int(sender * 60))) if sender > 0 else rate


def slice_size(broadcast: Broadcast, *, backlog: float = 0.0) -> int:
    """Recipients for one 10-second tick: what the broadcast's rate and its sender's rate allow
    in a tick (at least one), less what the sender has already reserved (``backlog``, seconds
    of its slots taken ahead, messaging.pacing): with a full tick reserved, none.

    This is the fairness rule. A broadcast of any size puts at most one tick of its sender's
    capacity into the queues; the rest waits as pending recipients in the database. So another
    clinic's reminder waits behind at most one tick of it in the broker queue (the send pool
    works on them in parallel), and a message on the same sender (the clinic's own, or the
    platform's shared one) behind at most one tick of its slots; reminders and replies go
    first when a sender is busy, and a broadcast takes only what is left.
    """
    per_tick = max(1, sending_rate_per_minute(broadcast) * TICK_SECONDS // 60)
    if backlog <= 0:
        return per_tick
    from messaging.pacing import sender_rate

    free = max(0.0, TICK_SECONDS - backlog) * sender_rate(broadcast.tenant)
    return min(per_tick, int(free))


# --- creating -----------------------------------------------------------------------------------------


def _clean_body(body) -> str:
    # Same rules as message_send, so a body accepted here is never refused at send time.
    from messaging.services import clean_text

    return clean_text(body, field="body", max_length=BODY_MAX)


def _clean_rate(tenant, rate_per_minute) -> int:
    if rate_per_minute in (None, ""):
        return tenant_rate(tenant)
    try:
        rate = int(rate_per_minute)
    except (TypeError, ValueError):
        rate = 0
    if not RATE_MIN <= rate <= RATE_MAX:
        raise ApplicationError("The sending rate is out of range.",
                               fields={"rate_per_minute": [f"Use a whole number from {RATE_MIN} to {RATE_MAX}."]})
    return rate


def _clean_day(tenant, day) -> datetime.date:
    if isinstance(day, str):
        try:
            day = datetime.date.fromisoformat(day.strip())
        except ValueError:
            day = None
    if not isinstance(day, datetime.date):
        raise ApplicationError("Choose the day of the appointments.",
                               fields={"day": ["Enter a date (YYYY-MM-DD)."]})
    if day < clinic_today(tenant):
        raise ApplicationError("The day is in the past.",
                               fields={"day": ["Choose today or a later day (clinic time)."]})
    return day


def _clean_filter_text(value, *, field: str) -> str:
    text = (value or "").strip() if isinstance(value, str) or value is None else None
    if text is None or len(text) > TEXT_MAX:
        raise ApplicationError("A filter is not valid.", fields={field: [f"Use at most {TEXT_MAX} characters."]})
    return text


def audience_clean(*, tenant, audience, day=None, location="", appointment_type="") -> dict:
    """The audience filter as stored on the broadcast; ApplicationError naming the bad field."""
    if audience not in AudienceKind.values:
        raise ApplicationError("Choose who gets the message.",
                               fields={"audience": [f"Choose one of: {', '.join(AudienceKind.values)}."]})
    if audience == AudienceKind.ALL_CONSENTED:
        return {"kind": audience}
    return {"kind": audience, "day": _clean_day(tenant, day).isoformat(),
            "location": _clean_filter_text(location, field="location"),
            "appointment_type": _clean_filter_text(appointment_type, field="appointment_type")}


def _consented_ids(tenant) -> list:
    """Active patients who may get a broadcast now. SQL narrows to patients with an SMS grant
    for their current number; ``can_sms`` (the one consent gate) decides each of those."""
    candidates = Patient.objects.filter(is_active=True, phone_undeliverable_at__isnull=True).exclude(
        phone_index="").filter(pk__in=ConsentEvent.objects.filter(
            channel=ConsentChannel.SMS, action=ConsentAction.GRANT).values("patient_id")).order_by("pk")
    return [p.pk for p in candidates if can_sms(tenant, p, kind=SmsKind.BROADCAST)[0]]


def _appointment_patient_ids(tenant, audience: dict) -> list:
    zone = clinic_zone(tenant)
    day = datetime.date.fromisoformat(audience["day"])
    start = datetime.datetime.combine(day, datetime.time(0), tzinfo=zone)
    end = datetime.datetime.combine(day + datetime.timedelta(days=1), datetime.time(0), tzinfo=zone)
    rows = Appointment.objects.filter(starts_at__gte=start, starts_at__lt=end, status__in=APPOINTMENT_STATUSES)
    for name, key in (("location_name", "location"), ("appointment_type", "appointment_type")):
        if audience.get(key):  # encrypted: matched by blind index (case-insensitive)
            rows = rows.filter(**descriptor_filter(tenant=tenant, name=name, value=audience[key]))
    return sorted(set(rows.values_list("patient_id", flat=True)))  # one message per patient


def audience_patient_ids(*, tenant, audience: dict) -> list:
    """The patients an audience filter names now, each once."""
    if audience["kind"] == AudienceKind.ALL_CONSENTED:
        return _consented_ids(tenant)
    return _appointment_patient_ids(tenant, audience)


def _no_recipients(audience: dict) -> ApplicationError:
    if audience["kind"] == AudienceKind.ALL_CONSENTED:
        return ApplicationError("No patient may be texted yet.", fields={
            "audience": ["No patient has agreed to SMS (or the clinic's BAA is not signed)."]})
    return ApplicationError("No appointments match.", fields={
        "day": ["No booked or confirmed appointments that day match the location and type chosen."]})


@transaction.atomic
def broadcast_create(*, tenant, actor, body, audience, day=None, location="", appointment_type="",
                     rate_per_minute=None, idempotency_key: str = "") -> Broadcast:
    """Validate, resolve the audience into recipient rows and start sending (status "sending").

    The audience is fixed now: a patient who books later is not added. Resolving it is a
    search over patients: audited as PATIENT_SEARCHED with the count. The same
    ``idempotency_key`` twice (a double click) returns the first broadcast.
    """
    from messaging.services import check_idempotency_key

    key = check_idempotency_key(idempotency_key)
    if key:
        existing = Broadcast.objects.filter(idempotency_key=key).first()
        if existing is not None:
            return existing
    body = _clean_body(body)
    audience_filter = audience_clean(tenant=tenant, audience=audience, day=day, location=location,
                                     appointment_type=appointment_type)
    rate = _clean_rate(tenant, rate_per_minute)
    patient_ids = audience_patient_ids(tenant=tenant, audience=audience_filter)
    if not patient_ids:
        raise _no_recipients(audience_filter)
    broadcast = Broadcast(tenant=tenant, body=body, audience=audience_filter, rate_per_minute=rate,
                          created_by=actor, started_at=timezone.now(), total=len(patient_ids),
                          idempotency_key=key)
    broadcast.full_clean(exclude=["body"])  # the encrypted field validates its own value on save
    broadcast.save(force_insert=True)
    BroadcastRecipient.objects.bulk_create(
        [BroadcastRecipient(tenant=tenant, broadcast=broadcast, patient_id=pid) for pid in patient_ids])
    audit_record(tenant=tenant, actor=actor, event_type=AuditEventType.PATIENT_SEARCHED, target=broadcast,
                 details={"path_name": "broadcast-audience", "count": len(patient_ids)})
    audit_record(tenant=tenant, actor=actor, event_type=AuditEventType.BROADCAST_CREATED, target=broadcast,
                 details={"broadcast_id": str(broadcast.pk), "count": len(patient_ids)})
    return broadcast


# --- sending -------------------------------------------------------------------------------------------


def _send_one(tenant, broadcast: Broadcast, recipient: BroadcastRecipient, now) -> None:
    from messaging.services import message_send

    patient = recipient.patient
    allowed, reason = can_sms(tenant, patient, kind=SmsKind.BROADCAST)
    fields = ["status", "reason", "message", "processed_at", "updated_at"]
    recipient.processed_at = now
    if not allowed:
        recipient.status, recipient.reason = RecipientStatus.SKIPPED, reason
        recipient.save(update_fields=fields)
        return
    try:
        recipient.message = message_send(tenant=tenant, actor=broadcast.created_by, patient=patient,
                                         kind=MessageKind.BROADCAST, body=broadcast.body, source="system",
                                         idempotency_key=f"broadcast:{recipient.pk}")
        recipient.status = RecipientStatus.SENT
    except ApplicationError as exc:  # refused after all (a race with a STOP): skipped, with the code
        recipient.status, recipient.reason = RecipientStatus.SKIPPED, exc.code[:200]
    except Exception as exc:  # noqa: BLE001 - one patient's failure must not stop the broadcast
        # message_send runs in its own savepoint, so nothing of it is left; ids only in the log.
        log.warning("broadcast %s: recipient %s failed (%s)", broadcast.pk, recipient.pk, type(exc).__name__)
        recipient.status, recipient.reason = RecipientStatus.FAILED, FAILED_REASON
    recipient.save(update_fields=fields)


def _count(broadcast: Broadcast) -> dict[str, int]:
    rows = BroadcastRecipient.objects.filter(broadcast=broadcast).values("status").annotate(n=Count("id"))
    return {row["status"]: row["n"] for row in rows}


def _store_counts(broadcast: Broadcast, *, now) -> None:
    counts = _count(broadcast)
    broadcast.sent = counts.get(RecipientStatus.SENT, 0)
    broadcast.skipped = counts.get(RecipientStatus.SKIPPED, 0)
    broadcast.failed = counts.get(RecipientStatus.FAILED, 0)
    fields = ["sent", "skipped", "failed", "last_slice_at", "updated_at"]
    if broadcast.status == BroadcastStatus.SENDING and not counts.get(RecipientStatus.PENDING):
        broadcast.status, broadcast.finished_at = BroadcastStatus.DONE, now
        fields += ["status", "finished_at"]
    broadcast.save(update_fields=fields)


def _sender_backlog(tenant) -> float:
    from messaging.pacing import backlog_seconds, sender_key, sender_rate

    return backlog_seconds(sender_key(tenant)) if sender_rate(tenant) > 0 else 0.0


@transaction.atomic
def broadcast_send_slice(*, tenant, broadcast: Broadcast, now: datetime.datetime | None = None) -> int:
    """Send the next ``slice_size`` pending recipients (none while the sender already has a tick
    of slots reserved); returns how many were handled.

    Holds the broadcast's row lock for the slice (``skip_locked``): a second tick running at the
    same time finds it locked and does nothing, and a cancel waits for the slice to end. A tick
    less than MIN_SLICE_GAP after the previous slice does nothing (the rate holds even if beat
    or a retry runs it twice). Each message has the idempotency key ``broadcast:<recipient>``.
    """
    now = now or timezone.now()
    broadcast = Broadcast.objects.select_for_update(skip_locked=True, of=("self",)).filter(
        pk=broadcast.pk, status=BroadcastStatus.SENDING).select_related("created_by").first()
    if broadcast is None:
        return 0
    if broadcast.last_slice_at is not None and now - broadcast.last_slice_at < MIN_SLICE_GAP:
        return 0
    size = slice_size(broadcast, backlog=_sender_backlog(tenant))
    recipients = list(BroadcastRecipient.objects.select_for_update(skip_locked=True).filter(
        broadcast=broadcast, status=RecipientStatus.PENDING).order_by("created_at", "id")[:size]) if size else []
    # Their patients by primary key, in a second query: joined to the claim, a planner without
    # statistics for a fresh import (autovacuum had not analysed it yet) walked the clinic's
    # patients once per recipient and a tick took 8 s instead of milliseconds.
    patients = Patient.objects.in_bulk([r.patient_id for r in recipients])
    for recipient in recipients:
        recipient.patient = patients[recipient.patient_id]
    for recipient in recipients:
        _send_one(tenant, broadcast, recipient, now)
    broadcast.last_slice_at = now
    _store_counts(broadcast, now=now)
    return len(recipients)


# --- cancelling ----------------------------------------------------------------------------------------


def broadcast_open_sms(*, broadcast: Broadcast):
    """The broadcast's SMS that have not left yet (queued, or waiting for quiet hours / the cap)."""
    message_ids = BroadcastRecipient.objects.filter(broadcast=broadcast, message__isnull=False).values("message_id")
    return OutboundSms.objects.filter(message_id__in=message_ids, status__in=[SmsStatus.QUEUED, SmsStatus.WAITING])


def broadcast_sms_cancel(*, broadcast: Broadcast) -> int:
    """Cancel the broadcast's queued and waiting SMS (in the caller's transaction). A row whose
    last attempt may have reached the provider ("ambiguous") is left to the outbox, which
    reconciles it first, as ``messaging.outbox.sms_cancel_for_patient`` does."""
    from messaging.outbox import sms_cancel

    return sms_cancel(broadcast_open_sms(broadcast=broadcast), code="broadcast_cancel", reason=CANCELLED_SMS_REASON)


@transaction.atomic
def broadcast_cancel(*, tenant, actor, broadcast: Broadcast) -> Broadcast:
    """Stop a broadcast: pending recipients are cancelled, and so are the SMS of messages
    already written that have not left yet. Messages themselves are not recalled: a patient
    who already got the SMS can still read it. A finished broadcast can be cancelled while
    some of its SMS still wait (quiet hours, the cap)."""
    broadcast = Broadcast.objects.select_for_update().get(pk=broadcast.pk)  # waits for a running slice
    if broadcast.status == BroadcastStatus.CANCELLED:
        raise ConflictError("This broadcast was already cancelled.")
    if broadcast.status == BroadcastStatus.DONE and not broadcast_open_sms(broadcast=broadcast).exists():
        raise ConflictError("This broadcast has finished: every SMS has left, nothing can be cancelled.")
    now = timezone.now()
    BroadcastRecipient.objects.filter(broadcast=broadcast, status=RecipientStatus.PENDING).update(
        status=RecipientStatus.CANCELLED, reason="cancelled", processed_at=now, updated_at=now)
    broadcast_sms_cancel(broadcast=broadcast)
    broadcast.status, broadcast.cancelled_at, broadcast.cancelled_by = BroadcastStatus.CANCELLED, now, actor
    broadcast.finished_at = broadcast.finished_at or now
    broadcast.save(update_fields=["status", "cancelled_at", "cancelled_by", "finished_at", "updated_at"])
    audit_record(tenant=tenant, actor=actor, event_type=AuditEventType.BROADCAST_CANCELLED, target=broadcast,
                 details={"broadcast_id": str(broadcast.pk), "count": broadcast.total})
    return broadcast
