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
    first = _upsert(tenant_a)
    assert first.created and first.warning == ""
    again = _upsert(tenant_a, family_name="Delgado-Ruiz", phone=None)
    assert not again.created and again.patient.pk == first.patient.pk and again.warning == ""
    with tenant_scope(tenant_a):
        stored = Patient.objects.get()
        assert stored.family_name == "Delgado-Ruiz" and stored.phone == "+12025550177"


def test_patient_upsert_names_a_missing_mrn(tenant_a):
    with pytest.raises(ApplicationError) as exc:
        _upsert(tenant_a, mrn=" ")
    assert "mrn" in exc.value.fields
    with tenant_scope(tenant_a):
        assert not Patient.objects.exists()


@pytest.mark.parametrize("phone,warning", [(None, ehr.NO_MOBILE), ("", ehr.NO_MOBILE),
                                           ("+44 20 7946 0958", ehr.NOT_TEXTABLE_NEW),
                                           ("0491 570 006", ehr.NOT_TEXTABLE_NEW)])
def test_a_new_patient_without_a_textable_number_is_imported_untextable(tenant_a, phone, warning):
    result = _upsert(tenant_a, phone=phone)
    assert result.created and result.warning == warning
    with tenant_scope(tenant_a):
        from consent.selectors import consent_summary

        stored = Patient.objects.get()
        assert stored.phone == "" and stored.phone_index == ""
        assert consent_summary(tenant_a, stored).reason == "no_phone"


def test_an_untextable_number_for_a_known_patient_keeps_the_one_on_file(tenant_a):
    _upsert(tenant_a)
    result = _upsert(tenant_a, phone="+44 20 7946 0958")
    assert not result.created and result.warning == ehr.NOT_TEXTABLE_KEPT
    with tenant_scope(tenant_a):
        assert Patient.objects.get().phone == "+12025550177"


def test_the_same_mrn_in_another_clinic_is_another_patient(tenant_a, tenant_b):
    a = _upsert(tenant_a)
    b = _upsert(tenant_b)
    assert b.created and a.patient.pk != b.patient.pk


def _appointment(tenant, patient, **overrides):
    start = timezone.now() + datetime.timedelta(days=3)
    values = {"external_id": "SCH-77", "starts_at": start, "ends_at": start + datetime.timedelta(minutes=30),
              "location_name": "Room 4"}
    values.update(overrides)
    with tenant_scope(tenant):
        return ehr.ehr_appointment_upsert(tenant=tenant, actor=None, source="hl7", patient=patient, **values)


def test_appointment_upsert_is_idempotent_and_follows_the_ehrs_status(tenant_a):
    patient = _upsert(tenant_a).patient
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
    patient = _upsert(tenant_a).patient
    other = _upsert(tenant_a, mrn="EHR-2", phone="+12025550178").patient
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
    quiet = _upsert(tenant_a).patient  # no consent
    with tenant_scope(tenant_a):
        none, outcome = ehr.ehr_result_notice(tenant=tenant_a, actor=None, source="fhir", patient=quiet,
                                              external_id="DR/124", body="Ready.")
        assert none is None and outcome == "never_granted"
        assert Message.objects.count() == 1
