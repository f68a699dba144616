"""The SMS outbox: every SMS leaves through here, exactly once.

``sms_enqueue`` writes an ``OutboundSms`` row inside the caller's transaction (with the message
and its audit event) and, after commit, hands the row id to a worker. The row decides, the broker
only wakes workers (DESIGN "Messages, links and the outbox"):

1. ``sms_send_one`` claims a due row with ``SELECT … FOR UPDATE SKIP LOCKED``, checks consent
   again (a STOP committed before this moment always wins), holds it for quiet hours, and records
   the attempt (status "sending", a lease, attempts + 1) in a committed transaction BEFORE the
   gateway is called.
2. The gateway call happens outside any transaction.
3. The result is stored only if the row is still the one this attempt claimed (status "sending"
   and the same attempt number): a slower, older attempt can never overwrite a newer one.

A worker killed between 1 and 3 leaves the row "sending" with a lease. When the lease has run
out, the sweeper hands it out again, and the next attempt first asks the gateway whether the
earlier one got through (``reconcile``) before sending: a crash never loses an SMS and never
sends one twice. Retries live in the row (``next_attempt_at``, exponential backoff with jitter,
bounded attempts), not in Celery ETAs.

Before claiming, the task paces its rows (``pace``): each takes a slot on its sender's bucket,
shared by all workers (messaging/pacing.py). A row whose slot is later keeps it in the row
(``next_attempt_at``, error code "paced") without spending an attempt, and a countdown only wakes
a worker then.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import DateTimeField, Exists, F, OuterRef, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from audit.events import AuditEventType
from audit.services import audit_record
from consent.policy import AUTOMATED_KINDS, kind_rule, next_allowed_send, notice_slot, send_zone
from consent.selectors import can_sms
from integrations.sms import notification as notices
from integrations.sms.gateway import (
    AmbiguousGatewayError,
    PermanentGatewayError,
    TransientGatewayError,
    get_gateway,
)
from messaging.models import OPEN_SMS_STATUSES, SMS_STATUS_RANK, OutboundSms, SmsStatus
from phi.blind import blind_index
from phi.errors import PhiError

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
BACKOFF_BASE_SECONDS = 15
BACKOFF_MAX_SECONDS = 30 * 60
BATCH_SIZE = 100
# Carrier verdicts that mean the number itself cannot take SMS (invalid, landline, unreachable).
UNDELIVERABLE_CODES = frozenset({"21211", "21614", "21612", "21408", "30006"})
UNSUBSCRIBED_CODE = "21610"  # the patient texted STOP to the carrier: same as a STOP to us

# Provider status words → our states (Twilio's vocabulary; the local gateway uses the same).
PROVIDER_STATUS = {
    "accepted": SmsStatus.SENDING, "queued": SmsStatus.SENDING, "scheduled": SmsStatus.SENDING,
    "sending": SmsStatus.SENDING, "sent": SmsStatus.SENT, "delivered": SmsStatus.DELIVERED,
    "read": SmsStatus.DELIVERED, "undelivered": SmsStatus.UNDELIVERED, "failed": SmsStatus.FAILED,
    "canceled": SmsStatus.CANCELLED,
}
FINAL = frozenset({SmsStatus.DELIVERED, SmsStatus.UNDELIVERED, SmsStatus.FAILED, SmsStatus.CANCELLED})

# What staff read when an SMS did not go (shown in the thread; never PHI).
REASONS = {
    "revoked": "The patient opted out of SMS.",
    "never_granted": "The patient has not agreed to SMS.",
    "number_changed": "The number changed; consent must be captured for the new number.",
    "no_phone": "The patient has no mobile number.",
    "no_baa": "The clinic has not signed its Business Associate Agreement.",
    "patient_inactive": "The patient record is inactive.",
    "number_undeliverable": "The carrier says this number cannot receive SMS.",
    "attempts": "The SMS provider kept failing; we stopped after {n} attempts.",
    "permanent": "The SMS provider refused this SMS ({code}).",
    "superseded": "A newer notice for this conversation replaced it.",
}


def lease_seconds() -> int:
    return int(getattr(settings, "SMS_SEND_LEASE_SECONDS", 120))


def backoff(attempts: int) -> timedelta:
    """Exponential backoff with full jitter: up to 15 s, 30 s, 60 s … capped at 30 minutes."""
    ceiling = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(0, attempts - 1))
    return timedelta(seconds=random.uniform(ceiling / 2, ceiling))  # noqa: S311 - jitter, not a secret


# --- writing rows -----------------------------------------------------------------------------------


def sms_release(*, tenant, message) -> int:
    """A held message was released: its waiting notices may go now (after quiet hours and the
    cap as usual). Returns how many were handed to a worker at once."""
    now = timezone.now()
    ready = []
    for row in OutboundSms.objects.select_for_update(of=("self",)).select_related("patient").filter(
            message=message, status__in=[SmsStatus.QUEUED, SmsStatus.WAITING]):
        others = [t for t in _capped_times(row.patient) if t != row.next_attempt_at] if row.patient else []
        due = now
        if row.patient is not None:
            rule = kind_rule(row.sms_kind)
            if rule.capped:
                due = notice_slot(tenant, row.patient, now, others)
            elif rule.quiet_hours:
                due = next_allowed_send(send_zone(tenant=tenant, patient=row.patient), now)
        row.next_attempt_at = due
        row.status = SmsStatus.QUEUED if due <= now else SmsStatus.WAITING
        row.save(update_fields=["next_attempt_at", "status", "updated_at"])
        if row.status == SmsStatus.QUEUED:
            ready.append(row.pk)
    if ready:
        enqueue_on_commit(tenant.pk, ready)
    return len(ready)


def _capped_times(patient) -> list[datetime]:
    """When this patient's automated notices went or are due (for the frequency cap)."""
    since = timezone.now() - timedelta(days=14)
    rows = OutboundSms.objects.filter(patient=patient, sms_kind__in=list(AUTOMATED_KINDS)).exclude(
        status__in=[SmsStatus.CANCELLED, SmsStatus.FAILED])
    times = []
    for sent_at, due, status in rows.values_list("sent_at", "next_attempt_at", "status"):
        moment = sent_at if sent_at else due
        if moment and moment >= since and status != SmsStatus.CANCELLED:
            times.append(moment)
    return times


