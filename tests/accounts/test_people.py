"""Owners invite people, change roles and deactivate them; deactivation is immediate."""

import re

from django.core import mail
from django.test import Client

from accounts.models import ApiKey, Invitation, Membership, User, UserSession
from accounts.permissions import ApiScope, Role
from accounts.services import api_key_create
from accounts.tenancy import tenant_scope
from audit.events import AuditEventType
from audit.models import AuditEvent
from tests.factories import PASSWORD, login_verified, membership_of, totp_code


def _invite(client, email="newbie@clinic-a.test", role=Role.CLINICIAN):
    from django.test import TestCase

    # The email leaves only after the invitation commits (R15).
    with TestCase.captureOnCommitCallbacks(execute=True) as callbacks:
        response = client.post("/settings/users/", {"email": email, "role": role})
    assert len(callbacks) == (1 if response.status_code == 302 else 0)
    return response


def _invite_token() -> str:
    return re.search(r"/invite/([\w-]+)/", mail.outbox[-1].body).group(1)


def test_owner_invites_and_invitee_joins_with_mfa(client, login, alice, tenant_a):
    login(alice)
    response = _invite(client)
    assert response.status_code == 302
    assert mail.outbox[-1].to == ["newbie@clinic-a.test"]
    token = _invite_token()
    with tenant_scope(tenant_a):
        invitation = Invitation.objects.get()
    assert token not in invitation.token_hash  # only the hash is stored

    invitee = Client()
    page = invitee.get(f"/invite/{token}/")
    assert page.status_code == 200 and b"Clinic A" in page.content
    response = invitee.post(f"/invite/{token}/", {"full_name": "New Person", "password": PASSWORD, "password_confirm": PASSWORD})
    assert response.status_code == 302 and response["Location"] == "/accounts/mfa/setup/"
    user = User.objects.get(email="newbie@clinic-a.test")
    assert membership_of(user, tenant_a).role == Role.CLINICIAN
    # The invitation is single-use.
    assert Client().get(f"/invite/{token}/").status_code == 404
    # MFA enrolment is still required before the dashboard.
    assert invitee.get("/")["Location"] == "/accounts/mfa/"
    invitee.get("/accounts/mfa/setup/")
    invitee.post("/accounts/mfa/setup/", {"code": totp_code(user, confirmed=False)})
    assert invitee.get("/").status_code == 200


def test_invitation_accept_rejects_weak_password_with_field_error(client, login, alice):
    login(alice)
    _invite(client)
    token = _invite_token()
    response = Client().post(f"/invite/{token}/", {"password": "password", "password_confirm": "password"})
    assert response.status_code == 400
    assert b'id="id_password-error"' in response.content
    assert not User.objects.filter(email="newbie@clinic-a.test").exists()


def test_unknown_invitation_token_is_404(client, db):
    assert client.get("/invite/not-a-real-token/").status_code == 404


def test_existing_user_of_another_clinic_accepts_after_signing_in(client, login, alice, charlie, tenant_b):
    login(alice)
    _invite(client, email="charlie@clinic-b.test", role=Role.AUDITOR)
    token = _invite_token()
    anonymous = Client()
    assert b"Sign in" in anonymous.get(f"/invite/{token}/").content
    assert anonymous.post(f"/invite/{token}/", {"password": PASSWORD, "password_confirm": PASSWORD}).status_code == 200
    charlie_client = login_verified(Client(), charlie)
    response = charlie_client.post(f"/invite/{token}/")
    assert response.status_code == 302
    page = charlie_client.get("/")
    assert b"Clinic A" in page.content and b"Clinic B" in page.content  # the clinic switcher


def test_invite_validation_errors(client, login, alice):
    login(alice)
    response = _invite(client, email="not-an-email", role="wizard")
    assert response.status_code == 400
    assert b'id="id_email-error"' in response.content and b'id="id_role-error"' in response.content
    response = _invite(client, email="alice@clinic-a.test")
    assert response.status_code == 400 and b"Already a member" in response.content


def test_owner_changes_role(client, login, alice, bob, tenant_a):
    login(alice)
    membership = membership_of(bob, tenant_a)
    response = client.post(f"/settings/users/{membership.pk}/role/", {"role": Role.CLINICIAN})
    assert response.status_code == 302
    assert membership_of(bob, tenant_a).role == Role.CLINICIAN
    with tenant_scope(tenant_a):
        event = AuditEvent.objects.get(event_type=AuditEventType.MEMBERSHIP_ROLE_CHANGED)
    assert event.details == {"old_role": "staff", "new_role": "clinician"}


