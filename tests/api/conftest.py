"""Helpers for the public API tests: scoped API keys and JSON clients."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from accounts.services import api_key_create
from accounts.tenancy import tenant_scope
from audit.models import AuditEvent


class ApiClient:
    """A test client that sends ``Authorization: Bearer <key>`` (or none) and speaks JSON."""

    def __init__(self, raw_key: str | None = None, client: Client | None = None):
        defaults = {"HTTP_AUTHORIZATION": f"Bearer {raw_key}"} if raw_key else {}
        self.client = client or Client(**defaults)

    def get(self, url, params=None):
        return self.client.get(url, params or {})

    def post(self, url, data=None):
        return self.client.post(url, json.dumps(data or {}), content_type="application/json")

    def patch(self, url, data=None):
        return self.client.patch(url, json.dumps(data or {}), content_type="application/json")


def make_key(tenant, owner, *scopes: str) -> str:
    with tenant_scope(tenant):
        _, raw = api_key_create(tenant=tenant, actor=owner, name="EHR", scopes=list(scopes))
    return raw


@pytest.fixture
def key_client(tenant_a, alice):
    """``key_client(*scopes)``: a client of clinic A holding a fresh key with those scopes."""

    def _make(*scopes: str, tenant=None, owner=None) -> ApiClient:
        return ApiClient(make_key(tenant or tenant_a, owner or alice, *scopes))

    return _make


@pytest.fixture
def staff_client(client, login):
    """``staff_client(user)``: the Django test client signed in with MFA, as an ApiClient."""

    def _make(user) -> ApiClient:
        login(user)
        return ApiClient(client=client)

    return _make


def events(tenant, event_type) -> list[AuditEvent]:
    with tenant_scope(tenant):
        return list(AuditEvent.objects.filter(event_type=event_type).order_by("seq"))


def error_fields(response) -> dict:
    body = response.json()
    assert set(body) == {"error"}, body
    return body["error"].get("fields", {})
