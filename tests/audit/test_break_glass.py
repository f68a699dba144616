import uuid

from accounts.tenancy import tenant_scope
from audit.events import AuditEventType
from audit.models import AuditEvent, BreakGlassGrant
from audit.selectors import break_glass_active

PATIENT = uuid.UUID("01a21200-0000-7000-8000-00000000beef")


def _start(client, **overrides):
    data = {"patient": str(PATIENT), "reason": "emergency_care", "note": "Patient in ED, unconscious", "minutes": "60"}
    return client.post("/emergency-access/", {**data, **overrides})


def test_clinician_starts_emergency_access_with_a_reason(client, login, carol, alice, tenant_a, time_machine):
    time_machine.move_to("2026-11-25 10:00:00+00:00", tick=False)
    login(carol)
    assert client.get(f"/emergency-access/?patient={PATIENT}").status_code == 200
    assert _start(client).status_code == 302
    with tenant_scope(tenant_a):
        grant = BreakGlassGrant.objects.get()
        assert grant.note == "Patient in ED, unconscious"  # readable by the app...
        event = AuditEvent.objects.get(event_type=AuditEventType.BREAK_GLASS_STARTED)
        assert event.patient_id == PATIENT and event.details["reason"] == "emergency_care"
        assert "unconscious" not in str(event.details)  # ...but the note never enters the trail
        assert break_glass_active(tenant=tenant_a, user=carol, patient_id=PATIENT) == grant
    time_machine.move_to("2026-11-25 11:01:00+00:00", tick=False)
    with tenant_scope(tenant_a):
        assert break_glass_active(tenant=tenant_a, user=carol, patient_id=PATIENT) is None


def test_owners_see_and_acknowledge_it_on_their_dashboard(client, login, carol, alice, tenant_a):
    login(carol)
    _start(client)
    assert b"Emergency access to review" not in client.get("/").content  # not for the clinician
    login(alice)
    page = client.get("/")
    assert b"Emergency access to review" in page.content and b"carol@clinic-a.test" in page.content
    with tenant_scope(tenant_a):
        grant = BreakGlassGrant.objects.get()
    assert client.post(f"/emergency-access/{grant.pk}/acknowledge/").status_code == 302
    assert b"Emergency access to review" not in client.get("/").content


def test_a_reason_is_required(client, login, carol, tenant_a):
    login(carol)
    response = _start(client, reason="because", note="x")
    assert response.status_code == 400
    assert b'id="id_reason-error"' in response.content and b'id="id_note-error"' in response.content
    assert _start(client, patient="not-a-uuid").status_code == 400
    with tenant_scope(tenant_a):
        assert not BreakGlassGrant.objects.exists()


def test_front_desk_and_auditors_cannot_break_glass(client, login, bob, dave):
    for user in (bob, dave):
        login(user)
        assert _start(client).status_code == 403


def test_other_clinics_grant_is_404(client, login, charlie, carol, tenant_a):
    login(carol)
    _start(client)
    with tenant_scope(tenant_a):
        grant = BreakGlassGrant.objects.get()
    login(charlie)
    assert client.post(f"/emergency-access/{grant.pk}/acknowledge/").status_code == 404
    with tenant_scope(tenant_a):
        assert BreakGlassGrant.objects.get().acknowledged_at is None