def send_time(*, tenant, patient, sms_kind: str, now: datetime | None = None) -> datetime:
    """When an SMS of ``sms_kind`` to ``patient`` may go: now, after quiet hours, or at the
    next slot the frequency cap leaves."""
    now = now or timezone.now()
    rule = kind_rule(sms_kind)
    if patient is None:
        return now
    if rule.capped:
        return notice_slot(tenant, patient, now, _capped_times(patient))
    if rule.quiet_hours:
        return next_allowed_send(send_zone(tenant=tenant, patient=patient), now)
    return now


def sms_enqueue(*, tenant, to: str, notification: str, sms_kind: str, payload: str, patient=None, message=None,
                link=None, language: str = "en", not_before: datetime | None = None) -> OutboundSms:
    """Write one outbox row in the caller's transaction; after commit a worker sends it.

    ``payload`` is the link token (link_notice), the six digits (one_time_code) or the reply
    kind (keyword_reply); it is stored encrypted and erased once the row is final.
    ``not_before``: a held result notice; the SMS waits until then (and then for quiet hours
    and the cap as usual).
    """
    if notification not in notices.KINDS:
        raise ValueError(f"unknown notification {notification!r}")
    now = timezone.now()
    start = max(now, not_before) if not_before else now
    due = send_time(tenant=tenant, patient=patient, sms_kind=sms_kind, now=start)
    row = OutboundSms(tenant=tenant, patient=patient, message=message, link=link, to=to,
                      to_index=blind_index(tenant, "phone", to), notification=notification, sms_kind=sms_kind,
                      payload=payload, language=language,
                      status=SmsStatus.QUEUED if due <= now else SmsStatus.WAITING, next_attempt_at=due)
    row.save(force_insert=True)
    if row.status == SmsStatus.QUEUED:
        enqueue_on_commit(tenant.pk, [row.pk])
    return row


