"""Appointments over the API: filters, booking, changes, statuses; 404 across clinics."""

from __future__ import annotations

import datetime
import uuid

import pytest
from django.utils import timezone

from accounts.tenancy import tenant_scope
from audit.events import AuditEventType as E
from patients.models import Appointment
from tests.api.conftest import error_fields, events
from tests.factories import make_appointment, make_patient

TOMORROW = (timezone.now() + datetime.timedelta(days=1)).replace(hour=15, minute=0, second=0, microsecond=0)


@pytest.fixture
def booked(tenant_a, alice):
    patient = make_patient(tenant=tenant_a, actor=alice)
    return make_appointment(tenant=tenant_a, patient=patient, starts_at=TOMORROW)


def _new(patient_id, **extra) -> dict:
    return {"patient": str(patient_id), "starts_at": TOMORROW.isoformat(),
            "ends_at": (TOMORROW + datetime.timedelta(minutes=30)).isoformat(), "appointment_type": "Annual",
            **extra}


def test_list_filters_by_day_status_and_patient(tenant_a, alice, key_client, booked):
    other = make_appointment(tenant=tenant_a, patient=make_patient(tenant=tenant_a, actor=alice),
                             starts_at=TOMORROW + datetime.timedelta(days=3))
    api = key_client("appointments:write")
    day = timezone.localtime(TOMORROW, timezone=datetime.UTC).date()  # clinic A's zone is UTC in the factory
    ids = lambda params: [a["id"] for a in api.get("/api/v1/appointments", params).json()["results"]]  # noqa: E731
    assert ids({}) == [str(booked.pk), str(other.pk)]
    assert ids({"patient": str(other.patient_id)}) == [str(other.pk)]
    assert ids({"status": "booked", "date": day.isoformat()}) == [str(booked.pk)]
    assert ids({"status": "cancelled"}) == []
    assert ids({"patient": str(uuid.uuid4())}) == []
    assert len(events(tenant_a, E.PATIENT_SEARCHED)) == 5


@pytest.mark.parametrize("params,field", [({"date": "2026-13-01"}, "date"), ({"date": "tomorrow"}, "date"),
                                          ({"status": "maybe"}, "status"), ({"patient": "123"}, "patient")])
def test_bad_filters_are_a_400_naming_the_parameter(key_client, params, field):
    response = key_client("patients:read").get("/api/v1/appointments", params)
    assert response.status_code == 400
    assert list(error_fields(response)) == [field]


def test_another_clinics_patient_in_a_filter_matches_nothing(tenant_b, charlie, key_client):
    foreign = make_patient(tenant=tenant_b, actor=charlie)
    make_appointment(tenant=tenant_b, patient=foreign)
    response = key_client("patients:read").get("/api/v1/appointments", {"patient": str(foreign.pk)})
    assert response.status_code == 200 and response.json()["results"] == []


def test_book_with_appointments_write(tenant_a, alice, key_client):
    patient = make_patient(tenant=tenant_a, actor=alice)
    response = key_client("appointments:write").post("/api/v1/appointments", _new(patient.pk, reason="Knee pain"))
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["patient_id"] == str(patient.pk) and body["status"] == "booked"
    assert "reason" not in body  # clinical text is write-only here
    with tenant_scope(tenant_a):
        assert Appointment.objects.get(pk=body["id"]).reason == "Knee pain"
    [event] = events(tenant_a, E.APPOINTMENT_CHANGED)
    assert event.actor_type == "api_key"


def test_booking_for_another_clinics_patient_is_a_404_and_writes_nothing(tenant_a, tenant_b, charlie, key_client):
    foreign = make_patient(tenant=tenant_b, actor=charlie)
    response = key_client("appointments:write").post("/api/v1/appointments", _new(foreign.pk))
    assert response.status_code == 404
    for tenant in (tenant_a, tenant_b):
        with tenant_scope(tenant):
            assert not Appointment.objects.exists()


