"""The bulk fan-out (messaging.bulk, reminders_send_due in slices) holds message_send's rules:
consent and the cap's history read in bulk agree with their one-row originals, a slice writes
what message_send writes, threads and unsent notices are reused, a failing reminder does not
stop the others, and outbox ids reach Celery in batches after commit."""

from __future__ import annotations

import datetime

from django.db import transaction
from django.utils import timezone

from audit.events import AuditEventType
from audit.models import AuditEvent
from consent.selectors import can_sms
from consent.services import consent_grant, consent_revoke
from messaging import bulk, outbox
from messaging import services as messaging_services
from messaging.models import Message, MessageKind, OutboundSms, SecureLink, SmsStatus, Thread
from messaging.routing import secret_hash
from patients.models import Patient
from patients.services import patient_update
from reminders import services
from reminders.models import Reminder, ReminderStatus
from tests.factories import make_patient, make_textable_patient
from tests.reminders.conftest import T0, book

H = datetime.timedelta(hours=1)


def _send(tenant, capture, **kwargs):
    with capture(execute=True):
        return services.reminders_send_due(tenant=tenant, **kwargs)


def test_consent_read_in_bulk_agrees_with_can_sms(tenant_a, alice, in_a, _frozen):
    granted = make_textable_patient(tenant=tenant_a, owner=alice, phone="+12025550181")
    never = make_patient(tenant=tenant_a, actor=alice, phone="+12025550182")
    revoked = make_textable_patient(tenant=tenant_a, owner=alice, phone="+12025550183")
    regranted = make_textable_patient(tenant=tenant_a, owner=alice, phone="+12025550184")
    _frozen.shift(datetime.timedelta(minutes=1))  # the ledger orders by time: one change a minute
    consent_revoke(tenant=tenant_a, actor=alice, patient=revoked, method="verbal", evidence="Asked at the desk")
    consent_revoke(tenant=tenant_a, actor=alice, patient=regranted, method="verbal", evidence="Asked at the desk")
    _frozen.shift(datetime.timedelta(minutes=1))
    consent_grant(tenant=tenant_a, actor=alice, patient=regranted, method="verbal", disclosure_version="sms-2026-01",
                  evidence="Changed their mind")
    moved = make_textable_patient(tenant=tenant_a, owner=alice, phone="+12025550185")
    _frozen.shift(datetime.timedelta(minutes=1))
    patient_update(tenant=tenant_a, actor=alice, patient=moved, phone="+12025550186")
    inactive = make_textable_patient(tenant=tenant_a, owner=alice, phone="+12025550187")
    Patient.objects.filter(pk=inactive.pk).update(is_active=False)
    dead = make_textable_patient(tenant=tenant_a, owner=alice, phone="+12025550188")
    Patient.objects.filter(pk=dead.pk).update(phone_undeliverable_at=timezone.now())
    no_phone = make_patient(tenant=tenant_a, actor=alice, phone="")
    patients = list(Patient.objects.all())
    assert len(patients) == 8
    codes = bulk._refusal_codes(tenant_a, patients, "reminder")
    for patient in patients:
        allowed, reason = can_sms(tenant_a, patient, kind="reminder")
        assert codes[patient.pk] == ("" if allowed else reason), patient
    assert sorted(codes.values()) == sorted(["", "", "never_granted", "revoked", "number_changed",
                                             "patient_inactive", "number_undeliverable", "no_phone"])
    assert codes[never.pk] == "never_granted" and codes[granted.pk] == "" and codes[no_phone.pk] == "no_phone"


def test_consent_read_in_bulk_without_a_baa(tenant_a, alice, in_a):
    patient = make_patient(tenant=tenant_a, actor=alice)
    assert bulk._refusal_codes(tenant_a, [patient], "reminder") == {patient.pk: "no_baa"}
    assert can_sms(tenant_a, patient, kind="reminder") == (False, "no_baa")


