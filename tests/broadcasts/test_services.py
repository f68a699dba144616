"""Broadcast services: the audience, the throttle, consent and timing, cancelling, idempotency."""

from __future__ import annotations

import datetime
import threading

import pytest
from django.db import connection

from accounts.errors import ApplicationError, ConflictError
from accounts.tenancy import tenant_scope
from audit.events import AuditEventType
from audit.models import AuditEvent
from broadcasts.models import Broadcast, BroadcastRecipient, BroadcastStatus, RecipientStatus
from broadcasts.selectors import broadcast_progress
from broadcasts.services import broadcast_cancel, broadcast_create, broadcast_send_slice
from consent.services import consent_revoke
from messaging.models import Message, MessageKind, OutboundSms, SmsStatus
from messaging.outbox import sms_send_one
from messaging.services import message_send
from tests.broadcasts.conftest import NIGHT_ZONE, TODAY, TOMORROW
from tests.broadcasts.helpers import book, make_broadcast
from tests.factories import make_member, make_patient, make_tenant, make_textable_patient
from tests.messaging.conftest import sent_sms, token_of

TICK = datetime.timedelta(seconds=10)


def _textable(tenant, owner, n: int, **overrides) -> list:
    return [make_textable_patient(tenant=tenant, owner=owner, **overrides) for _ in range(n)]


def _booked_tomorrow(tenant, owner, patients):
    for patient in patients:
        book(tenant, patient, TOMORROW)
    return patients


def _recipients(broadcast) -> dict:
    return {r.patient_id: r for r in BroadcastRecipient.objects.filter(broadcast=broadcast)}


def _run_all(tenant, broadcast, clock, capture, *, limit: int = 50) -> None:
    for _ in range(limit):
        with capture(execute=True):
            broadcast_send_slice(tenant=tenant, broadcast=broadcast)
        broadcast.refresh_from_db()
        if broadcast.status != BroadcastStatus.SENDING:
            return
        clock.shift(TICK)
    raise AssertionError("the broadcast did not finish")


# --- the audience --------------------------------------------------------------------------------------


def test_all_consented_takes_only_patients_who_may_be_texted(tenant_a, alice, clock):
    textable = _textable(tenant_a, alice, 2)
    make_patient(tenant=tenant_a, actor=alice)  # never agreed
    revoked = make_textable_patient(tenant=tenant_a, owner=alice)
    clock.shift(1)  # the ledger orders by time: the revoke comes after the grant
    with tenant_scope(tenant_a):
        consent_revoke(tenant=tenant_a, actor=alice, patient=revoked, method="verbal", evidence="Asked at the desk")
        broadcast = broadcast_create(tenant=tenant_a, actor=alice, body="Flu shots are here.", audience="all_consented")

        assert set(_recipients(broadcast)) == {p.pk for p in textable}
        assert broadcast.total == 2 and broadcast.status == BroadcastStatus.SENDING
        event = AuditEvent.objects.get(event_type=AuditEventType.PATIENT_SEARCHED, object_id=str(broadcast.pk))
        assert event.details == {"path_name": "broadcast-audience", "count": 2}


def test_appointments_on_day_filters_by_clinic_day_location_and_type_once_per_patient(tenant_a, alice):
    twice, late, elsewhere, other_day, cancelled, other_type = (make_patient(tenant=tenant_a, actor=alice)
                                                               for _ in range(6))
    book(tenant_a, twice, TOMORROW, hour=9)
    book(tenant_a, twice, TOMORROW, hour=14)
    book(tenant_a, late, TOMORROW, hour=23)  # 04:00 UTC the day after: still tomorrow in the clinic
    book(tenant_a, elsewhere, TOMORROW, location_name="Annex")
    book(tenant_a, other_day, TOMORROW + datetime.timedelta(days=1))
    appointment = book(tenant_a, cancelled, TOMORROW)
    book(tenant_a, other_type, TOMORROW, appointment_type="Vaccine")
    with tenant_scope(tenant_a):
        type(appointment).objects.filter(pk=appointment.pk).update(status="cancelled")
        broadcast = broadcast_create(tenant=tenant_a, actor=alice, body="We open at 10 tomorrow.",
                                     audience="appointments_on_day", day=TOMORROW, location="Room 2",
                                     appointment_type="Follow-up")
        assert set(_recipients(broadcast)) == {twice.pk, late.pk}
        assert broadcast.audience == {"kind": "appointments_on_day", "day": TOMORROW.isoformat(),
                                      "location": "Room 2", "appointment_type": "Follow-up"}
        everyone = broadcast_create(tenant=tenant_a, actor=alice, body="We open at 10 tomorrow.",
                                    audience="appointments_on_day", day=TOMORROW.isoformat())
        assert set(_recipients(everyone)) == {twice.pk, late.pk, elsewhere.pk, other_type.pk}


