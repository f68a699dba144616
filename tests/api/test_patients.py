"""Patients over the API: keys and staff sessions, audited reads, 404 across clinics, 400s."""

from __future__ import annotations

import uuid

import pytest

from accounts.tenancy import tenant_scope
from audit.events import AuditEventType as E
from patients.models import Patient
from tests.api.conftest import ApiClient, error_fields, events
from tests.factories import make_patient

NEW = {"mrn": "API-0001", "given_name": "Grace", "family_name": "Hopper", "birth_date": "1976-12-09",
       "phone": "+12025550144", "preferred_language": "es", "external_ids": {"epic": "E123"}}


def _count(tenant) -> int:
    with tenant_scope(tenant):
        return Patient.objects.count()


def test_key_with_patients_read_lists_patients_and_the_page_is_audited(tenant_a, alice, key_client):
    for _ in range(3):
        make_patient(tenant=tenant_a, actor=alice)
    response = key_client("patients:read").get("/api/v1/patients")
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {"results", "next"} and body["next"] is None
    assert len(body["results"]) == 3
    assert set(body["results"][0]) >= {"id", "mrn", "given_name", "family_name", "birth_date", "phone"}
    [event] = events(tenant_a, E.PATIENT_SEARCHED)
    assert event.actor_type == "api_key"
    assert event.details == {"path_name": "api-patients", "count": 3, "method": "list"}


def test_patients_list_never_shows_another_clinics_patients(tenant_a, tenant_b, alice, charlie, key_client):
    make_patient(tenant=tenant_a, actor=alice, family_name="Alpha")
    make_patient(tenant=tenant_b, actor=charlie, family_name="Beta")
    names = [p["family_name"] for p in key_client("patients:read").get("/api/v1/patients").json()["results"]]
    assert names == ["Alpha"]


def test_pages_follow_next_links_to_the_end(tenant_a, alice, key_client):
    made = {str(make_patient(tenant=tenant_a, actor=alice).pk) for _ in range(5)}
    api, seen, url, pages = key_client("patients:read"), [], "/api/v1/patients?page_size=2", 0
    while url:
        body = api.get(url).json()
        seen += [p["id"] for p in body["results"]]
        url, pages = body["next"], pages + 1
    assert pages == 3
    assert len(seen) == 5 and set(seen) == made
    assert len(events(tenant_a, E.PATIENT_SEARCHED)) == 3  # one per page shown


@pytest.mark.parametrize("params,field", [({"page": "0"}, "page"), ({"page": "x"}, "page"),
                                          ({"page_size": "101"}, "page_size"), ({"page_size": "-1"}, "page_size")])
def test_bad_paging_is_a_400_naming_the_parameter(key_client, params, field):
    response = key_client("patients:read").get("/api/v1/patients", params)
    assert response.status_code == 400
    assert field in error_fields(response)


def test_reading_one_patient_is_audited_as_viewed(tenant_a, alice, key_client):
    patient = make_patient(tenant=tenant_a, actor=alice, given_name="Ada")
    response = key_client("patients:read").get(f"/api/v1/patients/{patient.pk}")
    assert response.status_code == 200
    assert response.json()["given_name"] == "Ada"
    [event] = events(tenant_a, E.PATIENT_VIEWED)
    assert event.patient_id == patient.pk and event.actor_type == "api_key"


def test_another_clinics_patient_is_a_404_like_an_unknown_id(tenant_b, charlie, key_client):
    foreign = make_patient(tenant=tenant_b, actor=charlie)
    api = key_client("patients:read", "patients:write")
    for url in (f"/api/v1/patients/{foreign.pk}", f"/api/v1/patients/{uuid.uuid4()}"):
        got = api.get(url)
        assert got.status_code == 404
        assert got.json() == {"error": {"code": "not_found", "message": "Not found.", "fields": {}}}
    patched = api.patch(f"/api/v1/patients/{foreign.pk}", {"given_name": "Mallory"})
    assert patched.status_code == 404
    with tenant_scope(tenant_b):
        assert Patient.objects.get(pk=foreign.pk).given_name != "Mallory"
    assert events(tenant_b, E.PATIENT_VIEWED) == [] and events(tenant_b, E.PATIENT_CHANGED) == []


def test_create_with_patients_write(tenant_a, key_client):
    response = key_client("patients:write").post("/api/v1/patients", NEW)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["mrn"] == "API-0001" and body["preferred_language"] == "es" and body["external_ids"] == {"epic": "E123"}
    with tenant_scope(tenant_a):
        assert str(Patient.objects.get().pk) == body["id"]
    [event] = events(tenant_a, E.PATIENT_CREATED)
    assert event.actor_type == "api_key"


