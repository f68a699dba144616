"""Property-based run over the published OpenAPI document (schemathesis, in-process WSGI).

Every operation of the public API gets a bounded number of generated requests, sent once with
clinic A's key and once with clinic B's: no 500s, only documented status codes, bodies that
match their schema. Then, for every operation that names an object, clinic A's key with
clinic B's ids must get a 404 and change nothing.
"""

from __future__ import annotations

import pytest
import schemathesis
from django.conf import settings as django_settings
from django.core import signals
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from accounts.tenancy import tenant_scope
from audit.models import AuditEvent
from consent.models import ConsentEvent
from messaging.inbound import inbound_sms_receive
from messaging.models import Message
from patients.models import Appointment, Patient
from tests.api.conftest import make_key
from tests.factories import make_appointment, make_textable_patient

pytestmark = pytest.mark.slow

# The public API's operations (FHIR and HL7 endpoints have their own suites).
PATHS = r"^/api/v1/(patients|appointments|threads|reminders|me)"
SCOPES = ("patients:read", "patients:write", "appointments:write", "messages:send")
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance, content_type_conformance]


@pytest.fixture
def keys(tenant_a, tenant_b, alice, charlie):
    return {name: {"Authorization": f"Bearer {make_key(tenant, owner, *SCOPES)}"}
            for name, tenant, owner in (("a", tenant_a, alice), ("b", tenant_b, charlie))}


@pytest.fixture
def _in_process_requests():
    """Calling the WSGI app directly fires request_started/finished, whose handler closes the
    test's DB connection (and with it the test transaction): unhook it, as Django's test client does."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def api_schema(db, keys, _in_process_requests):
    from config.wsgi import application

    return schemathesis.openapi.from_wsgi("/api/schema/", application)


schema = schemathesis.pytest.from_fixture("api_schema").include(path_regex=PATHS)


@schema.parametrize()
@settings(max_examples=10, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_generated_requests_conform_to_the_schema(case, keys):
    for headers in keys.values():
        case.call_and_validate(headers=headers, checks=CHECKS)


_BODIES = {
    ("PATCH", "/api/v1/patients/{patient_id}"): {"given_name": "Mallory"},
    ("POST", "/api/v1/patients/{patient_id}/consent"): {"action": "revoke", "method": "verbal", "evidence": "Stop"},
    ("POST", "/api/v1/patients/{patient_id}/messages"): {"body": "Hello from another clinic"},
    ("PATCH", "/api/v1/appointments/{appointment_id}"): {"status": "cancelled"},
}


def _snapshot(tenant) -> dict:
    with tenant_scope(tenant):
        return {"patients": sorted(Patient.objects.values_list("updated_at", flat=True)),
                "appointments": sorted(Appointment.objects.values_list("status", "updated_at")),
                "consent": ConsentEvent.objects.count(), "messages": Message.objects.count(),
                "audit": AuditEvent.objects.count()}


def _b_objects(tenant_b, charlie) -> dict:
    patient = make_textable_patient(tenant=tenant_b, owner=charlie, phone="+12025550191")
    with tenant_scope(tenant_b):
        inbound = inbound_sms_receive(tenant=tenant_b, provider_id="SM-b-1", from_number=patient.phone, body="Hi")
    return {"patient_id": str(patient.pk), "thread_id": str(inbound.message.thread_id),
            "appointment_id": str(make_appointment(tenant=tenant_b, patient=patient).pk)}


def test_another_clinics_ids_are_404_for_every_operation_that_names_one(
        api_schema, keys, tenant_b, charlie, alice, client, login):
    ids = _b_objects(tenant_b, charlie)
    login(alice)  # threads need messages.view, which no key scope grants: clinic A's staff session
    session = {"cookies": {django_settings.SESSION_COOKIE_NAME: client.cookies[django_settings.SESSION_COOKIE_NAME].value}}
    before, tried = _snapshot(tenant_b), []
    for result in api_schema.include(path_regex=PATHS).get_all_operations():
        operation = result.ok()
        params = {p.name for p in operation.path_parameters}
        if not params:
            continue
        body = _BODIES.get((operation.method.upper(), operation.path))
        case = operation.Case(path_parameters={name: ids[name] for name in params},
                              **({"body": body, "media_type": "application/json"} if body is not None else {}))
        response = case.call(**session) if "thread_id" in params else case.call(headers=keys["a"])
        assert response.status_code == 404, (operation.label, response.status_code, response.text)
        tried.append(operation.label)
    assert len(tried) >= 7, tried
    assert _snapshot(tenant_b) == before
