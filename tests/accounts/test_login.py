"""Password + TOTP sign-in, enrolment, lockout, throttling and backup codes."""

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import BackupCode, TotpDevice, UserSession
from accounts.permissions import Role
from accounts.tenancy import tenant_scope
from audit.events import AuditEventType
from audit.models import AuditEvent
from tests.factories import PASSWORD, make_member, totp_code


def _events(tenant, event_type):
    with tenant_scope(tenant):
        return list(AuditEvent.objects.filter(tenant=tenant, event_type=event_type))


def _password_step(client, email, password=PASSWORD):
    return client.post("/accounts/login/", {"email": email, "password": password})


def test_login_page_renders_for_anonymous(client, db):
    response = client.get("/accounts/login/")
    assert response.status_code == 200
    assert b'name="email"' in response.content and b'name="password"' in response.content


def test_password_then_totp_reaches_dashboard(client, alice, tenant_a):
    response = _password_step(client, "alice@clinic-a.test")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/mfa/")
    # Half-signed-in: staff pages still send you to the MFA step.
    assert client.get("/")["Location"] == "/accounts/mfa/"
    response = client.post("/accounts/mfa/", {"code": totp_code(alice), "next": "/"})
    assert response.status_code == 302 and response["Location"] == "/"
    page = client.get("/")
    assert page.status_code == 200 and b"Clinic A" in page.content
    assert UserSession.objects.filter(user=alice, ended_at__isnull=True).count() == 1
    assert _events(tenant_a, AuditEventType.LOGIN_SUCCEEDED)
    assert _events(tenant_a, AuditEventType.MFA_VERIFIED)


def test_session_id_changes_at_login_and_after_mfa(client, alice):
    client.get("/accounts/login/")
    before = client.cookies.get("caretext_session")
    _password_step(client, "alice@clinic-a.test")
    after_password = client.cookies["caretext_session"].value
    assert before is None or before.value != after_password
    client.post("/accounts/mfa/", {"code": totp_code(alice)})
    assert client.cookies["caretext_session"].value != after_password


def test_wrong_password_is_refused_with_one_message_for_unknown_and_known(client, alice, tenant_a):
    known = _password_step(client, "alice@clinic-a.test", "wrong-password-123")
    unknown = _password_step(client, "nobody@nowhere.test", "wrong-password-123")
    assert known.status_code == unknown.status_code == 400
    assert b"Email or password is incorrect." in known.content
    assert b"Email or password is incorrect." in unknown.content
    failed = _events(tenant_a, AuditEventType.LOGIN_FAILED)
    assert len(failed) == 1 and failed[0].actor_user == alice


def test_login_form_errors_name_the_field(client, db):
    response = client.post("/accounts/login/", {"email": "not-an-email", "password": ""})
    assert response.status_code == 400
    assert b'id="id_email-error"' in response.content
    assert b'id="id_password-error"' in response.content


def test_lockout_after_five_failures_even_with_right_password(client, alice, tenant_a):
    for _ in range(5):
        _password_step(client, "alice@clinic-a.test", "wrong-password-123")
    response = _password_step(client, "alice@clinic-a.test")
    assert response.status_code == 429
    assert b"Too many failed sign-in attempts" in response.content
    assert "_auth_user_id" not in client.session
    assert _events(tenant_a, AuditEventType.LOGIN_LOCKED_OUT)


def test_lockout_is_per_email_and_ip(client, alice, bob):
    for _ in range(5):
        _password_step(client, "alice@clinic-a.test", "wrong-password-123")
    # Another address from the same IP is unaffected.
    assert _password_step(client, "bob@clinic-a.test").status_code == 302
    # The same email from another IP is unaffected.
    from django.test import Client

    other = Client(REMOTE_ADDR="10.9.8.7")
    assert _password_step(other, "alice@clinic-a.test").status_code == 302


def test_lockout_ends_after_cool_off(client, alice, time_machine):
    time_machine.move_to("2026-11-25 10:00:00+00:00", tick=False)
    for _ in range(5):
        _password_step(client, "alice@clinic-a.test", "wrong-password-123")
    assert _password_step(client, "alice@clinic-a.test").status_code == 429
    time_machine.move_to("2026-11-25 10:16:00+00:00", tick=False)
    assert _password_step(client, "alice@clinic-a.test").status_code == 302


def test_deactivated_user_cannot_sign_in(client, db, tenant_a):
    user = make_member(tenant=tenant_a, role=Role.STAFF, email="gone@clinic-a.test")
    user.is_active = False
    user.save(update_fields=["is_active"])
    assert _password_step(client, "gone@clinic-a.test").status_code == 400


def test_totp_code_cannot_be_replayed(client, alice, tenant_a):
    code = totp_code(alice)
    _password_step(client, "alice@clinic-a.test")
    assert client.post("/accounts/mfa/", {"code": code}).status_code == 302
    client.post("/accounts/logout/")
    _password_step(client, "alice@clinic-a.test")
    response = client.post("/accounts/mfa/", {"code": code})
    assert response.status_code == 400
    assert not client.get("/").status_code == 200
    assert _events(tenant_a, AuditEventType.MFA_FAILED)


