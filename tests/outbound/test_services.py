"""Endpoints (URL rules, secrets, audit), the hooks in messaging (same transaction), the FHIR
payloads, and tenant isolation."""

from __future__ import annotations

import json

import pytest
from django.db import transaction
from fhir.resources.R4B.appointmentresponse import AppointmentResponse
from fhir.resources.R4B.communication import Communication

from accounts.errors import ApplicationError, NotFound
from accounts.tenancy import tenant_scope
from audit.events import AuditEventType
from audit.models import AuditEvent
from messaging import links
from messaging import services as messaging_services
from messaging.inbound import inbound_sms_receive
from messaging.models import MessageKind, SecureLink
from outbound import selectors, services
from outbound.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint
from tests.factories import make_appointment
from tests.outbound.conftest import verify

BOTH = ["appointment.response", "message.received"]


class Rollback(Exception):
    pass


def _session(tenant, actor, patient, appointment=None):
    message = messaging_services.message_send(tenant=tenant, actor=actor, patient=patient, body="See you soon.",
                                              kind=MessageKind.REMINDER if appointment else MessageKind.GENERAL,
                                              appointment=appointment)
    link = SecureLink.objects.filter(thread=message.thread).order_by("-created_at").first()
    session, _key = links.patient_session_start(tenant=tenant, link=link)
    return session


# --- endpoints ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("url,needle", [
    ("http://example.com/hook", "https"),
    ("http://10.0.0.5/hook", "https"),
    ("ftp://example.com/hook", "https://"),
    ("https://user:pw@example.com/hook", "credentials"),
    ("https:///nohost", "https://"),
    ("https://example.com/a b", "spaces"),
    ("https://example.com/" + "a" * 500, "500"),
    ("", "Enter"),
])
def test_bad_urls_are_refused_naming_the_url_field(tenant_a, alice, in_a, url, needle):
    with pytest.raises(ApplicationError) as exc:
        services.endpoint_create(tenant=tenant_a, actor=alice, url=url, events=BOTH)
    assert needle in " ".join(exc.value.fields["url"])
    assert not WebhookEndpoint.objects.exists()


def test_https_is_required_outside_dev_and_private_addresses_are_refused(tenant_a, alice, in_a, settings):
    settings.DEBUG = settings.DEMO = settings.TESTING = False
    for url in ("http://127.0.0.1:8080/hook", "https://10.1.2.3/hook", "https://[::1]/hook"):
        with pytest.raises(ApplicationError) as exc:
            services.endpoint_create(tenant=tenant_a, actor=alice, url=url, events=BOTH)
        assert "url" in exc.value.fields
    endpoint, _ = services.endpoint_create(tenant=tenant_a, actor=alice, url="https://ehr.example.com/in?x=1",
                                           events=BOTH)
    assert endpoint.url == "https://ehr.example.com/in?x=1"


@pytest.mark.parametrize("events", [[], ["message.sent"], ["message.received", "bogus"]])
def test_events_must_be_known(tenant_a, alice, in_a, events):
    with pytest.raises(ApplicationError) as exc:
        services.endpoint_create(tenant=tenant_a, actor=alice, url="https://ehr.example.com/in", events=events)
    assert "events" in exc.value.fields


def test_create_returns_a_fresh_encrypted_secret_and_audits(tenant_a, alice, in_a):
    from django.db import connection

    first, secret_1 = services.endpoint_create(tenant=tenant_a, actor=alice, url="https://ehr.example.com/in",
                                               events=BOTH)
    _second, secret_2 = services.endpoint_create(tenant=tenant_a, actor=alice, url="https://ehr.example.com/in2",
                                                 events=["message.received"])
    assert len(secret_1) >= 43 and secret_1 != secret_2
    assert WebhookEndpoint.objects.get(pk=first.pk).secret == secret_1
    with connection.cursor() as cursor:
        cursor.execute("SELECT secret FROM outbound_webhookendpoint WHERE id = %s", [first.pk])
        raw = bytes(cursor.fetchone()[0])
    assert secret_1.encode() not in raw
    events = AuditEvent.objects.filter(event_type=AuditEventType.TENANT_SETTINGS_CHANGED, object_id=str(first.pk))
    assert [e.details["fields"] for e in events] == [["webhooks"]]
    services.endpoint_deactivate(tenant=tenant_a, actor=alice, endpoint=first)
    assert AuditEvent.objects.filter(event_type=AuditEventType.TENANT_SETTINGS_CHANGED,
                                     object_id=str(first.pk)).count() == 2


