"""Twilio webhooks end to end through the Django client: signed form POSTs, as Twilio sends them.

The signature is computed over SITE_URL + path (the public URL), never over the test client's
``http://testserver`` host, exactly as behind the production proxy.
"""

from __future__ import annotations

import itertools
import logging
from urllib.parse import urlencode

import pytest
from django.db import connection
from django.urls import reverse
from twilio.request_validator import RequestValidator

from accounts.tenancy import tenant_scope
from audit.events import AuditEventType
from audit.models import AuditChainHead, AuditEvent
from consent.selectors import can_sms, consent_state
from integrations.models import LocalSms
from integrations.sms.faulty import FaultyGateway
from messaging import services
from messaging.models import Direction, InboundSms, Message, OutboundSms, SmsStatus, Thread
from messaging.outbox import sms_send_one, status_callback_url
from patients.models import Patient
from tests.messaging.conftest import patient, sent_sms, token_of  # noqa: F401 - fixture

TOKEN = "test-twilio-auth-token"
SITE = "https://ct.example.org"
ACCOUNT = "AC" + "0" * 32
CLINIC_NUMBER = "+12025550100"
PATIENT_PHONE = "+12025550171"  # tests/messaging/conftest.py `patient`
STRANGER = "+12025550999"
INBOUND = "integrations-twilio-inbound"
STATUS = "integrations-twilio-status"
_sids = itertools.count(1)


@pytest.fixture(autouse=True)
def _twilio(settings):
    settings.SITE_URL = SITE
    settings.SMS_GATEWAY = "local"
    settings.TWILIO_AUTH_TOKEN = TOKEN


@pytest.fixture
def clinic(tenant_a):
    tenant_a.sms_number = CLINIC_NUMBER
    tenant_a.save(update_fields=["sms_number"])
    return tenant_a


def _sid() -> str:
    return f"SM{next(_sids):032x}"


def _post(client, path: str, params: dict, *, signature: str | None):
    headers = {"X-Twilio-Signature": signature} if signature is not None else {}
    return client.post(path, urlencode(params), content_type="application/x-www-form-urlencoded", headers=headers)


def _signed(client, path: str, params: dict, *, token: str = TOKEN, signed_url: str | None = None):
    signature = RequestValidator(token).compute_signature(signed_url or SITE + path, params)
    return _post(client, path, params, signature=signature)


def _inbound_params(body: str, *, sender: str = PATIENT_PHONE, to: str = CLINIC_NUMBER):
    sid = _sid()
    return {"MessageSid": sid, "SmsSid": sid, "AccountSid": ACCOUNT, "From": sender, "To": to, "Body": body,
            "NumMedia": "0", "NumSegments": "1"}


def _inbound(client, body: str, **kwargs):
    return _signed(client, reverse(INBOUND), _inbound_params(body, **kwargs))


def _status(client, tenant, sid: str, status: str, error_code: str = ""):
    """A delivery callback to the URL the outbox gave Twilio for ``tenant``."""
    url = status_callback_url(tenant)
    params = {"MessageSid": sid, "SmsSid": sid, "AccountSid": ACCOUNT, "MessageStatus": status, "SmsStatus": status,
              "From": CLINIC_NUMBER, "To": PATIENT_PHONE, "ApiVersion": "2010-04-01"}
    if error_code:
        params["ErrorCode"] = error_code
    return _signed(client, url.removeprefix(SITE), params, signed_url=url)


def _events(tenant, event_type) -> list[AuditEvent]:
    with tenant_scope(tenant):
        return list(AuditEvent.objects.filter(event_type=event_type))


def _platform_seq() -> int:
    head = AuditChainHead.objects.filter(chain="platform").first()
    return head.seq if head else 0


def _twiml(response) -> bool:
    return (response.status_code == 200 and response["Content-Type"].startswith("text/xml")
            and response.content.decode().endswith("<Response/>"))


def _kinds(to: str) -> list[str]:
    return [sms.kind for sms in sent_sms(to)]


# --- inbound: a patient's message -------------------------------------------------------------------