def test_cap_history_read_in_bulk_agrees_with_the_outbox(tenant_a, patient, in_a, django_capture_on_commit_callbacks,
                                                         _frozen):
    book(tenant_a, patient, hours=30)
    book(tenant_a, patient, hours=33)
    _send(tenant_a, django_capture_on_commit_callbacks)
    _frozen.move_to(T0 + 20 * 24 * H, tick=False)  # the first two are now out of the window
    book(tenant_a, patient, hours=20 * 24 + 30)
    _send(tenant_a, django_capture_on_commit_callbacks)
    patient.refresh_from_db()
    many = bulk._capped_times_many(tenant_a, [patient])
    assert sorted(many[patient.pk]) == sorted(outbox._capped_times(patient)) and len(many[patient.pk]) == 1


def _written(message: Message) -> dict:
    """What message_send wrote for one message, in comparable form."""
    thread = message.thread
    [link] = SecureLink.objects.filter(thread=thread)
    [sms] = OutboundSms.objects.filter(message=message)
    events = AuditEvent.objects.filter(object_id__in=[str(message.pk), str(link.pk)])
    return {
        "message": (message.kind, message.direction, message.source, message.sender_id, message.release_at,
                    message.body),
        "thread": (thread.kind, thread.status, thread.last_activity_at, thread.appointment_id is not None),
        "link": (link.created_by_id, link.revoked_at, link.expires_at - link.created_at, link.patient_id),
        "sms": (sms.notification, sms.sms_kind, sms.status, sms.language, sms.to, sms.to_index, sms.patient_id,
                sms.link_id == link.pk, secret_hash(sms.payload) == link.token_hash, sms.next_attempt_at),
        # Sorted by type: the chain order (seq) is given only when sealed, after a commit.
        "audit": sorted((e.event_type, e.actor_type, e.patient_id, sorted(e.details)) for e in events),
    }


def test_a_slice_writes_what_message_send_writes(tenant_a, alice, in_a, django_capture_on_commit_callbacks):
    one = make_textable_patient(tenant=tenant_a, owner=alice, phone="+12025550191")
    two = make_textable_patient(tenant=tenant_a, owner=alice, phone="+12025550192")
    Patient.objects.filter(pk=two.pk).update(timezone=one.timezone)
    first, second = (book(tenant_a, p, hours=100) for p in (one, two))  # not due: nothing sent by the hook
    with django_capture_on_commit_callbacks(execute=False), transaction.atomic():
        by_service = messaging_services.message_send(
            tenant=tenant_a, actor=None, patient=one, kind=MessageKind.REMINDER, appointment=first,
            body="Hello there", idempotency_key="test:one:0001", source="system")
    with django_capture_on_commit_callbacks(execute=False), transaction.atomic():
        locked = bulk.patients_lock([two.pk])
        result = bulk.messages_send_many(tenant=tenant_a, kind=MessageKind.REMINDER, notices=[
            bulk.Notice(ref="r", patient=locked[two.pk], appointment_id=second.pk, body="Hello there",
                        idempotency_key="test:two:0001")])
    assert result.refused == {} and result.enqueued == 1
    by_bulk = Message.objects.get(pk=result.sent["r"])
    expected, got = _written(by_service), _written(by_bulk)
    for part in ("message", "thread", "link"):
        assert got[part][:-1] == expected[part][:-1] or part == "message" and got[part] == expected[part]
    assert got["sms"][:4] == expected["sms"][:4] and got["sms"][7:9] == expected["sms"][7:9] == (True, True)
    assert got["sms"][4] == "+12025550192" and got["sms"][6] == two.pk
    assert [e[0] for e in got["audit"]] == sorted([AuditEventType.MESSAGE_SENT, AuditEventType.LINK_CREATED])
    assert [e[1] for e in got["audit"]] == [e[1] for e in expected["audit"]]
    assert [e[3] for e in got["audit"]] == [e[3] for e in expected["audit"]]
    assert by_bulk.thread.appointment_id == second.pk and by_bulk.idempotency_key == "test:two:0001"


