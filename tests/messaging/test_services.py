"""messaging.services called directly: refusals that write nothing, idempotency, threads,
notes, assignment, status, saved replies, the patient's replies and appointment answers,
and input limits."""

from __future__ import annotations

import datetime
from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.errors import ApplicationError, ConflictError
from accounts.tenancy import tenant_scope
from audit.events import AuditEventType
from audit.models import AuditEvent
from consent.services import consent_grant, consent_revoke
from messaging import links, services
from messaging.models import (
    Direction,
    Message,
    MessageKind,
    OutboundSms,
    PatientSession,
    ReplyTemplate,
    SecureLink,
    SmsStatus,
    Thread,
    ThreadStatus,
)
from patients.models import AppointmentStatus, Patient
from patients.services import patient_update
from tests.factories import make_appointment, make_patient, make_textable_patient, sign_baa

BODY = "Your MRI is scheduled; please arrive 15 minutes early."


def _nothing_written() -> None:
    assert not Thread.objects.exists()
    assert not Message.objects.exists()
    assert not SecureLink.objects.exists()
    assert not OutboundSms.objects.exists()
    assert not AuditEvent.objects.filter(event_type__in=[AuditEventType.MESSAGE_SENT,
                                                         AuditEventType.LINK_CREATED]).exists()


def _session(tenant, thread) -> PatientSession:
    link = SecureLink.objects.filter(thread=thread).order_by("-created_at").first()
    session, _key = links.patient_session_start(tenant=tenant, link=link)
    return session


def _counts() -> tuple[int, int, int, int]:
    return (Thread.objects.count(), Message.objects.count(), SecureLink.objects.count(), OutboundSms.objects.count())


# --- refusals -------------------------------------------------------------------------------------------------


def _no_baa(world):
    tenant, owner = world["tenant_b"], world["owner_b"]
    patient = make_patient(tenant=tenant, actor=owner, phone="+12025550161")
    with tenant_scope(tenant):
        consent_grant(tenant=tenant, actor=owner, patient=patient, method="verbal", disclosure_version="sms-2026-01",
                      evidence="At the desk")
    return tenant, owner, patient


def _never_granted(world):
    tenant, owner = world["tenant_a"], world["users_a"]["owner"]
    sign_baa(tenant=tenant, owner=owner)
    return tenant, owner, make_patient(tenant=tenant, actor=owner, phone="+12025550162")


def _textable(world, phone):
    tenant, owner = world["tenant_a"], world["users_a"]["owner"]
    return tenant, owner, make_textable_patient(tenant=tenant, owner=owner, phone=phone)


def _revoked(world):
    tenant, owner, patient = _textable(world, "+12025550163")
    with tenant_scope(tenant):
        consent_revoke(tenant=tenant, actor=owner, patient=patient, method="verbal", evidence="Asked to stop")
    return tenant, owner, patient


def _number_changed(world):
    tenant, owner, patient = _textable(world, "+12025550164")
    with tenant_scope(tenant):
        patient = patient_update(tenant=tenant, actor=owner, patient=patient, phone="+12025550165")
    return tenant, owner, patient


def _no_phone(world):
    # patient_create always wants a number; an EHR import can leave a record without one.
    tenant, owner, patient = _textable(world, "+12025550166")
    with tenant_scope(tenant):
        Patient.objects.filter(pk=patient.pk).update(phone_index="")
        return tenant, owner, Patient.objects.get(pk=patient.pk)


def _inactive(world):
    tenant, owner, patient = _textable(world, "+12025550167")
    with tenant_scope(tenant):
        Patient.objects.filter(pk=patient.pk).update(is_active=False)
        return tenant, owner, Patient.objects.get(pk=patient.pk)


def _undeliverable(world):
    tenant, owner, patient = _textable(world, "+12025550168")
    with tenant_scope(tenant):
        Patient.objects.filter(pk=patient.pk).update(phone_undeliverable_at=timezone.now(),
                                                     phone_undeliverable_code="21211")
        return tenant, owner, Patient.objects.get(pk=patient.pk)