@pytest.mark.parametrize(("values", "field"), [
    ({"body": "   "}, "body"),
    ({"body": "x" * 2001}, "body"),
    ({"audience": "everyone"}, "audience"),
    ({"day": TODAY - datetime.timedelta(days=1)}, "day"),
    ({"day": "not a date"}, "day"),
    ({"day": None}, "day"),
    ({"location": "Nowhere"}, "day"),  # no recipients: named on the day, the filter that matched nothing
    ({"audience": "all_consented"}, "audience"),  # nobody has consented
    ({"rate_per_minute": 0}, "rate_per_minute"),
    ({"rate_per_minute": 601}, "rate_per_minute"),
])
def test_bad_input_is_refused_naming_the_field_and_writes_nothing(tenant_a, alice, values, field):
    book(tenant_a, make_patient(tenant=tenant_a, actor=alice), TOMORROW)
    kwargs = {"body": "Closed on Friday.", "audience": "appointments_on_day", "day": TOMORROW, **values}
    with tenant_scope(tenant_a):
        with pytest.raises(ApplicationError) as caught:
            broadcast_create(tenant=tenant_a, actor=alice, **kwargs)
        assert list(caught.value.fields) == [field]
        assert not Broadcast.objects.exists()
        assert not BroadcastRecipient.objects.exists()


def test_rate_defaults_to_the_clinics_setting(tenant_a, alice):
    tenant_a.settings = {"broadcast_rate_per_minute": 5000}
    tenant_a.save(update_fields=["settings"])
    broadcast = make_broadcast(tenant=tenant_a, owner=alice)
    assert broadcast.rate_per_minute == 600  # bounded
    tenant_a.settings = {}
    tenant_a.save(update_fields=["settings"])
    assert make_broadcast(tenant=tenant_a, owner=alice).rate_per_minute == 60


def test_the_same_idempotency_key_creates_one_broadcast(tenant_a, alice):
    first = make_broadcast(tenant=tenant_a, owner=alice, idempotency_key="form-key-123")
    again = make_broadcast(tenant=tenant_a, owner=alice, idempotency_key="form-key-123")
    assert again.pk == first.pk
    with tenant_scope(tenant_a):
        assert Broadcast.objects.count() == 1


# --- sending ---------------------------------------------------------------------------------------------


def test_slices_follow_the_rate_and_the_broadcast_finishes(tenant_a, alice, clock,
                                                          django_capture_on_commit_callbacks):
    patients = _booked_tomorrow(tenant_a, alice, _textable(tenant_a, alice, 5))
    broadcast = make_broadcast(tenant=tenant_a, owner=alice, patients=patients, rate_per_minute=12)
    with tenant_scope(tenant_a):
        with django_capture_on_commit_callbacks(execute=True):
            assert broadcast_send_slice(tenant=tenant_a, broadcast=broadcast) == 2  # 12 a minute: 2 per 10 s
        broadcast.refresh_from_db()
        assert (broadcast.sent, broadcast.skipped, broadcast.failed, broadcast.status) == (2, 0, 0, "sending")
        assert len(sent_sms()) == 2

        assert broadcast_send_slice(tenant=tenant_a, broadcast=broadcast) == 0  # same tick again: nothing
        clock.shift(TICK)
        with django_capture_on_commit_callbacks(execute=True):
            assert broadcast_send_slice(tenant=tenant_a, broadcast=broadcast) == 2
        clock.shift(TICK)
        with django_capture_on_commit_callbacks(execute=True):
            assert broadcast_send_slice(tenant=tenant_a, broadcast=broadcast) == 1
        broadcast.refresh_from_db()
        assert (broadcast.sent, broadcast.status) == (5, BroadcastStatus.DONE)
        assert broadcast.finished_at is not None
        assert len(sent_sms()) == 5
        assert Message.objects.filter(kind=MessageKind.BROADCAST).count() == 5
        clock.shift(TICK)
        assert broadcast_send_slice(tenant=tenant_a, broadcast=broadcast) == 0