def enqueue_on_commit(tenant_id: int, ids: list) -> None:
    """After the surrounding transaction commits, ask a worker to send these rows.

    A broker that is down must not fail the request that already committed: the rows are in
    the database and the sweeper hands them out when the broker is back.
    """
    id_strings = [str(i) for i in ids]

    def publish():
        from messaging.tasks import outbox_send

        try:
            outbox_send.apply_async(kwargs={"tenant_id": tenant_id, "sms_ids": id_strings},
                                    retry=False, ignore_result=True)
        except Exception as exc:  # noqa: BLE001 - any broker failure: the sweeper will send them
            log.warning("outbox: could not enqueue %d SMS for tenant %s (%s); the sweeper will", len(id_strings),
                        tenant_id, type(exc).__name__)

    transaction.on_commit(publish)


def sms_cancel(rows, *, code: str, reason: str | None = None) -> int:
    """Cancel the queued and waiting rows of ``rows`` (a queryset), locked, in the caller's
    transaction; returns how many. Rows being sent cannot be recalled, and a row whose last
    attempt may have reached the provider (error "ambiguous") is left to the claim: it
    reconciles first and cancels only if the provider never got it, so a row is never
    "cancelled" while the patient has it."""
    count = 0
    for row in rows.select_for_update(of=("self",)).filter(
            status__in=[SmsStatus.QUEUED, SmsStatus.WAITING]).exclude(error_code="ambiguous"):
        _finish(row, SmsStatus.CANCELLED, error_code=code, error_reason=reason or REASONS.get(code, code))
        count += 1
    return count


def sms_cancel_for_patient(*, tenant, patient, reason: str = "revoked") -> int:
    """Cancel the patient's queued and waiting SMS that need consent (``sms_cancel``); the claim
    re-checks consent for everything else."""
    needs_consent = [kind for kind in ("reminder", "result_notice", "broadcast", "nudge", "staff_message",
                                       "staff_reply") if kind_rule(kind).needs_consent]
    return sms_cancel(OutboundSms.objects.filter(patient=patient, sms_kind__in=needs_consent), code=reason)


def _finish(row: OutboundSms, status: str, *, error_code: str = "", error_reason: str = "",
            provider_id: str = "") -> None:
    row.status = status
    row.status_at = timezone.now()
    row.lease_until = None
    if status in FINAL or status == SmsStatus.SENT:
        row.payload = None  # the token or code is no longer needed: erase it
    if provider_id:
        row.provider_id = provider_id
    if status in (SmsStatus.SENT, SmsStatus.DELIVERED) and row.sent_at is None:
        row.sent_at = row.status_at
    row.error_code, row.error_reason = error_code[:20], error_reason[:200]
    row.save(update_fields=["status", "status_at", "lease_until", "payload", "provider_id", "sent_at",
                            "error_code", "error_reason", "updated_at"])


# --- sending -----------------------------------------------------------------------------------------


def build_notification(tenant, row: OutboundSms) -> notices.NotificationSms:
    """The sealed SMS for a row: rebuilt from the row in this process (seals are per process)."""
    label = tenant.sms_sender_label
    if row.notification == "link_notice":
        from messaging.links import link_url

        return notices.link_notice(to=row.to, sender_label=label, link=link_url(row.payload))
    if row.notification == "one_time_code":
        return notices.one_time_code(to=row.to, sender_label=label, code=row.payload)
    if row.notification == "keyword_reply":
        return notices.keyword_reply(to=row.to, tenant=tenant, kind=row.payload, language=row.language)
    return notices.urgent_notice(to=row.to, sender_label=label)