def test_signed_inbound_lands_encrypted_in_the_open_thread_and_queues_a_fresh_link(
        client, clinic, alice, patient, django_capture_on_commit_callbacks):  # noqa: F811
    with tenant_scope(clinic), django_capture_on_commit_callbacks(execute=True):
        sent = services.message_send(tenant=clinic, actor=alice, patient=patient, body="Your results are in.")
    [first_notice] = sent_sms(PATIENT_PHONE)

    with django_capture_on_commit_callbacks(execute=True):
        response = _inbound(client, "Can I come in earlier on Tuesday?")

    assert _twiml(response)
    notices = sent_sms(PATIENT_PHONE)
    assert [s.kind for s in notices] == ["link_notice", "link_notice"]
    assert token_of(notices[1]) != token_of(first_notice)  # a fresh link, not the old one again
    assert "Tuesday" not in notices[1].body
    with tenant_scope(clinic):
        inbound = InboundSms.objects.get()
        assert (inbound.outcome, inbound.patient_id) == ("message", patient.pk)
        message = Message.objects.get(direction=Direction.INBOUND)
        assert message.thread_id == sent.thread_id and message.body == "Can I come in earlier on Tuesday?"
        assert message.source == "sms"
        with connection.cursor() as cursor:
            cursor.execute("SELECT body::text FROM messaging_message WHERE id = %s", [message.pk])
            assert "Tuesday" not in cursor.fetchone()[0]  # encrypted at rest
        [received] = _events(clinic, AuditEventType.MESSAGE_RECEIVED)
        assert received.actor_type == "patient" and received.patient_id == patient.pk


def test_duplicated_message_sid_is_stored_once(client, clinic, patient, django_capture_on_commit_callbacks):  # noqa: F811
    params = _inbound_params("Running ten minutes late")
    with django_capture_on_commit_callbacks(execute=True):
        first = _signed(client, reverse(INBOUND), params)
        again = _signed(client, reverse(INBOUND), params)
    assert _twiml(first) and _twiml(again)
    with tenant_scope(clinic):
        assert InboundSms.objects.count() == 1
        assert Message.objects.filter(direction=Direction.INBOUND).count() == 1
    assert _kinds(PATIENT_PHONE) == ["link_notice"]


# --- inbound: keywords ------------------------------------------------------------------------------


def test_stop_revokes_consent_confirms_once_and_cancels_queued_sms(
        client, clinic, alice, patient, django_capture_on_commit_callbacks):  # noqa: F811
    with tenant_scope(clinic):  # queued, not sent: its on-commit hand-off never runs here
        services.message_send(tenant=clinic, actor=alice, patient=patient, body="Reminder: fasting labs tomorrow.")
        queued = OutboundSms.objects.get()
        assert queued.status in (SmsStatus.QUEUED, SmsStatus.WAITING)

    with django_capture_on_commit_callbacks(execute=True):
        response = _inbound(client, "STOP")
        again = _inbound(client, "stop")

    assert _twiml(response) and _twiml(again)
    with tenant_scope(clinic):
        assert consent_state(clinic, patient) == "revoked"
        queued.refresh_from_db()
        assert queued.status == SmsStatus.CANCELLED
        assert set(InboundSms.objects.values_list("outcome", flat=True)) == {"keyword"}
    [reply] = sent_sms(PATIENT_PHONE)  # the confirmation only: the queued notice never went
    assert reply.kind == "keyword_reply" and "unsubscribed" in reply.body


def test_help_answers_with_the_help_text_and_keeps_consent(
        client, clinic, patient, django_capture_on_commit_callbacks):  # noqa: F811
    with django_capture_on_commit_callbacks(execute=True):
        assert _twiml(_inbound(client, "HELP"))
    [reply] = sent_sms(PATIENT_PHONE)
    assert reply.kind == "keyword_reply" and "Help:" in reply.body
    with tenant_scope(clinic):
        assert consent_state(clinic, patient) == "granted"


def test_start_after_stop_grants_consent_again(client, clinic, patient, django_capture_on_commit_callbacks):  # noqa: F811
    with django_capture_on_commit_callbacks(execute=True):
        _inbound(client, "STOP")
    with tenant_scope(clinic):
        assert consent_state(clinic, patient) == "revoked"
    with django_capture_on_commit_callbacks(execute=True):
        assert _twiml(_inbound(client, "START"))
    with tenant_scope(clinic):
        assert consent_state(clinic, patient) == "granted"
        assert can_sms(clinic, patient, kind="staff_message")[0] is True
    replies = sent_sms(PATIENT_PHONE)
    assert [r.kind for r in replies] == ["keyword_reply", "keyword_reply"]
    assert "unsubscribed" in replies[0].body and "secure message notices" in replies[1].body


