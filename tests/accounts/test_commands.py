"""Management commands: createtenant, createstaff, create_api_key, seed_demo, demo_totp."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from accounts.models import Membership, Tenant, User
from accounts.tenancy import tenant_scope


def _run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_createtenant_and_createstaff(db):
    assert "Created clinic" in _run("createtenant", "--name", "Hill Clinic", "--slug", "hill")
    tenant = Tenant.objects.get(slug="hill")
    assert tenant.sms_sender_label == "Hill Clinic"
    _run("createstaff", "--tenant", "hill", "--email", "Doc@Hill.test", "--role", "clinician",
         "--password", "a-long-enough-password-1")
    user = User.objects.get(email="doc@hill.test")
    assert user.check_password("a-long-enough-password-1")
    with tenant_scope(tenant):
        assert Membership.objects.get(user=user).role == "clinician"


def test_createtenant_rejects_bad_input(db):
    with pytest.raises(CommandError, match="sms_sender_label"):
        _run("createtenant", "--name", "X", "--slug", "x", "--sender-label", "Clinic 12/05")
    _run("createtenant", "--name", "Yew Clinic", "--slug", "y")
    with pytest.raises(CommandError, match="slug"):
        _run("createtenant", "--name", "Y again", "--slug", "y")


def test_createstaff_rejects_weak_password_and_unknown_tenant(db):
    _run("createtenant", "--name", "Hill Clinic", "--slug", "hill")
    with pytest.raises(CommandError, match="password"):
        _run("createstaff", "--tenant", "hill", "--email", "a@hill.test", "--role", "staff", "--password", "short")
    assert not User.objects.filter(email="a@hill.test").exists()
    with pytest.raises(CommandError, match="No tenant"):
        _run("createstaff", "--tenant", "nope", "--email", "a@hill.test", "--role", "staff", "--password", "x" * 20)


def test_create_api_key_prints_a_working_key(alice, tenant_a):
    raw = _run("create_api_key", "--tenant", "clinic-a", "--scopes", "fhir:write", "hl7:write").strip()
    response = Client().get("/api/v1/me", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert response.status_code == 200
    assert {"integrations.fhir_write", "integrations.hl7_write"} <= set(response.json()["permissions"])


def test_seed_demo_is_idempotent_and_demo_users_can_sign_in(db):
    first = _run("seed_demo")
    second = _run("seed_demo")
    assert Tenant.objects.filter(slug__in=["sunrise", "lakeside"]).count() == 2
    assert User.objects.filter(email__endswith=".example").count() == 8
    for tenant in Tenant.objects.all():
        with tenant_scope(tenant):
            assert sorted(Membership.objects.values_list("role", flat=True)) == ["auditor", "clinician", "owner", "staff"]
    assert "owner@sunrise.example" in first and "owner@sunrise.example" in second
    from consent.selectors import tenant_has_baa
    from patients.models import Appointment, Patient

    for tenant in Tenant.objects.all():
        with tenant_scope(tenant):
            assert Patient.objects.count() == 6 and Appointment.objects.count() == 6  # not doubled by the re-run
            assert tenant_has_baa(tenant)
    client = Client()
    client.post("/accounts/login/", {"email": "owner@sunrise.example", "password": "demo-clinic-pass-2026"})
    code = _run("demo_totp", "owner@sunrise.example").strip()
    assert client.post("/accounts/mfa/", {"code": code}).status_code == 302
    assert b"Sunrise Family Clinic" in client.get("/").content