# --- the hooks -----------------------------------------------------------------------------------------------


def test_patient_confirming_emits_one_fhir_appointment_response_per_endpoint(
        tenant_a, alice, patient, in_a, receiver, django_capture_on_commit_callbacks):
    _one, secret = services.endpoint_create(tenant=tenant_a, actor=alice, url=receiver.url, events=BOTH)
    services.endpoint_create(tenant=tenant_a, actor=alice, url=receiver.url + "/2", events=["appointment.response"])
    services.endpoint_create(tenant=tenant_a, actor=alice, url=receiver.url + "/3", events=["message.received"])
    appointment = make_appointment(tenant=tenant_a, patient=patient, source="fhir", external_id="EHR-APPT-77")
    session = _session(tenant_a, alice, patient, appointment)
    with django_capture_on_commit_callbacks(execute=True):
        messaging_services.patient_appointment_action(tenant=tenant_a, session=session, action="reschedule",
                                                      note="Mornings are better.")
    rows = list(WebhookDelivery.objects.all())
    assert len(rows) == 2 and {r.kind for r in rows} == {"appointment.response"}
    assert {r.status for r in rows} == {DeliveryStatus.DELIVERED}
    got = next(r for r in receiver.requests if r.path == "/hooks/caretext")
    assert verify(secret, got)
    resource = AppointmentResponse.model_validate(json.loads(got.body))
    assert resource.participantStatus == "tentative" and resource.comment == "Mornings are better."
    assert resource.appointment.reference == f"Appointment/{appointment.pk}"
    assert resource.appointment.identifier.value == "EHR-APPT-77"
    assert resource.actor.reference == f"Patient/{patient.pk}" and resource.actor.identifier.value == "MRN-0042"
    # A second click changes nothing and sends nothing.
    with django_capture_on_commit_callbacks(execute=True):
        messaging_services.patient_appointment_action(tenant=tenant_a, session=session, action="reschedule")
    assert WebhookDelivery.objects.count() == 2 and len(receiver.requests) == 2


@pytest.mark.parametrize("action,status", [("confirm", "accepted"), ("cancel", "declined")])
def test_confirm_and_cancel_map_to_participant_status(tenant_a, alice, patient, in_a, action, status):
    services.endpoint_create(tenant=tenant_a, actor=alice, url="https://ehr.example.com/in", events=BOTH)
    appointment = make_appointment(tenant=tenant_a, patient=patient)
    session = _session(tenant_a, alice, patient, appointment)
    messaging_services.patient_appointment_action(tenant=tenant_a, session=session, action=action)
    [row] = WebhookDelivery.objects.all()
    resource = AppointmentResponse.model_validate(json.loads(row.payload))
    assert resource.participantStatus == status and resource.comment is None
    assert resource.appointment.identifier is None  # entered by staff: no EHR id to carry


def test_patient_reply_emits_one_fhir_communication_per_endpoint(tenant_a, alice, patient, in_a, receiver,
                                                                 django_capture_on_commit_callbacks):
    _one, secret = services.endpoint_create(tenant=tenant_a, actor=alice, url=receiver.url, events=BOTH)
    services.endpoint_create(tenant=tenant_a, actor=alice, url=receiver.url + "/2", events=["message.received"])
    services.endpoint_create(tenant=tenant_a, actor=alice, url=receiver.url + "/3", events=["appointment.response"])
    session = _session(tenant_a, alice, patient)
    with django_capture_on_commit_callbacks(execute=True):
        message = messaging_services.patient_reply(tenant=tenant_a, session=session, body="Is the lab open Sunday?")
    assert WebhookDelivery.objects.filter(kind="message.received").count() == 2
    assert WebhookDelivery.objects.count() == 2
    got = next(r for r in receiver.requests if r.path == "/hooks/caretext")
    assert verify(secret, got)
    resource = Communication.model_validate(json.loads(got.body))
    assert resource.payload[0].contentString == "Is the lab open Sunday?"
    assert resource.subject.reference == f"Patient/{patient.pk}" and resource.subject.identifier.value == "MRN-0042"
    assert resource.id == str(message.pk) and resource.sent is not None