# --- inbound: unknown numbers and urgent words ----------------------------------------------------------


def test_unknown_number_is_kept_for_triage_and_answered_once_a_day(
        client, clinic, patient, django_capture_on_commit_callbacks):  # noqa: F811
    with tenant_scope(clinic):
        patients_before = Patient.objects.count()
    with django_capture_on_commit_callbacks(execute=True):
        assert _twiml(_inbound(client, "Hi, is this the clinic?", sender=STRANGER))
        assert _twiml(_inbound(client, "Hello??", sender=STRANGER))
    with tenant_scope(clinic):
        assert list(InboundSms.objects.values_list("outcome", flat=True)) == ["unknown_number", "unknown_number"]
        assert InboundSms.objects.filter(patient__isnull=False).count() == 0
        assert Patient.objects.count() == patients_before
        assert not Thread.objects.exists()
    [reply] = sent_sms(STRANGER)
    assert reply.kind == "keyword_reply" and "Help:" in reply.body


@pytest.mark.parametrize("words", [
    ("I have chest pain since this morning", "it still hurts, chest pain"),
    ("Tengo dolor de pecho", "no puedo respirar bien"),
])
def test_urgent_words_flag_the_thread_and_send_the_urgent_notice_once(
        client, clinic, patient, django_capture_on_commit_callbacks, words):  # noqa: F811
    with django_capture_on_commit_callbacks(execute=True):
        for body in words:
            assert _twiml(_inbound(client, body))
    with tenant_scope(clinic):
        thread = Thread.objects.get()
        assert thread.urgent is True
        assert InboundSms.objects.filter(urgent=True).count() == 2
    kinds = _kinds(PATIENT_PHONE)
    assert kinds.count("urgent_notice") == 1
    assert "911" in next(s.body for s in sent_sms(PATIENT_PHONE) if s.kind == "urgent_notice")


# --- inbound: refusals --------------------------------------------------------------------------------


def _forged(params):
    return RequestValidator("not-the-token").compute_signature(SITE + reverse(INBOUND), params)


def _other_url(params):  # what build_absolute_uri would give behind the proxy
    return RequestValidator(TOKEN).compute_signature("http://testserver" + reverse(INBOUND), params)


def _other_params(params):
    return RequestValidator(TOKEN).compute_signature(SITE + reverse(INBOUND), {**params, "Body": "something else"})


@pytest.mark.parametrize("signature", [_forged, _other_url, _other_params, lambda p: None, lambda p: ""],
                         ids=["forged", "other-url", "other-params", "missing", "empty"])
def test_unsigned_or_forged_inbound_is_refused_and_audited(
        client, clinic, patient, django_capture_on_commit_callbacks, signature):  # noqa: F811
    params = _inbound_params("STOP")
    with django_capture_on_commit_callbacks(execute=True):
        response = _post(client, reverse(INBOUND), params, signature=signature(params))
    assert response.status_code == 403
    assert len(response.content) < 20
    [event] = _events(clinic, AuditEventType.WEBHOOK_REJECTED)
    assert event.details == {"path_name": INBOUND, "reason": "bad_signature"}
    assert event.actor_type == "anonymous"
    with tenant_scope(clinic):
        assert not InboundSms.objects.exists()
        assert consent_state(clinic, patient) == "granted"
    assert LocalSms.objects.count() == 0


def test_refusal_for_an_unknown_number_goes_to_the_platform_trail(client, clinic, patient):  # noqa: F811
    before = _platform_seq()
    response = _post(client, reverse(INBOUND), _inbound_params("hi", to="+12025550111"), signature="bogus")
    assert response.status_code == 403
    assert _platform_seq() == before + 1
    assert _events(clinic, AuditEventType.WEBHOOK_REJECTED) == []


def test_without_an_auth_token_every_call_is_refused(client, clinic, patient, settings):  # noqa: F811
    settings.TWILIO_AUTH_TOKEN = ""
    response = _signed(client, reverse(INBOUND), _inbound_params("hello"), token="anything")
    assert response.status_code == 403
    [event] = _events(clinic, AuditEventType.WEBHOOK_REJECTED)
    assert event.details == {"path_name": INBOUND, "reason": "not_configured"}
    with tenant_scope(clinic):
        assert not InboundSms.objects.exists()


