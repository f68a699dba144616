"""Settings → Webhooks: owners only, the secret shown once, field errors, other clinics' 404."""

from __future__ import annotations

import pytest

from accounts.tenancy import tenant_scope
from audit.events import AuditEventType
from audit.models import AuditEvent
from outbound import services
from outbound.models import WebhookEndpoint

PAGE = "/settings/webhooks/"
BOTH = ["appointment.response", "message.received"]


def _deactivate_url(endpoint) -> str:
    return f"/settings/webhooks/{endpoint.pk}/deactivate/"


def test_owner_adds_an_endpoint_and_sees_the_secret_once(client, login, tenant_a, alice):
    login(alice)
    response = client.get(PAGE)
    assert response.status_code == 200 and b"No endpoints yet." in response.content
    response = client.post(PAGE, {"url": "https://ehr.example.com/caretext", "events": BOTH})
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    with tenant_scope(tenant_a):
        endpoint = WebhookEndpoint.objects.get()
        secret = endpoint.secret
        assert endpoint.events == BOTH and endpoint.created_by == alice
        assert AuditEvent.objects.filter(event_type=AuditEventType.TENANT_SETTINGS_CHANGED, actor_user=alice,
                                         object_id=str(endpoint.pk)).count() == 1
    assert secret.encode() in response.content
    again = client.get(PAGE)
    assert again.status_code == 200
    assert secret.encode() not in again.content
    assert b"https://ehr.example.com/caretext" in again.content
    assert b"0 delivered" in again.content


@pytest.mark.parametrize("data,field,needle", [
    ({"url": "http://ehr.example.com/caretext", "events": BOTH}, "url", b"https"),
    ({"url": "", "events": BOTH}, "url", b"required"),
    ({"url": "https://ehr.example.com/caretext"}, "events", b"required"),
    ({"url": "https://ehr.example.com/caretext", "events": ["bogus"]}, "events", b"valid choice"),
])
def test_bad_input_is_a_400_naming_the_field(client, login, tenant_a, alice, data, field, needle):
    login(alice)
    response = client.post(PAGE, data)
    assert response.status_code == 400
    assert f'id="id_{field}'.encode() in response.content
    error = response.content.split(b'class="field-error"', 1)[1].split(b"</p>", 1)[0]
    assert needle in error
    with tenant_scope(tenant_a):
        assert not WebhookEndpoint.objects.exists()


def test_front_desk_is_forbidden(client, login, tenant_a, alice, bob):
    with tenant_scope(tenant_a):
        endpoint, _ = services.endpoint_create(tenant=tenant_a, actor=alice, url="https://ehr.example.com/in",
                                               events=BOTH)
    login(bob)
    assert client.get(PAGE).status_code == 403
    assert client.post(PAGE, {"url": "https://evil.example.com/", "events": BOTH}).status_code == 403
    assert client.post(_deactivate_url(endpoint)).status_code == 403
    with tenant_scope(tenant_a):
        assert WebhookEndpoint.objects.filter(is_active=True).count() == 1
        assert AuditEvent.objects.filter(event_type=AuditEventType.PERMISSION_DENIED, actor_user=bob).count() == 3


def test_owner_deactivates_and_another_clinic_gets_404(client, login, tenant_a, tenant_b, alice, charlie):
    with tenant_scope(tenant_a):
        endpoint, _ = services.endpoint_create(tenant=tenant_a, actor=alice, url="https://ehr.example.com/in",
                                               events=BOTH)
    login(charlie)
    assert client.post(_deactivate_url(endpoint)).status_code == 404
    assert client.get(PAGE).content.count(b"ehr.example.com") == 0
    with tenant_scope(tenant_a):
        assert WebhookEndpoint.objects.get().is_active
    login(alice)
    assert client.get(_deactivate_url(endpoint)).status_code == 405
    response = client.post(_deactivate_url(endpoint))
    assert response.status_code == 302 and response["Location"] == PAGE
    with tenant_scope(tenant_a):
        assert not WebhookEndpoint.objects.get().is_active
        assert AuditEvent.objects.filter(event_type=AuditEventType.TENANT_SETTINGS_CHANGED,
                                         object_id=str(endpoint.pk), details__action="deactivate").count() == 1
    assert b"Deactivated" in client.get(PAGE).content