def test_sms_reply_emits_a_communication(tenant_a, alice, patient, in_a):
    services.endpoint_create(tenant=tenant_a, actor=alice, url="https://ehr.example.com/in", events=BOTH)
    inbound_sms_receive(tenant=tenant_a, provider_id="SM-outbound-1", from_number=patient.phone,
                        body="Running 10 minutes late")
    inbound_sms_receive(tenant=tenant_a, provider_id="SM-outbound-1", from_number=patient.phone,
                        body="Running 10 minutes late")  # Twilio retried the webhook: no second event
    [row] = WebhookDelivery.objects.all()
    resource = Communication.model_validate(json.loads(row.payload))
    assert resource.payload[0].contentString == "Running 10 minutes late"


def test_keywords_and_unknown_numbers_emit_nothing(tenant_a, alice, patient, in_a):
    services.endpoint_create(tenant=tenant_a, actor=alice, url="https://ehr.example.com/in", events=BOTH)
    inbound_sms_receive(tenant=tenant_a, provider_id="SM-kw", from_number=patient.phone, body="STOP")
    inbound_sms_receive(tenant=tenant_a, provider_id="SM-unknown", from_number="+12025550999", body="hello?")
    assert not WebhookDelivery.objects.exists()


def test_the_delivery_rolls_back_with_the_patients_answer(tenant_a, alice, patient, in_a, receiver,
                                                         django_capture_on_commit_callbacks):
    services.endpoint_create(tenant=tenant_a, actor=alice, url=receiver.url, events=BOTH)
    appointment = make_appointment(tenant=tenant_a, patient=patient)
    session = _session(tenant_a, alice, patient, appointment)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with pytest.raises(Rollback), transaction.atomic():
            messaging_services.patient_appointment_action(tenant=tenant_a, session=session, action="confirm")
            messaging_services.patient_reply(tenant=tenant_a, session=session, body="Thanks")
            assert WebhookDelivery.objects.count() == 2  # written in the caller's transaction
            raise Rollback
    assert not WebhookDelivery.objects.exists()
    assert callbacks == [] and receiver.requests == []
    appointment.refresh_from_db()
    assert appointment.status == "booked"


# --- isolation -----------------------------------------------------------------------------------------------


def test_endpoints_and_deliveries_are_per_clinic(tenant_a, tenant_b, alice, charlie, patient, in_a):
    mine, _ = services.endpoint_create(tenant=tenant_a, actor=alice, url="https://a.example.com/in", events=BOTH)
    with tenant_scope(tenant_b):
        theirs, _ = services.endpoint_create(tenant=tenant_b, actor=charlie, url="https://b.example.com/in",
                                             events=BOTH)
    session = _session(tenant_a, alice, patient)
    messaging_services.patient_reply(tenant=tenant_a, session=session, body="Hello")
    [row] = WebhookDelivery.objects.all()
    assert row.endpoint_id == mine.pk
    assert [e.pk for e in selectors.endpoint_list(tenant=tenant_a)] == [mine.pk]
    with pytest.raises(NotFound):
        selectors.endpoint_get(tenant=tenant_a, endpoint_id=theirs.pk)
    with pytest.raises(NotFound):
        selectors.endpoint_get(tenant=tenant_a, endpoint_id="not-a-uuid")
    with tenant_scope(tenant_b):
        assert not WebhookDelivery.objects.exists()
        assert [e.pk for e in selectors.endpoint_list(tenant=tenant_b)] == [theirs.pk]
        assert services.due_ids() == []


def test_rls_hides_other_clinics_rows_from_raw_sql(tenant_a, tenant_b, alice, charlie, in_a):
    from django.db import connection

    services.endpoint_create(tenant=tenant_a, actor=alice, url="https://a.example.com/in", events=BOTH)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM outbound_webhookendpoint")
        assert cursor.fetchone()[0] == 1
    with tenant_scope(tenant_b), connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM outbound_webhookendpoint")
        assert cursor.fetchone()[0] == 0