def test_wrong_totp_codes_are_throttled_and_audited(client, alice, tenant_a):
    _password_step(client, "alice@clinic-a.test")
    assert client.post("/accounts/mfa/", {"code": "000000"}).status_code in (400, 429)
    response = client.post("/accounts/mfa/", {"code": totp_code(alice)})
    # Right after a failure the device is throttled: even the right code waits.
    assert response.status_code == 429
    assert b"Too many attempts" in response.content
    assert _events(tenant_a, AuditEventType.MFA_THROTTLED)


def test_first_login_forces_enrolment_with_qr_and_backup_codes(client, db, tenant_a, time_machine):
    user = make_member(tenant=tenant_a, role=Role.CLINICIAN, email="new@clinic-a.test", totp=False)
    response = _password_step(client, "new@clinic-a.test")
    assert response["Location"].startswith("/accounts/mfa/setup/")
    assert client.get("/")["Location"] == "/accounts/mfa/"
    assert client.get("/accounts/mfa/")["Location"] == "/accounts/mfa/setup/"
    page = client.get("/accounts/mfa/setup/")
    assert page.status_code == 200 and b"<svg" in page.content
    assert client.post("/accounts/mfa/setup/", {"code": "123456"}).status_code == 400
    assert client.post("/accounts/mfa/setup/", {"code": totp_code(user, confirmed=False)}).status_code == 429
    time_machine.move_to(timezone.now() + timedelta(seconds=3))  # past the throttle's back-off
    response = client.post("/accounts/mfa/setup/", {"code": totp_code(user, confirmed=False)})
    assert response.status_code == 200
    assert response["Cache-Control"].count("no-store") or "no-cache" in response["Cache-Control"]
    codes = re.findall(rb"<code>([2-9A-Z]{5}-[2-9A-Z]{5})</code>", response.content)
    assert len(codes) == 10
    assert TotpDevice.objects.get(user=user).confirmed
    assert client.get("/").status_code == 200
    # Stored hashed: no code appears in the database.
    stored = set(BackupCode.objects.filter(device__user=user).values_list("code_hash", flat=True))
    assert len(stored) == 10
    assert not any(c.decode().replace("-", "") in h for c in codes for h in stored)
    assert _events(tenant_a, AuditEventType.MFA_ENROLLED)


def test_backup_code_signs_in_once(client, alice, tenant_a):
    from accounts.mfa import backup_codes_generate

    codes = backup_codes_generate(user=alice)
    _password_step(client, "alice@clinic-a.test")
    assert client.post("/accounts/mfa/", {"code": codes[0].lower()}).status_code == 302
    assert client.get("/").status_code == 200
    assert _events(tenant_a, AuditEventType.MFA_BACKUP_CODE_USED)
    client.post("/accounts/logout/")
    _password_step(client, "alice@clinic-a.test")
    assert client.post("/accounts/mfa/", {"code": codes[0]}).status_code in (400, 429)
    assert BackupCode.objects.filter(device__user=alice, used_at__isnull=True).count() == 9


def test_logout_ends_the_session(client, login, alice):
    login(alice)
    assert client.get("/").status_code == 200
    response = client.post("/accounts/logout/")
    assert response.status_code == 302
    assert client.get("/").status_code == 302
    assert UserSession.objects.get(user=alice).end_reason == "logout"


def test_logout_needs_post(client, login, alice):
    login(alice)
    assert client.get("/accounts/logout/").status_code == 405
    assert client.get("/").status_code == 200


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x"])
def test_next_never_leaves_the_site(client, alice, target):
    client.post("/accounts/login/?next=" + target, {"email": "alice@clinic-a.test", "password": PASSWORD, "next": target})
    response = client.post("/accounts/mfa/", {"code": totp_code(alice), "next": target})
    assert response["Location"] == "/"


def test_pages_carry_strict_csp_and_signed_in_pages_are_not_cached(client, login, alice):
    anonymous = client.get("/accounts/login/")
    assert "script-src 'self'" in anonymous["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in anonymous["Content-Security-Policy"]
    assert anonymous["X-Frame-Options"] == "DENY"
    login(alice)
    page = client.get("/")
    assert page["Cache-Control"] == "no-store"
    assert page["X-Request-ID"]


def test_forged_forwarded_for_cannot_dodge_lockout_or_fake_the_audit_ip(client, alice, tenant_a):
    for n in range(5):
        client.post("/accounts/login/", {"email": "alice@clinic-a.test", "password": "wrong-password-123"},
                    HTTP_X_FORWARDED_FOR=f"6.6.6.{n}")
    response = client.post("/accounts/login/", {"email": "alice@clinic-a.test", "password": PASSWORD},
                           HTTP_X_FORWARDED_FOR="8.8.8.8")
    assert response.status_code == 429
    ips = {e.ip_address for e in _events(tenant_a, AuditEventType.LOGIN_FAILED)}
    assert ips == {"127.0.0.1"}


def test_behind_a_proxy_the_right_most_forwarded_address_counts(client, alice, tenant_a, settings):
    settings.AXES_IPWARE_META_PRECEDENCE_ORDER = ["HTTP_X_FORWARDED_FOR", "REMOTE_ADDR"]
    settings.AXES_IPWARE_PROXY_COUNT = 1
    client.post("/accounts/login/", {"email": "alice@clinic-a.test", "password": "wrong-password-123"},
                HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.9")
    assert {e.ip_address for e in _events(tenant_a, AuditEventType.LOGIN_FAILED)} == {"203.0.113.9"}