@pytest.mark.parametrize("setup,reason", [
    (_no_baa, "no_baa"), (_never_granted, "never_granted"), (_revoked, "revoked"),
    (_number_changed, "number_changed"), (_no_phone, "no_phone"), (_inactive, "patient_inactive"),
    (_undeliverable, "number_undeliverable"),
])
def test_refusal_names_the_reason_and_writes_nothing(world, setup, reason):
    tenant, owner, patient = setup(world)
    with tenant_scope(tenant):
        assert services.send_refusal(tenant=tenant, patient=patient, sms_kind="staff_message") == \
            services.REFUSALS[reason]
        with pytest.raises(ApplicationError) as exc:
            services.message_send(tenant=tenant, actor=owner, patient=patient, body=BODY)
        assert exc.value.code == "not_sendable"
        assert exc.value.fields == {"patient": [services.REFUSALS[reason]]}
        assert exc.value.message == services.REFUSALS[reason]
        _nothing_written()


def test_refused_reply_in_an_existing_thread_writes_nothing(tenant_a, alice, patient, in_a):
    message = services.message_send(tenant=tenant_a, actor=alice, patient=patient, body=BODY)
    consent_revoke(tenant=tenant_a, actor=alice, patient=patient, method="verbal", evidence="Asked to stop")
    before = _counts()
    events = AuditEvent.objects.count()
    with pytest.raises(ApplicationError):
        services.message_send(tenant=tenant_a, actor=alice, thread=message.thread, body="Follow-up")
    assert _counts() == before
    assert AuditEvent.objects.count() == events


# --- idempotency ---------------------------------------------------------------------------------------------


def test_same_idempotency_key_twice_is_one_message_and_one_sms(tenant_a, alice, patient, in_a):
    first = services.message_send(tenant=tenant_a, actor=alice, patient=patient, body=BODY,
                                  idempotency_key="ehr-order-0001")
    again = services.message_send(tenant=tenant_a, actor=alice, patient=patient, body=BODY,
                                  idempotency_key="ehr-order-0001")
    assert again.pk == first.pk
    assert Message.objects.count() == 1
    assert OutboundSms.objects.count() == 1
    assert SecureLink.objects.count() == 1
    assert AuditEvent.objects.filter(event_type=AuditEventType.MESSAGE_SENT).count() == 1


def test_same_key_with_another_body_or_patient_is_a_conflict(tenant_a, alice, patient, in_a):
    services.message_send(tenant=tenant_a, actor=alice, patient=patient, body=BODY, idempotency_key="ehr-order-0002")
    before = _counts()
    with pytest.raises(ConflictError):
        services.message_send(tenant=tenant_a, actor=alice, patient=patient, body="Another text",
                              idempotency_key="ehr-order-0002")
    other = make_textable_patient(tenant=tenant_a, owner=alice, phone="+12025550169")
    with pytest.raises(ConflictError):
        services.message_send(tenant=tenant_a, actor=alice, patient=other, body=BODY, idempotency_key="ehr-order-0002")
    assert _counts() == before


@pytest.mark.parametrize("key", ["short", "has space in it", "x" * 101, "semi;colon-key"])
def test_malformed_idempotency_key_names_the_field(tenant_a, alice, patient, in_a, key):
    with pytest.raises(ApplicationError) as exc:
        services.message_send(tenant=tenant_a, actor=alice, patient=patient, body=BODY, idempotency_key=key)
    assert "idempotency_key" in exc.value.fields
    assert not Message.objects.exists()


# --- threads ---------------------------------------------------------------------------------------------------


def test_messages_reuse_the_newest_open_thread_of_their_kind(tenant_a, alice, patient, in_a):
    first = services.message_send(tenant=tenant_a, actor=alice, patient=patient, body=BODY)
    second = services.message_send(tenant=tenant_a, actor=alice, patient=patient, body="One more thing.")
    assert second.thread_id == first.thread_id
    # Both ride on one unsent notice with the newest link.
    [row] = OutboundSms.objects.all()
    assert row.message_id == second.pk
    assert row.link_id == SecureLink.objects.filter(thread=first.thread).latest("created_at").pk
    reminder = services.message_send(tenant=tenant_a, actor=alice, patient=patient, body="See you soon.",
                                     kind=MessageKind.REMINDER)
    assert reminder.thread_id != first.thread_id
    assert reminder.thread.kind == MessageKind.REMINDER