def test_two_due_reminders_of_one_appointment_share_a_thread_and_one_sms(
        tenant_a, alice, patient, in_a, django_capture_on_commit_callbacks, _frozen):
    services.reminder_policy_update(tenant=tenant_a, actor=alice, enabled=True, appointment_types="",
                                    first_offset_hours="48", second_offset_hours="24", follow_up_enabled=True,
                                    template_en="Hi {first_name}", template_es="Hola {first_name}")
    appointment = book(tenant_a, patient, hours=72)
    _frozen.move_to(T0 + 50 * H, tick=False)  # both offsets are due now
    with django_capture_on_commit_callbacks(execute=False):
        assert services.reminders_send_due(tenant=tenant_a) == {"sent": 2}
    [thread] = Thread.objects.all()
    assert thread.appointment_id == appointment.pk and thread.kind == MessageKind.REMINDER
    assert Message.objects.count() == 2 and SecureLink.objects.count() == 2
    [sms] = OutboundSms.objects.all()  # one notice, carrying the second message's (newest) link
    later = Reminder.objects.get(appointment=appointment, offset_minutes=24 * 60)
    assert sms.status == SmsStatus.QUEUED and sms.message_id == later.message_id
    assert secret_hash(sms.payload) == SecureLink.objects.get(pk=sms.link_id).token_hash
    assert AuditEvent.objects.filter(event_type=AuditEventType.MESSAGE_SENT).count() == 2
    assert AuditEvent.objects.filter(event_type=AuditEventType.LINK_CREATED).count() == 2


def test_an_open_thread_and_its_unsent_notice_are_reused(tenant_a, patient, in_a, django_capture_on_commit_callbacks):
    appointment = book(tenant_a, patient, hours=100)
    with django_capture_on_commit_callbacks(execute=False):  # queued, never handed to a worker
        messaging_services.message_send(tenant=tenant_a, actor=None, patient=patient, kind=MessageKind.REMINDER,
                                        appointment=appointment, body="Earlier note", source="system")
    [thread] = Thread.objects.all()
    [pending] = OutboundSms.objects.all()
    Reminder.objects.filter(appointment=appointment).update(due_at=T0)
    with django_capture_on_commit_callbacks(execute=False):
        assert services.reminders_send_due(tenant=tenant_a) == {"sent": 1}
    assert Thread.objects.get().pk == thread.pk
    [sms] = OutboundSms.objects.all()
    reminder = Reminder.objects.get(appointment=appointment)
    assert sms.pk == pending.pk and sms.message_id == reminder.message_id
    assert sms.link_id != pending.link_id and secret_hash(sms.payload) == SecureLink.objects.get(pk=sms.link_id).token_hash


def test_slices_send_everything_once(tenant_a, alice, in_a, django_capture_on_commit_callbacks, monkeypatch):
    patients = [make_textable_patient(tenant=tenant_a, owner=alice, phone=f"+1202555020{i}") for i in range(5)]
    for p in patients:
        book(tenant_a, p, hours=30)
    published = []
    monkeypatch.setattr(bulk, "BATCH_SIZE", 2)
    monkeypatch.setattr(outbox, "enqueue_on_commit", lambda tenant_id, ids: published.append(list(ids)))
    monkeypatch.setattr(bulk, "enqueue_on_commit", lambda tenant_id, ids: published.append(list(ids)))
    assert _send(tenant_a, django_capture_on_commit_callbacks, slice_size=3) == {"sent": 5}
    assert [len(ids) for ids in published] == [2, 1, 2]  # per slice, in batches
    assert sorted(i for ids in published for i in ids) == sorted(OutboundSms.objects.values_list("pk", flat=True))
    assert set(Reminder.objects.values_list("status", flat=True)) == {ReminderStatus.SENT}
    assert Message.objects.values("idempotency_key").distinct().count() == 5
    assert _send(tenant_a, django_capture_on_commit_callbacks) == {}


def test_a_reminder_that_raises_does_not_stop_the_others(tenant_a, alice, in_a, django_capture_on_commit_callbacks,
                                                         monkeypatch):
    patients = [make_textable_patient(tenant=tenant_a, owner=alice, phone=f"+1202555021{i}") for i in range(3)]
    appointments = [book(tenant_a, p, hours=30) for p in patients]
    real = services.reminder_render

    def render(*, tenant, policy, appointment):
        if appointment.pk == appointments[1].pk:
            raise RuntimeError("boom")
        return real(tenant=tenant, policy=policy, appointment=appointment)

    monkeypatch.setattr(services, "reminder_render", render)
    assert _send(tenant_a, django_capture_on_commit_callbacks) == {"sent": 2, "error": 1}
    statuses = {r.appointment_id: r.status for r in Reminder.objects.all()}
    assert statuses[appointments[1].pk] == ReminderStatus.SCHEDULED
    assert statuses[appointments[0].pk] == statuses[appointments[2].pk] == ReminderStatus.SENT
    monkeypatch.setattr(services, "reminder_render", real)
    assert _send(tenant_a, django_capture_on_commit_callbacks) == {"sent": 1}  # the next run sends it


