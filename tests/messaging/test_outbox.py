"""The outbox state machine, driven directly: sms_enqueue, sms_send_one with a scripted
FaultyGateway, provider callbacks, quiet hours, the frequency cap, the sweeper and consent.

Rows are created without running on-commit callbacks (the ``db`` fixture never runs them
unless asked), so each test decides exactly when and with which gateway an attempt happens.
Time is frozen with ``time_machine`` and moved forward to make rows due.
"""

from __future__ import annotations

import datetime
import uuid
from datetime import timedelta
from unittest import mock
from zoneinfo import ZoneInfo

import pytest
from django.db import transaction
from django.utils import timezone

from accounts.tenancy import tenant_scope
from audit.events import AuditEventType
from audit.models import AuditEvent
from consent.selectors import can_sms, consent_state
from consent.services import consent_revoke
from integrations.sms.faulty import FaultyGateway
from integrations.sms.gateway import PermanentGatewayError
from messaging import links, outbox, services
from messaging.models import OutboundSms, SecureLink, SmsStatus, Thread
from messaging.outbox import (
    MAX_ATTEMPTS,
    due_ids,
    sms_enqueue,
    sms_send_one,
    sms_status_update,
    sweep_tenant,
)
from patients.services import patient_update
from tests.factories import make_textable_patient

BODY = "Your potassium result is back; please call us."


def _freeze(time_machine) -> datetime.datetime:
    now = timezone.now()
    time_machine.move_to(now, tick=False)
    return timezone.now()


def _notice(tenant, actor, patient, body: str = BODY) -> OutboundSms:
    """A link notice queued by message_send; its on-commit publish never runs here."""
    message = services.message_send(tenant=tenant, actor=actor, patient=patient, body=body)
    return OutboundSms.objects.get(message=message)


def _reload(row: OutboundSms) -> OutboundSms:
    return OutboundSms.objects.get(pk=row.pk)


def _night_zone() -> str:
    """A fixed-offset zone where it is now between 00:00 and 01:00 (12 hours off the
    ``daytime_zone`` of tests.factories): every non-urgent SMS is held until 08:00 there."""
    hour = timezone.now().astimezone(datetime.UTC).hour
    offset = (0 - hour + 12) % 24 - 12
    return "UTC" if offset == 0 else f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"


def _backoff_bounds(attempts: int) -> tuple[timedelta, timedelta]:
    ceiling = min(outbox.BACKOFF_MAX_SECONDS, outbox.BACKOFF_BASE_SECONDS * 2 ** (attempts - 1))
    return timedelta(seconds=ceiling / 2), timedelta(seconds=ceiling)


class CrashAfterSubmit(FaultyGateway):
    """The provider accepts the SMS, then the worker dies before it can store the answer."""

    def send(self, sms, *, status_callback, idempotency_key, sender=None):
        super().send(sms, status_callback=status_callback, idempotency_key=idempotency_key)
        raise RuntimeError("worker killed after the provider accepted the SMS")


class CarrierVerdict(FaultyGateway):
    """Refuses every send with one carrier error code (FaultyGateway only knows 21211)."""

    def __init__(self, code: str) -> None:
        super().__init__()
        self.code = code

    def send(self, sms, *, status_callback, idempotency_key, sender=None):
        self.attempts[idempotency_key] += 1
        raise PermanentGatewayError("refused", code=self.code)


# --- enqueue and the caller's transaction -------------------------------------------------------