def test_closed_thread_is_not_reused_but_reopens_on_reply(tenant_a, alice, patient, in_a):
    first = services.message_send(tenant=tenant_a, actor=alice, patient=patient, body=BODY)
    services.thread_set_status(tenant=tenant_a, actor=alice, thread=first.thread, status=ThreadStatus.CLOSED)
    fresh = services.message_send(tenant=tenant_a, actor=alice, patient=patient, body="New topic.")
    assert fresh.thread_id != first.thread_id
    reply = services.message_send(tenant=tenant_a, actor=alice, thread=Thread.objects.get(pk=first.thread_id),
                                  body="Back to the MRI.")
    assert reply.thread_id == first.thread_id
    thread = Thread.objects.get(pk=first.thread_id)
    assert thread.status == ThreadStatus.OPEN and thread.closed_at is None


def test_note_never_creates_an_sms_or_a_link(tenant_a, alice, bob, patient, in_a):
    message = services.message_send(tenant=tenant_a, actor=alice, patient=patient, body=BODY)
    before = (SecureLink.objects.count(), OutboundSms.objects.count())
    note = services.note_add(tenant=tenant_a, actor=bob, thread=message.thread, body="Called her too, no answer.")
    assert note.direction == Direction.NOTE and note.sender_id == bob.pk
    assert (SecureLink.objects.count(), OutboundSms.objects.count()) == before
    [event] = AuditEvent.objects.filter(event_type=AuditEventType.NOTE_ADDED)
    assert event.actor_user_id == bob.pk and event.object_id == str(note.pk)
    with pytest.raises(ApplicationError) as exc:
        services.note_add(tenant=tenant_a, actor=bob, thread=message.thread, body="   ")
    assert "body" in exc.value.fields


def test_thread_assign_only_to_colleagues_who_read_messages(tenant_a, alice, bob, dave, charlie, patient, in_a):
    thread = services.message_send(tenant=tenant_a, actor=alice, patient=patient, body=BODY).thread
    services.thread_assign(tenant=tenant_a, actor=alice, thread=thread, assignee=bob)
    assert Thread.objects.get(pk=thread.pk).assigned_to_id == bob.pk
    [event] = AuditEvent.objects.filter(event_type=AuditEventType.THREAD_CHANGED)
    assert event.details == {"action": "assign", "assignee_id": str(bob.pk)}
    for outsider in (dave, charlie):  # an auditor; another clinic's owner
        with pytest.raises(ApplicationError) as exc:
            services.thread_assign(tenant=tenant_a, actor=alice, thread=thread, assignee=outsider)
        assert "assignee" in exc.value.fields
    assert Thread.objects.get(pk=thread.pk).assigned_to_id == bob.pk
    services.thread_assign(tenant=tenant_a, actor=alice, thread=thread, assignee=bob)  # no change: no event
    assert AuditEvent.objects.filter(event_type=AuditEventType.THREAD_CHANGED).count() == 1
    services.thread_assign(tenant=tenant_a, actor=alice, thread=thread, assignee=None)
    assert Thread.objects.get(pk=thread.pk).assigned_to_id is None
    assert AuditEvent.objects.filter(event_type=AuditEventType.THREAD_CHANGED).count() == 2


