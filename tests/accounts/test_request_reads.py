"""The per-request reads of a signed-in staff request, written out for speed (issue #12 item 8):
they must answer exactly as the ORM reads they replace, keep tenant isolation, and let a
revoked membership, a deactivated clinic or a tenant's session limits take effect on the very
next request (nothing about authorisation is cached across requests)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone
from django_scopes.exceptions import ScopeError

from accounts import permissions as perms
from accounts import services
from accounts.context_processors import NAV_URL_NAMES, nav_urls
from accounts.models import Membership, Tenant
from accounts.permissions import Role
from accounts.selectors import (
    colleague_list_with_permission,
    membership_list_for_signed_in_user,
    membership_list_for_user,
)
from accounts.tenancy import tenant_scope, user_scope
from tests.factories import login_verified, make_member, make_tenant


@pytest.fixture
def dual(world):
    """A clinician at clinic A who is also front desk at clinic B (and had a role at a closed clinic)."""
    user = make_member(tenant=world["tenant_a"], role=Role.CLINICIAN, email="dual@example.test")
    with tenant_scope(world["tenant_b"]):
        services.membership_create(tenant=world["tenant_b"], actor=None, user=user, role=Role.STAFF)
    closed = make_tenant(name="Aardvark Clinic (closed)", slug="closed")
    with tenant_scope(closed):
        services.membership_create(tenant=closed, actor=None, user=user, role=Role.STAFF)
    Tenant.objects.filter(pk=closed.pk).update(is_active=False)
    return user


def _user_setting() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('app.user_id', true)")
        return cursor.fetchone()[0]


def test_signed_in_memberships_are_the_orm_read_in_one_round_trip(world, dual):
    with user_scope(dual.pk):
        expected = membership_list_for_user(user=dual)
    found = membership_list_for_signed_in_user(user=dual)
    assert [(m.pk, m.tenant_id, m.role, m.is_active) for m in found] == \
           [(m.pk, m.tenant_id, m.role, m.is_active) for m in expected]
    assert [m.tenant.name for m in found] == ["Clinic A", "Clinic B"]  # active clinics only, by name
    assert found[0].tenant == world["tenant_a"] and found[0].tenant.timezone == world["tenant_a"].timezone
    assert found[1].permissions == perms.permissions_for_role(Role.STAFF)
    assert _user_setting() == ""  # the user setting lived only inside the one message
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM accounts_membership")
        assert cursor.fetchone()[0] == 0  # nothing visible without a tenant or user setting


def test_a_deactivated_membership_is_gone_from_the_next_request(client, alice, bob, tenant_a):
    login_verified(client, bob)
    assert client.get("/inbox/").status_code == 200
    with tenant_scope(tenant_a):
        Membership.objects.filter(user=bob).update(is_active=False)
    response = client.get("/inbox/")
    assert response.status_code == 403 and response.wsgi_request.tenant is None


def test_a_role_change_takes_effect_on_the_next_request(client, alice, bob, tenant_a):
    login_verified(client, bob)
    assert client.get("/inbox/").status_code == 200
    with tenant_scope(tenant_a):
        Membership.objects.filter(user=bob).update(role=Role.AUDITOR)  # auditors read no messages
    assert client.get("/inbox/").status_code == 403


def test_session_limits_of_a_clinic_left_still_apply(client, alice, bob, tenant_a, time_machine):
    """The session's clinic is found among the memberships; when the membership is gone, its
    limits are looked up as before (the user must not escape a clinic's shorter idle limit)."""
    time_machine.move_to("2026-11-25 09:00:00+00:00", tick=False)
    login_verified(client, bob)
    assert client.get("/inbox/").status_code == 200  # the session now names clinic A
    Tenant.objects.filter(pk=tenant_a.pk).update(session_idle_minutes=5)
    with tenant_scope(tenant_a):
        Membership.objects.filter(user=bob).update(is_active=False)
    time_machine.move_to(timezone.now() + timedelta(minutes=6), tick=False)
    response = client.get("/inbox/")
    assert response.status_code == 302 and response["Location"] == "/accounts/login/"


def test_colleagues_are_active_members_with_the_permission(world, tenant_a, tenant_b):
    users = world["users_a"]
    with tenant_scope(tenant_a):
        Membership.objects.filter(user=users[Role.CLINICIAN]).update(is_active=False)
        found = colleague_list_with_permission(tenant=tenant_a, permission=perms.MESSAGES_VIEW)
    # Owner and front desk read messages; the auditor does not; the clinician was deactivated;
    # clinic B's owner is not a colleague.
    expected = sorted([users[Role.OWNER], users[Role.STAFF]], key=lambda u: u.email)
    assert [(u.pk, u.email, u.full_name) for u in found] == [(u.pk, u.email, u.full_name) for u in expected]


def test_colleagues_need_their_tenants_scope(world, tenant_a, tenant_b):
    with pytest.raises(ScopeError):
        colleague_list_with_permission(tenant=tenant_a, permission=perms.MESSAGES_VIEW)
    with tenant_scope(tenant_b), pytest.raises(ScopeError):
        colleague_list_with_permission(tenant=tenant_a, permission=perms.MESSAGES_VIEW)


def test_nav_links_are_the_reversed_urls(client, alice):
    assert nav_urls() == {name.replace("-", "_"): reverse(name) for name in NAV_URL_NAMES}
    login_verified(client, alice)
    content = client.get("/inbox/").content.decode()
    for name in ("patients-patient-list", "accounts-settings", "accounts-sessions", "accounts-logout",
                 "messaging-inbox", "messaging-unknown", "messaging-inbox-live", "accounts-session-keepalive"):
        assert f'"{reverse(name)}' in content, name
