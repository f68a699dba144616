"""messaging.inbound called directly (the Twilio webhook view is tested elsewhere): texts into
threads, keywords into the consent ledger, unknown numbers, urgent words."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from audit.events import AuditEventType
from audit.models import AuditEvent
from consent.keywords import keyword_reply_text
from consent.selectors import consent_state
from integrations.models import LocalSms
from integrations.sms.faulty import FaultyGateway
from messaging import services
from messaging.inbound import inbound_sms_receive, is_urgent
from messaging.models import (
    Direction,
    InboundSms,
    Message,
    OutboundSms,
    SecureLink,
    SmsStatus,
    Thread,
)
from messaging.outbox import sms_send_one
from tests.factories import make_textable_patient

PHONE = "+12025550171"  # the ``patient`` fixture's number
STRANGER = "+12025550199"


def _receive(tenant, body, *, sid, from_number=PHONE) -> InboundSms:
    return inbound_sms_receive(tenant=tenant, provider_id=sid, from_number=from_number, body=body)


def _sent_thread(tenant, actor, patient) -> Thread:
    message = services.message_send(tenant=tenant, actor=actor, patient=patient, body="Your flu shot is due.")
    row = OutboundSms.objects.get(message=message)
    assert sms_send_one(tenant=tenant, sms_id=row.pk, gateway=FaultyGateway()) == "sent"
    return message.thread


# --- ordinary texts -----------------------------------------------------------------------------------------


def test_text_from_a_patient_lands_in_their_open_thread_with_a_fresh_link(tenant_a, alice, patient, in_a):
    thread = _sent_thread(tenant_a, alice, patient)
    links_before = set(SecureLink.objects.values_list("pk", flat=True))
    inbound = _receive(tenant_a, "Can I come on Friday instead?", sid="SM" + "1" * 32)
    assert inbound.outcome == "message" and inbound.patient_id == patient.pk and not inbound.urgent
    message = Message.objects.get(pk=inbound.message_id)
    assert message.thread_id == thread.pk
    assert message.direction == Direction.INBOUND and message.source == "sms"
    assert message.body == "Can I come on Friday instead?"
    thread.refresh_from_db()
    assert thread.staff_unread == 1 and thread.last_inbound_at is not None
    [notice] = OutboundSms.objects.filter(status=SmsStatus.QUEUED)
    assert notice.notification == "link_notice" and notice.sms_kind == "staff_reply"
    assert notice.link_id not in links_before and notice.link.thread_id == thread.pk
    [event] = AuditEvent.objects.filter(event_type=AuditEventType.MESSAGE_RECEIVED)
    assert event.actor_type == "patient" and event.patient_id == patient.pk
    assert event.details == {"thread_id": str(thread.pk), "source": "sms", "urgent": False}


def test_text_without_a_thread_opens_one(tenant_a, patient, in_a):
    inbound = _receive(tenant_a, "Hello, is this the clinic?", sid="SM" + "2" * 32)
    thread = Thread.objects.get()
    assert thread.patient_id == patient.pk and inbound.message.thread_id == thread.pk
    assert OutboundSms.objects.filter(notification="link_notice", link__thread=thread).count() == 1


def test_same_provider_id_twice_is_recorded_once(tenant_a, alice, patient, in_a):
    _sent_thread(tenant_a, alice, patient)
    first = _receive(tenant_a, "Running late", sid="SM" + "3" * 32)
    again = _receive(tenant_a, "Running late", sid="SM" + "3" * 32)
    assert again.pk == first.pk
    assert InboundSms.objects.count() == 1
    assert Message.objects.filter(direction=Direction.INBOUND).count() == 1
    assert OutboundSms.objects.filter(status=SmsStatus.QUEUED).count() == 1
    assert Thread.objects.get().staff_unread == 1


def test_a_duplicate_is_refused_by_the_unique_sid_and_its_whole_transaction_rolls_back(tenant_a, alice, patient,
                                                                                        in_a):
    """No "seen before?" read (one query less per text): a repeat, or two deliveries of one SID at
    once, does the work, its row hits the unique (tenant, provider_id) and its whole transaction
    (message, link, notice, audit events, keyword) rolls back; the first row is returned."""
    _sent_thread(tenant_a, alice, patient)
    first = _receive(tenant_a, "Running late", sid="SM" + "4" * 32)
    stop = _receive(tenant_a, "STOP", sid="SM" + "7" * 32)
    counts = (Message.objects.count(), SecureLink.objects.count(), OutboundSms.objects.count(),
              AuditEvent.objects.count(), InboundSms.objects.count())
    assert _receive(tenant_a, "Running late", sid="SM" + "4" * 32).pk == first.pk
    assert _receive(tenant_a, "STOP", sid="SM" + "7" * 32).pk == stop.pk
    assert (Message.objects.count(), SecureLink.objects.count(), OutboundSms.objects.count(),
            AuditEvent.objects.count(), InboundSms.objects.count()) == counts
    assert Thread.objects.get().staff_unread == 1


def test_text_from_an_opted_out_patient_is_kept_but_not_answered(tenant_a, alice, patient, in_a):
    from consent.services import consent_revoke

    consent_revoke(tenant=tenant_a, actor=alice, patient=patient, method="verbal", evidence="Asked to stop")
    inbound = _receive(tenant_a, "Do I still need the blood test?", sid="SM" + "4" * 32)
    assert inbound.outcome == "message" and inbound.message_id is not None
    assert not OutboundSms.objects.exists()


def test_urgent_text_flags_the_thread_and_answers_with_help(tenant_a, alice, patient, in_a):
    thread = _sent_thread(tenant_a, alice, patient)
    inbound = _receive(tenant_a, "I can’t breathe well since last night", sid="SM" + "5" * 32)
    assert inbound.urgent
    thread.refresh_from_db()
    assert thread.urgent
    assert OutboundSms.objects.filter(notification="urgent_notice").count() == 1
    _receive(tenant_a, "chest pain too", sid="SM" + "6" * 32)
    assert OutboundSms.objects.filter(notification="urgent_notice").count() == 1  # once a day


# --- keywords -----------------------------------------------------------------------------------------------


def test_stop_start_help_go_through_the_ledger_with_one_reply_each(tenant_a, alice, patient, in_a,
                                                                  django_capture_on_commit_callbacks):
    pending = OutboundSms.objects.get(message=services.message_send(
        tenant=tenant_a, actor=alice, patient=patient, body="Lab results are in."))
    with django_capture_on_commit_callbacks(execute=True):
        stop = _receive(tenant_a, "STOP", sid="SM" + "7" * 32)
    assert stop.outcome == "keyword" and stop.message_id is None
    assert consent_state(tenant_a, patient) == "revoked"
    assert OutboundSms.objects.get(pk=pending.pk).status == SmsStatus.CANCELLED
    replies = list(LocalSms.objects.filter(to=PHONE))
    assert [r.body for r in replies] == [keyword_reply_text(tenant=tenant_a, kind="stop_confirmation")]
    # A second STOP records nothing and is not answered again.
    with django_capture_on_commit_callbacks(execute=True):
        _receive(tenant_a, "stop", sid="SM" + "8" * 32)
    assert LocalSms.objects.filter(to=PHONE).count() == 1
    with django_capture_on_commit_callbacks(execute=True):
        _receive(tenant_a, "START", sid="SM" + "9" * 32)
    assert consent_state(tenant_a, patient) == "granted"
    with django_capture_on_commit_callbacks(execute=True):
        _receive(tenant_a, "HELP", sid="SM" + "a" * 32)
    assert consent_state(tenant_a, patient) == "granted"
    bodies = [r.body for r in LocalSms.objects.filter(to=PHONE).order_by("created_at", "id")]
    assert bodies[1:] == [keyword_reply_text(tenant=tenant_a, kind="start_confirmation"),
                          keyword_reply_text(tenant=tenant_a, kind="help")]
    assert not Message.objects.filter(direction=Direction.INBOUND).exists()  # keywords are not messages
    methods = set(AuditEvent.objects.filter(event_type=AuditEventType.CONSENT_CHANGED,
                                            actor_type="patient").values_list("details__method", flat=True))
    assert methods == {"sms_keyword"}


def test_one_stop_opts_out_everyone_sharing_the_number(tenant_a, alice, patient, in_a):
    child = make_textable_patient(tenant=tenant_a, owner=alice, given_name="Bo", family_name="Quill", phone=PHONE)
    other = make_textable_patient(tenant=tenant_a, owner=alice, phone="+12025550172")
    _receive(tenant_a, "Stop texting me please", sid="SM" + "b" * 32)
    assert consent_state(tenant_a, patient) == "revoked"
    assert consent_state(tenant_a, child) == "revoked"
    assert consent_state(tenant_a, other) == "granted"
    [reply] = OutboundSms.objects.filter(notification="keyword_reply")
    assert reply.to == PHONE and reply.payload == "stop_confirmation"


def test_a_text_goes_to_the_newest_open_thread_of_the_patients_with_the_number(tenant_a, alice, patient, in_a):
    """Open beats a more recent closed thread; a closed one is used (and reopened) only when none
    is open; an inactive patient's threads are never picked."""
    from messaging.models import ThreadStatus
    from patients.models import Patient

    assert sorted(ThreadStatus.values, reverse=True) == ["open", "closed"]  # the lookup orders by "-status"
    child = make_textable_patient(tenant=tenant_a, owner=alice, given_name="Bo", family_name="Quill", phone=PHONE)
    gone = make_textable_patient(tenant=tenant_a, owner=alice, given_name="Al", family_name="Quill", phone=PHONE)
    now = timezone.now()
    old_open = _sent_thread(tenant_a, alice, patient)
    recent_closed = _sent_thread(tenant_a, alice, child)
    inactive_open = _sent_thread(tenant_a, alice, gone)
    Thread.objects.filter(pk=old_open.pk).update(last_activity_at=now - timedelta(days=3))
    Thread.objects.filter(pk=recent_closed.pk).update(status="closed", last_activity_at=now - timedelta(hours=1))
    Thread.objects.filter(pk=inactive_open.pk).update(last_activity_at=now)
    Patient.objects.filter(pk=gone.pk).update(is_active=False)
    first = _receive(tenant_a, "Running late", sid="SM" + "1" * 32)
    assert first.message.thread_id == old_open.pk and first.patient_id == patient.pk
    Thread.objects.filter(pk=old_open.pk).update(status="closed", last_activity_at=now - timedelta(days=3))
    second = _receive(tenant_a, "Still late", sid="SM" + "2" * 32)
    assert second.message.thread_id == recent_closed.pk and second.patient_id == child.pk
    assert Thread.objects.get(pk=recent_closed.pk).status == "open"