def test_thread_close_and_reopen(tenant_a, alice, patient, in_a):
    thread = services.message_send(tenant=tenant_a, actor=alice, patient=patient, body=BODY).thread
    Thread.objects.filter(pk=thread.pk).update(staff_unread=3, urgent=True)
    services.thread_set_status(tenant=tenant_a, actor=alice, thread=thread, status=ThreadStatus.CLOSED)
    closed = Thread.objects.get(pk=thread.pk)
    assert closed.status == ThreadStatus.CLOSED and closed.closed_at is not None
    assert closed.staff_unread == 0 and not closed.urgent
    services.thread_set_status(tenant=tenant_a, actor=alice, thread=thread, status=ThreadStatus.CLOSED)
    services.thread_set_status(tenant=tenant_a, actor=alice, thread=thread, status=ThreadStatus.OPEN)
    reopened = Thread.objects.get(pk=thread.pk)
    assert reopened.status == ThreadStatus.OPEN and reopened.closed_at is None
    actions = [e.details["action"] for e in AuditEvent.objects.filter(
        event_type=AuditEventType.THREAD_CHANGED).order_by("occurred_at", "id")]
    assert actions == ["close", "reopen"]
    with pytest.raises(ApplicationError) as exc:
        services.thread_set_status(tenant=tenant_a, actor=alice, thread=thread, status="archived")
    assert "status" in exc.value.fields


# --- saved replies ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("body,needle", [
    ("Hi {first_name}, your DOB {date_of_birth} is on file.", "{date_of_birth}"),
    ("Hi {first_name", "braces"),
    ("Hi {0}", "{0}"),
])
def test_template_with_unknown_placeholder_is_refused(tenant_a, alice, in_a, body, needle):
    with pytest.raises(ApplicationError) as exc:
        services.reply_template_create(tenant=tenant_a, actor=alice, name="Greeting", body=body)
    assert needle in " ".join(exc.value.fields["body"])
    assert not ReplyTemplate.objects.exists()


def test_template_names_are_unique_and_changes_audited(tenant_a, alice, in_a):
    template = services.reply_template_create(tenant=tenant_a, actor=alice, name="Fasting",
                                              body="Please fast from midnight, {first_name}.")
    with pytest.raises(ApplicationError) as exc:
        services.reply_template_create(tenant=tenant_a, actor=alice, name="Fasting", body="Other")
    assert "name" in exc.value.fields
    services.reply_template_delete(tenant=tenant_a, actor=alice, template=template)
    assert not ReplyTemplate.objects.exists()
    actions = [e.details["action"] for e in AuditEvent.objects.filter(
        event_type=AuditEventType.REPLY_TEMPLATE_CHANGED).order_by("occurred_at", "id")]
    assert actions == ["create", "delete"]


def test_template_render_fills_the_placeholders(tenant_a, alice, patient, in_a):
    from zoneinfo import ZoneInfo

    starts = datetime.datetime(2031, 5, 6, 14, 30, tzinfo=datetime.UTC)
    appointment = make_appointment(tenant=tenant_a, patient=patient, starts_at=starts, provider_name="Dr. Okafor",
                                   location_name="Suite 4")
    template = services.reply_template_create(
        tenant=tenant_a, actor=alice, name="Visit",
        body="Hi {first_name} {last_name}, see {provider} in {location} on {appointment_date} at "
             "{appointment_time}. {clinic_name}")
    text = services.reply_template_render(tenant=tenant_a, template=template, patient=patient,
                                          appointment=appointment)
    local = starts.astimezone(ZoneInfo(tenant_a.timezone))
    assert text == (f"Hi Ada Quill, see Dr. Okafor in Suite 4 on {local.strftime('%A %-d %B %Y')} at "
                    f"{local.strftime('%-I:%M %p')}. Clinic A")
    bare = services.reply_template_render(tenant=tenant_a, template=template, patient=patient)
    assert bare == "Hi Ada Quill, see  in  on  at . Clinic A"


# --- the patient's side --------------------------------------------------------------------------------------


def test_patient_reply_reopens_counts_unread_and_sends_no_sms(tenant_a, alice, patient, in_a):
    thread = services.message_send(tenant=tenant_a, actor=alice, patient=patient, body=BODY).thread
    services.thread_set_status(tenant=tenant_a, actor=alice, thread=thread, status=ThreadStatus.CLOSED)
    session = _session(tenant_a, thread)
    sms_before = OutboundSms.objects.count()
    first = services.patient_reply(tenant=tenant_a, session=session, body="Can I bring my daughter?")
    services.patient_reply(tenant=tenant_a, session=session, body="She will drive me.")
    thread = Thread.objects.get(pk=thread.pk)
    assert thread.status == ThreadStatus.OPEN and thread.closed_at is None
    assert thread.staff_unread == 2 and thread.last_inbound_at is not None and not thread.urgent
    assert first.direction == Direction.INBOUND and first.source == "patient" and not first.urgent
    assert OutboundSms.objects.count() == sms_before
    received = AuditEvent.objects.filter(event_type=AuditEventType.MESSAGE_RECEIVED)
    assert received.count() == 2 and {e.actor_type for e in received} == {"patient"}


