"""Patient and appointment selectors: exact-match search through blind indexes, tenant
isolation, pagination, the clinic's day, and the audit events of display reads."""

import datetime
import uuid
from zoneinfo import ZoneInfo

import pytest

from accounts.errors import ApplicationError, NotFound
from audit.events import AuditEventType
from audit.models import AuditEvent
from patients import selectors
from tests.factories import make_appointment, make_patient
from tests.patients.conftest import ADA

NY = ZoneInfo("America/New_York")


def _searched() -> list[dict]:
    return [e.details for e in AuditEvent.objects.filter(event_type=AuditEventType.PATIENT_SEARCHED).order_by("seq")]


@pytest.mark.parametrize(("criteria", "method"), [
    ({"mrn": "A-1001"}, "mrn"),
    ({"mrn": " a1001 "}, "mrn"),
    ({"phone": "+12025550143"}, "phone"),
    ({"phone": "202.555.0143"}, "phone"),
    ({"family_name": "Lovelace", "birth_date": ADA["birth_date"]}, "name_dob"),
    ({"family_name": "  LOVELACE ", "birth_date": "1985-12-10"}, "name_dob"),
])
def test_search_finds_exactly_the_one_patient(ada, ada_b, tenant_a, in_a, alice, criteria, method):
    make_patient(tenant=tenant_a, family_name="Lovelace", birth_date=datetime.date(1985, 12, 11))  # near miss
    make_patient(tenant=tenant_a, mrn="A-10010", phone="+12025550144")
    found_method, found = selectors.patient_search(tenant=in_a, actor=alice, **criteria)
    assert found_method == method
    assert [p.pk for p in found] == [ada.pk]  # never clinic B's copy
    assert _searched() == [{"method": method, "count": 1}]


def test_search_by_shared_phone_returns_each_household_member(ada, tenant_a, in_a):
    kid = make_patient(tenant=tenant_a, given_name="Byron", family_name="Lovelace", phone="202 555 0143")
    _, found = selectors.patient_search(tenant=in_a, actor=None, phone="(202) 555-0143")
    assert {p.pk for p in found} == {ada.pk, kid.pk}
    assert _searched() == [{"method": "phone", "count": 2}]


def test_search_without_a_match_is_empty_and_still_audited(ada, in_a):
    assert selectors.patient_search(tenant=in_a, actor=None, mrn="nope") == ("mrn", [])
    assert _searched() == [{"method": "mrn", "count": 0}]


@pytest.mark.parametrize(("criteria", "fields"), [
    ({}, set()),
    ({"mrn": "A-1001", "phone": "+12025550143"}, set()),
    ({"family_name": "Lovelace"}, {"birth_date"}),
    ({"birth_date": "1985-12-10"}, {"family_name"}),
    ({"phone": "555"}, {"phone"}),
    ({"mrn": "#?"}, {"mrn"}),
    ({"family_name": "Lovelace", "birth_date": "1985-13-40"}, {"birth_date"}),
])
def test_search_rejects_unclear_criteria_without_auditing(in_a, criteria, fields):
    with pytest.raises(ApplicationError) as info:
        selectors.patient_search(tenant=in_a, actor=None, **criteria)
    assert set(info.value.fields) == fields
    assert _searched() == []


def test_patient_get_is_not_found_for_other_clinics_unknown_and_garbage_ids(ada, ada_b, in_a):
    assert selectors.patient_get(tenant=in_a, patient_id=ada.pk) == ada
    assert selectors.patient_get(tenant=in_a, patient_id=str(ada.pk)) == ada
    for bad in (ada_b.pk, uuid.uuid4(), "not-a-uuid", None):
        with pytest.raises(NotFound):
            selectors.patient_get(tenant=in_a, patient_id=bad)


def test_patient_view_writes_patient_viewed(ada, in_a, carol):
    assert selectors.patient_view(tenant=in_a, actor=carol, patient_id=ada.pk) == ada
    event = AuditEvent.objects.get(event_type=AuditEventType.PATIENT_VIEWED)
    assert event.patient_id == ada.pk and event.actor_user == carol and event.details == {}
    assert event.object_id == str(ada.pk)


def test_patient_view_of_another_clinics_patient_writes_nothing(ada_b, in_a):
    with pytest.raises(NotFound):
        selectors.patient_view(tenant=in_a, actor=None, patient_id=ada_b.pk)
    assert not AuditEvent.objects.filter(event_type=AuditEventType.PATIENT_VIEWED).exists()


def test_patient_list_pages_by_50_and_sorts_each_page_by_name(tenant_a, ada_b, in_a):
    names = [f"Z{n:02d}" for n in range(55)]
    for name in reversed(names):  # created Z54 ... Z00: the newest is Z00
        make_patient(tenant=tenant_a, family_name=name)
    first = selectors.patient_list(tenant=in_a, actor=None, page=1)
    second = selectors.patient_list(tenant=in_a, actor=None, page="2")
    assert first.paginator.count == 55  # clinic B's patient isn't counted
    assert [p.family_name for p in first.object_list] == names[:50]
    assert [p.family_name for p in second.object_list] == names[50:]
    assert selectors.patient_list(tenant=in_a, actor=None, page="junk").number == 1
    assert _searched() == [{"method": "list", "count": 50}, {"method": "list", "count": 5},
                           {"method": "list", "count": 50}]


def test_appointments_for_day_uses_the_clinics_time_zone(tenant_a, ada, ada_b, tenant_b, in_a):
    assert tenant_a.timezone == "America/New_York"
    day = datetime.date(2030, 3, 5)

    def at(hour, minute=0, d=day):
        return datetime.datetime.combine(d, datetime.time(hour, minute), tzinfo=NY)

    early = make_appointment(tenant=tenant_a, patient=ada, starts_at=at(0, 0))
    late = make_appointment(tenant=tenant_a, patient=ada, starts_at=at(23, 30))  # 04:30 UTC the next day
    make_appointment(tenant=tenant_a, patient=ada, starts_at=at(23, 59, d=day - datetime.timedelta(days=1)))
    make_appointment(tenant=tenant_a, patient=ada, starts_at=at(0, 0, d=day + datetime.timedelta(days=1)))
    make_appointment(tenant=tenant_b, patient=ada_b, starts_at=at(12))
    appointments = selectors.appointments_for_day(tenant=in_a, actor=None, day=day)
    assert [a.pk for a in appointments] == [early.pk, late.pk]
    assert appointments[0].patient.family_name == "Lovelace"
    assert _searched() == [{"method": "appointments_day", "count": 2}]


def test_day_bounds_follow_daylight_saving(tenant_a):
    def hours(day):
        start, end = selectors.day_bounds(tenant_a, day)
        return (end.astimezone(datetime.UTC) - start.astimezone(datetime.UTC)) / datetime.timedelta(hours=1)

    assert hours(datetime.date(2030, 3, 10)) == 23  # US spring forward
    assert hours(datetime.date(2030, 11, 3)) == 25  # and back
    assert hours(datetime.date(2030, 11, 4)) == 24


def test_appointment_get_is_not_found_across_clinics(visit, visit_b, in_a):
    assert selectors.appointment_get(tenant=in_a, appointment_id=visit.pk) == visit
    for bad in (visit_b.pk, uuid.uuid4(), "x"):
        with pytest.raises(NotFound):
            selectors.appointment_get(tenant=in_a, appointment_id=bad)