def sender_of(tenant) -> str | None:
    """The clinic's own sender: its Messaging Service, else its number; None: the platform's."""
    return tenant.twilio_messaging_service_sid or tenant.sms_number or None


def status_callback_url(tenant) -> str:
    from django.urls import reverse

    return f"{settings.SITE_URL}{reverse('integrations-twilio-status')}?t={tenant.pk}"


def _claim(tenant, sms_id) -> tuple[OutboundSms | None, bool]:
    """Lock and claim a due row for one attempt; (row, ambiguous) or (None, False).

    ``ambiguous``: an earlier attempt may have reached the gateway (its lease ran out while
    "sending", or it timed out after sending): reconcile before sending again.
    """
    now = timezone.now()
    # The patient (consent) and the link come with the row, and whether the link's thread has
    # older live links to supersede: one query, one lock (no second look when there are none).
    from messaging.models import SecureLink

    older_live = SecureLink.objects.filter(thread_id=OuterRef("link__thread_id"), revoked_at__isnull=True,
                                           created_at__lte=OuterRef("link__created_at")).exclude(pk=OuterRef("link_id"))
    row = OutboundSms.objects.select_for_update(skip_locked=True, of=("self",)).select_related(
        "patient", "link").annotate(older_live_links=Exists(older_live)).filter(
        pk=sms_id, status__in=OPEN_SMS_STATUSES).first()
    if row is None:
        return None, False
    if row.status == SmsStatus.SENDING:
        if row.lease_until and row.lease_until > now:
            return None, False  # another worker holds it
        ambiguous = True
    else:
        if row.next_attempt_at > now:
            return None, False  # not due yet (backoff, quiet hours or the cap)
        ambiguous = row.error_code == "ambiguous"
    if row.patient is not None:
        allowed, reason = can_sms(tenant, row.patient, kind=row.sms_kind)
        if not allowed and not ambiguous:
            _finish(row, SmsStatus.CANCELLED, error_code=reason, error_reason=REASONS.get(reason, reason))
            return None, False
        if not ambiguous and kind_rule(row.sms_kind).quiet_hours:
            allowed_at = next_allowed_send(send_zone(tenant=tenant, patient=row.patient), now)
            if allowed_at > now:
                row.status, row.next_attempt_at = SmsStatus.WAITING, allowed_at
                if row.error_code == PACED:  # its slot is gone: it asks for a new one then
                    row.error_code = ""
                row.save(update_fields=["status", "next_attempt_at", "error_code", "updated_at"])
                return None, False
    if row.link_id and not ambiguous and row.notification == "link_notice":
        from messaging.links import link_supersede_older

        link = row.link
        if link.revoked_at is not None:
            _finish(row, SmsStatus.CANCELLED, error_code="superseded", error_reason=REASONS["superseded"])
            return None, False
        if row.older_live_links:  # this notice's link is the live one
            link_supersede_older(thread_id=link.thread_id, than=link, now=now)
    row.status = SmsStatus.SENDING
    row.attempts += 1
    row.last_attempt_at = now
    row.lease_until = now + timedelta(seconds=lease_seconds())
    row.save(update_fields=["status", "attempts", "last_attempt_at", "lease_until", "updated_at"])
    return row, ambiguous


def _store(tenant, sms_id, attempt: int, apply) -> bool:
    """Run ``apply(row)`` if the row is still claimed by attempt ``attempt``."""
    with transaction.atomic():
        row = OutboundSms.objects.select_for_update(of=("self",)).select_related("patient").filter(
            pk=sms_id, status=SmsStatus.SENDING, attempts=attempt).first()
        if row is None:
            return False
        apply(row)
        return True