def test_urgent_patient_reply_flags_the_thread_and_answers_once(tenant_a, alice, patient, in_a):
    thread = services.message_send(tenant=tenant_a, actor=alice, patient=patient, body=BODY).thread
    session = _session(tenant_a, thread)
    message = services.patient_reply(tenant=tenant_a, session=session, body="I have chest pain since this morning")
    assert message.urgent
    assert Thread.objects.get(pk=thread.pk).urgent
    [notice] = OutboundSms.objects.filter(notification="urgent_notice")
    assert notice.to == patient.phone and notice.status == SmsStatus.QUEUED
    services.patient_reply(tenant=tenant_a, session=session, body="Still chest pain")
    assert OutboundSms.objects.filter(notification="urgent_notice").count() == 1  # once a day


@pytest.mark.parametrize("body,message", [("x" * 1001, "1000"), ("bell\x07", "control"), (" \n ", "required")])
def test_patient_reply_bad_body_names_the_field(tenant_a, alice, patient, in_a, body, message):
    thread = services.message_send(tenant=tenant_a, actor=alice, patient=patient, body=BODY).thread
    session = _session(tenant_a, thread)
    with pytest.raises(ApplicationError) as exc:
        services.patient_reply(tenant=tenant_a, session=session, body=body)
    assert message in " ".join(exc.value.fields["body"])
    assert not Message.objects.filter(direction=Direction.INBOUND).exists()


def _appointment_session(tenant, actor, patient, **overrides):
    appointment = make_appointment(tenant=tenant, patient=patient, **overrides)
    message = services.message_send(tenant=tenant, actor=actor, patient=patient, body="Reminder: see you soon.",
                                    kind=MessageKind.REMINDER, appointment=appointment)
    return appointment, _session(tenant, message.thread)


def test_patient_confirms_and_a_second_click_is_harmless(tenant_a, alice, patient, in_a):
    appointment, session = _appointment_session(tenant_a, alice, patient)
    result = services.patient_appointment_action(tenant=tenant_a, session=session, action="confirm")
    assert result.status == AppointmentStatus.CONFIRMED
    again = services.patient_appointment_action(tenant=tenant_a, session=session, action="confirm")
    assert again.status == AppointmentStatus.CONFIRMED
    inbound = Message.objects.filter(direction=Direction.INBOUND)
    assert [m.body for m in inbound] == ["Confirmed the appointment."]
    [event] = AuditEvent.objects.filter(event_type=AuditEventType.PATIENT_APPOINTMENT_ACTION)
    assert event.actor_type == "patient" and event.details["action"] == "confirm"
    assert Thread.objects.get(pk=session.thread_id).staff_unread == 1


def test_patient_asks_to_reschedule_then_cancels(tenant_a, alice, patient, in_a):
    appointment, session = _appointment_session(tenant_a, alice, patient)
    services.patient_appointment_action(tenant=tenant_a, session=session, action="reschedule",
                                        note="Mornings are better.")
    appointment.refresh_from_db()
    assert appointment.status == AppointmentStatus.RESCHEDULE_REQUESTED
    services.patient_appointment_action(tenant=tenant_a, session=session, action="cancel")
    appointment.refresh_from_db()
    assert appointment.status == AppointmentStatus.CANCELLED
    bodies = [m.body for m in Message.objects.filter(direction=Direction.INBOUND)]
    assert bodies == ["Asked to reschedule the appointment.\n\nMornings are better.", "Cancelled the appointment."]
    with pytest.raises(ApplicationError) as exc:
        services.patient_appointment_action(tenant=tenant_a, session=session, action="confirm")
    assert exc.value.code == "conflict" and "action" in exc.value.fields
    appointment.refresh_from_db()
    assert appointment.status == AppointmentStatus.CANCELLED