def test_patients_without_consent_or_opted_out_are_skipped_and_get_nothing(tenant_a, alice, clock,
                                                                          django_capture_on_commit_callbacks):
    ok = make_textable_patient(tenant=tenant_a, owner=alice)
    never = make_patient(tenant=tenant_a, actor=alice)
    stopped = make_textable_patient(tenant=tenant_a, owner=alice)
    _booked_tomorrow(tenant_a, alice, [ok, never, stopped])
    broadcast = make_broadcast(tenant=tenant_a, owner=alice, patients=[ok, never, stopped])
    clock.shift(1)  # the ledger orders by time: the revoke comes after the grant
    with tenant_scope(tenant_a):
        consent_revoke(tenant=tenant_a, actor=alice, patient=stopped, method="verbal", evidence="Called to opt out")
        _run_all(tenant_a, broadcast, clock, django_capture_on_commit_callbacks)

        rows = _recipients(broadcast)
        assert rows[ok.pk].status == RecipientStatus.SENT and rows[ok.pk].message_id
        assert (rows[never.pk].status, rows[never.pk].reason) == (RecipientStatus.SKIPPED, "never_granted")
        assert (rows[stopped.pk].status, rows[stopped.pk].reason) == (RecipientStatus.SKIPPED, "revoked")
        assert (broadcast.sent, broadcast.skipped, broadcast.failed) == (1, 2, 0)
        assert [s.to for s in sent_sms()] == [ok.phone]
        assert not Message.objects.filter(thread__patient__in=[never, stopped]).exists()
        reasons = {code: n for code, _, n in broadcast_progress(tenant=tenant_a, broadcast=broadcast).skipped_reasons}
        assert reasons == {"never_granted": 1, "revoked": 1}


def test_quiet_hours_and_the_daily_cap_hold_the_sms_waiting(tenant_a, alice, clock,
                                                           django_capture_on_commit_callbacks):
    night = make_textable_patient(tenant=tenant_a, owner=alice, timezone=NIGHT_ZONE)
    capped = make_textable_patient(tenant=tenant_a, owner=alice)
    with tenant_scope(tenant_a), django_capture_on_commit_callbacks(execute=True):
        message_send(tenant=tenant_a, actor=alice, patient=capped, kind=MessageKind.REMINDER, body="See you soon.")
    assert len(sent_sms()) == 1  # today's automated notice
    _booked_tomorrow(tenant_a, alice, [night, capped])
    broadcast = make_broadcast(tenant=tenant_a, owner=alice, patients=[night, capped])
    with tenant_scope(tenant_a):
        _run_all(tenant_a, broadcast, clock, django_capture_on_commit_callbacks)

        assert (broadcast.sent, broadcast.status) == (2, BroadcastStatus.DONE)  # the messages exist
        rows = OutboundSms.objects.filter(sms_kind="broadcast")
        assert sorted(rows.values_list("status", flat=True)) == [SmsStatus.WAITING, SmsStatus.WAITING]
        assert len(sent_sms()) == 1  # nothing more went out
        sms = {value: n for value, _, n in broadcast_progress(tenant=tenant_a, broadcast=broadcast).sms}
        assert sms[SmsStatus.WAITING] == 2 and sms[SmsStatus.SENT] == 0


def test_cancel_mid_way_stops_pending_and_unsent_sms_but_not_sent_ones(tenant_a, alice, clock,
                                                                      django_capture_on_commit_callbacks):
    day = _textable(tenant_a, alice, 2)
    night = _textable(tenant_a, alice, 2, timezone=NIGHT_ZONE)
    broadcast = make_broadcast(tenant=tenant_a, owner=alice, patients=_booked_tomorrow(tenant_a, alice, day + night),
                               rate_per_minute=18)
    with tenant_scope(tenant_a):
        assert broadcast_send_slice(tenant=tenant_a, broadcast=broadcast) == 3  # on-commit not run: SMS unsent
        queued = OutboundSms.objects.filter(status=SmsStatus.QUEUED)
        assert queued.exists() and OutboundSms.objects.filter(status=SmsStatus.WAITING).exists()
        gone = queued.first()
        assert sms_send_one(tenant=tenant_a, sms_id=gone.pk) == "sent"

        broadcast_cancel(tenant=tenant_a, actor=alice, broadcast=broadcast)

        broadcast.refresh_from_db()
        assert broadcast.status == BroadcastStatus.CANCELLED and broadcast.cancelled_at is not None
        statuses = sorted(r.status for r in _recipients(broadcast).values())
        assert statuses == [RecipientStatus.CANCELLED] + [RecipientStatus.SENT] * 3
        sms = {row.pk: row for row in OutboundSms.objects.all()}
        assert sms.pop(gone.pk).status in (SmsStatus.SENT, SmsStatus.DELIVERED)  # the local gateway delivers
        assert {(r.status, r.error_reason) for r in sms.values()} == {
            (SmsStatus.CANCELLED, "The broadcast was cancelled.")}
        assert len(sent_sms()) == 1
        clock.shift(TICK)
        assert broadcast_send_slice(tenant=tenant_a, broadcast=broadcast) == 0
        with pytest.raises(ConflictError):
            broadcast_cancel(tenant=tenant_a, actor=alice, broadcast=broadcast)