# --- unknown numbers ------------------------------------------------------------------------------------------


def test_unknown_number_is_kept_for_triage_and_answered_once_a_day(tenant_a, patient, in_a, time_machine):
    time_machine.move_to(timezone.now(), tick=False)
    first = _receive(tenant_a, "Hi, is Dr. Rivera in today?", sid="SM" + "c" * 32, from_number=STRANGER)
    assert first.outcome == "unknown_number" and first.patient_id is None and first.message_id is None
    assert not Thread.objects.exists()
    [reply] = OutboundSms.objects.filter(notification="keyword_reply")
    assert reply.to == STRANGER and reply.payload == "help" and reply.patient_id is None
    _receive(tenant_a, "Hello??", sid="SM" + "d" * 32, from_number=STRANGER)
    assert OutboundSms.objects.filter(notification="keyword_reply").count() == 1
    time_machine.move_to(timezone.now() + timedelta(hours=25), tick=False)
    _receive(tenant_a, "Anyone?", sid="SM" + "e" * 32, from_number=STRANGER)
    assert OutboundSms.objects.filter(notification="keyword_reply").count() == 2
    assert InboundSms.objects.filter(outcome="unknown_number").count() == 3


def test_unknown_number_stop_gets_no_reply_and_urgent_gets_help(tenant_a, in_a):
    _receive(tenant_a, "STOP", sid="SM" + "f" * 32, from_number=STRANGER)
    assert not OutboundSms.objects.exists()
    _receive(tenant_a, "no puedo respirar", sid="SM" + "0" * 32, from_number="+12025550198")
    [notice] = OutboundSms.objects.all()
    assert notice.notification == "urgent_notice" and notice.to == "+12025550198"


# --- urgent words ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "no puedo respirar",
    "NO PUEDO RESPIRAR desde anoche",
    "tengo dolor de pecho",
    "Dolor en el pecho y mareo",
    "he pensado en el suicidio",
    "creo que es un ataque al corazón",
    "quiero hacerme daño",
    "chest pain since this morning",
    "I can’t breathe",  # curly apostrophe, as phones type it
    "i cant breathe",
    "Thinking about suicide.",
    "I think I took an overdose",
    "Is this an EMERGENCY?",
])
def test_urgent_phrases_are_recognised(text):
    assert is_urgent(text)


@pytest.mark.parametrize("text", [
    "I'm breathing easier now, thanks",
    "The pain in my knee is better",
    "My chest x-ray was fine",
    "I can breathe through my nose again",
    "Swam 200 strokes today!",
    "Me duele un poco la rodilla",
    "Respiro mejor hoy, gracias",
    "Can I get my flu shot on Friday?",
    "",
])
def test_ordinary_texts_are_not_urgent(text):
    assert not is_urgent(text)