def test_past_appointment_cannot_be_changed(tenant_a, alice, patient, in_a, time_machine):
    start = timezone.now() + timedelta(hours=1)
    appointment, session = _appointment_session(tenant_a, alice, patient, starts_at=start)
    time_machine.move_to(start + timedelta(minutes=5), tick=False)
    with pytest.raises(ApplicationError) as exc:
        services.patient_appointment_action(tenant=tenant_a, session=session, action="cancel")
    assert "action" in exc.value.fields
    appointment.refresh_from_db()
    assert appointment.status == AppointmentStatus.BOOKED
    assert not AuditEvent.objects.filter(event_type=AuditEventType.PATIENT_APPOINTMENT_ACTION).exists()


def test_appointment_action_input_errors_name_the_field(tenant_a, alice, patient, in_a):
    _appointment, session = _appointment_session(tenant_a, alice, patient)
    with pytest.raises(ApplicationError) as exc:
        services.patient_appointment_action(tenant=tenant_a, session=session, action="delete")
    assert "action" in exc.value.fields
    with pytest.raises(ApplicationError) as exc:
        services.patient_appointment_action(tenant=tenant_a, session=session, action="confirm", note="n" * 1001)
    assert "note" in exc.value.fields
    plain = services.message_send(tenant=tenant_a, actor=alice, patient=patient, body=BODY).thread
    with pytest.raises(ApplicationError) as exc:
        services.patient_appointment_action(tenant=tenant_a, session=_session(tenant_a, plain), action="confirm")
    assert "action" in exc.value.fields
    assert not Message.objects.filter(direction=Direction.INBOUND).exists()


# --- input limits --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("body,field,needle", [
    ("x" * 2001, "body", "2000"),
    ("Hello\x00there", "body", "control"),
    ("Hi \x1b[31mred", "body", "control"),
    ("", "body", "required"),
    ("   \n\t ", "body", "required"),
    (None, "body", "required"),
])
def test_bad_body_is_refused_with_a_field_error(tenant_a, alice, patient, in_a, body, field, needle):
    with pytest.raises(ApplicationError) as exc:
        services.message_send(tenant=tenant_a, actor=alice, patient=patient, body=body)
    assert needle in " ".join(exc.value.fields[field])
    _nothing_written()


def test_longest_body_is_accepted_and_unknown_kind_refused(tenant_a, alice, patient, in_a):
    with pytest.raises(ApplicationError) as exc:
        services.message_send(tenant=tenant_a, actor=alice, patient=patient, body=BODY, kind="marketing")
    assert "kind" in exc.value.fields
    _nothing_written()
    message = services.message_send(tenant=tenant_a, actor=alice, patient=patient, body="é" * 2000)
    assert len(Message.objects.get(pk=message.pk).body) == 2000


def test_patient_reply_with_a_key_used_elsewhere_is_a_conflict_not_a_crash(tenant_a, alice, patient, in_a):
    services.message_send(tenant=tenant_a, actor=alice, patient=patient, body=BODY, idempotency_key="ehr-order-0003")
    other_thread = services.message_send(tenant=tenant_a, actor=alice, patient=patient, body="Reminder",
                                         kind=MessageKind.REMINDER).thread
    session = _session(tenant_a, other_thread)
    with pytest.raises(ConflictError):
        services.patient_reply(tenant=tenant_a, session=session, body="Thanks", idempotency_key="ehr-order-0003")
    assert not Message.objects.filter(direction=Direction.INBOUND).exists()
    # The same key in the patient's own thread is a harmless repeat.
    first = services.patient_reply(tenant=tenant_a, session=session, body="Thanks", idempotency_key="web-reply-0001")
    again = services.patient_reply(tenant=tenant_a, session=session, body="Thanks", idempotency_key="web-reply-0001")
    assert again.pk == first.pk
