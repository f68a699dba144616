"""Refused EHR imports leave an audit event (who, how, how many), never their content."""

from __future__ import annotations

from django.test import Client

from accounts.services import api_key_create
from accounts.tenancy import tenant_scope
from audit.events import AuditEventType
from audit.models import AuditEvent


def _key(tenant, owner, scope):
    with tenant_scope(tenant):
        return api_key_create(tenant=tenant, actor=owner, name="EHR", scopes=[scope])[1]


def _rejections(tenant):
    with tenant_scope(tenant):
        return list(AuditEvent.objects.filter(event_type=AuditEventType.EHR_IMPORT_REJECTED).order_by("seq"))


def test_a_malformed_fhir_body_and_a_bad_batch_entry_are_audited(tenant_a, alice):
    raw = _key(tenant_a, alice, "fhir:write")
    headers = {"HTTP_AUTHORIZATION": f"Bearer {raw}"}
    bad = Client().post("/api/v1/fhir/", "{not json", content_type="application/fhir+json", **headers)
    assert bad.status_code == 400
    batch = {"resourceType": "Bundle", "type": "batch",
             "entry": [{"resource": {"resourceType": "Patient", "name": [{"family": "Nobody-MRN"}]}}]}
    partial = Client().post("/api/v1/fhir/", batch, content_type="application/fhir+json", **headers)
    assert partial.status_code == 200
    events = _rejections(tenant_a)
    assert [(e.details["source"], e.details["status"]) for e in events] == [("fhir", "400"), ("fhir", "partial")]
    assert events[1].details["count"] == 1
    assert events[0].actor_type == "api_key"
    assert "Nobody-MRN" not in str([e.details for e in events])


def test_an_hl7_message_refused_with_ae_or_ar_is_audited(tenant_a, alice):
    raw = _key(tenant_a, alice, "hl7:write")
    message = "MSH|^~\\&|EHR|HOSP|CARETEXT|CLINIC|20261125120000||ZZZ^Z01|CTRL1|P|2.5.1\r"
    response = Client().post("/api/v1/hl7/", message, content_type="x-application/hl7-v2+er7",
                             HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert response.status_code == 200 and b"MSA|AR|CTRL1" in response.content
    [event] = _rejections(tenant_a)
    assert event.details["source"] == "hl7" and event.details["status"] == "AR"
