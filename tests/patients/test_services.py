"""patient_* and appointment_* services: validation by field, blind indexes, audit."""

import datetime
from unittest import mock

import pytest
from django.utils import timezone

from accounts.errors import ApplicationError, NotFound
from audit.events import AuditEventType
from audit.models import AuditEvent
from patients import services
from patients.models import Appointment, AppointmentStatus, Patient
from phi.blind import blind_index
from tests.patients.conftest import ADA

UTC = datetime.UTC
TODAY = datetime.date.today()


def _create(tenant, actor=None, **overrides):
    return services.patient_create(tenant=tenant, actor=actor, **{**ADA, **overrides})


def _field_errors(call) -> dict:
    with pytest.raises(ApplicationError) as info:
        call()
    return info.value.fields


# --- patient_create ---------------------------------------------------------------------------


def test_a_patient_without_a_mobile_is_kept_untextable_until_one_is_added(in_a, alice):
    patient = _create(in_a, alice, phone="  ")
    patient = Patient.objects.get(pk=patient.pk)
    assert patient.phone == "" and patient.phone_index == ""
    from consent.selectors import consent_summary

    assert consent_summary(in_a, patient).reason == "no_phone"
    # Two such patients never match each other (or a phone search for "") through the index.
    other = _create(in_a, alice, mrn="A-1002", phone=None)
    assert Patient.objects.get(pk=other.pk).phone_index == ""
    added = services.patient_update(tenant=in_a, actor=alice, patient=patient, phone="(202) 555-0150")
    assert added.phone == "+12025550150" and added.phone_index == blind_index(in_a, "phone", "+12025550150")
    assert added.phone_changed_at is not None  # texting still waits for consent for the new number


def test_it_creates_a_patient_with_e164_phone_indexes_and_audit(in_a, alice):
    patient = _create(in_a, alice)
    patient = Patient.objects.get(pk=patient.pk)
    assert (patient.given_name, patient.family_name, patient.mrn) == ("Ada", "Lovelace", "A-1001")
    assert patient.phone == "+12025550143"
    assert patient.birth_date == ADA["birth_date"] and patient.email == "ada@example.test"
    assert patient.phone_changed_at is None
    assert patient.mrn_index == blind_index(in_a, "mrn", "A1001")
    assert patient.phone_index == blind_index(in_a, "phone", "+12025550143")
    assert patient.name_dob_index == blind_index(in_a, "name_dob", ("lovelace", ADA["birth_date"]))
    event = AuditEvent.objects.get(event_type=AuditEventType.PATIENT_CREATED)
    assert event.patient_id == patient.pk and event.actor_user == alice
    assert event.details == {"fields": ["birth_date", "email", "family_name", "given_name", "mrn", "phone",
                                        "preferred_language"]}


def test_it_stores_names_stripped_and_international_numbers_as_e164(in_a):
    patient = _create(in_a, given_name="  María  José ", family_name=" Núñez\t", phone="+34 612 345 678",
                      email="", timezone="Europe/Madrid", preferred_language="es")
    assert (patient.given_name, patient.family_name) == ("María José", "Núñez")
    assert patient.phone == "+34612345678" and patient.email is None
    assert patient.timezone == "Europe/Madrid" and patient.preferred_language == "es"