def test_a_used_idempotency_key_is_not_sent_twice(tenant_a, patient, in_a, django_capture_on_commit_callbacks):
    appointment = book(tenant_a, patient, hours=30)
    reminder = Reminder.objects.get(appointment=appointment)
    with django_capture_on_commit_callbacks(execute=False), transaction.atomic():
        locked = bulk.patients_lock([patient.pk])
        notice = bulk.Notice(ref=1, patient=locked[patient.pk], appointment_id=appointment.pk, body="Same text",
                             idempotency_key=reminder.idempotency_key)
        first = bulk.messages_send_many(tenant=tenant_a, kind=MessageKind.REMINDER, notices=[notice])
        again = bulk.messages_send_many(tenant=tenant_a, kind=MessageKind.REMINDER, notices=[
            bulk.Notice(ref=2, patient=locked[patient.pk], appointment_id=appointment.pk, body="Same text",
                        idempotency_key=reminder.idempotency_key),
            bulk.Notice(ref=3, patient=locked[patient.pk], appointment_id=appointment.pk, body="Other text",
                        idempotency_key=reminder.idempotency_key)])
    assert again.sent == {2: first.sent[1]} and again.refused == {3: bulk.KEY_REUSED}
    assert Message.objects.count() == 1 and OutboundSms.objects.count() == 1


def test_a_clinic_run_sends_only_its_own_reminders(tenant_a, tenant_b, alice, django_capture_on_commit_callbacks):
    from accounts.permissions import Role
    from accounts.tenancy import tenant_scope
    from tests.factories import make_member

    owner_b = make_member(tenant=tenant_b, role=Role.OWNER)
    ours = make_textable_patient(tenant=tenant_a, owner=alice, phone="+12025550221")
    theirs = make_textable_patient(tenant=tenant_b, owner=owner_b, phone="+12025550222")
    book(tenant_a, ours, hours=30)
    book(tenant_b, theirs, hours=30)
    with tenant_scope(tenant_a):
        assert _send(tenant_a, django_capture_on_commit_callbacks) == {"sent": 1}
    with tenant_scope(tenant_b):
        assert set(Reminder.objects.values_list("status", flat=True)) == {ReminderStatus.SCHEDULED}
        assert not Message.objects.exists() and not OutboundSms.objects.exists()


def test_new_row_builds_what_the_model_constructor_builds(tenant_a, patient, in_a):
    """``bulk.new_row`` skips ``Model.__init__``: the same field values (defaults included, a
    fresh default per row where the default is a function), unsaved state, and no init signal
    receivers it would skip."""
    from django.db.models.signals import post_init, pre_init

    thread = Thread.objects.create(tenant=tenant_a, patient=patient, kind=MessageKind.REMINDER,
                                   last_activity_at=timezone.now())
    values = {"tenant_id": tenant_a.pk, "thread_id": thread.pk, "direction": "outbound",
              "kind": MessageKind.REMINDER, "body": "Hello", "source": "system", "idempotency_key": "k-1"}
    fast, slow, other = bulk.new_row(Message, **values), Message(**values), bulk.new_row(Message, **values)
    for field in Message._meta.concrete_fields:
        if field.primary_key:
            continue
        assert getattr(fast, field.attname) == getattr(slow, field.attname), field.name
    assert fast.pk and other.pk and fast.pk != other.pk
    assert fast._state.adding and fast._state.db is None
    assert fast.thread == thread
    for model in (Message, SecureLink, Thread, OutboundSms):
        assert not pre_init.has_listeners(model) and not post_init.has_listeners(model)
