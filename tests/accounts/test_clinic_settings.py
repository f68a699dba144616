from accounts.models import Tenant
from accounts.tenancy import tenant_scope
from audit.events import AuditEventType
from audit.models import AuditEvent

VALID = {"name": "Clinic A+", "timezone": "America/Chicago", "sms_sender_label": "Clinic A",
         "session_idle_minutes": "10", "session_absolute_hours": ""}


def test_owner_changes_settings_and_it_is_audited(client, login, alice, tenant_a):
    login(alice)
    assert client.get("/settings/clinic/").status_code == 200
    response = client.post("/settings/clinic/", VALID)
    assert response.status_code == 302
    tenant = Tenant.objects.get(pk=tenant_a.pk)
    assert (tenant.name, tenant.timezone, tenant.session_idle_minutes) == ("Clinic A+", "America/Chicago", 10)
    with tenant_scope(tenant_a):
        event = AuditEvent.objects.get(event_type=AuditEventType.TENANT_SETTINGS_CHANGED)
    assert event.details["fields"] == ["name", "session_idle_minutes", "sms_sender_label", "timezone"]


def test_bad_settings_name_the_field_and_change_nothing(client, login, alice, tenant_a):
    login(alice)
    bad = {**VALID, "timezone": "Mars/Olympus", "session_idle_minutes": "30", "sms_sender_label": "Due 12/05"}
    response = client.post("/settings/clinic/", bad)
    assert response.status_code == 400
    for field in ("timezone", "session_idle_minutes", "sms_sender_label"):
        assert f'id="id_{field}-error"'.encode() in response.content
    tenant = Tenant.objects.get(pk=tenant_a.pk)
    assert (tenant.name, tenant.timezone, tenant.session_idle_minutes) == ("Clinic A", "America/New_York", None)


def test_clinician_cannot_change_settings(client, login, carol, tenant_a):
    login(carol)
    assert client.post("/settings/clinic/", VALID).status_code == 403
    assert Tenant.objects.get(pk=tenant_a.pk).name == "Clinic A"