def test_last_owner_cannot_be_demoted_or_deactivated(client, login, alice, tenant_a):
    login(alice)
    membership = membership_of(alice, tenant_a)
    for response in (client.post(f"/settings/users/{membership.pk}/role/", {"role": Role.STAFF}),
                     client.post(f"/settings/users/{membership.pk}/deactivate/")):
        assert response.status_code == 409
        assert b"at least one active owner" in response.content
    membership = membership_of(alice, tenant_a)
    assert membership.role == Role.OWNER and membership.is_active


def test_deactivation_ends_sessions_and_api_keys_at_once(client, login, alice, carol, tenant_a):
    from accounts.services import membership_change_role

    with tenant_scope(tenant_a):
        membership_change_role(tenant=tenant_a, actor=alice, membership=membership_of(carol, tenant_a), role=Role.OWNER)
        key, raw = api_key_create(tenant=tenant_a, actor=carol, name="EHR", scopes=[ApiScope.PATIENTS_READ])
    carol_browser = login_verified(Client(), carol)
    carol_phone = login_verified(Client(), carol)
    assert carol_browser.get("/").status_code == 200
    assert Client().get("/api/v1/me", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 200

    login(alice)
    response = client.post(f"/settings/users/{membership_of(carol, tenant_a).pk}/deactivate/")
    assert response.status_code == 302

    assert carol_browser.get("/").status_code == 302
    assert carol_phone.get("/").status_code == 302
    assert Client().get("/api/v1/me", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 401
    assert not UserSession.objects.filter(user=carol, ended_at__isnull=True).exists()
    with tenant_scope(tenant_a):
        assert ApiKey.objects.get(pk=key.pk).revoked_at is not None
        event = AuditEvent.objects.get(event_type=AuditEventType.MEMBERSHIP_DEACTIVATED)
    assert event.details == {"session_count": 2, "api_key_count": 1}


def test_deactivated_member_signing_in_again_has_no_clinic(client, login, alice, bob, tenant_a):
    login(alice)
    client.post(f"/settings/users/{membership_of(bob, tenant_a).pk}/deactivate/")
    bob_client = login_verified(Client(), bob)
    response = bob_client.get("/")
    assert response.status_code == 403 and b"No clinic access" in response.content


def test_reactivate(client, login, alice, bob, tenant_a):
    login(alice)
    membership = membership_of(bob, tenant_a)
    client.post(f"/settings/users/{membership.pk}/deactivate/")
    client.post(f"/settings/users/{membership.pk}/reactivate/")
    assert membership_of(bob, tenant_a).is_active


def test_owner_revokes_invitation(client, login, alice, tenant_a):
    login(alice)
    _invite(client)
    token = _invite_token()
    with tenant_scope(tenant_a):
        invitation = Invitation.objects.get()
    assert client.post(f"/settings/invitations/{invitation.pk}/revoke/").status_code == 302
    assert Client().get(f"/invite/{token}/").status_code == 404


def test_people_page_shows_only_own_clinic(client, login, alice, charlie):
    login(alice)
    page = client.get("/settings/users/")
    assert b"alice@clinic-a.test" in page.content
    assert b"charlie@clinic-b.test" not in page.content


def test_user_switches_clinic(client, alice, tenant_a, tenant_b):
    from accounts.services import membership_create

    with tenant_scope(tenant_b):
        membership_create(tenant=tenant_b, actor=None, user=alice, role=Role.STAFF)
    login_verified(client, alice, tenant=tenant_a)
    assert b"<h1>Clinic A</h1>" in client.get("/").content
    with tenant_scope(tenant_b):
        target = Membership.objects.get(user=alice)
    client.post("/accounts/switch/", {"membership": str(target.pk)})
    page = client.get("/")
    assert b"<h1>Clinic B</h1>" in page.content
    # Staff role in B: no People page there.
    assert client.get("/settings/users/").status_code == 403
    with tenant_scope(tenant_b):
        assert AuditEvent.objects.filter(event_type=AuditEventType.TENANT_SWITCHED).exists()


def test_cannot_switch_to_a_clinic_without_membership(client, login, alice, charlie, tenant_b):
    login(alice)
    with tenant_scope(tenant_b):
        foreign = Membership.objects.get(user=charlie)
    assert client.post("/accounts/switch/", {"membership": str(foreign.pk)}).status_code == 404
    assert b"Clinic A" in client.get("/").content


def test_unknown_role_is_a_400_naming_the_field(client, login, alice, bob, tenant_a):
    login(alice)
    response = client.post(f"/settings/users/{membership_of(bob, tenant_a).pk}/role/", {"role": "wizard"})
    assert response.status_code == 400 and b"Role: choose one of" in response.content
    assert membership_of(bob, tenant_a).role == Role.STAFF


def test_passwords_are_stored_with_argon2id_at_owasps_minimum(db, settings):
    from accounts.services import user_create

    settings.PASSWORD_HASHERS = ["accounts.hashers.TunedArgon2PasswordHasher"]
    user = user_create(email="hash@clinic-a.test", password=PASSWORD)
    assert user.password.startswith("argon2$argon2id$v=19$m=19456,t=2,p=1$")
    assert user.check_password(PASSWORD)


def test_a_hash_with_other_argon2_parameters_verifies_and_is_upgraded_at_sign_in(db, settings):
    from django.contrib.auth.hashers import Argon2PasswordHasher, make_password

    from accounts.services import user_create

    user = user_create(email="old@clinic-a.test", password=PASSWORD)
    user.password = make_password(PASSWORD, hasher=Argon2PasswordHasher())  # Django's 100 MiB default
    user.save(update_fields=["password"])
    settings.PASSWORD_HASHERS = ["accounts.hashers.TunedArgon2PasswordHasher"]
    assert "m=102400" in user.password
    assert user.check_password(PASSWORD)  # verifies, and re-hashes with the tuned parameters
    assert user.password.startswith("argon2$argon2id$v=19$m=19456,t=2,p=1$")


def test_argon2_hashes_on_a_lower_priority_thread_so_sign_ins_leave_cpu_to_pages(db, settings, monkeypatch):
    import os
    import threading

    from argon2 import PasswordHasher

    from accounts import hashers

    seen = []
    real_verify = PasswordHasher.verify

    def spy(self, *args):
        native = threading.get_native_id()
        seen.append((threading.current_thread().name, os.getpriority(os.PRIO_PROCESS, native)))
        return real_verify(self, *args)

    monkeypatch.setattr(PasswordHasher, "verify", spy)
    settings.PASSWORD_HASHERS = ["accounts.hashers.TunedArgon2PasswordHasher"]
    settings.PASSWORD_HASH_NICE = 7
    monkeypatch.setattr(hashers, "_pool", None)  # a fresh pool, at this test's nice value
    encoded = hashers.TunedArgon2PasswordHasher().encode(PASSWORD, "saltsaltsalt")
    assert hashers.TunedArgon2PasswordHasher().verify(PASSWORD, encoded)
    assert not hashers.TunedArgon2PasswordHasher().verify("wrong " + PASSWORD, encoded)
    own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert [name.startswith("password-hash") for name, _ in seen] == [True, True]
    assert {nice for _, nice in seen} == {min(own + 7, 19)}
    assert own < min(own + 7, 19)  # the request's own thread keeps its priority

    seen.clear()
    settings.PASSWORD_HASH_NICE = 0  # off: on the caller's thread, as Django does
    assert hashers.TunedArgon2PasswordHasher().verify(PASSWORD, encoded)
    assert seen == [(threading.current_thread().name, own)]


def test_each_hashing_thread_starts_at_most_the_configured_hashes_a_second(db, settings, monkeypatch):
    import time

    from accounts import hashers

    starts = []
    settings.PASSWORD_HASH_NICE = 5
    settings.PASSWORD_HASH_THREADS = 1
    settings.PASSWORD_HASHES_PER_SECOND = 20  # one start every 50 ms
    monkeypatch.setattr(hashers, "_pool", None)
    for _ in range(4):
        assert hashers._deprioritised(lambda: starts.append(time.monotonic()) or "done") == "done"
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert min(gaps) >= 0.049, gaps

    starts.clear()
    settings.PASSWORD_HASHES_PER_SECOND = 0  # no pacing
    monkeypatch.setattr(hashers, "_pool", None)
    for _ in range(4):
        hashers._deprioritised(lambda: starts.append(time.monotonic()))
    assert starts[-1] - starts[0] < 0.049 * 3