@pytest.mark.parametrize(("field", "value", "message"), [
    ("mrn", "", "required"),
    ("mrn", "   ", "required"),
    ("mrn", "#123", "letters, digits"),
    ("mrn", "A" * 41, "at most 40"),
    ("given_name", "", "required"),
    ("given_name", "x" * 101, "at most 100"),
    ("given_name", "1234", "at least one letter"),
    ("family_name", "   ", "required"),
    ("family_name", "Null\x00Byte", "control characters"),
    ("birth_date", TODAY + datetime.timedelta(days=1), "future"),
    ("birth_date", datetime.date(1899, 12, 31), "before 1900"),
    ("birth_date", "31/12/1980", "YYYY-MM-DD"),
    ("birth_date", datetime.datetime(1980, 1, 1, tzinfo=UTC), "Enter a date"),
    ("birth_date", None, "required"),
    ("birth_date", "", "required"),
    ("phone", "call me", "Enter a phone number"),
    ("phone", "555-010-0199", "not a valid phone number"),
    ("phone", "+1 800 555 0100", "cannot receive text"),  # toll-free
    ("phone", "+44 20 7946 0958", "cannot receive text"),  # a UK landline
    ("email", "not-an-email", "valid email"),
    ("preferred_language", "fr", "Choose one of"),
    ("timezone", "Mars/Olympus_Mons", "Unknown time zone"),
    ("external_ids", {"": "123"}, "required"),
    ("external_ids", "EHR-1", "at most 20"),
])
def test_it_names_the_bad_field_and_saves_nothing(in_a, field, value, message):
    fields = _field_errors(lambda: _create(in_a, **{field: value}))
    assert list(fields) == [field]
    assert message in fields[field][0]
    assert not Patient.objects.exists()
    assert not AuditEvent.objects.filter(event_type=AuditEventType.PATIENT_CREATED).exists()


def test_error_messages_never_repeat_the_value(in_a):
    fields = _field_errors(lambda: _create(in_a, phone="555-010-0199", mrn="#SECRET-MRN", email="x@"))
    assert set(fields) == {"phone", "mrn", "email"}  # all at once
    assert "0199" not in str(fields) and "SECRET" not in str(fields) and "x@" not in str(fields)


def test_birth_date_of_today_and_of_1900_are_accepted(in_a):
    _create(in_a, mrn="1", birth_date=services.clinic_today(in_a))
    _create(in_a, mrn="2", birth_date="1900-01-01")
    assert Patient.objects.count() == 2


def test_duplicate_mrn_is_a_field_error_after_normalisation(in_a, ada):
    fields = _field_errors(lambda: _create(in_a, mrn=" a1001 ", phone="+12025550144"))
    assert fields == {"mrn": [services.DUPLICATE_MRN]}
    assert Patient.objects.count() == 1


def test_the_same_mrn_in_another_clinic_is_not_a_duplicate(ada_b, in_a):
    _create(in_a)
    assert Patient.objects.count() == 1  # clinic A's only


def test_a_racing_duplicate_is_a_field_error_not_a_500(in_a, ada):
    # Two requests both pass the check, then the unique constraint decides.
    with mock.patch.object(services, "_check_mrn_free"):
        fields = _field_errors(lambda: _create(in_a, mrn="A1001"))
    assert fields == {"mrn": [services.DUPLICATE_MRN]}
    assert Patient.objects.count() == 1  # and the transaction is still usable


# --- patient_update ---------------------------------------------------------------------------


def test_it_updates_changed_fields_indexes_and_audits_their_names(in_a, ada, bob):
    updated = services.patient_update(tenant=in_a, actor=bob, patient=ada, family_name="King",
                                      given_name="Ada", email="ada@king.test")
    assert updated.family_name == "King" and updated.email == "ada@king.test"
    assert updated.name_dob_index == blind_index(in_a, "name_dob", ("King", ADA["birth_date"]))
    stored = Patient.objects.get(pk=ada.pk)
    assert stored.family_name == "King" and stored.name_dob_index == updated.name_dob_index
    assert stored.phone_changed_at is None
    event = AuditEvent.objects.get(event_type=AuditEventType.PATIENT_CHANGED)
    assert event.details == {"fields": ["email", "family_name"]}
    assert event.patient_id == ada.pk and event.actor_user == bob


def test_changing_the_phone_sets_phone_changed_at(in_a, ada, time_machine):
    time_machine.move_to("2026-03-01 12:00:00+00:00", tick=False)
    updated = services.patient_update(tenant=in_a, actor=None, patient=ada, phone="202-555-0199")
    assert updated.phone == "+12025550199"
    assert updated.phone_changed_at == datetime.datetime(2026, 3, 1, 12, tzinfo=UTC)
    assert updated.phone_index == blind_index(in_a, "phone", "+12025550199")
    assert Patient.objects.get(pk=ada.pk).phone_changed_at == updated.phone_changed_at


