"""messaging.inbound's usual case (a text into an existing thread) reads the thread, its patient,
the patient's consent, the clinic's subscribed webhook endpoints and the thread's unsent link
notice in one written-out query on PostgreSQL, and the ORM's queries elsewhere. Every test runs
both ways (``path``), so the two cannot drift apart; and an unsent notice whose link is live and
young answers a new text as it is (one SMS, one link), an older or dead one gets a fresh link."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from audit.events import AuditEventType
from audit.models import AuditEvent
from consent.services import consent_grant, consent_revoke
from integrations.sms.faulty import FaultyGateway
from messaging import inbound as inbound_module
from messaging import services
from messaging.inbound import NOTICE_REUSE_WITHIN, inbound_sms_receive
from messaging.models import InboundSms, Message, OutboundSms, SecureLink, SmsStatus, Thread
from messaging.outbox import sms_send_one
from outbound import services as outbound_services
from outbound.models import WebhookDelivery, WebhookEndpoint
from patients.services import patient_update

PHONE = "+12025550171"  # the ``patient`` fixture's number
_sids = iter(range(1, 10_000))


@pytest.fixture(params=["sql", "orm"])
def path(request, monkeypatch):
    if request.param == "orm":
        monkeypatch.setattr(inbound_module, "_written_out", lambda conn: False)
    elif connection.vendor != "postgresql":
        pytest.skip("the written-out query is PostgreSQL's")
    return request.param


def _text(tenant, body="Can I come on Friday instead?", *, from_number=PHONE) -> InboundSms:
    return inbound_sms_receive(tenant=tenant, provider_id=f"SM{next(_sids):032x}", from_number=from_number,
                               body=body)


def _thread_with_sent_notice(tenant, actor, patient) -> Thread:
    message = services.message_send(tenant=tenant, actor=actor, patient=patient, body="Your flu shot is due.")
    row = OutboundSms.objects.get(message=message)
    assert sms_send_one(tenant=tenant, sms_id=row.pk, gateway=FaultyGateway()) == "sent"
    return message.thread


def _unsent_notices(thread) -> list[OutboundSms]:
    return list(OutboundSms.objects.filter(link__thread=thread, notification="link_notice",
                                           status__in=[SmsStatus.QUEUED, SmsStatus.WAITING]))


def _links_created() -> int:
    return AuditEvent.objects.filter(event_type=AuditEventType.LINK_CREATED).count()


# --- the link notice ----------------------------------------------------------------------------------------


def test_texts_while_the_notice_is_unsent_share_it_and_its_link(tenant_a, alice, patient, in_a, path):
    thread = _thread_with_sent_notice(tenant_a, alice, patient)
    first = _text(tenant_a)
    [notice] = _unsent_notices(thread)
    links, created = SecureLink.objects.count(), _links_created()
    second = _text(tenant_a, "And can my daughter come too?")
    third = _text(tenant_a, "Thanks")
    assert [n.pk for n in _unsent_notices(thread)] == [notice.pk]
    again = OutboundSms.objects.get(pk=notice.pk)
    assert again.link_id == notice.link_id and again.payload == notice.payload
    assert SecureLink.objects.count() == links and _links_created() == created
    # Every text is still stored, in the thread, for staff.
    assert [m.thread_id for m in Message.objects.filter(pk__in=[first.message_id, second.message_id,
                                                                 third.message_id])] == [thread.pk] * 3
    assert Thread.objects.get(pk=thread.pk).staff_unread == 3


def test_an_unsent_notice_with_an_older_link_gets_a_fresh_one(tenant_a, alice, patient, in_a, path, time_machine):
    thread = _thread_with_sent_notice(tenant_a, alice, patient)
    _text(tenant_a)
    [notice] = _unsent_notices(thread)
    time_machine.move_to(notice.link.created_at + NOTICE_REUSE_WITHIN + timedelta(minutes=1))
    _text(tenant_a, "Hello again")
    [again] = _unsent_notices(thread)
    assert again.pk == notice.pk and again.link_id != notice.link_id
    assert again.link.created_at > notice.link.created_at


@pytest.mark.parametrize("state", ["superseded", "expired", "locked"])
def test_an_unsent_notice_whose_link_no_longer_works_gets_a_fresh_one(tenant_a, alice, patient, in_a, path,
                                                                      state):
    from django.utils import timezone

    thread = _thread_with_sent_notice(tenant_a, alice, patient)
    _text(tenant_a)
    [notice] = _unsent_notices(thread)
    now = timezone.now()
    change = {"superseded": {"revoked_at": now, "revoked_reason": "superseded"},
              "expired": {"expires_at": now - timedelta(seconds=1)},
              "locked": {"locked_until": now + timedelta(minutes=30)}}[state]
    SecureLink.objects.filter(pk=notice.link_id).update(**change)
    _text(tenant_a, "Hello again")
    [again] = _unsent_notices(thread)
    assert again.pk == notice.pk and again.link_id != notice.link_id


def test_a_text_after_the_notice_went_gets_a_new_notice_and_link(tenant_a, alice, patient, in_a, path):
    thread = _thread_with_sent_notice(tenant_a, alice, patient)
    _text(tenant_a)
    [notice] = _unsent_notices(thread)
    assert sms_send_one(tenant=tenant_a, sms_id=notice.pk, gateway=FaultyGateway()) == "sent"
    _text(tenant_a, "One more thing")
    [fresh] = _unsent_notices(thread)
    assert fresh.pk != notice.pk and fresh.link_id != notice.link_id


# --- consent ----------------------------------------------------------------------------------------------


def test_consent_decides_the_answer_as_the_ledger_says(tenant_a, alice, patient, in_a, path):
    thread = _thread_with_sent_notice(tenant_a, alice, patient)
    consent_revoke(tenant=tenant_a, actor=alice, patient=patient, method="verbal", evidence="Asked to stop")
    _text(tenant_a)
    assert _unsent_notices(thread) == []  # revoked: kept for staff, not answered
    consent_grant(tenant=tenant_a, actor=alice, patient=patient, method="verbal", disclosure_version="v1",
                  evidence="Asked to start again")
    _text(tenant_a, "Hello?")
    assert len(_unsent_notices(thread)) == 1
    assert Thread.objects.get(pk=thread.pk).staff_unread == 2


def test_a_new_number_is_not_answered_until_consent_is_captured_for_it(tenant_a, alice, patient, in_a, path):
    thread = _thread_with_sent_notice(tenant_a, alice, patient)
    patient_update(tenant=tenant_a, actor=alice, patient=patient, phone="+12025550172")
    inbound = _text(tenant_a, from_number="+12025550172")
    assert inbound.outcome == "message" and Message.objects.get(pk=inbound.message_id).thread_id == thread.pk
    assert _unsent_notices(thread) == []


# --- webhooks to the clinic's systems -----------------------------------------------------------------------


@pytest.mark.parametrize(("events", "active", "deliveries"), [
    (["message.received"], True, 1),
    (["appointment.response", "message.received"], True, 1),
    (["appointment.response"], True, 0),
    (["message.received"], False, 0),
])
def test_a_text_into_a_thread_is_sent_to_subscribed_endpoints_only(tenant_a, alice, patient, in_a, path, events,
                                                                    active, deliveries):
    _thread_with_sent_notice(tenant_a, alice, patient)
    endpoint, _ = outbound_services.endpoint_create(tenant=tenant_a, actor=alice, url="https://ehr.example.com/in",
                                                    events=events)
    if not active:
        outbound_services.endpoint_deactivate(tenant=tenant_a, actor=alice, endpoint=endpoint)
    inbound = _text(tenant_a)
    rows = list(WebhookDelivery.objects.filter(kind="message.received"))
    assert len(rows) == deliveries
    assert all(r.endpoint_id == endpoint.pk and r.patient_id == patient.pk for r in rows)
    assert all(str(inbound.message_id) in r.payload for r in rows)


def test_an_endpoint_whose_events_are_not_a_list_is_left_to_event_emit(tenant_a, alice, patient, in_a, path):
    """The written-out check never says "nobody" for a row it cannot read as a list of kinds:
    ``event_emit``'s own rule decides for it, as it did before the check existed."""
    _thread_with_sent_notice(tenant_a, alice, patient)
    endpoint, _ = outbound_services.endpoint_create(tenant=tenant_a, actor=alice, url="https://ehr.example.com/in",
                                                    events=["message.received"])
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(events="message.received")
    _text(tenant_a)
    assert WebhookDelivery.objects.filter(endpoint=endpoint).count() == 1


# --- one read ------------------------------------------------------------------------------------------


def test_the_usual_text_reads_once_and_writes_no_link(tenant_a, alice, patient, in_a):
    """On PostgreSQL, a text into a thread whose notice is unsent: the thread (with everything
    the rest asks) read once, then only writes: message, InboundSms, thread, MESSAGE_RECEIVED."""
    if connection.vendor != "postgresql":
        pytest.skip("the written-out query is PostgreSQL's")
    _thread_with_sent_notice(tenant_a, alice, patient)
    _text(tenant_a)
    with CaptureQueriesContext(connection) as queries:
        _text(tenant_a, "Running late")
    selects = [q["sql"] for q in queries.captured_queries if q["sql"].lstrip().upper().startswith(("SELECT", "WITH"))]
    assert sum(s.lstrip().startswith("WITH th AS") for s in selects) == 1
    assert not any("outbound_webhookendpoint" in s and not s.lstrip().startswith("WITH") for s in selects)
    assert not any(s.lstrip().startswith('SELECT "consent_consentevent"') for s in selects)
    assert not any('INSERT INTO "messaging_securelink"' in q["sql"] for q in queries.captured_queries)