@pytest.mark.parametrize("change,field", [
    ({"starts_at": "2026-03-09T10:00:00"}, "starts_at"),  # no offset: would silently mean UTC
    ({"ends_at": "soon"}, "ends_at"),
    ({"ends_at": (TOMORROW - datetime.timedelta(hours=1)).isoformat()}, "ends_at"),
    ({"status": "lost"}, "status"), ({"patient": "nope"}, "patient"),
    ({"provider_name": "x" * 201}, "provider_name"),
])
def test_bad_booking_is_a_400_naming_the_field(tenant_a, alice, key_client, change, field):
    patient = make_patient(tenant=tenant_a, actor=alice)
    response = key_client("appointments:write").post("/api/v1/appointments", {**_new(patient.pk), **change})
    assert response.status_code == 400, response.content
    assert field in error_fields(response)
    with tenant_scope(tenant_a):
        assert not Appointment.objects.exists()


def test_patch_moves_and_confirms_in_one_request(tenant_a, key_client, booked):
    later = TOMORROW + datetime.timedelta(hours=2)
    response = key_client("appointments:write").patch(
        f"/api/v1/appointments/{booked.pk}", {"starts_at": later.isoformat(),
                                              "ends_at": (later + datetime.timedelta(hours=1)).isoformat(),
                                              "status": "confirmed"})
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "confirmed"
    assert datetime.datetime.fromisoformat(response.json()["starts_at"]) == later


def test_refused_status_undoes_the_whole_patch(tenant_a, alice, key_client, booked):
    with tenant_scope(tenant_a):
        from patients.services import appointment_set_status

        appointment_set_status(tenant=tenant_a, actor=alice, appointment=booked, status="completed")
    response = key_client("appointments:write").patch(f"/api/v1/appointments/{booked.pk}",
                                                      {"provider_name": "Dr. New", "status": "booked"})
    assert response.status_code == 400
    assert "status" in error_fields(response)
    with tenant_scope(tenant_a):
        assert Appointment.objects.get(pk=booked.pk).provider_name == "Dr. Rivera"


def test_reading_one_appointment_is_audited(tenant_a, key_client, booked):
    response = key_client("patients:read").get(f"/api/v1/appointments/{booked.pk}")
    assert response.status_code == 200 and response.json()["id"] == str(booked.pk)
    [event] = events(tenant_a, E.PATIENT_VIEWED)
    assert event.patient_id == booked.patient_id and event.details == {"path_name": "api-appointment"}


def test_another_clinics_appointment_is_a_404_and_unchanged(tenant_b, charlie, key_client):
    foreign = make_appointment(tenant=tenant_b, patient=make_patient(tenant=tenant_b, actor=charlie))
    api = key_client("appointments:write")
    assert api.get(f"/api/v1/appointments/{foreign.pk}").status_code == 404
    assert api.patch(f"/api/v1/appointments/{foreign.pk}", {"status": "cancelled"}).status_code == 404
    assert api.patch(f"/api/v1/appointments/{uuid.uuid4()}", {"status": "cancelled"}).status_code == 404
    with tenant_scope(tenant_b):
        assert Appointment.objects.get(pk=foreign.pk).status == "booked"


def test_read_only_keys_cannot_book(tenant_a, alice, key_client):
    patient = make_patient(tenant=tenant_a, actor=alice)
    for scopes in (("patients:read",), ("patients:write",), ("messages:send",)):
        response = key_client(*scopes).post("/api/v1/appointments", _new(patient.pk))
        assert response.status_code == 403, scopes
    assert key_client("messages:send").get("/api/v1/appointments").status_code == 403


def test_front_desk_session_books_and_auditor_cannot(tenant_a, alice, bob, dave, client, login):
    from tests.api.conftest import ApiClient

    patient = make_patient(tenant=tenant_a, actor=alice)
    login(bob)
    assert ApiClient(client=client).post("/api/v1/appointments", _new(patient.pk)).status_code == 201
    client.logout()
    login(dave)
    assert ApiClient(client=client).get("/api/v1/appointments").status_code == 403