@pytest.mark.parametrize(("change", "field"), [
    ({"From": "2025550171"}, "From"),
    ({"From": "+1 (202) 555-0171"}, "From"),
    ({"From": ""}, "From"),
    ({"MessageSid": ""}, "MessageSid"),
    ({"MessageSid": "SM123"}, "MessageSid"),
])
def test_bad_inbound_fields_are_400_naming_the_field(client, clinic, patient, change, field):  # noqa: F811
    params = {**_inbound_params("hello"), **change}
    response = _signed(client, reverse(INBOUND), params)
    assert response.status_code == 400
    error = response.json()["error"]
    assert list(error["fields"]) == [field]
    assert "2025550171" not in response.content.decode() and "hello" not in response.content.decode()
    with tenant_scope(clinic):
        assert not InboundSms.objects.exists()
        assert not AuditEvent.objects.filter(event_type=AuditEventType.MESSAGE_RECEIVED).exists()


def test_missing_message_sid_field_is_400(client, clinic, patient):  # noqa: F811
    params = _inbound_params("hello")
    del params["MessageSid"]
    response = _signed(client, reverse(INBOUND), params)
    assert response.status_code == 400 and "MessageSid" in response.json()["error"]["fields"]


def test_a_number_no_clinic_has_gets_empty_twiml_and_nothing_is_written(
        client, clinic, patient, django_capture_on_commit_callbacks):  # noqa: F811
    with django_capture_on_commit_callbacks(execute=True):
        response = _inbound(client, "hello", to="+12025550111")
    assert _twiml(response)
    with tenant_scope(clinic):
        assert not InboundSms.objects.exists()
    assert LocalSms.objects.count() == 0


def test_an_inactive_clinic_is_unknown(client, clinic, patient):  # noqa: F811
    clinic.is_active = False
    clinic.save(update_fields=["is_active"])
    assert _twiml(_inbound(client, "hello"))
    with tenant_scope(clinic):
        assert not InboundSms.objects.exists()


@pytest.mark.parametrize("name", [INBOUND, STATUS])
def test_only_post(client, db, name):
    assert client.get(reverse(name)).status_code == 405


# --- delivery status ------------------------------------------------------------------------------------


@pytest.fixture
def sent_row(clinic, alice, patient):  # noqa: F811
    """A link notice the provider accepted: status "sent", with the provider's id."""
    with tenant_scope(clinic):
        services.message_send(tenant=clinic, actor=alice, patient=patient, body="See you at 3.")
        row = OutboundSms.objects.get()
        assert sms_send_one(tenant=clinic, sms_id=row.pk, gateway=FaultyGateway()) == "sent"
        row.refresh_from_db()
    assert row.status == SmsStatus.SENT and row.provider_id
    return row


def _row(tenant, row) -> OutboundSms:
    with tenant_scope(tenant):
        return OutboundSms.objects.get(pk=row.pk)


def test_sent_then_delivered(client, clinic, sent_row):
    response = _status(client, clinic, sent_row.provider_id, "delivered")
    assert response.status_code == 200
    assert _row(clinic, sent_row).status == SmsStatus.DELIVERED


def test_late_or_duplicate_callbacks_change_nothing(client, clinic, sent_row):
    assert _status(client, clinic, sent_row.provider_id, "delivered").status_code == 200
    delivered_at = _row(clinic, sent_row).status_at
    for late in ("sent", "queued", "delivered", "undelivered"):
        assert _status(client, clinic, sent_row.provider_id, late).status_code == 200
    row = _row(clinic, sent_row)
    assert (row.status, row.status_at) == (SmsStatus.DELIVERED, delivered_at)


def test_undelivered_30006_marks_the_number_undeliverable(client, clinic, patient, sent_row):  # noqa: F811
    response = _status(client, clinic, sent_row.provider_id, "undelivered", error_code="30006")
    assert response.status_code == 200
    row = _row(clinic, sent_row)
    assert (row.status, row.error_code) == (SmsStatus.UNDELIVERED, "30006")
    with tenant_scope(clinic):
        patient.refresh_from_db()
        assert patient.phone_undeliverable_at is not None
        assert can_sms(clinic, patient, kind="staff_message") == (False, "number_undeliverable")
    assert len(_events(clinic, AuditEventType.SMS_FAILED)) == 1


