"""API keys: created by owners, shown once, stored hashed, scoped, tenant-bound, revocable."""

import hashlib
import re

from django.test import Client

from accounts.models import ApiKey
from accounts.permissions import ApiScope
from accounts.services import api_key_create, api_key_revoke
from accounts.tenancy import tenant_scope
from audit.events import AuditEventType
from audit.models import AuditEvent


def _me(raw):
    return Client().get("/api/v1/me", HTTP_AUTHORIZATION=f"Bearer {raw}")


def test_owner_creates_key_shown_once_and_stored_hashed(client, login, alice, tenant_a):
    login(alice)
    response = client.post("/settings/api-keys/", {"name": "Epic bridge", "scopes": ["fhir:write", "patients:read"]})
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    raw = re.search(rb"(ct_\d+_[\w-]{43})", response.content).group(1).decode()
    with tenant_scope(tenant_a):
        key = ApiKey.objects.get()
    assert key.key_hash == hashlib.sha256(raw.encode()).hexdigest()
    assert raw not in str(key.__dict__)
    assert key.scopes == ["fhir:write", "patients:read"]
    # The list page afterwards shows only the prefix.
    listing = client.get("/settings/api-keys/")
    assert raw.encode() not in listing.content and key.prefix.encode() in listing.content
    with tenant_scope(tenant_a):
        assert AuditEvent.objects.filter(event_type=AuditEventType.API_KEY_CREATED).count() == 1


def test_key_authenticates_for_its_tenant_only(alice, tenant_a, charlie, tenant_b):
    with tenant_scope(tenant_a):
        _, raw = api_key_create(tenant=tenant_a, actor=alice, name="k", scopes=[ApiScope.PATIENTS_READ])
    response = _me(raw)
    assert response.status_code == 200
    body = response.json()
    assert body["tenant"] == "clinic-a"
    assert "patients.view_phi" in body["permissions"] and "messages.send" not in body["permissions"]
    # Pointing the key at another tenant's id finds nothing there.
    forged = raw.replace(f"ct_{tenant_a.pk}_", f"ct_{tenant_b.pk}_")
    assert _me(forged).status_code == 401
    with tenant_scope(tenant_b):
        assert AuditEvent.objects.filter(event_type=AuditEventType.API_KEY_REJECTED).count() == 1


def test_revoked_and_garbage_keys_get_401(alice, tenant_a):
    with tenant_scope(tenant_a):
        key, raw = api_key_create(tenant=tenant_a, actor=alice, name="k", scopes=[ApiScope.HL7_WRITE])
        api_key_revoke(tenant=tenant_a, actor=alice, api_key=key)
    for bad in (raw, "ct_1_x", "nonsense", f"ct_{tenant_a.pk}_" + "A" * 43, "ct_99999999999_abc"):
        response = _me(bad)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "not_authenticated"


def test_last_used_is_recorded(alice, tenant_a):
    with tenant_scope(tenant_a):
        key, raw = api_key_create(tenant=tenant_a, actor=alice, name="k", scopes=[ApiScope.AUDIT_READ])
    assert key.last_used_at is None
    _me(raw)
    _me(raw)
    with tenant_scope(tenant_a):
        assert ApiKey.objects.get(pk=key.pk).last_used_at is not None
        used = AuditEvent.objects.filter(event_type=AuditEventType.API_KEY_USED)
        assert used.count() == 1 and used.get().actor_type == "api_key"  # once a minute, not per request


def test_create_key_needs_valid_scopes_and_name(client, login, alice, tenant_a):
    login(alice)
    response = client.post("/settings/api-keys/", {"name": "", "scopes": ["root:all"]})
    assert response.status_code == 400
    assert b'id="id_name-error"' in response.content
    assert b"root:all" in response.content or b"valid choice" in response.content
    with tenant_scope(tenant_a):
        assert not ApiKey.objects.exists()


def test_owner_revokes_key_from_page(client, login, alice, tenant_a):
    with tenant_scope(tenant_a):
        key, raw = api_key_create(tenant=tenant_a, actor=alice, name="k", scopes=[ApiScope.PATIENTS_READ])
    login(alice)
    assert client.post(f"/settings/api-keys/{key.pk}/revoke/").status_code == 302
    assert _me(raw).status_code == 401


def test_other_tenants_key_id_is_404(client, login, alice, charlie, tenant_b):
    with tenant_scope(tenant_b):
        key, raw = api_key_create(tenant=tenant_b, actor=charlie, name="k", scopes=[ApiScope.PATIENTS_READ])
    login(alice)
    assert client.post(f"/settings/api-keys/{key.pk}/revoke/").status_code == 404
    assert _me(raw).status_code == 200


def test_staff_session_can_call_api_but_csrf_applies_to_writes(client, login, alice):
    login(alice)
    response = client.get("/api/v1/me")
    assert response.status_code == 200 and response.json()["principal"] == "alice@clinic-a.test"
    csrf_client = Client(enforce_csrf_checks=True)
    from tests.factories import login_verified

    login_verified(csrf_client, alice)
    assert csrf_client.post("/api/v1/me", {}, content_type="application/json").status_code == 403


def test_unverified_session_cannot_use_the_api(client, alice):
    client.force_login(alice, backend="django.contrib.auth.backends.ModelBackend")
    assert client.get("/api/v1/me").status_code in (401, 403)
