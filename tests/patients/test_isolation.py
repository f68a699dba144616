"""Another clinic's patients and appointments are 404, exactly like ids that don't exist (R9),
and nothing charlie (owner of clinic B) does touches clinic A's rows or audit trail."""

import re
import uuid

import pytest

from accounts.tenancy import tenant_scope
from audit.models import AuditEvent
from patients.models import Appointment, Patient

EDIT = {"mrn": "X-1", "given_name": "Eve", "family_name": "Mallory", "birth_date": "1970-01-01",
        "phone": "+12025550100", "email": "", "preferred_language": "en", "timezone": ""}
TIMES = {"starts_at": "2030-01-01T09:00", "ends_at": "2030-01-01T10:00"}

# (method, url template, data): {p} is a patient id, {a} an appointment id.
REQUESTS = [
    ("get", "/patients/{p}/", None),
    ("get", "/patients/{p}/edit/", None),
    ("post", "/patients/{p}/edit/", EDIT),
    ("get", "/patients/{p}/appointments/new/", None),
    ("post", "/patients/{p}/appointments/new/", TIMES),
    ("get", "/patients/appointments/{a}/edit/", None),
    ("post", "/patients/appointments/{a}/edit/", TIMES),
    ("post", "/patients/appointments/{a}/status/", {"status": "cancelled"}),
]


def _normalise(content: bytes) -> bytes:
    content = re.sub(rb'name="csrfmiddlewaretoken" value="[^"]+"', b'name="csrfmiddlewaretoken"', content)
    return re.sub(rb'nonce="[^"]+"', b'nonce=""', content)  # a fresh script nonce per response


def _snapshot(tenant) -> dict:
    with tenant_scope(tenant):
        patients = [(p.pk, p.mrn, p.family_name, p.phone, p.updated_at) for p in Patient.objects.order_by("pk")]
        appointments = list(Appointment.objects.order_by("pk").values_list("pk", "status", "starts_at", "updated_at"))
        return {"patients": patients, "appointments": appointments, "events": AuditEvent.objects.count()}


@pytest.mark.parametrize(("method", "url", "data"), REQUESTS)
def test_charlie_gets_404_for_clinic_a_objects(client, login, charlie, tenant_a, ada, visit, ada_b, visit_b,
                                               method, url, data):
    before = _snapshot(tenant_a)
    login(charlie)
    send = getattr(client, method)
    foreign = send(url.format(p=ada.pk, a=visit.pk), data)
    missing = send(url.format(p=uuid.uuid4(), a=uuid.uuid4()), data)
    assert foreign.status_code == missing.status_code == 404
    assert _normalise(foreign.content) == _normalise(missing.content)
    assert b"Lovelace" not in foreign.content
    assert _snapshot(tenant_a) == before
    # Charlie's own clinic's objects work, so the 404 above is about ownership.
    own = send(url.format(p=ada_b.pk, a=visit_b.pk), data)
    assert own.status_code in (200, 302)


def test_search_never_crosses_clinics(client, login, charlie, ada):
    login(charlie)
    response = client.post("/patients/search/", {"mrn": "A-1001"})
    assert response.status_code == 200 and b"0 matches" in response.content
    assert str(ada.pk).encode() not in response.content
    page = client.get("/patients/")
    assert b"Lovelace" not in page.content


def test_day_view_lists_only_the_clinics_own_appointments(client, login, charlie, visit):
    login(charlie)
    day = visit.starts_at.date().isoformat()
    page = client.get(f"/patients/appointments/?day={day}")
    assert page.status_code == 200 and b"Lovelace" not in page.content