def _store_sent(sms_id, attempt: int, status: str, provider_id: str) -> bool:
    """``_store`` with ``_finish(row, status, provider_id=…)`` for the common outcome, the provider
    took the SMS, as one conditional UPDATE (no transaction, no row read): it changes the row only
    if attempt ``attempt`` still holds it, so a slower, older attempt still never overwrites a
    newer one (PostgreSQL re-checks the condition on the locked row)."""
    now = timezone.now()
    return bool(OutboundSms.objects.filter(pk=sms_id, status=SmsStatus.SENDING, attempts=attempt).update(
        status=status, status_at=now, lease_until=None, payload=None, provider_id=provider_id or F("provider_id"),
        sent_at=Coalesce(F("sent_at"), Value(now, output_field=DateTimeField())), error_code="", error_reason="",
        updated_at=now))


def _wait_for_keys(row: OutboundSms, *, ambiguous: bool) -> None:
    """Back to the queue without spending an attempt: this one never reached the provider, and a
    long key outage must not use up the attempts ordinary provider errors are bounded by. A row
    that needed reconciling still does."""
    row.status, row.lease_until, row.attempts = SmsStatus.QUEUED, None, max(0, row.attempts - 1)
    row.error_code = "ambiguous" if ambiguous else "keys_unavailable"
    row.error_reason = "Waiting for the key service to send."
    row.next_attempt_at = timezone.now() + backoff(1)
    row.save(update_fields=["status", "lease_until", "attempts", "error_code", "error_reason", "next_attempt_at",
                            "updated_at"])


def sms_send_one(*, tenant, sms_id, gateway=None) -> str:
    """One attempt at one row; returns what happened ("sent", "retry", "failed", "skipped", …)."""
    with transaction.atomic():
        row, ambiguous = _claim(tenant, sms_id)
    if row is None:
        return "skipped"
    gateway = gateway or get_gateway()
    attempt = row.attempts
    try:
        sms = build_notification(tenant, row)
    except PhiError as exc:  # the key service is down: the number and token cannot be read yet
        log.warning("outbox: SMS %s waits for the key service: %s", row.pk, type(exc).__name__)
        _store(tenant, row.pk, attempt, lambda r: _wait_for_keys(r, ambiguous=ambiguous))
        return "keys_unavailable"
    except ValueError as exc:  # a bad number or a sender label the builders refuse: never sendable
        log.warning("outbox: SMS %s cannot be built: %s", row.pk, type(exc).__name__)
        _store(tenant, row.pk, attempt, lambda r: _finish(r, SmsStatus.FAILED, error_code="invalid",
                                                          error_reason="The SMS could not be built for this number."))
        return "failed"
    key = str(row.pk)
    try:
        result = None
        if ambiguous:
            result = gateway.reconcile(sms, idempotency_key=key,
                                       since=(row.created_at - timedelta(minutes=1)))
            # The claim skipped the consent check because the earlier attempt may have gone out.
            # The provider says it did not, so this is a new send: a STOP committed since wins.
            refusal = _refusal(tenant, row) if result is None else ""
            if refusal:
                _store(tenant, row.pk, attempt, lambda r: _finish(r, SmsStatus.CANCELLED, error_code=refusal,
                                                                  error_reason=REASONS.get(refusal, refusal)))
                return "cancelled"
        if result is None:
            result = gateway.send(sms, status_callback=status_callback_url(tenant), idempotency_key=key,
                                  sender=sender_of(tenant))
    except AmbiguousGatewayError as exc:
        known_id = exc.provider_id

        def retry_ambiguous(r):
            r.status, r.lease_until = SmsStatus.QUEUED, None
            r.error_code, r.error_reason = "ambiguous", "The SMS provider did not answer; checking before resending."
            r.next_attempt_at = timezone.now() + backoff(r.attempts)
            if known_id:
                r.provider_id = known_id
            r.save(update_fields=["status", "lease_until", "error_code", "error_reason", "next_attempt_at",
                                  "provider_id", "updated_at"])
        _store(tenant, row.pk, attempt, retry_ambiguous)
        return "ambiguous"
    except PermanentGatewayError as exc:
        code = exc.code
        _store(tenant, row.pk, attempt, lambda r: _permanent_failure(tenant, r, code))
        return "failed"
    except TransientGatewayError as exc:
        code = exc.code
        _store(tenant, row.pk, attempt, lambda r: _transient_failure(tenant, r, code))
        return "retry"
    status = PROVIDER_STATUS.get(result.status, SmsStatus.SENT)
    final_status = status if status in (SmsStatus.DELIVERED,) else SmsStatus.SENT
    _store_sent(row.pk, attempt, final_status, result.provider_id or "")
    return "sent"