def test_the_same_number_typed_differently_is_no_change(in_a, ada):
    updated = services.patient_update(tenant=in_a, actor=None, patient=ada, phone="+1 202-555-0143",
                                      mrn="A-1001", family_name="Lovelace")
    assert updated.phone_changed_at is None
    assert not AuditEvent.objects.filter(event_type=AuditEventType.PATIENT_CHANGED).exists()


def test_update_validates_fields_and_duplicates(in_a, ada):
    other = _create(in_a, mrn="B-2", phone="+12025550150")
    fields = _field_errors(lambda: services.patient_update(tenant=in_a, actor=None, patient=other, mrn="A1001",
                                                           birth_date="1800-01-01", colour="blue"))
    assert set(fields) == {"birth_date", "colour"}  # field checks first; the duplicate after them
    fields = _field_errors(lambda: services.patient_update(tenant=in_a, actor=None, patient=other, mrn="a-1001"))
    assert fields == {"mrn": [services.DUPLICATE_MRN]}
    assert Patient.objects.get(pk=other.pk).mrn == "B-2"


def test_update_of_another_clinics_patient_is_not_found(ada_b, in_a):
    with pytest.raises(NotFound):
        services.patient_update(tenant=in_a, actor=None, patient=ada_b, given_name="Eve")


# --- appointments -----------------------------------------------------------------------------


def _at(hour: int, day: int = 5) -> datetime.datetime:
    return datetime.datetime(2030, 3, day, hour, tzinfo=UTC)


def _book(tenant, patient, **overrides):
    values = {"starts_at": _at(14), "ends_at": _at(15), "appointment_type": "Follow-up"}
    return services.appointment_create(tenant=tenant, actor=None, patient=patient, **{**values, **overrides})


def test_it_books_an_appointment_and_audits_it(in_a, ada):
    appointment = _book(in_a, ada, reason="Knee pain", provider_name=" Dr. Rivera ")
    stored = Appointment.objects.get(pk=appointment.pk)
    assert stored.status == AppointmentStatus.BOOKED and stored.reason == "Knee pain"
    assert stored.provider_name == "Dr. Rivera"
    event = AuditEvent.objects.get(event_type=AuditEventType.APPOINTMENT_CHANGED)
    assert event.patient_id == ada.pk
    assert event.details == {"fields": ["appointment_type", "ends_at", "provider_name", "reason", "source",
                                        "starts_at", "status"], "status": "booked"}


@pytest.mark.parametrize(("overrides", "field"), [
    ({"starts_at": datetime.datetime(2030, 3, 5, 14)}, "starts_at"),  # naive
    ({"ends_at": "tomorrow"}, "ends_at"),
    ({"ends_at": _at(14)}, "ends_at"),  # not after the start
    ({"ends_at": _at(13)}, "ends_at"),
    ({"ends_at": _at(15, day=6)}, "ends_at"),  # longer than a day
    ({"status": "lost"}, "status"),
    ({"source": "fax"}, "source"),
    ({"provider_name": "x" * 201}, "provider_name"),
    ({"appointment_type": "x" * 101}, "appointment_type"),
    ({"reason": "x" * 2001}, "reason"),
])
def test_appointment_errors_name_the_field(in_a, ada, overrides, field):
    assert list(_field_errors(lambda: _book(in_a, ada, **overrides))) == [field]
    assert not Appointment.objects.exists()


def test_duplicate_external_id_is_a_field_error(in_a, ada):
    _book(in_a, ada, source="fhir", external_id="appt-1")
    _book(in_a, ada, source="hl7", external_id="appt-1")  # another source: fine
    fields = _field_errors(lambda: _book(in_a, ada, source="fhir", external_id="appt-1"))
    assert list(fields) == ["external_id"]


def test_booking_for_another_clinics_patient_is_not_found(ada_b, in_a):
    with pytest.raises(NotFound):
        _book(in_a, ada_b)