def test_a_finished_broadcast_without_waiting_sms_cannot_be_cancelled(tenant_a, alice, clock,
                                                                     django_capture_on_commit_callbacks):
    patients = _booked_tomorrow(tenant_a, alice, _textable(tenant_a, alice, 1))
    broadcast = make_broadcast(tenant=tenant_a, owner=alice, patients=patients)
    with tenant_scope(tenant_a):
        _run_all(tenant_a, broadcast, clock, django_capture_on_commit_callbacks)
        with pytest.raises(ConflictError):
            broadcast_cancel(tenant=tenant_a, actor=alice, broadcast=broadcast)
        assert Broadcast.objects.get(pk=broadcast.pk).status == BroadcastStatus.DONE


def test_a_retried_slice_does_not_send_twice(tenant_a, alice, clock, django_capture_on_commit_callbacks):
    """A recipient handed out again after its message was written (its row update lost) gets
    the same message back through the idempotency key: no second message, no second SMS."""
    patients = _booked_tomorrow(tenant_a, alice, _textable(tenant_a, alice, 1))
    broadcast = make_broadcast(tenant=tenant_a, owner=alice, patients=patients)
    with tenant_scope(tenant_a):
        with django_capture_on_commit_callbacks(execute=True):
            broadcast_send_slice(tenant=tenant_a, broadcast=broadcast)
        recipient = BroadcastRecipient.objects.get(broadcast=broadcast)
        Broadcast.objects.filter(pk=broadcast.pk).update(status=BroadcastStatus.SENDING)
        BroadcastRecipient.objects.filter(pk=recipient.pk).update(status=RecipientStatus.PENDING)
        clock.shift(TICK)
        with django_capture_on_commit_callbacks(execute=True):
            assert broadcast_send_slice(tenant=tenant_a, broadcast=broadcast) == 1
        assert BroadcastRecipient.objects.get(pk=recipient.pk).message_id == recipient.message_id
        assert Message.objects.filter(kind=MessageKind.BROADCAST).count() == 1
        assert len(sent_sms()) == 1


def test_two_ticks_at_once_send_each_recipient_once(committed_db):
    tenant_a = make_tenant(slug="busy-broadcasts")
    alice = make_member(tenant=tenant_a, role="owner")
    patients = _booked_tomorrow(tenant_a, alice, _textable(tenant_a, alice, 4))
    broadcast = make_broadcast(tenant=tenant_a, owner=alice, patients=patients, rate_per_minute=600)
    barrier, results, errors = threading.Barrier(2), [], []

    def tick():
        try:
            with tenant_scope(tenant_a):
                barrier.wait(timeout=10)
                results.append(broadcast_send_slice(tenant=tenant_a, broadcast=broadcast))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=tick) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    assert sorted(results) == [0, 4]
    with tenant_scope(tenant_a):
        assert Message.objects.filter(kind=MessageKind.BROADCAST).count() == 4
        assert OutboundSms.objects.count() == 4
        assert Broadcast.objects.get(pk=broadcast.pk).status == BroadcastStatus.DONE


def test_the_sms_carries_only_the_link(tenant_a, alice, clock, django_capture_on_commit_callbacks):
    patient = make_textable_patient(tenant=tenant_a, owner=alice, given_name="Zebulon", family_name="Quartz")
    _booked_tomorrow(tenant_a, alice, [patient])
    body = "Storm warning: the clinic is closed on Friday."
    broadcast = make_broadcast(tenant=tenant_a, owner=alice, patients=[patient], body=body)
    with tenant_scope(tenant_a):
        _run_all(tenant_a, broadcast, clock, django_capture_on_commit_callbacks)
    [sms] = sent_sms()
    assert token_of(sms)
    for secret in ("Storm", "closed", "Zebulon", "Quartz", patient.phone):
        assert secret not in sms.body


def test_the_tick_sends_a_slice_of_every_sending_broadcast_in_every_clinic(tenant_a, tenant_b, alice, charlie,
                                                                          django_capture_on_commit_callbacks):
    from broadcasts.tasks import broadcasts_tick

    a = make_broadcast(tenant=tenant_a, owner=alice,
                       patients=_booked_tomorrow(tenant_a, alice, _textable(tenant_a, alice, 1)))
    b = make_broadcast(tenant=tenant_b, owner=charlie,
                       patients=_booked_tomorrow(tenant_b, charlie, _textable(tenant_b, charlie, 1)))
    with django_capture_on_commit_callbacks(execute=True):
        assert broadcasts_tick() == 2
    for tenant, broadcast in ((tenant_a, a), (tenant_b, b)):
        with tenant_scope(tenant):
            broadcast.refresh_from_db()
            assert (broadcast.sent, broadcast.status) == (1, BroadcastStatus.DONE)
    assert broadcasts_tick() == 0