def _refusal(tenant, row: OutboundSms) -> str:
    """Why ``row`` may not be sent now ("" if it may)."""
    if row.patient is None:
        return ""
    allowed, reason = can_sms(tenant, row.patient, kind=row.sms_kind)
    return "" if allowed else reason


def _transient_failure(tenant, row: OutboundSms, code: str) -> None:
    if row.attempts >= MAX_ATTEMPTS:
        _finish(row, SmsStatus.FAILED, error_code=code or "transient",
                error_reason=REASONS["attempts"].format(n=row.attempts))
        _audit_failure(tenant, row)
        return
    row.status, row.lease_until = SmsStatus.QUEUED, None
    row.error_code, row.error_reason = (code or "transient")[:20], "The SMS provider was busy; retrying."
    row.next_attempt_at = timezone.now() + backoff(row.attempts)
    row.save(update_fields=["status", "lease_until", "error_code", "error_reason", "next_attempt_at", "updated_at"])


def _permanent_failure(tenant, row: OutboundSms, code: str) -> None:
    _finish(row, SmsStatus.FAILED, error_code=code or "permanent",
            error_reason=REASONS["permanent"].format(code=code or "refused"))
    _mark_number(tenant, row, code)
    _audit_failure(tenant, row)


def _mark_number(tenant, row: OutboundSms, code: str) -> None:
    """A carrier verdict about the number itself stops further SMS to it."""
    patient = row.patient
    if patient is None:
        return
    from patients.models import Patient

    if code == UNSUBSCRIBED_CODE:
        from consent.services import consent_apply_keyword

        consent_apply_keyword(tenant=tenant, patient=patient, text="STOP", evidence=f"carrier {code} on SMS {row.pk}")
    elif code in UNDELIVERABLE_CODES:
        Patient.objects.filter(pk=patient.pk, phone_index=row.to_index).update(
            phone_undeliverable_at=timezone.now(), phone_undeliverable_code=code[:20])


def _audit_failure(tenant, row: OutboundSms) -> None:
    audit_record(tenant=tenant, actor=None, event_type=AuditEventType.SMS_FAILED, target=row,
                 patient_id=row.patient_id,
                 details={"sms_id": str(row.pk), "error_code": row.error_code, "attempts": row.attempts,
                          "notification": row.notification})
    if row.message_id:
        from messaging.models import Thread

        Thread.objects.filter(pk=row.message.thread_id).update(staff_unread=F("staff_unread") + 1)


# --- provider callbacks --------------------------------------------------------------------------------


