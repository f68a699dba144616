"""Staff pages for patients and appointments, as front desk (bob), clinician (carol) and
auditor (dave)."""

import datetime
import re

import pytest
from django.test.utils import CaptureQueriesContext

from accounts.tenancy import tenant_scope
from audit.events import AuditEventType
from audit.models import AuditEvent
from patients.models import Appointment, AppointmentStatus, Patient
from phi import keys
from tests.factories import make_patient

NEW_PATIENT = {"mrn": "C-77", "given_name": "Grace", "family_name": "Hopper", "birth_date": "1956-12-09",
               "phone": "(202) 555-0177", "email": "", "preferred_language": "en", "timezone": ""}


def _events(tenant, event_type) -> list[AuditEvent]:
    with tenant_scope(tenant):
        return list(AuditEvent.objects.filter(event_type=event_type).order_by("seq"))


def _error_ids(response) -> set[str]:
    return set(re.findall(r'id="id_(\w+)-error"', response.content.decode()))


def _urls(patient, appointment) -> list[tuple[str, str]]:
    return [
        ("get", "/patients/"), ("post", "/patients/search/"), ("get", "/patients/new/"),
        ("get", f"/patients/{patient.pk}/"), ("get", f"/patients/{patient.pk}/edit/"),
        ("get", f"/patients/{patient.pk}/appointments/new/"), ("get", "/patients/appointments/"),
        ("get", f"/patients/appointments/{appointment.pk}/edit/"),
        ("post", f"/patients/appointments/{appointment.pk}/status/"),
    ]


# --- who may see what -------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["bob", "carol"])
def test_front_desk_and_clinicians_use_every_page(client, login, request, ada, visit, who):
    login(request.getfixturevalue(who))
    for method, url in _urls(ada, visit):
        data = {"mrn": "A-1001"} if url.endswith("search/") else {"status": "confirmed"}
        response = getattr(client, method)(url, data if method == "post" else None)
        assert response.status_code in (200, 302), (url, response.status_code)


def test_auditors_get_403_everywhere_and_it_is_audited(client, login, dave, tenant_a, ada, visit):
    login(dave)
    urls = _urls(ada, visit)
    for method, url in urls:
        response = getattr(client, method)(url)
        assert response.status_code == 403, url
        assert b"Lovelace" not in response.content
    assert len(_events(tenant_a, AuditEventType.PERMISSION_DENIED)) == len(urls)
    assert _events(tenant_a, AuditEventType.PATIENT_VIEWED) == []
    with tenant_scope(tenant_a):
        assert Appointment.objects.get().status == AppointmentStatus.BOOKED


