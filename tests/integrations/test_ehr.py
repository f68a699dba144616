"""The EHR write services shared by FHIR and HL7: idempotent upserts and result notices."""

from __future__ import annotations

import datetime

import pytest
from django.utils import timezone

from accounts.errors import ApplicationError
from accounts.tenancy import tenant_scope
from integrations import ehr
from messaging.models import Message, MessageKind
from patients.models import Appointment, AppointmentStatus, Patient
from tests.factories import make_textable_patient


def _upsert(tenant, **overrides):
    values = {"mrn": "EHR-1", "given_name": "Rosa", "family_name": "Delgado",
              "birth_date": datetime.date(1979, 11, 23), "phone": "+12025550177"}
    values.update(overrides)
    with tenant_scope(tenant):
        return ehr.ehr_patient_upsert(tenant=tenant, actor=None, source="hl7", **values)


def test_patient_upsert_creates_then_updates_by_mrn_and_keeps_what_is_not_sent(tenant_a):
    patient, created = _upsert(tenant_a)
    assert created
    again, created = _upsert(tenant_a, family_name="Delgado-Ruiz", phone=None)
    assert not created and again.pk == patient.pk
    with tenant_scope(tenant_a):
        stored = Patient.objects.get()
        assert stored.family_name == "Delgado-Ruiz" and stored.phone == "+12025550177"


def test_patient_upsert_names_missing_fields(tenant_a):
    with pytest.raises(ApplicationError) as exc:
        _upsert(tenant_a, mrn=" ")
    assert "mrn" in exc.value.fields
    with pytest.raises(ApplicationError) as exc:
        _upsert(tenant_a, phone=None)
    assert "phone" in exc.value.fields
    with tenant_scope(tenant_a):
        assert not Patient.objects.exists()


def test_the_same_mrn_in_another_clinic_is_another_patient(tenant_a, tenant_b):
    a, _ = _upsert(tenant_a)
    b, created = _upsert(tenant_b)
    assert created and a.pk != b.pk


def _appointment(tenant, patient, **overrides):
    start = timezone.now() + datetime.timedelta(days=3)
    values = {"external_id": "SCH-77", "starts_at": start, "ends_at": start + datetime.timedelta(minutes=30),
              "location_name": "Room 4"}
    values.update(overrides)
    with tenant_scope(tenant):
        return ehr.ehr_appointment_upsert(tenant=tenant, actor=None, source="hl7", patient=patient, **values)


def test_appointment_upsert_is_idempotent_and_follows_the_ehrs_status(tenant_a):
    patient, _ = _upsert(tenant_a)
    first, created = _appointment(tenant_a, patient)
    assert created
    moved, created = _appointment(tenant_a, patient, starts_at=first.starts_at + datetime.timedelta(hours=2),
                                  ends_at=first.ends_at + datetime.timedelta(hours=2))
    assert not created and moved.pk == first.pk
    cancelled, _ = _appointment(tenant_a, patient, status=AppointmentStatus.CANCELLED)
    assert cancelled.status == AppointmentStatus.CANCELLED
    rebooked, _ = _appointment(tenant_a, patient, status=AppointmentStatus.BOOKED, location_name="Room 9")
    assert rebooked.status == AppointmentStatus.BOOKED and rebooked.location_name == "Room 9"
    with tenant_scope(tenant_a):
        assert Appointment.objects.count() == 1


def test_an_appointment_id_never_moves_to_another_patient(tenant_a):
    patient, _ = _upsert(tenant_a)
    other, _ = _upsert(tenant_a, mrn="EHR-2", phone="+12025550178")
    _appointment(tenant_a, patient)
    with pytest.raises(ApplicationError) as exc:
        _appointment(tenant_a, other)
    assert "patient" in exc.value.fields


def test_result_notice_is_created_once_and_refused_without_consent(tenant_a, alice,
                                                                   django_capture_on_commit_callbacks):
    patient = make_textable_patient(tenant=tenant_a, owner=alice)
    with tenant_scope(tenant_a), django_capture_on_commit_callbacks(execute=True):
        message, outcome = ehr.ehr_result_notice(tenant=tenant_a, actor=None, source="fhir", patient=patient,
                                                 external_id="DR/123 α", body="Your results are ready.")
        assert outcome == "created" and message.kind == MessageKind.RESULT_NOTICE
        again, outcome = ehr.ehr_result_notice(tenant=tenant_a, actor=None, source="fhir", patient=patient,
                                               external_id="DR/123 α", body="Your results are ready.")
        assert outcome == "duplicate" and again.pk == message.pk
        assert Message.objects.count() == 1
    quiet, _ = _upsert(tenant_a)  # no consent
    with tenant_scope(tenant_a):
        none, outcome = ehr.ehr_result_notice(tenant=tenant_a, actor=None, source="fhir", patient=quiet,
                                              external_id="DR/124", body="Ready.")
        assert none is None and outcome == "never_granted"
        assert Message.objects.count() == 1
