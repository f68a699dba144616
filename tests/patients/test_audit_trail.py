"""What the patient pages leave behind: the right audit events, and no PHI in them, in the
field history or in the logs (R12, R13, R21g)."""

import json
import logging

from auditlog.models import LogEntry

from accounts.tenancy import tenant_scope
from audit.events import AuditEventType
from audit.models import AuditEvent
from patients.models import Patient

GRACE = {"mrn": "GH-1906", "given_name": "Grace", "family_name": "Hopper", "birth_date": "1956-12-09",
         "phone": "(202) 555-0177", "email": "grace@navy.test", "preferred_language": "en",
         "timezone": "America/Chicago"}
# Every value above as it may appear (typed, stored or displayed), and the appointment's notes.
PHI = ["GH-1906", "GH1906", "Grace", "Hopper", "1956-12-09", "1956", "2025550177", "555-0177", "grace@navy.test",
       "2025550188", "555-0188", "Sciatica flare", "Bring imaging", "Hoppr"]


def _walk_every_page(client, tenant):
    """Create, view, search, edit, book, change status, and fail validation on the way."""
    assert client.post("/patients/new/", {**GRACE, "phone": "1-800-555-0100"}).status_code == 400
    assert client.post("/patients/new/", GRACE).status_code == 302
    with tenant_scope(tenant):
        patient = Patient.objects.get()
    assert client.get(f"/patients/{patient.pk}/").status_code == 200
    assert client.get("/patients/").status_code == 200
    for search in ({"mrn": "gh1906"}, {"phone": "2025550177"}, {"family_name": "Hopper", "birth_date": "1956-12-09"},
                   {"family_name": "Hoppr"}):
        client.post("/patients/search/", search)
    assert client.get(f"/patients/{patient.pk}/edit/").status_code == 200
    assert client.post(f"/patients/{patient.pk}/edit/", {**GRACE, "phone": "202 555 0188"}).status_code == 302
    assert client.post(f"/patients/{patient.pk}/edit/", {**GRACE, "birth_date": "2999-01-01"}).status_code == 400
    booking = {"starts_at": "2030-03-05T09:00", "ends_at": "2030-03-05T09:30", "reason": "Sciatica flare",
               "instructions": "Bring imaging"}
    assert client.post(f"/patients/{patient.pk}/appointments/new/", booking).status_code == 302
    assert client.post(f"/patients/{patient.pk}/appointments/new/", {**booking, "ends_at": "x"}).status_code == 400
    with tenant_scope(tenant):
        appointment = patient.appointments.get()
    assert client.get("/patients/appointments/?day=2030-03-05").status_code == 200
    assert client.post(f"/patients/appointments/{appointment.pk}/status/", {"status": "confirmed"}).status_code == 302
    assert client.get(f"/patients/appointments/{appointment.pk}/edit/").status_code == 200
    return patient, appointment


def test_every_page_writes_its_event_and_none_carries_phi(client, login, carol, tenant_a, caplog):
    caplog.set_level(logging.DEBUG)
    login(carol)
    patient, appointment = _walk_every_page(client, tenant_a)

    with tenant_scope(tenant_a):
        events = list(AuditEvent.objects.filter(event_type__gte=200, event_type__lt=300).order_by("seq"))
        history = list(LogEntry.objects.filter(object_pk__in=[str(patient.pk), str(appointment.pk)]))
    kinds = [AuditEventType(e.event_type).name for e in events]
    assert kinds == [
        "PATIENT_CREATED",  # the first, invalid, create wrote nothing
        "PATIENT_VIEWED", "PATIENT_SEARCHED",  # detail, list
        "PATIENT_SEARCHED", "PATIENT_SEARCHED", "PATIENT_SEARCHED",  # mrn, phone, name+dob (the 4th was invalid)
        "PATIENT_VIEWED", "PATIENT_CHANGED",  # edit form, save (the invalid save wrote nothing)
        "APPOINTMENT_CHANGED",  # booked
        "PATIENT_VIEWED",  # the booking form shown again with its error: it shows the patient's name
        "PATIENT_SEARCHED",  # the day
        "APPOINTMENT_CHANGED", "PATIENT_VIEWED",  # status; the appointment's edit page
    ]
    assert all(e.actor_user == carol for e in events)
    for e in events:
        if e.event_type in (AuditEventType.PATIENT_VIEWED, AuditEventType.PATIENT_CHANGED,
                            AuditEventType.PATIENT_CREATED, AuditEventType.APPOINTMENT_CHANGED):
            assert e.patient_id == patient.pk
    changed = next(e for e in events if e.event_type == AuditEventType.PATIENT_CHANGED)
    assert changed.details == {"fields": ["phone"]}

    trail = json.dumps([[e.details, e.object_type, e.object_id, e.actor_label, e.user_agent] for e in events])
    field_history = json.dumps([[h.changes, h.object_repr] for h in history], default=str)
    for value in PHI:
        assert value not in trail, value
        assert value not in field_history, value
        assert value not in caplog.text, value
    assert caplog.records  # the logs were captured (sign-in lines at least), and hold none of it
    assert history and all(h.object_repr.startswith(("Patient object", "Appointment object")) for h in history)