def sms_status_update(*, tenant, provider_id: str, provider_status: str, error_code: str = "") -> str:
    """Apply a delivery callback. Only moves forward: duplicates and late, out-of-order
    callbacks change nothing. Returns "updated", "unchanged" or "unknown" (no such SMS)."""
    status = PROVIDER_STATUS.get((provider_status or "").lower())
    if not provider_id or status is None:
        return "unknown"
    if status in (SmsStatus.SENT, SmsStatus.DELIVERED):
        return _status_forward(provider_id, status, (error_code or "")[:20])
    with transaction.atomic():
        # The patient loads lazily, only on a failure (``_mark_number``): most callbacks are "delivered".
        row = OutboundSms.objects.select_for_update().filter(provider_id=provider_id).first()
        if row is None:
            return "unknown"
        if row.status in FINAL or status == SmsStatus.SENDING:
            return "unchanged"  # final rows stay final; "queued/sending" adds nothing we know
        if row.status != SmsStatus.SENDING and SMS_STATUS_RANK[status] <= SMS_STATUS_RANK[row.status]:
            return "unchanged"  # a duplicate, or a late callback after a later one
        code = (error_code or "")[:20]
        reason = "The carrier could not deliver this SMS." if status in (SmsStatus.UNDELIVERED, SmsStatus.FAILED) else ""
        _finish(row, status, error_code=code, error_reason=reason, provider_id=provider_id)
        if status in (SmsStatus.UNDELIVERED, SmsStatus.FAILED):
            _mark_number(tenant, row, code)
            _audit_failure(tenant, row)
        return "updated"


def _status_forward(provider_id: str, status: str, code: str) -> str:
    """``sms_status_update`` for "sent" and "delivered" (most callbacks), which need nothing but
    the row moved on: one conditional UPDATE, from exactly the statuses the locked path would move
    on from (not final; "sending", or a lower rank), as ``_finish`` would write it. Only when it
    changes nothing is the row looked for, to tell "unchanged" from "unknown"."""
    now = timezone.now()
    before = [s for s in (*OPEN_SMS_STATUSES, SmsStatus.SENT)
              if s == SmsStatus.SENDING or SMS_STATUS_RANK[status] > SMS_STATUS_RANK[s]]
    updated = OutboundSms.objects.filter(provider_id=provider_id, status__in=before).update(
        status=status, status_at=now, lease_until=None, payload=None,
        sent_at=Coalesce(F("sent_at"), Value(now, output_field=DateTimeField())), error_code=code, error_reason="",
        updated_at=now)
    if updated:
        return "updated"
    return "unchanged" if OutboundSms.objects.filter(provider_id=provider_id).exists() else "unknown"


# --- pacing (the sender's rate, shared by all workers) --------------------------------------------------

PACED = "paced"  # error_code of a row that holds a send slot on its sender's bucket (messaging.pacing)
# Rows one task sends one after the other; more go to other tasks, so the send pool works on them
# in parallel (a batch of 100 sent in a row would take 100 × the gateway's latency).
SEND_CHUNK = 4
# A slot held longer than this past its time is stale (the workers were down, say): the row asks
# for a new one, so rows coming back after an outage never leave in one burst.
PACED_GRACE = timedelta(seconds=5)


@dataclass
class Plan:
    """What a task does with its batch: ``send`` now itself; ``handoff`` now, in other tasks
    (marked: they hold their slot); ``later``: seconds from now → rows holding slots then."""

    send: list = field(default_factory=list)
    handoff: list = field(default_factory=list)
    later: dict[float, list] = field(default_factory=dict)


