"""The send API: scoped keys, Idempotency-Key, refusals, other clinics' patients."""

from __future__ import annotations

import pytest
from django.test import Client

from accounts.services import api_key_create
from accounts.tenancy import tenant_scope
from audit.events import AuditEventType
from audit.models import AuditEvent
from messaging.models import Message, OutboundSms
from tests.factories import make_patient, make_textable_patient
from tests.messaging.conftest import sent_sms


def _key(tenant, owner, scopes=("messages:send",)):
    with tenant_scope(tenant):
        _, raw = api_key_create(tenant=tenant, actor=owner, name="EHR", scopes=list(scopes))
    return raw


def _post(raw, patient_id, data, **headers):
    return Client().post(f"/api/v1/patients/{patient_id}/messages", data, content_type="application/json",
                         HTTP_AUTHORIZATION=f"Bearer {raw}", **headers)


def test_send_with_idempotency_key_creates_one_message_and_one_sms(
        tenant_a, alice, patient, django_capture_on_commit_callbacks):
    raw = _key(tenant_a, alice)
    with django_capture_on_commit_callbacks(execute=True):
        first = _post(raw, patient.pk, {"body": "Please bring your insulin log."}, HTTP_IDEMPOTENCY_KEY="ehr-msg-0001")
    with django_capture_on_commit_callbacks(execute=True):
        again = _post(raw, patient.pk, {"body": "Please bring your insulin log."}, HTTP_IDEMPOTENCY_KEY="ehr-msg-0001")
    assert first.status_code == 201, first.content
    assert again.status_code == 200
    assert first.json()["id"] == again.json()["id"]
    assert first.json()["sms_status"] in ("queued", "delivered")
    assert "insulin" not in first.content.decode()
    with tenant_scope(tenant_a):
        assert Message.objects.count() == 1
        assert OutboundSms.objects.count() == 1
        event = AuditEvent.objects.get(event_type=AuditEventType.MESSAGE_SENT)
        assert event.actor_type == "api_key"
    assert len(sent_sms()) == 1


def test_same_key_different_body_is_a_conflict(tenant_a, alice, patient):
    raw = _key(tenant_a, alice)
    assert _post(raw, patient.pk, {"body": "One"}, HTTP_IDEMPOTENCY_KEY="ehr-msg-0002").status_code == 201
    response = _post(raw, patient.pk, {"body": "Two"}, HTTP_IDEMPOTENCY_KEY="ehr-msg-0002")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "conflict"


@pytest.mark.parametrize("data,field", [({}, "body"), ({"body": ""}, "body"), ({"body": "x" * 2001}, "body"),
                                        ({"body": "hi", "kind": "broadcast"}, "kind")])
def test_bad_input_names_the_field(tenant_a, alice, patient, data, field):
    response = _post(_key(tenant_a, alice), patient.pk, data)
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]
    with tenant_scope(tenant_a):
        assert not Message.objects.exists()


def test_bad_idempotency_key_is_refused(tenant_a, alice, patient):
    response = _post(_key(tenant_a, alice), patient.pk, {"body": "hi"}, HTTP_IDEMPOTENCY_KEY="no spaces allowed")
    assert response.status_code == 400
    assert "idempotency_key" in response.json()["error"]["fields"]


def test_refusal_without_consent_says_why_and_writes_nothing(tenant_a, alice, patient):
    other = make_patient(tenant=tenant_a)
    response = _post(_key(tenant_a, alice), other.pk, {"body": "hi"})
    assert response.status_code == 400
    assert "not agreed to SMS" in response.json()["error"]["message"]
    with tenant_scope(tenant_a):
        assert not Message.objects.exists()


def test_other_clinics_patient_is_404(tenant_a, tenant_b, alice, charlie):
    theirs = make_textable_patient(tenant=tenant_b, owner=charlie)
    response = _post(_key(tenant_a, alice), theirs.pk, {"body": "hi"})
    assert response.status_code == 404
    with tenant_scope(tenant_b):
        assert not Message.objects.exists()


def test_key_without_the_scope_is_forbidden_and_result_notices_need_results_send(tenant_a, alice, patient):
    assert _post(_key(tenant_a, alice, ("patients:read",)), patient.pk, {"body": "hi"}).status_code == 403
    response = _post(_key(tenant_a, alice), patient.pk, {"body": "hi", "kind": "result_notice"})
    assert response.status_code == 403