def test_enqueue_writes_a_queued_row_and_publishes_only_after_commit(in_a, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        row = sms_enqueue(tenant=in_a, to="+12025550188", notification="keyword_reply", sms_kind="keyword_reply",
                          payload="help")
        assert len(callbacks) == 0  # nothing is published inside the transaction
    assert len(callbacks) == 1
    row = _reload(row)
    assert row.status == SmsStatus.QUEUED
    assert row.attempts == 0
    assert row.next_attempt_at <= timezone.now()
    assert row.payload == "help"


def test_enqueue_rolls_back_with_the_callers_transaction(in_a, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks, pytest.raises(RuntimeError):
        with transaction.atomic():
            row = sms_enqueue(tenant=in_a, to="+12025550188", notification="keyword_reply",
                              sms_kind="keyword_reply", payload="help")
            assert OutboundSms.objects.filter(pk=row.pk).exists()
            raise RuntimeError("the caller fails after enqueueing")
    assert not OutboundSms.objects.exists()
    assert callbacks == []  # no worker is woken for a row that never existed


def test_enqueue_refuses_an_unknown_notification(in_a):
    with pytest.raises(ValueError):
        sms_enqueue(tenant=in_a, to="+12025550188", notification="free_text", sms_kind="keyword_reply", payload="x")
    assert not OutboundSms.objects.exists()


def test_celery_gets_only_the_tenant_id_and_row_ids(tenant_a, alice, patient, in_a,
                                                     django_capture_on_commit_callbacks):
    from messaging.tasks import outbox_send

    with mock.patch.object(outbox_send, "apply_async") as publish, \
            django_capture_on_commit_callbacks(execute=True):
        message = services.message_send(tenant=tenant_a, actor=alice, patient=patient, body=BODY)
    row = OutboundSms.objects.get(message=message)
    publish.assert_called_once()
    kwargs = publish.call_args.kwargs["kwargs"]
    assert set(kwargs) == {"tenant_id", "sms_ids"}
    assert isinstance(kwargs["tenant_id"], int) and kwargs["tenant_id"] == tenant_a.pk
    assert kwargs["sms_ids"] == [str(row.pk)]
    assert all(isinstance(i, str) and uuid.UUID(i) for i in kwargs["sms_ids"])
    everything = repr(publish.call_args)
    for phi in ("+12025550171", "2025550171", "Ada", "Quill", "potassium", "1984"):
        assert phi not in everything
    assert row.status == SmsStatus.QUEUED  # the mocked broker sent nothing


# --- transient failures ----------------------------------------------------------------------------


@pytest.mark.parametrize("outcome,code", [("429", "429"), ("500", "500"), ("timeout", "connect")])
def test_transient_failure_requeues_with_backoff(tenant_a, alice, patient, in_a, time_machine, outcome, code):
    now = _freeze(time_machine)
    row = _notice(tenant_a, alice, patient)
    gateway = FaultyGateway([outcome])
    assert sms_send_one(tenant=tenant_a, sms_id=row.pk, gateway=gateway) == "retry"
    row = _reload(row)
    assert row.status == SmsStatus.QUEUED
    assert row.attempts == 1
    assert row.error_code == code
    assert row.lease_until is None
    assert row.payload  # still needed for the next attempt
    low, high = _backoff_bounds(1)
    assert now + low <= row.next_attempt_at <= now + high
    assert gateway.submissions[str(row.pk)] == 0


def test_a_key_outage_requeues_without_spending_attempts(tenant_a, alice, patient, in_a, time_machine,
                                                          monkeypatch):
    from messaging import outbox
    from phi.errors import KeyUnavailable

    _freeze(time_machine)
    row = _notice(tenant_a, alice, patient)
    gateway = FaultyGateway([])

    def keys_down(tenant, r):
        raise KeyUnavailable("key service down")

    with monkeypatch.context() as patched:
        patched.setattr(outbox, "build_notification", keys_down)
        for _ in range(outbox.MAX_ATTEMPTS + 2):  # a long outage: more claims than attempts allowed
            assert sms_send_one(tenant=tenant_a, sms_id=row.pk, gateway=gateway) == "keys_unavailable"
            row = _reload(row)
            assert (row.status, row.attempts, row.error_code) == (SmsStatus.QUEUED, 0, "keys_unavailable")
            time_machine.move_to(row.next_attempt_at, tick=False)
    assert gateway.attempts[str(row.pk)] == 0
    assert sms_send_one(tenant=tenant_a, sms_id=row.pk, gateway=gateway) == "sent"
    row = _reload(row)
    assert row.status == SmsStatus.SENT and row.attempts == 1 and gateway.submissions[str(row.pk)] == 1


def test_a_row_is_not_tried_before_its_next_attempt(tenant_a, alice, patient, in_a, time_machine):
    _freeze(time_machine)
    row = _notice(tenant_a, alice, patient)
    gateway = FaultyGateway(["500"])
    sms_send_one(tenant=tenant_a, sms_id=row.pk, gateway=gateway)
    due_at = _reload(row).next_attempt_at
    time_machine.move_to(due_at - timedelta(seconds=1), tick=False)
    assert sms_send_one(tenant=tenant_a, sms_id=row.pk, gateway=gateway) == "skipped"
    assert _reload(row).attempts == 1
    assert gateway.attempts[str(row.pk)] == 1
    time_machine.move_to(due_at, tick=False)
    assert sms_send_one(tenant=tenant_a, sms_id=row.pk, gateway=gateway) == "sent"
    row = _reload(row)
    assert row.status == SmsStatus.SENT and row.attempts == 2 and row.error_code == ""


def test_transient_failures_stop_after_max_attempts(tenant_a, alice, patient, in_a, time_machine):
    now = _freeze(time_machine)
    row = _notice(tenant_a, alice, patient)
    gateway = FaultyGateway(default="500")
    for attempt in range(1, MAX_ATTEMPTS):
        sms_send_one(tenant=tenant_a, sms_id=row.pk, gateway=gateway)
        current = _reload(row)
        assert current.status == SmsStatus.QUEUED and current.attempts == attempt
        low, high = _backoff_bounds(attempt)
        assert now + low <= current.next_attempt_at <= now + high
        now = current.next_attempt_at
        time_machine.move_to(now, tick=False)
    sms_send_one(tenant=tenant_a, sms_id=row.pk, gateway=gateway)
    row = _reload(row)
    assert row.status == SmsStatus.FAILED
    assert row.attempts == MAX_ATTEMPTS
    assert row.error_reason == f"The SMS provider kept failing; we stopped after {MAX_ATTEMPTS} attempts."
    assert row.payload is None
    event = AuditEvent.objects.get(event_type=AuditEventType.SMS_FAILED)
    assert event.object_id == str(row.pk) and event.patient_id == patient.pk
    assert event.details["attempts"] == MAX_ATTEMPTS
    assert Thread.objects.get(pk=row.message.thread_id).staff_unread == 1  # staff are told
    # Nothing more happens to a failed row.
    assert sms_send_one(tenant=tenant_a, sms_id=row.pk, gateway=gateway) == "skipped"
    assert gateway.attempts[str(row.pk)] == MAX_ATTEMPTS


# --- permanent failures ------------------------------------------------------------------------------


def test_invalid_number_fails_at_once_and_marks_the_number(tenant_a, alice, patient, in_a):
    row = _notice(tenant_a, alice, patient)
    assert sms_send_one(tenant=tenant_a, sms_id=row.pk, gateway=FaultyGateway(["permanent"])) == "failed"
    row = _reload(row)
    assert row.status == SmsStatus.FAILED
    assert row.attempts == 1
    assert row.error_code == "21211"
    assert row.error_reason == "The SMS provider refused this SMS (21211)."
    assert row.payload is None
    assert AuditEvent.objects.filter(event_type=AuditEventType.SMS_FAILED, object_id=str(row.pk)).count() == 1
    patient.refresh_from_db()
    assert patient.phone_undeliverable_at is not None
    assert patient.phone_undeliverable_code == "21211"
    assert can_sms(tenant_a, patient, kind="staff_message") == (False, "number_undeliverable")
    # A new number clears the verdict (and then needs consent of its own).
    patient = patient_update(tenant=tenant_a, actor=alice, patient=patient, phone="+12025550172")
    assert patient.phone_undeliverable_at is None
    assert patient.phone_undeliverable_code == ""
    assert can_sms(tenant_a, patient, kind="staff_message") == (False, "number_changed")


def test_carrier_unsubscribed_code_revokes_consent_through_the_ledger(tenant_a, alice, patient, in_a):
    from consent.models import ConsentEvent

    row = _notice(tenant_a, alice, patient)
    assert sms_send_one(tenant=tenant_a, sms_id=row.pk, gateway=CarrierVerdict("21610")) == "failed"
    row = _reload(row)
    assert row.status == SmsStatus.FAILED and row.error_code == "21610"
    assert consent_state(tenant_a, patient) == "revoked"
    revoke = ConsentEvent.objects.filter(patient=patient, action="revoke").get()
    assert revoke.method == "sms_keyword"
    assert revoke.evidence == f"carrier 21610 on SMS {row.pk}"
    patient.refresh_from_db()
    assert patient.phone_undeliverable_at is None  # opted out, not a bad number


# --- ambiguous sends, crashes and leases ---------------------------------------------------------------


def test_ambiguous_send_is_reconciled_not_resent(tenant_a, alice, patient, in_a, time_machine):
    now = _freeze(time_machine)
    row = _notice(tenant_a, alice, patient)
    gateway = FaultyGateway(["ambiguous"])
    assert sms_send_one(tenant=tenant_a, sms_id=row.pk, gateway=gateway) == "ambiguous"
    row = _reload(row)
    assert row.status == SmsStatus.QUEUED and row.error_code == "ambiguous"
    low, high = _backoff_bounds(1)
    assert now + low <= row.next_attempt_at <= now + high
    time_machine.move_to(row.next_attempt_at, tick=False)
    assert sms_send_one(tenant=tenant_a, sms_id=row.pk, gateway=gateway) == "sent"
    row = _reload(row)
    key = str(row.pk)
    assert row.status == SmsStatus.SENT
    assert row.provider_id == gateway.sent[0][0]
    assert gateway.submissions[key] == 1  # delivered once
    assert gateway.attempts[key] == 1  # and send() was not called a second time


def test_expired_lease_is_reclaimed_and_reconciled(tenant_a, alice, patient, in_a, time_machine):
    _freeze(time_machine)
    row = _notice(tenant_a, alice, patient)
    gateway = CrashAfterSubmit()
    with pytest.raises(RuntimeError):
        sms_send_one(tenant=tenant_a, sms_id=row.pk, gateway=gateway)
    row = _reload(row)
    assert row.status == SmsStatus.SENDING and row.attempts == 1
    assert row.lease_until > timezone.now()
    # The lease is live: another worker must leave the row alone.
    assert sms_send_one(tenant=tenant_a, sms_id=row.pk, gateway=gateway) == "skipped"
    assert row.pk not in due_ids()
    time_machine.move_to(row.lease_until + timedelta(seconds=1), tick=False)
    assert row.pk in due_ids()
    assert sms_send_one(tenant=tenant_a, sms_id=row.pk, gateway=gateway) == "sent"
    row = _reload(row)
    assert row.status == SmsStatus.SENT and row.attempts == 2
    assert row.provider_id == gateway.sent[0][0]
    assert gateway.submissions[str(row.pk)] == 1


def test_expired_lease_with_nothing_at_the_provider_is_sent_once(tenant_a, alice, patient, in_a, time_machine):
    now = _freeze(time_machine)
    row = _notice(tenant_a, alice, patient)
    # A worker claimed it and died before calling the provider.
    OutboundSms.objects.filter(pk=row.pk).update(status=SmsStatus.SENDING, attempts=1,
                                                 lease_until=now - timedelta(seconds=1))
    gateway = FaultyGateway()
    assert sms_send_one(tenant=tenant_a, sms_id=row.pk, gateway=gateway) == "sent"
    assert gateway.submissions[str(row.pk)] == 1
    assert _reload(row).status == SmsStatus.SENT


def test_a_stale_attempt_cannot_overwrite_a_newer_one(tenant_a, alice, patient, in_a, time_machine):
    _freeze(time_machine)
    row = _notice(tenant_a, alice, patient)

    class SlowGateway(FaultyGateway):
        """Attempt 1 hangs past its lease; meanwhile attempt 2 claims the row."""

        def send(self, sms, *, status_callback, idempotency_key, sender=None):
            result = super().send(sms, status_callback=status_callback, idempotency_key=idempotency_key)
            time_machine.move_to(OutboundSms.objects.get(pk=row.pk).lease_until + timedelta(seconds=1), tick=False)
            with transaction.atomic():
                claimed, ambiguous = outbox._claim(tenant_a, row.pk)
            assert claimed is not None and claimed.attempts == 2 and ambiguous
            return result

    gateway = SlowGateway()
    sms_send_one(tenant=tenant_a, sms_id=row.pk, gateway=gateway)
    current = _reload(row)
    assert current.status == SmsStatus.SENDING  # attempt 2's claim stands
    assert current.attempts == 2
    assert current.provider_id == ""  # attempt 1's late answer was not stored
    # Attempt 2's lease runs out too; the next attempt finds attempt 1's SMS instead of resending.
    time_machine.move_to(current.lease_until + timedelta(seconds=1), tick=False)
    assert sms_send_one(tenant=tenant_a, sms_id=row.pk, gateway=gateway) == "sent"
    current = _reload(row)
    assert current.status == SmsStatus.SENT and current.provider_id == gateway.sent[0][0]
    assert gateway.submissions[str(row.pk)] == 1


def test_store_applies_only_for_the_attempt_holding_the_row(tenant_a, alice, patient, in_a):
    row = _notice(tenant_a, alice, patient)
    with transaction.atomic():
        outbox._claim(tenant_a, row.pk)
    applied = []
    assert outbox._store(tenant_a, row.pk, 0, applied.append) is False
    assert outbox._store(tenant_a, row.pk, 2, applied.append) is False
    assert applied == []
    assert outbox._store(tenant_a, row.pk, 1, applied.append) is True
    assert [r.pk for r in applied] == [row.pk]


def test_the_sent_result_is_stored_only_for_the_attempt_holding_the_row(tenant_a, alice, patient, in_a):
    row = _notice(tenant_a, alice, patient)
    with transaction.atomic():
        outbox._claim(tenant_a, row.pk)
    assert outbox._store_sent(row.pk, 0, SmsStatus.SENT, "SM-old") is False
    assert outbox._store_sent(row.pk, 2, SmsStatus.SENT, "SM-new") is False
    assert _reload(row).status == SmsStatus.SENDING and _reload(row).provider_id == ""
    assert outbox._store_sent(row.pk, 1, SmsStatus.SENT, "SM-1") is True
    stored = _reload(row)
    assert (stored.status, stored.provider_id, stored.payload, stored.lease_until) == (SmsStatus.SENT, "SM-1", None, None)
    assert stored.sent_at == stored.status_at and stored.error_code == ""
    assert outbox._store_sent(row.pk, 1, SmsStatus.SENT, "SM-2") is False  # already stored: not sending any more


# Claim, in one transaction (savepoint, release here): the row locked with its patient, its link
# and whether older live links need superseding (1), consent (1; the signed BAA is remembered
# per process), the attempt recorded (1); the gateway; the result, one conditional UPDATE (1).
SEND_BUDGET = 6


def test_sending_a_link_notice_is_a_fixed_handful_of_queries(tenant_a, alice, patient, in_a):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from consent import selectors

    row = _notice(tenant_a, alice, patient)
    selectors._BAA_SIGNED.add((connection.settings_dict["NAME"], tenant_a.pk))  # a BAA signed long ago
    with CaptureQueriesContext(connection) as queries:
        assert sms_send_one(tenant=tenant_a, sms_id=row.pk, gateway=FaultyGateway()) == "sent"
    assert len(queries) <= SEND_BUDGET, "\n".join(q["sql"][:120] for q in queries.captured_queries)
    assert _reload(row).status == SmsStatus.SENT


def test_the_claim_supersedes_older_live_links_of_the_thread_when_there_are_some(tenant_a, alice, patient, in_a,
                                                                                   time_machine):
    _freeze(time_machine)
    first = _notice(tenant_a, alice, patient)
    assert sms_send_one(tenant=tenant_a, sms_id=first.pk, gateway=FaultyGateway()) == "sent"
    thread = Thread.objects.get()
    older, _ = links.link_create(tenant=tenant_a, thread=thread, actor=alice, supersede=False)
    second = services.link_resend(tenant=tenant_a, actor=alice, thread=thread)
    assert SecureLink.objects.filter(thread=thread, revoked_at__isnull=True).count() == 3
    time_machine.move_to(_reload(second).next_attempt_at + timedelta(seconds=1), tick=False)  # past the cap
    assert sms_send_one(tenant=tenant_a, sms_id=second.pk, gateway=FaultyGateway()) == "sent"
    assert list(SecureLink.objects.filter(thread=thread, revoked_at__isnull=True)) == [second.link]
    assert SecureLink.objects.get(pk=older.pk).revoked_reason == "superseded"


# --- provider status callbacks --------------------------------------------------------------------------


def _sent_row(tenant, actor, patient) -> OutboundSms:
    row = _notice(tenant, actor, patient)
    assert sms_send_one(tenant=tenant, sms_id=row.pk, gateway=FaultyGateway()) == "sent"
    return _reload(row)


def test_status_callbacks_only_move_forward(tenant_a, alice, patient, in_a):
    row = _sent_row(tenant_a, alice, patient)
    assert row.status == SmsStatus.SENT and row.provider_id
    pid = row.provider_id
    assert sms_status_update(tenant=tenant_a, provider_id=pid, provider_status="sent") == "unchanged"
    assert sms_status_update(tenant=tenant_a, provider_id=pid, provider_status="delivered") == "updated"
    assert _reload(row).status == SmsStatus.DELIVERED
    assert sms_status_update(tenant=tenant_a, provider_id=pid, provider_status="delivered") == "unchanged"
    assert sms_status_update(tenant=tenant_a, provider_id=pid, provider_status="sent") == "unchanged"
    assert sms_status_update(tenant=tenant_a, provider_id=pid, provider_status="undelivered") == "unchanged"
    assert _reload(row).status == SmsStatus.DELIVERED
    assert sms_status_update(tenant=tenant_a, provider_id="SMdoesnotexist", provider_status="delivered") == "unknown"
    assert sms_status_update(tenant=tenant_a, provider_id=pid, provider_status="bogus") == "unknown"


def test_a_delivered_callback_before_the_workers_result_wins_and_is_written_in_full(tenant_a, alice, patient, in_a):
    row = _notice(tenant_a, alice, patient)
    with transaction.atomic():
        claimed, _ = outbox._claim(tenant_a, row.pk)
    OutboundSms.objects.filter(pk=row.pk).update(provider_id="SM" + "a" * 32)  # the gateway answered, not yet stored
    assert sms_status_update(tenant=tenant_a, provider_id="SM" + "a" * 32, provider_status="delivered") == "updated"
    stored = _reload(row)
    assert (stored.status, stored.payload, stored.lease_until, stored.error_code) == (SmsStatus.DELIVERED, None, None, "")
    assert stored.sent_at == stored.status_at
    assert outbox._store_sent(row.pk, claimed.attempts, SmsStatus.SENT, "SM" + "a" * 32) is False  # the late result
    assert _reload(row).status == SmsStatus.DELIVERED


def test_undelivered_callback_fails_the_row_and_marks_the_number(tenant_a, alice, patient, in_a):
    row = _sent_row(tenant_a, alice, patient)
    assert sms_status_update(tenant=tenant_a, provider_id=row.provider_id, provider_status="undelivered",
                             error_code="30006") == "updated"
    row = _reload(row)
    assert row.status == SmsStatus.UNDELIVERED and row.error_code == "30006"
    assert AuditEvent.objects.filter(event_type=AuditEventType.SMS_FAILED, object_id=str(row.pk)).exists()
    patient.refresh_from_db()
    assert patient.phone_undeliverable_code == "30006"
    # A late "delivered" cannot resurrect it.
    assert sms_status_update(tenant=tenant_a, provider_id=row.provider_id, provider_status="delivered") == "unchanged"


def test_another_clinics_callback_does_not_find_the_row(tenant_a, tenant_b, alice, patient, in_a):
    row = _sent_row(tenant_a, alice, patient)
    with tenant_scope(tenant_b):
        assert sms_status_update(tenant=tenant_b, provider_id=row.provider_id, provider_status="delivered") == "unknown"
    assert _reload(row).status == SmsStatus.SENT


def test_payload_is_erased_when_the_row_is_final(tenant_a, alice, patient, in_a):
    sent = _notice(tenant_a, alice, patient)
    assert _reload(sent).payload  # the token, encrypted, until it leaves
    sms_send_one(tenant=tenant_a, sms_id=sent.pk, gateway=FaultyGateway())
    assert _reload(sent).status == SmsStatus.SENT and _reload(sent).payload is None
    other = make_textable_patient(tenant=tenant_a, owner=alice, phone="+12025550174")
    failed = _notice(tenant_a, alice, other)
    sms_send_one(tenant=tenant_a, sms_id=failed.pk, gateway=FaultyGateway(["permanent"]))
    assert _reload(failed).status == SmsStatus.FAILED and _reload(failed).payload is None
    third = make_textable_patient(tenant=tenant_a, owner=alice, phone="+12025550175")
    cancelled = _notice(tenant_a, alice, third)
    consent_revoke(tenant=tenant_a, actor=alice, patient=third, method="verbal", evidence="Asked at the desk")
    assert _reload(cancelled).status == SmsStatus.CANCELLED and _reload(cancelled).payload is None


# --- quiet hours and the frequency cap -------------------------------------------------------------------


def test_quiet_hours_hold_the_notice_until_eight_local(tenant_a, alice, in_a, time_machine):
    _freeze(time_machine)
    zone = _night_zone()
    sleeper = make_textable_patient(tenant=tenant_a, owner=alice, timezone=zone, phone="+12025550176")
    row = _notice(tenant_a, alice, sleeper)
    local = timezone.now().astimezone(ZoneInfo(zone))
    assert local.hour == 0
    eight = local.replace(hour=8, minute=0, second=0, microsecond=0)
    assert row.status == SmsStatus.WAITING
    assert row.next_attempt_at == eight
    gateway = FaultyGateway()
    assert sms_send_one(tenant=tenant_a, sms_id=row.pk, gateway=gateway) == "skipped"
    assert row.pk not in due_ids()
    time_machine.move_to(eight - timedelta(minutes=1), tick=False)
    assert sms_send_one(tenant=tenant_a, sms_id=row.pk, gateway=gateway) == "skipped"
    time_machine.move_to(eight, tick=False)
    assert row.pk in due_ids()
    assert sms_send_one(tenant=tenant_a, sms_id=row.pk, gateway=gateway) == "sent"
    assert gateway.submissions[str(row.pk)] == 1


def test_claim_holds_a_due_row_that_reaches_quiet_hours(tenant_a, alice, in_a, time_machine):
    _freeze(time_machine)
    zone = _night_zone()
    sleeper = make_textable_patient(tenant=tenant_a, owner=alice, timezone=zone, phone="+12025550177")
    row = _notice(tenant_a, alice, sleeper)
    OutboundSms.objects.filter(pk=row.pk).update(status=SmsStatus.QUEUED, next_attempt_at=timezone.now())
    gateway = FaultyGateway()
    assert sms_send_one(tenant=tenant_a, sms_id=row.pk, gateway=gateway) == "skipped"
    row = _reload(row)
    assert row.status == SmsStatus.WAITING and row.next_attempt_at.astimezone(ZoneInfo(zone)).hour == 8
    assert gateway.attempts[str(row.pk)] == 0


def test_second_automated_message_within_a_day_waits_for_the_cap(tenant_a, alice, patient, in_a, time_machine):
    _freeze(time_machine)
    first = _sent_row(tenant_a, alice, patient)
    thread = first.message.thread
    second_message = services.message_send(tenant=tenant_a, actor=alice, thread=thread, body="One more thing.")
    second = OutboundSms.objects.get(message=second_message)
    assert second.sms_kind == "staff_message"
    assert second.status == SmsStatus.WAITING
    assert second.next_attempt_at == first.sent_at + timedelta(days=1)
    # A third message before the slot rides on the same waiting notice: still one SMS.
    third_message = services.message_send(tenant=tenant_a, actor=alice, thread=thread, body="And another.")
    assert OutboundSms.objects.filter(status=SmsStatus.WAITING).count() == 1
    assert _reload(second).message_id == third_message.pk
    gateway = FaultyGateway()
    time_machine.move_to(second.next_attempt_at - timedelta(minutes=1), tick=False)
    assert sms_send_one(tenant=tenant_a, sms_id=second.pk, gateway=gateway) == "skipped"
    time_machine.move_to(second.next_attempt_at, tick=False)
    assert sms_send_one(tenant=tenant_a, sms_id=second.pk, gateway=gateway) == "sent"


def test_reply_within_a_day_of_the_patients_message_is_not_capped(tenant_a, alice, patient, in_a, time_machine):
    _freeze(time_machine)
    first = _sent_row(tenant_a, alice, patient)
    thread = first.message.thread
    session, _key = links.patient_session_start(tenant=tenant_a, link=first.link)
    services.patient_reply(tenant=tenant_a, session=session, body="Should I fast before the test?")
    time_machine.move_to(timezone.now() + timedelta(hours=2), tick=False)
    reply = services.message_send(tenant=tenant_a, actor=alice, thread=thread, body="Yes, from midnight.")
    row = OutboundSms.objects.get(message=reply)
    assert row.sms_kind == "staff_reply"
    assert row.status == SmsStatus.QUEUED
    assert row.next_attempt_at <= timezone.now()
    assert sms_send_one(tenant=tenant_a, sms_id=row.pk, gateway=FaultyGateway()) == "sent"


# --- the sweeper ------------------------------------------------------------------------------------------


def _keyword_row(tenant, to="+12025550188") -> OutboundSms:
    return sms_enqueue(tenant=tenant, to=to, notification="keyword_reply", sms_kind="keyword_reply", payload="help")


def test_due_ids_pick_due_rows_and_expired_leases_only(in_a, time_machine):
    now = _freeze(time_machine)
    rows = {name: _keyword_row(in_a) for name in (
        "queued_due", "waiting_due", "sending_expired", "queued_later", "waiting_later", "sending_live", "sent",
        "cancelled")}
    later, earlier = now + timedelta(minutes=5), now - timedelta(minutes=5)
    changes = {
        "waiting_due": {"status": SmsStatus.WAITING, "next_attempt_at": earlier},
        "sending_expired": {"status": SmsStatus.SENDING, "lease_until": earlier},
        "queued_later": {"next_attempt_at": later},
        "waiting_later": {"status": SmsStatus.WAITING, "next_attempt_at": later},
        "sending_live": {"status": SmsStatus.SENDING, "lease_until": later},
        "sent": {"status": SmsStatus.SENT},
        "cancelled": {"status": SmsStatus.CANCELLED},
    }
    for name, values in changes.items():
        OutboundSms.objects.filter(pk=rows[name].pk).update(**values)
    expected = {rows[n].pk for n in ("queued_due", "waiting_due", "sending_expired")}
    assert set(due_ids()) == expected
    with mock.patch("messaging.tasks.outbox_send.apply_async") as publish:
        assert sweep_tenant(in_a) == 3
    [call] = publish.call_args_list
    assert call.kwargs["kwargs"]["tenant_id"] == in_a.pk
    assert sorted(call.kwargs["kwargs"]["sms_ids"]) == sorted(str(pk) for pk in expected)
    # Later, the future rows fall due too.
    time_machine.move_to(later, tick=False)
    assert {rows["queued_later"].pk, rows["waiting_later"].pk} <= set(due_ids())
    assert rows["sending_live"].pk not in due_ids()


def test_sweep_hands_out_batches(in_a, monkeypatch):
    for _ in range(5):
        _keyword_row(in_a)
    monkeypatch.setattr(outbox, "BATCH_SIZE", 2)
    with mock.patch("messaging.tasks.outbox_send.apply_async") as publish:
        assert sweep_tenant(in_a) == 5
    assert [len(c.kwargs["kwargs"]["sms_ids"]) for c in publish.call_args_list] == [2, 2, 1]


def test_other_clinics_rows_are_invisible(tenant_a, tenant_b, in_a):
    mine = _keyword_row(tenant_a)
    with tenant_scope(tenant_b):
        theirs = _keyword_row(tenant_b, to="+12025550189")
        assert due_ids() == [theirs.pk]
    assert due_ids() == [mine.pk]
    gateway = FaultyGateway()
    assert sms_send_one(tenant=tenant_a, sms_id=theirs.pk, gateway=gateway) == "skipped"
    assert gateway.attempts == {}
    with tenant_scope(tenant_b):
        assert OutboundSms.objects.get(pk=theirs.pk).status == SmsStatus.QUEUED


# --- consent and links at claim time -------------------------------------------------------------------------


def test_revoke_cancels_queued_and_waiting_rows_in_its_transaction(tenant_a, alice, patient, in_a):
    queued = _notice(tenant_a, alice, patient)
    assert queued.status == SmsStatus.QUEUED
    # A reminder in its own thread: the cap (one automated notice a day) holds it.
    waiting = OutboundSms.objects.get(message=services.message_send(
        tenant=tenant_a, actor=alice, patient=patient, body="See you tomorrow.", kind="reminder"))
    assert waiting.status == SmsStatus.WAITING
    exempt = sms_enqueue(tenant=tenant_a, to=patient.phone, notification="keyword_reply", sms_kind="keyword_reply",
                         payload="help", patient=patient)
    with pytest.raises(RuntimeError), transaction.atomic():
        consent_revoke(tenant=tenant_a, actor=alice, patient=patient, method="verbal", evidence="Phoned in")
        assert _reload(queued).status == SmsStatus.CANCELLED
        raise RuntimeError("the revoke's transaction rolls back")
    assert _reload(queued).status == SmsStatus.QUEUED  # cancelled with the revoke, restored with it
    consent_revoke(tenant=tenant_a, actor=alice, patient=patient, method="verbal", evidence="Phoned in")
    for row in (queued, waiting):
        row = _reload(row)
        assert row.status == SmsStatus.CANCELLED
        assert row.error_code == "revoked" and row.error_reason == "The patient opted out of SMS."
        assert row.payload is None
    assert _reload(exempt).status == SmsStatus.QUEUED  # a keyword reply needs no consent


def test_claim_refuses_a_row_whose_patient_revoked_after_enqueue(tenant_a, alice, patient, in_a, monkeypatch):
    import consent.services

    row = _notice(tenant_a, alice, patient)
    # The courtesy cancel is off: the claim's own check must stop the send.
    monkeypatch.setattr(consent.services, "consent_revoked_hook", lambda **kwargs: 0)
    consent_revoke(tenant=tenant_a, actor=alice, patient=patient, method="verbal", evidence="Phoned in")
    assert _reload(row).status == SmsStatus.QUEUED
    gateway = FaultyGateway()
    assert sms_send_one(tenant=tenant_a, sms_id=row.pk, gateway=gateway) == "skipped"
    row = _reload(row)
    assert row.status == SmsStatus.CANCELLED and row.error_code == "revoked"
    assert row.payload is None
    assert gateway.attempts == {} and gateway.submissions == {}


def test_claim_refuses_a_row_whose_number_changed(tenant_a, alice, patient, in_a):
    row = _notice(tenant_a, alice, patient)
    patient_update(tenant=tenant_a, actor=alice, patient=patient, phone="+12025550179")
    gateway = FaultyGateway()
    assert sms_send_one(tenant=tenant_a, sms_id=row.pk, gateway=gateway) == "skipped"
    row = _reload(row)
    assert row.status == SmsStatus.CANCELLED and row.error_code == "number_changed"
    assert gateway.submissions == {}


def test_revoke_during_an_interrupted_attempt_stops_the_resend(tenant_a, alice, patient, in_a, time_machine):
    """A worker claimed the row and died before calling the provider; the patient then texted
    STOP. The next attempt finds nothing at the provider and must not send."""
    now = _freeze(time_machine)
    row = _notice(tenant_a, alice, patient)
    with transaction.atomic():
        outbox._claim(tenant_a, row.pk)
    consent_revoke(tenant=tenant_a, actor=alice, patient=patient, method="verbal", evidence="Phoned in")
    assert _reload(row).status == SmsStatus.SENDING  # a row being sent cannot be recalled
    time_machine.move_to(now + timedelta(seconds=outbox.lease_seconds() + 1), tick=False)
    gateway = FaultyGateway()
    assert sms_send_one(tenant=tenant_a, sms_id=row.pk, gateway=gateway) == "cancelled"
    row = _reload(row)
    assert gateway.submissions == {}
    assert row.payload is None
    assert row.status == SmsStatus.CANCELLED and row.error_code == "revoked"


def test_revoke_after_an_ambiguous_send_still_records_the_sms_that_went(tenant_a, alice, patient, in_a,
                                                                          time_machine):
    _freeze(time_machine)
    row = _notice(tenant_a, alice, patient)
    gateway = CrashAfterSubmit()
    with pytest.raises(RuntimeError):
        sms_send_one(tenant=tenant_a, sms_id=row.pk, gateway=gateway)
    consent_revoke(tenant=tenant_a, actor=alice, patient=patient, method="verbal", evidence="Phoned in")
    time_machine.move_to(_reload(row).lease_until + timedelta(seconds=1), tick=False)
    assert sms_send_one(tenant=tenant_a, sms_id=row.pk, gateway=gateway) == "sent"
    row = _reload(row)
    assert row.status == SmsStatus.SENT and row.provider_id == gateway.sent[0][0]
    assert gateway.submissions[str(row.pk)] == 1


def test_notice_for_a_revoked_link_is_cancelled_at_claim(tenant_a, alice, patient, in_a):
    row = _notice(tenant_a, alice, patient)
    SecureLink.objects.filter(pk=row.link_id).update(revoked_at=timezone.now(), revoked_reason="staff")
    gateway = FaultyGateway()
    assert sms_send_one(tenant=tenant_a, sms_id=row.pk, gateway=gateway) == "skipped"
    row = _reload(row)
    assert row.status == SmsStatus.CANCELLED and row.error_code == "superseded"
    assert row.payload is None
    assert gateway.submissions == {}
