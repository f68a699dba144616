"""Consent ledger and reminders over the API."""

from __future__ import annotations

import datetime
import uuid

import pytest
from django.utils import timezone

from accounts.tenancy import tenant_scope
from audit.events import AuditEventType as E
from consent.models import ConsentEvent
from tests.api.conftest import error_fields, events
from tests.factories import make_appointment, make_patient, make_textable_patient

GRANT = {"action": "grant", "method": "verbal", "disclosure_version": "sms-2026-01",
         "evidence": "Agreed at the front desk"}


def test_record_and_read_consent_with_patients_keys(tenant_a, alice, key_client):
    patient = make_patient(tenant=tenant_a, actor=alice)
    created = key_client("patients:write").post(f"/api/v1/patients/{patient.pk}/consent", GRANT)
    assert created.status_code == 201, created.content
    assert created.json()["action"] == "grant" and created.json()["for_current_number"] is True
    [change] = events(tenant_a, E.CONSENT_CHANGED)
    assert change.actor_type == "api_key" and change.patient_id == patient.pk
    listed = key_client("patients:read").get(f"/api/v1/patients/{patient.pk}/consent")
    assert listed.status_code == 200
    assert [e["id"] for e in listed.json()["results"]] == [created.json()["id"]]
    assert listed.json()["results"][0]["evidence"] == "Agreed at the front desk"
    [viewed] = events(tenant_a, E.PATIENT_VIEWED)
    assert viewed.patient_id == patient.pk and viewed.details["path_name"] == "api-patient-consent"


@pytest.mark.parametrize("change,field", [
    ({"action": "maybe"}, "action"), ({"method": "sms_keyword"}, "method"), ({"evidence": ""}, "evidence"),
    ({"disclosure_version": ""}, "disclosure_version"), ({"disclosure_version": "bad version!"}, "disclosure_version"),
    ({"occurred_at": "2999-01-01T00:00:00+00:00"}, "occurred_at"), ({"occurred_at": "2026-01-01T00:00:00"}, "occurred_at"),
])
def test_bad_consent_is_a_400_naming_the_field_and_writes_nothing(tenant_a, alice, key_client, change, field):
    patient = make_patient(tenant=tenant_a, actor=alice)
    response = key_client("patients:write").post(f"/api/v1/patients/{patient.pk}/consent", {**GRANT, **change})
    assert response.status_code == 400, response.content
    assert field in error_fields(response)
    with tenant_scope(tenant_a):
        assert not ConsentEvent.objects.exists()


def test_another_clinics_consent_is_a_404(tenant_b, charlie, key_client):
    foreign = make_textable_patient(tenant=tenant_b, owner=charlie)
    api = key_client("patients:read", "patients:write")
    assert api.get(f"/api/v1/patients/{foreign.pk}/consent").status_code == 404
    assert api.get(f"/api/v1/patients/{uuid.uuid4()}/consent").status_code == 404
    revoke = {"action": "revoke", "method": "verbal", "evidence": "Asked to stop"}
    assert api.post(f"/api/v1/patients/{foreign.pk}/consent", revoke).status_code == 404
    with tenant_scope(tenant_b):
        assert ConsentEvent.objects.filter(patient=foreign).count() == 1  # only the factory's grant
    assert events(tenant_b, E.PATIENT_VIEWED) == []


def test_consent_needs_its_permissions(tenant_a, alice, key_client):
    patient = make_patient(tenant=tenant_a, actor=alice)
    assert key_client("patients:read").post(f"/api/v1/patients/{patient.pk}/consent", GRANT).status_code == 403
    assert key_client("appointments:write").get(f"/api/v1/patients/{patient.pk}/consent").status_code == 403


@pytest.fixture
def reminders(tenant_a, alice):
    """An appointment in three days: the default policy schedules a 48-hour reminder."""
    patient = make_textable_patient(tenant=tenant_a, owner=alice)
    starts = timezone.now() + datetime.timedelta(days=3)
    return make_appointment(tenant=tenant_a, patient=patient, starts_at=starts)


def test_reminders_list_and_filters(tenant_a, key_client, reminders):
    api = key_client("appointments:write")
    response = api.get("/api/v1/reminders")
    assert response.status_code == 200, response.content
    rows = response.json()["results"]
    assert rows and {r["appointment_id"] for r in rows} == {str(reminders.pk)}
    assert rows[0]["status"] == "scheduled"
    assert api.get("/api/v1/reminders", {"appointment": str(uuid.uuid4())}).json()["results"] == []
    assert api.get("/api/v1/reminders", {"status": "sent"}).json()["results"] == []
    assert len(events(tenant_a, E.PATIENT_SEARCHED)) == 3


def test_reminders_of_another_clinic_are_invisible(tenant_b, charlie, key_client):
    patient = make_textable_patient(tenant=tenant_b, owner=charlie)
    foreign = make_appointment(tenant=tenant_b, patient=patient, starts_at=timezone.now() + datetime.timedelta(days=3))
    response = key_client("patients:read").get("/api/v1/reminders", {"appointment": str(foreign.pk)})
    assert response.status_code == 200 and response.json()["results"] == []


@pytest.mark.parametrize("params,field", [({"status": "late"}, "status"), ({"appointment": "1"}, "appointment")])
def test_bad_reminder_filters_are_a_400(key_client, params, field):
    response = key_client("patients:read").get("/api/v1/reminders", params)
    assert response.status_code == 400 and list(error_fields(response)) == [field]


def test_reminders_need_patients_view(key_client):
    assert key_client("messages:send", "audit:read").get("/api/v1/reminders").status_code == 403