def pace(tenant, ids: list, *, keep: int = SEND_CHUNK) -> Plan:
    """Give each due row of ``ids`` a send slot on its sender's bucket, in order.

    A row that finds no slot now is not sent and spends no attempt: it keeps its place as a
    reservation (``next_attempt_at`` = its slot, ``error_code`` = "paced") and a wake-up is due
    then; the task never sleeps. A row already holding a due slot needs no other. Rows past the
    bucket's horizon stay due and the sweeper offers them again. Rows reconciling an earlier
    attempt (lease run out, or "ambiguous") go without a slot: their submission was counted
    when first made. Without Redis nothing new is sent: the sweeper offers the rows again.
    """
    from messaging import pacing

    now = timezone.now()
    order = {str(i): n for n, i in enumerate(ids)}
    rows = sorted(OutboundSms.objects.filter(pk__in=ids).filter(
        Q(status__in=[SmsStatus.QUEUED, SmsStatus.WAITING], next_attempt_at__lte=now)
        | Q(status=SmsStatus.SENDING, lease_until__lt=now)).values_list("pk", "status", "error_code",
                                                                        "next_attempt_at"),
        key=lambda r: order.get(str(r[0]), 0))
    rate = pacing.sender_rate(tenant)
    if rate <= 0:
        return _split([r[0] for r in rows], [], keep, now, marked=False)

    def needs_no_slot(status, code, due):
        return status == SmsStatus.SENDING or code == "ambiguous" or (code == PACED and due >= now - PACED_GRACE)

    ready = [pk for pk, status, code, due in rows if needs_no_slot(status, code, due)]
    fresh = [pk for pk, status, code, due in rows if not needs_no_slot(status, code, due)]
    if not fresh:
        return _split(ready, [], keep, now, marked=True)
    try:
        slots = pacing.reserve(pacing.sender_key(tenant), rate=rate, count=len(fresh))
    except Exception as exc:  # noqa: BLE001 - redis down: send nothing new; the rows stay due
        log.warning("outbox: pacing unavailable (%s); %d SMS wait for the sweeper", type(exc).__name__, len(fresh))
        return _split(ready, [], keep, now, marked=True)
    reserved = list(zip(fresh, slots.at, strict=False))  # rows past the horizon got no slot: they stay due
    plan = _split(ready, [pk for pk, at in reserved if at <= slots.now], keep, now, marked=True)
    for pk, at in reserved:
        if at > slots.now:
            plan.later.setdefault(float(math.ceil(at - slots.now)), []).append(pk)
    for wait, group in plan.later.items():
        OutboundSms.objects.filter(pk__in=group, status__in=[SmsStatus.QUEUED, SmsStatus.WAITING]).exclude(
            error_code="ambiguous").update(next_attempt_at=now + timedelta(seconds=wait), error_code=PACED,
                                           updated_at=now)
    return plan


def _split(held: list, fresh_now: list, keep: int, now: datetime, *, marked: bool) -> Plan:
    """The first ``keep`` rows due now are this task's; the rest go to other tasks, each fresh
    one marked as holding its slot so the task that gets it does not reserve another."""
    due = held + fresh_now
    plan = Plan(send=due[:keep], handoff=due[keep:])
    fresh = set(fresh_now)
    give = [pk for pk in plan.handoff if pk in fresh]
    if marked and give:
        OutboundSms.objects.filter(pk__in=give, status__in=[SmsStatus.QUEUED, SmsStatus.WAITING]).exclude(
            error_code="ambiguous").update(error_code=PACED, next_attempt_at=now, updated_at=now)
    return plan


# --- the sweeper ----------------------------------------------------------------------------------------


def due_ids(*, now: datetime | None = None, limit: int = 5000) -> list:
    """Ids of this tenant's rows a worker should try now: due queued/waiting rows, and rows
    stuck in "sending" past their lease (their worker died)."""
    now = now or timezone.now()
    rows = OutboundSms.objects.filter(
        Q(status__in=[SmsStatus.QUEUED, SmsStatus.WAITING], next_attempt_at__lte=now)
        | Q(status=SmsStatus.SENDING, lease_until__lt=now)
    ).order_by("next_attempt_at").values_list("pk", flat=True)[:limit]
    return list(rows)


def sweep_tenant(tenant, *, now: datetime | None = None) -> int:
    """Hand every due row of this tenant to the workers, in batches; returns how many."""
    ids = due_ids(now=now)
    from messaging.tasks import outbox_send

    for start in range(0, len(ids), BATCH_SIZE):
        batch = [str(i) for i in ids[start:start + BATCH_SIZE]]
        outbox_send.apply_async(kwargs={"tenant_id": tenant.pk, "sms_ids": batch}, ignore_result=True)
    return len(ids)