def test_unknown_message_sid_is_200(client, clinic, sent_row):
    response = _status(client, clinic, "SM" + "f" * 32, "delivered")
    assert response.status_code == 200
    assert _row(clinic, sent_row).status == SmsStatus.SENT


def test_unknown_status_word_is_200_and_ignored(client, clinic, sent_row):
    assert _status(client, clinic, sent_row.provider_id, "partially_delivered").status_code == 200
    assert _row(clinic, sent_row).status == SmsStatus.SENT


def test_callback_replayed_against_another_clinic_is_refused(client, clinic, tenant_b, sent_row):
    url_a = status_callback_url(clinic)
    params = {"MessageSid": sent_row.provider_id, "MessageStatus": "undelivered", "ErrorCode": "30006",
              "AccountSid": ACCOUNT}
    signature = RequestValidator(TOKEN).compute_signature(url_a, params)
    path_b = status_callback_url(tenant_b).removeprefix(SITE)
    response = _post(client, path_b, params, signature=signature)
    assert response.status_code == 403
    [event] = _events(tenant_b, AuditEventType.WEBHOOK_REJECTED)
    assert event.details == {"path_name": STATUS, "reason": "bad_signature"}
    assert _events(clinic, AuditEventType.WEBHOOK_REJECTED) == []
    assert _row(clinic, sent_row).status == SmsStatus.SENT
    # The same callback to the URL it was signed for is accepted.
    assert _post(client, url_a.removeprefix(SITE), params, signature=signature).status_code == 200
    assert _row(clinic, sent_row).status == SmsStatus.UNDELIVERED


def test_unsigned_status_callback_is_refused(client, clinic, sent_row):
    path = status_callback_url(clinic).removeprefix(SITE)
    response = _post(client, path, {"MessageSid": sent_row.provider_id, "MessageStatus": "failed"}, signature=None)
    assert response.status_code == 403
    assert len(_events(clinic, AuditEventType.WEBHOOK_REJECTED)) == 1
    assert _row(clinic, sent_row).status == SmsStatus.SENT


@pytest.mark.parametrize(("change", "field"), [
    ({"MessageStatus": None}, "MessageStatus"),
    ({"MessageStatus": "DELIVERED!"}, "MessageStatus"),
    ({"MessageSid": None}, "MessageSid"),
    ({"MessageSid": "../../etc"}, "MessageSid"),
    ({"ErrorCode": "thirty"}, "ErrorCode"),
])
def test_malformed_status_callbacks_are_400(client, clinic, sent_row, change, field):
    params = {"MessageSid": sent_row.provider_id, "MessageStatus": "delivered"}
    params = {k: v for k, v in {**params, **change}.items() if v is not None}
    url = status_callback_url(clinic)
    response = _signed(client, url.removeprefix(SITE), params, signed_url=url)
    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == [field]
    assert _row(clinic, sent_row).status == SmsStatus.SENT


@pytest.mark.parametrize("query", ["", "?t=", "?t=abc", "?t=-1"])
def test_status_callback_without_a_clinic_id_is_400(client, clinic, sent_row, query):
    path = reverse(STATUS) + query
    response = _signed(client, path, {"MessageSid": sent_row.provider_id, "MessageStatus": "delivered"})
    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == ["t"]


def test_status_callback_for_a_clinic_that_does_not_exist_is_200(client, clinic, sent_row):
    path = reverse(STATUS) + "?t=987654321"
    response = _signed(client, path, {"MessageSid": sent_row.provider_id, "MessageStatus": "delivered"})
    assert response.status_code == 200
    assert _row(clinic, sent_row).status == SmsStatus.SENT


# --- logs ----------------------------------------------------------------------------------------------


def test_no_phi_in_logs(client, clinic, patient, sent_row, caplog, django_capture_on_commit_callbacks):  # noqa: F811
    caplog.set_level(logging.DEBUG)
    with django_capture_on_commit_callbacks(execute=True):
        _inbound(client, "My chest pain is back")
        _inbound(client, "hola", sender=STRANGER)
        _post(client, reverse(INBOUND), _inbound_params("forged STOP"), signature="bogus")
    _status(client, clinic, sent_row.provider_id, "undelivered", error_code="30006")
    text = caplog.text
    assert "twilio inbound" in text and "twilio status" in text  # the lines exist, with ids
    for phi in ("2025550171", "2025550999", "chest", "hola", "STOP", "Quill", "2025550100"):
        assert phi not in text, phi
