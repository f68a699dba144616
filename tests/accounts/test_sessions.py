"""Idle and absolute timeouts (clock-controlled), the sessions page, revocation."""

from datetime import timedelta

import pytest
from django.contrib.sessions.models import Session
from django.test import Client
from django.utils import timezone

from accounts.models import UserSession
from accounts.tenancy import tenant_scope
from audit.events import AuditEventType
from audit.models import AuditEvent
from tests.factories import login_verified

T0 = "2026-11-25 09:00:00+00:00"


@pytest.fixture
def signed_in(client, alice, time_machine):
    time_machine.move_to(T0, tick=False)
    return login_verified(client, alice)


def _advance(time_machine, **delta):
    time_machine.move_to(timezone.now() + timedelta(**delta), tick=False)


def test_idle_timeout_after_15_minutes(signed_in, time_machine, tenant_a, alice):
    _advance(time_machine, minutes=14)
    assert signed_in.get("/").status_code == 200
    _advance(time_machine, minutes=14)  # active 14 minutes ago: still fine
    assert signed_in.get("/").status_code == 200
    _advance(time_machine, minutes=15, seconds=30)
    response = signed_in.get("/")
    assert response.status_code == 302 and response["Location"] == "/accounts/login/"
    assert signed_in.get("/").status_code == 302
    assert UserSession.objects.get(user=alice).end_reason == "idle_timeout"
    with tenant_scope(tenant_a):
        assert AuditEvent.objects.filter(event_type=AuditEventType.SESSION_EXPIRED).exists()


def test_absolute_timeout_after_12_hours_even_when_active(signed_in, time_machine, alice):
    for _ in range(12 * 6 - 1):  # a request every 10 minutes for just under 12 hours
        _advance(time_machine, minutes=10)
        assert signed_in.get("/").status_code == 200
    _advance(time_machine, minutes=11)
    assert signed_in.get("/").status_code == 302
    assert UserSession.objects.get(user=alice).end_reason == "absolute_timeout"


def test_tenant_can_shorten_idle_timeout(signed_in, time_machine, tenant_a):
    tenant_a.session_idle_minutes = 5
    tenant_a.save(update_fields=["session_idle_minutes"])
    _advance(time_machine, minutes=4)
    assert signed_in.get("/").status_code == 200
    _advance(time_machine, minutes=6)
    assert signed_in.get("/").status_code == 302


def test_tenant_can_shorten_absolute_timeout(signed_in, time_machine, tenant_a):
    tenant_a.session_absolute_hours = 1
    tenant_a.save(update_fields=["session_absolute_hours"])
    for _ in range(5):
        _advance(time_machine, minutes=10)
        assert signed_in.get("/").status_code == 200
    _advance(time_machine, minutes=11)
    assert signed_in.get("/").status_code == 302


def test_expired_session_gets_json_401_on_the_api(signed_in, time_machine):
    _advance(time_machine, minutes=20)
    response = signed_in.get("/api/v1/me")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "session_expired"


def test_sessions_page_lists_and_revokes_another_session(client, alice, time_machine):
    time_machine.move_to(T0, tick=False)
    login_verified(client, alice)
    laptop = login_verified(Client(), alice)
    page = client.get("/accounts/sessions/")
    assert page.status_code == 200
    sessions = list(UserSession.objects.filter(user=alice, ended_at__isnull=True))
    assert len(sessions) == 2
    # The session key is a secret and never appears on the page.
    for s in sessions:
        assert s.session_key.encode() not in page.content
    other = next(s for s in sessions if s.pk != client.session["_ct_user_session"] and str(s.pk) != client.session["_ct_user_session"])
    response = client.post(f"/accounts/sessions/{other.pk}/revoke/")
    assert response.status_code == 302
    assert laptop.get("/").status_code == 302
    assert client.get("/").status_code == 200
    assert not Session.objects.filter(session_key=other.session_key).exists()


def test_revoke_all_other_sessions(client, alice, time_machine):
    time_machine.move_to(T0, tick=False)
    login_verified(client, alice)
    others = [login_verified(Client(), alice) for _ in range(3)]
    client.post("/accounts/sessions/revoke-others/")
    assert all(c.get("/").status_code == 302 for c in others)
    assert client.get("/").status_code == 200


def test_cannot_revoke_someone_elses_session(client, alice, bob, time_machine):
    time_machine.move_to(T0, tick=False)
    login_verified(client, alice)
    bobs = login_verified(Client(), bob)
    bob_session = UserSession.objects.get(user=bob)
    response = client.post(f"/accounts/sessions/{bob_session.pk}/revoke/")
    assert response.status_code == 404
    assert bobs.get("/").status_code == 200