def test_anonymous_visitors_are_sent_to_sign_in(client, ada):
    response = client.get(f"/patients/{ada.pk}/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


# --- list and search --------------------------------------------------------------------------------


def test_list_shows_names_and_is_audited_as_a_listing(client, login, bob, tenant_a, ada, ada_b):
    login(bob)
    page = client.get("/patients/")
    assert page.status_code == 200
    assert b"Lovelace, Ada" in page.content
    assert page.content.count(b"Lovelace") == 1  # clinic B's copy isn't listed
    assert b"A-1001" not in page.content and b"1985" not in page.content  # names only, no identifiers
    assert [e.details for e in _events(tenant_a, AuditEventType.PATIENT_SEARCHED)] == [{"method": "list", "count": 1}]


def test_list_query_count_does_not_grow_with_the_page(client, login, bob, tenant_a, django_assert_max_num_queries):
    login(bob)
    make_patient(tenant=tenant_a)
    client.get("/patients/")  # warm the session and caches

    def queries() -> int:
        from django.db import connection

        keys.clear_cache()  # the worst case: the clinic's key is unwrapped again
        with CaptureQueriesContext(connection) as captured:
            assert client.get("/patients/").status_code == 200
        return len(captured)

    few = queries()
    for _ in range(59):
        make_patient(tenant=tenant_a)
    assert queries() == few  # 50 rows cost what 1 row costs: no query per row
    # 8 to resolve the session, user, MFA device, clinic, membership and scopes; 2 for the page
    # (count + rows); 1 for the clinic's data key (cold cache); 6 for the audit event in its
    # savepoints (chain head lock, insert, head update); 1 for the inbox's unread count in the nav.
    with django_assert_max_num_queries(20):
        keys.clear_cache()
        client.get("/patients/?page=2")


@pytest.mark.parametrize(("data", "method"), [
    ({"mrn": "a1001"}, "mrn"),
    ({"phone": "202-555-0143"}, "phone"),
    ({"family_name": "lovelace", "birth_date": "1985-12-10"}, "name_dob"),
])
def test_search_finds_the_patient_by_post(client, login, carol, tenant_a, ada, ada_b, data, method):
    login(carol)
    response = client.post("/patients/search/", data)
    assert response.status_code == 200
    assert b"1 match" in response.content
    assert f'href="/patients/{ada.pk}/"'.encode() in response.content
    assert f"/patients/{ada_b.pk}/".encode() not in response.content
    assert [e.details for e in _events(tenant_a, AuditEventType.PATIENT_SEARCHED)] == [{"method": method, "count": 1}]


@pytest.mark.parametrize(("data", "errors"), [
    ({}, set()),
    ({"phone": "555"}, {"phone"}),
    ({"family_name": "Lovelace"}, {"birth_date"}),
    ({"birth_date": "not a date"}, {"birth_date"}),
])
def test_unclear_searches_are_400_and_not_audited(client, login, bob, tenant_a, data, errors):
    login(bob)
    response = client.post("/patients/search/", data)
    assert response.status_code == 400
    assert _error_ids(response) == errors
    assert b"error-summary" in response.content or errors
    assert _events(tenant_a, AuditEventType.PATIENT_SEARCHED) == []


def test_search_is_not_a_get(client, login, bob):
    login(bob)
    assert client.get("/patients/search/?mrn=A-1001").status_code == 405


# --- detail -----------------------------------------------------------------------------------------


def test_detail_shows_the_record_and_writes_patient_viewed(client, login, carol, tenant_a, ada, visit):
    login(carol)
    page = client.get(f"/patients/{ada.pk}/")
    assert page.status_code == 200
    for value in (b"Ada Lovelace", b"A-1001", b"1985-12-10", b"(202) 555-0143", b"ada@example.test", b"Follow-up"):
        assert value in page.content
    assert b'id="consent"' in page.content
    (event,) = _events(tenant_a, AuditEventType.PATIENT_VIEWED)
    assert event.patient_id == ada.pk and event.actor_user == carol and event.details == {}


def test_detail_shows_a_changed_number_waits_for_consent(client, login, carol, tenant_a, ada):
    from patients.services import patient_update

    with tenant_scope(tenant_a):
        patient_update(tenant=tenant_a, actor=None, patient=ada, phone="+34 612 345 678")
    login(carol)
    page = client.get(f"/patients/{ada.pk}/")
    assert b"+34 612 34 56 78" in page.content and b"wait until consent" in page.content


# --- create and edit --------------------------------------------------------------------------------


def test_front_desk_adds_a_patient(client, login, bob, tenant_a):
    login(bob)
    assert client.get("/patients/new/").status_code == 200
    response = client.post("/patients/new/", NEW_PATIENT)
    assert response.status_code == 302
    with tenant_scope(tenant_a):
        patient = Patient.objects.get()
        assert patient.phone == "+12025550177" and patient.family_name == "Hopper"
    assert response["Location"] == f"/patients/{patient.pk}/"
    (event,) = _events(tenant_a, AuditEventType.PATIENT_CREATED)
    assert event.actor_user == bob and "Hopper" not in str(event.details)
    follow = client.get(response["Location"])
    assert b"Patient added." in follow.content and b"Hopper" not in client.cookies.output().encode()


def test_bad_input_is_400_with_an_error_on_each_field_and_nothing_saved(client, login, bob, tenant_a):
    login(bob)
    bad = {**NEW_PATIENT, "mrn": "#1", "given_name": "", "birth_date": "2999-01-01", "phone": "+1 800 555 0100",
           "email": "nope", "preferred_language": "fr", "timezone": "Nowhere/Land"}
    response = client.post("/patients/new/", bad)
    assert response.status_code == 400
    # Every error at once, each next to its field.
    assert _error_ids(response) == {"mrn", "given_name", "birth_date", "phone", "email", "preferred_language",
                                    "timezone"}
    assert b"cannot receive text messages" in response.content
    response = client.post("/patients/new/", {})
    assert response.status_code == 400
    assert _error_ids(response) == {"mrn", "given_name", "family_name", "birth_date", "preferred_language"}
    with tenant_scope(tenant_a):
        assert not Patient.objects.exists()


def test_duplicate_mrn_is_a_field_error_on_the_page(client, login, bob, tenant_a, ada):
    login(bob)
    response = client.post("/patients/new/", {**NEW_PATIENT, "mrn": "A 1001"})
    assert response.status_code == 400
    assert _error_ids(response) == {"mrn"}
    assert b"Another patient of this clinic has this medical record number." in response.content
    with tenant_scope(tenant_a):
        assert Patient.objects.count() == 1


def test_edit_shows_the_record_audited_and_saves_changes(client, login, carol, tenant_a, ada):
    login(carol)
    page = client.get(f"/patients/{ada.pk}/edit/")
    assert page.status_code == 200
    assert b'value="A-1001"' in page.content and b'value="1985-12-10"' in page.content
    assert len(_events(tenant_a, AuditEventType.PATIENT_VIEWED)) == 1
    data = {**NEW_PATIENT, "mrn": "A-1001", "given_name": "Ada", "family_name": "King", "birth_date": "1985-12-10",
            "phone": "+12025550199"}
    response = client.post(f"/patients/{ada.pk}/edit/", data)
    assert response.status_code == 302 and response["Location"] == f"/patients/{ada.pk}/"
    with tenant_scope(tenant_a):
        patient = Patient.objects.get(pk=ada.pk)
        assert patient.family_name == "King" and patient.phone == "+12025550199"
        assert patient.phone_changed_at is not None and patient.email is None
    (event,) = _events(tenant_a, AuditEventType.PATIENT_CHANGED)
    assert event.details == {"fields": ["email", "family_name", "phone"]}
    # Saving the same values again is not a change.
    assert client.post(f"/patients/{ada.pk}/edit/", data).status_code == 302
    assert len(_events(tenant_a, AuditEventType.PATIENT_CHANGED)) == 1


def test_edit_with_bad_input_is_400_and_changes_nothing(client, login, carol, tenant_a, ada):
    login(carol)
    data = {**NEW_PATIENT, "mrn": "A-1001", "phone": "12", "birth_date": "1850-01-01"}
    response = client.post(f"/patients/{ada.pk}/edit/", data)
    assert response.status_code == 400
    assert _error_ids(response) == {"phone", "birth_date"}
    with tenant_scope(tenant_a):
        patient = Patient.objects.get(pk=ada.pk)
        assert patient.family_name == "Lovelace" and patient.phone_changed_at is None
    assert _events(tenant_a, AuditEventType.PATIENT_CHANGED) == []


# --- appointments -----------------------------------------------------------------------------------


def test_booking_uses_the_clinics_time_zone_and_shows_on_the_day(client, login, bob, tenant_a, ada):
    login(bob)
    assert client.get(f"/patients/{ada.pk}/appointments/new/").status_code == 200
    response = client.post(f"/patients/{ada.pk}/appointments/new/", {
        "starts_at": "2030-03-05T09:00", "ends_at": "2030-03-05T09:30", "appointment_type": "Annual physical",
        "provider_name": "Dr. Rivera", "reason": "Check-up"})
    assert response.status_code == 302 and response["Location"] == "/patients/appointments/?day=2030-03-05"
    with tenant_scope(tenant_a):
        appointment = Appointment.objects.get()
    assert appointment.starts_at == datetime.datetime(2030, 3, 5, 14, tzinfo=datetime.UTC)  # 09:00 in New York
    day = client.get(response["Location"])
    assert day.status_code == 200
    assert b"09:00" in day.content and b"Lovelace, Ada" in day.content and b"Annual physical" in day.content
    assert b"Check-up" not in day.content  # the reason is clinical: on the patient's pages only
    (event,) = _events(tenant_a, AuditEventType.APPOINTMENT_CHANGED)
    assert event.patient_id == ada.pk


def test_booking_with_bad_times_is_400_and_saves_nothing(client, login, bob, tenant_a, ada):
    login(bob)
    url = f"/patients/{ada.pk}/appointments/new/"
    response = client.post(url, {"starts_at": "2030-03-05T09:00", "ends_at": "2030-03-05T08:00"})
    assert response.status_code == 400 and _error_ids(response) == {"ends_at"}
    response = client.post(url, {"starts_at": "2030-03-10T02:30", "ends_at": "2030-03-10T04:00"})  # no 02:30 that day
    assert response.status_code == 400 and _error_ids(response) == {"starts_at"}
    response = client.post(url, {"starts_at": "soon"})
    assert response.status_code == 400 and _error_ids(response) == {"starts_at"}
    response = client.post(url, {})
    assert response.status_code == 400 and _error_ids(response) == {"starts_at", "ends_at"}
    with tenant_scope(tenant_a):
        assert not Appointment.objects.exists()


def test_day_page_defaults_to_today_and_rejects_a_bad_day(client, login, bob, tenant_a):
    login(bob)
    assert client.get("/patients/appointments/").status_code == 200
    response = client.get("/patients/appointments/?day=2030-02-30")
    assert response.status_code == 400 and _error_ids(response) == {"day"}
    assert [e.details["method"] for e in _events(tenant_a, AuditEventType.PATIENT_SEARCHED)] == ["appointments_day"]


def test_status_change_from_the_day_page(client, login, bob, tenant_a, visit):
    login(bob)
    here = "/patients/appointments/?day=2030-01-01"
    response = client.post(f"/patients/appointments/{visit.pk}/status/", {"status": "confirmed", "next": here})
    assert response.status_code == 302 and response["Location"] == here
    response = client.post(f"/patients/appointments/{visit.pk}/status/",
                           {"status": "completed", "next": "https://evil.example/"})
    assert response.status_code == 302 and response["Location"].startswith("/patients/appointments/?day=")
    with tenant_scope(tenant_a):
        assert Appointment.objects.get().status == AppointmentStatus.COMPLETED
    assert [e.details["status"] for e in _events(tenant_a, AuditEventType.APPOINTMENT_CHANGED)][-2:] == [
        "confirmed", "completed"]


def test_an_impossible_status_change_is_400(client, login, bob, tenant_a, visit):
    login(bob)
    client.post(f"/patients/appointments/{visit.pk}/status/", {"status": "cancelled"})
    response = client.post(f"/patients/appointments/{visit.pk}/status/", {"status": "confirmed"})
    assert response.status_code == 400 and _error_ids(response) == {"status"}
    assert client.post(f"/patients/appointments/{visit.pk}/status/", {"status": "lost"}).status_code == 400
    with tenant_scope(tenant_a):
        assert Appointment.objects.get().status == AppointmentStatus.CANCELLED


def test_editing_an_appointment(client, login, carol, tenant_a, visit):
    login(carol)
    page = client.get(f"/patients/appointments/{visit.pk}/edit/")
    assert page.status_code == 200 and b"Follow-up" in page.content
    viewed = _events(tenant_a, AuditEventType.PATIENT_VIEWED)
    assert [e.patient_id for e in viewed] == [visit.patient_id]
    response = client.post(f"/patients/appointments/{visit.pk}/edit/", {
        "starts_at": "2030-04-01T08:15", "ends_at": "2030-04-01T08:45", "appointment_type": "Follow-up",
        "instructions": "Bring your inhaler."})
    assert response.status_code == 302 and response["Location"] == "/patients/appointments/?day=2030-04-01"
    with tenant_scope(tenant_a):
        appointment = Appointment.objects.get()
        assert appointment.instructions == "Bring your inhaler." and appointment.provider_name == ""
    assert appointment.starts_at == datetime.datetime(2030, 4, 1, 12, 15, tzinfo=datetime.UTC)  # EDT
    response = client.post(f"/patients/appointments/{visit.pk}/edit/", {
        "starts_at": "2030-04-01T08:15", "ends_at": "2030-04-02T09:00"})
    assert response.status_code == 400 and _error_ids(response) == {"ends_at"}


def test_edit_pages_also_need_view_phi(client, login, bob, tenant_a, ada, visit, monkeypatch):
    """A role that may change records but not read PHI (none today) gets no demographics or
    clinical notes from the edit pages."""
    from accounts import permissions as perms

    reduced = perms.ROLE_PERMISSIONS[perms.Role.STAFF] - {perms.PATIENTS_VIEW_PHI}
    monkeypatch.setitem(perms.ROLE_PERMISSIONS, perms.Role.STAFF, reduced)
    login(bob)
    for url in (f"/patients/{ada.pk}/edit/", f"/patients/appointments/{visit.pk}/edit/"):
        response = client.get(url)
        assert response.status_code == 403 and b"A-1001" not in response.content
    assert client.post(f"/patients/appointments/{visit.pk}/status/", {"status": "lost"}).status_code == 403
    assert client.get(f"/patients/{ada.pk}/").status_code == 403
    page = client.get("/patients/")
    assert b"Lovelace, Ada" in page.content and f"/patients/{ada.pk}/".encode() not in page.content
    assert _events(tenant_a, AuditEventType.PATIENT_VIEWED) == []
    assert {e.details["permission"] for e in _events(tenant_a, AuditEventType.PERMISSION_DENIED)} == {
        perms.PATIENTS_VIEW_PHI}


def test_a_patient_without_a_mobile_is_saved_and_the_page_says_they_are_not_texted(client, login, bob, tenant_a):
    login(bob)
    response = client.post("/patients/new/", {**NEW_PATIENT, "phone": ""})
    assert response.status_code == 302
    with tenant_scope(tenant_a):
        patient = Patient.objects.get()
        assert patient.phone == ""
    page = client.get(f"/patients/{patient.pk}/").content.decode()
    assert "None on file" in page and "not texted until a mobile number is added" in page
    assert "There is no mobile number on file." in page  # the consent panel's reason