def test_moving_a_confirmed_appointment_puts_it_back_to_booked(in_a, ada):
    appointment = _book(in_a, ada)
    services.appointment_set_status(tenant=in_a, actor=None, appointment=appointment, status="confirmed")
    moved = services.appointment_update(tenant=in_a, actor=None, appointment=appointment,
                                        starts_at=_at(16), ends_at=_at(17))
    assert moved.status == AppointmentStatus.BOOKED
    event = AuditEvent.objects.filter(event_type=AuditEventType.APPOINTMENT_CHANGED).latest("seq")
    assert event.details == {"fields": ["ends_at", "starts_at", "status"], "status": "booked"}


def test_update_checks_the_resulting_times_and_editable_fields(in_a, ada):
    appointment = _book(in_a, ada)
    assert list(_field_errors(lambda: services.appointment_update(
        tenant=in_a, actor=None, appointment=appointment, starts_at=_at(15)))) == ["ends_at"]
    assert list(_field_errors(lambda: services.appointment_update(
        tenant=in_a, actor=None, appointment=appointment, status="completed"))) == ["status"]
    assert Appointment.objects.get(pk=appointment.pk).starts_at == _at(14)


def test_closed_appointments_cannot_be_moved(in_a, ada):
    appointment = _book(in_a, ada)
    services.appointment_set_status(tenant=in_a, actor=None, appointment=appointment, status="cancelled")
    fields = _field_errors(lambda: services.appointment_update(
        tenant=in_a, actor=None, appointment=appointment, starts_at=_at(10), ends_at=_at(11)))
    assert set(fields) == {"starts_at", "ends_at"}
    # Notes can still be corrected.
    updated = services.appointment_update(tenant=in_a, actor=None, appointment=appointment, instructions="Call us")
    assert updated.instructions == "Call us"


@pytest.mark.parametrize(("path", "ok"), [
    (["confirmed", "completed"], True),
    (["reschedule_requested", "booked", "confirmed"], True),
    (["no_show", "completed"], True),
    (["cancelled", "booked"], False),
    (["completed", "no_show"], False),
    (["confirmed", "booked"], False),
])
def test_status_transitions(in_a, ada, path, ok):
    appointment = _book(in_a, ada)
    *steps, last = path
    for status in steps:
        appointment = services.appointment_set_status(tenant=in_a, actor=None, appointment=appointment, status=status)
    if ok:
        assert services.appointment_set_status(tenant=in_a, actor=None, appointment=appointment,
                                               status=last).status == last
    else:
        fields = _field_errors(lambda: services.appointment_set_status(
            tenant=in_a, actor=None, appointment=appointment, status=last))
        assert list(fields) == ["status"]
        assert Appointment.objects.get(pk=appointment.pk).status == steps[-1]


def test_setting_the_same_status_writes_nothing(in_a, ada):
    appointment = _book(in_a, ada)
    before = AuditEvent.objects.count()
    services.appointment_set_status(tenant=in_a, actor=None, appointment=appointment, status="booked")
    assert AuditEvent.objects.count() == before


def test_status_change_is_audited_with_the_status(in_a, ada, carol):
    appointment = _book(in_a, ada)
    services.appointment_set_status(tenant=in_a, actor=carol, appointment=appointment, status="no_show")
    event = AuditEvent.objects.filter(event_type=AuditEventType.APPOINTMENT_CHANGED).latest("seq")
    assert event.details == {"fields": ["status"], "status": "no_show"} and event.actor_user == carol


def test_appointment_times_are_stored_as_instants(in_a, ada):
    from zoneinfo import ZoneInfo

    local = datetime.datetime(2030, 3, 5, 9, tzinfo=ZoneInfo("America/New_York"))
    appointment = _book(in_a, ada, starts_at=local, ends_at=local + datetime.timedelta(minutes=30))
    stored = Appointment.objects.get(pk=appointment.pk).starts_at
    assert stored == _at(14) and timezone.is_aware(stored)