@pytest.mark.parametrize("change,field", [
    ({"phone": "not a phone"}, "phone"), ({"birth_date": "2999-01-01"}, "birth_date"),
    ({"birth_date": "09/03/1984"}, "birth_date"), ({"mrn": ""}, "mrn"), ({"mrn": None}, "mrn"),
    ({"preferred_language": "fr"}, "preferred_language"), ({"external_ids": ["x"]}, "external_ids"),
    ({"given_name": "\ud800"}, "given_name"), ({"timezone": "Mars/Olympus"}, "timezone"),
])
def test_bad_create_is_a_400_naming_the_field_and_writes_nothing(tenant_a, key_client, change, field):
    response = key_client("patients:write").post("/api/v1/patients", {**NEW, **change})
    assert response.status_code == 400, response.content
    assert field in error_fields(response)
    assert _count(tenant_a) == 0
    assert events(tenant_a, E.PATIENT_CREATED) == []


def test_missing_fields_are_all_named(key_client):
    response = key_client("patients:write").post("/api/v1/patients", {})
    assert response.status_code == 400
    assert set(error_fields(response)) == {"mrn", "given_name", "family_name", "birth_date"}  # phone: optional


def test_duplicate_mrn_is_refused(tenant_a, alice, key_client):
    make_patient(tenant=tenant_a, actor=alice, mrn="API-0001")
    response = key_client("patients:write").post("/api/v1/patients", NEW)
    assert response.status_code == 400
    assert "mrn" in error_fields(response)
    assert _count(tenant_a) == 1


def test_patch_changes_only_what_is_sent(tenant_a, alice, key_client):
    patient = make_patient(tenant=tenant_a, actor=alice, given_name="Ada", family_name="Quill")
    response = key_client("patients:write").patch(f"/api/v1/patients/{patient.pk}", {"given_name": "Augusta"})
    assert response.status_code == 200, response.content
    assert response.json()["given_name"] == "Augusta" and response.json()["family_name"] == "Quill"
    [event] = events(tenant_a, E.PATIENT_CHANGED)
    assert event.details == {"fields": ["given_name"]}


def test_bad_patch_writes_nothing(tenant_a, alice, key_client):
    patient = make_patient(tenant=tenant_a, actor=alice, given_name="Ada")
    response = key_client("patients:write").patch(f"/api/v1/patients/{patient.pk}",
                                                  {"given_name": "Augusta", "phone": "12"})
    assert response.status_code == 400
    assert list(error_fields(response)) == ["phone"]
    with tenant_scope(tenant_a):
        assert Patient.objects.get(pk=patient.pk).given_name == "Ada"


@pytest.mark.parametrize("scopes,method,status", [
    (("appointments:write",), "get", 403),  # patients.view only: no demographics
    (("messages:send",), "get", 403),
    (("patients:read",), "post", 403),  # read-only key
    (("audit:read",), "post", 403),
    (("patients:write",), "get", 403),  # writes without view_phi cannot read the record back by GET
])
def test_keys_without_the_permission_get_403_and_the_denial_is_audited(tenant_a, key_client, scopes, method, status):
    api = key_client(*scopes)
    response = api.get("/api/v1/patients") if method == "get" else api.post("/api/v1/patients", NEW)
    assert response.status_code == status
    assert response.json()["error"]["code"] == "permission_denied"
    [denial] = events(tenant_a, E.PERMISSION_DENIED)
    assert denial.details["path_name"] == "api-patients"
    assert _count(tenant_a) == 0


def test_no_key_or_a_bad_key_is_a_401(db):
    assert ApiClient().get("/api/v1/patients").status_code == 401
    bad = ApiClient("ct_1_" + "A" * 43).get("/api/v1/patients")
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "not_authenticated"


def test_staff_session_by_role(tenant_a, alice, dave, staff_client):
    patient = make_patient(tenant=tenant_a, actor=alice)
    owner = staff_client(alice)
    assert owner.get(f"/api/v1/patients/{patient.pk}").status_code == 200
    assert owner.post("/api/v1/patients", NEW).status_code == 201
    [event] = events(tenant_a, E.PATIENT_VIEWED)
    assert event.actor_type == "user" and event.actor_user == alice
    auditor = staff_client(dave)  # no clinical access
    assert auditor.get(f"/api/v1/patients/{patient.pk}").status_code == 403


def test_search_by_mrn_keeps_the_criteria_out_of_the_url(tenant_a, alice, key_client):
    patient = make_patient(tenant=tenant_a, actor=alice, mrn="FIND-ME-1")
    response = key_client("patients:read").post("/api/v1/patients/search", {"mrn": "FIND-ME-1"})
    assert response.status_code == 200
    assert [p["id"] for p in response.json()["results"]] == [str(patient.pk)]
    [event] = events(tenant_a, E.PATIENT_SEARCHED)
    assert event.details == {"method": "mrn", "count": 1}
    assert key_client("patients:read").post("/api/v1/patients/search", {}).status_code == 400
