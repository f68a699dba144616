""""Stay signed in" (POST /accounts/session/keepalive/): restarts the idle clock, never the
absolute limit, needs CSRF, and cannot revive an expired session. The page tells staff.js how
long the session may stay idle (data-idle-seconds / data-idle-remaining)."""

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from accounts.middleware import LAST_SEEN
from accounts.models import UserSession
from tests.factories import login_verified

T0 = "2026-11-25 09:00:00+00:00"
KEEPALIVE = "/accounts/session/keepalive/"


@pytest.fixture
def signed_in(client, alice, time_machine):
    time_machine.move_to(T0, tick=False)
    return login_verified(client, alice)


def _advance(time_machine, **delta):
    time_machine.move_to(timezone.now() + timedelta(**delta), tick=False)


def test_keepalive_restarts_the_idle_clock(signed_in, time_machine):
    _advance(time_machine, minutes=14)
    response = signed_in.post(KEEPALIVE)
    assert response.status_code == 204 and response.content == b""
    assert signed_in.session[LAST_SEEN] == timezone.now().timestamp()
    _advance(time_machine, minutes=14)  # 28 minutes since sign-in, 14 since the keepalive
    assert signed_in.get("/").status_code == 200


def test_without_keepalive_the_session_idles_out(signed_in, time_machine):
    _advance(time_machine, minutes=14)
    _advance(time_machine, minutes=2)
    assert signed_in.get("/").status_code == 302


def test_keepalive_cannot_revive_an_expired_session(signed_in, time_machine, alice):
    _advance(time_machine, minutes=16)
    response = signed_in.post(KEEPALIVE)
    assert response.status_code == 302 and response["Location"] == "/accounts/login/"
    assert UserSession.objects.get(user=alice).end_reason == "idle_timeout"


def test_keepalive_does_not_extend_the_absolute_limit(signed_in, time_machine, alice):
    for _ in range(12 * 6 - 1):
        _advance(time_machine, minutes=10)
        assert signed_in.post(KEEPALIVE).status_code == 204
    _advance(time_machine, minutes=11)
    assert signed_in.post(KEEPALIVE).status_code == 302
    assert UserSession.objects.get(user=alice).end_reason == "absolute_timeout"


def test_keepalive_is_post_only_and_needs_csrf(alice, time_machine):
    time_machine.move_to(T0, tick=False)
    strict = login_verified(Client(enforce_csrf_checks=True), alice)
    assert strict.post(KEEPALIVE).status_code == 403  # no CSRF token
    assert strict.get(KEEPALIVE).status_code == 405


def test_anonymous_keepalive_goes_to_login(client):
    response = client.post(KEEPALIVE)
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_pages_tell_the_browser_the_idle_limit_and_what_is_left(signed_in, time_machine, tenant_a):
    content = signed_in.get("/").content.decode()
    assert 'data-idle-seconds="900"' in content and 'data-idle-remaining="900"' in content
    assert 'data-keepalive-url="/accounts/session/keepalive/"' in content
    assert 'id="session-warning"' in content and 'role="alertdialog"' in content
    tenant_a.session_idle_minutes = 5
    tenant_a.save(update_fields=["session_idle_minutes"])
    _advance(time_machine, seconds=30)
    content = signed_in.get("/").content.decode()
    # Last-seen is written at most once a minute, and the page says what is really left.
    assert 'data-idle-seconds="300"' in content and 'data-idle-remaining="270"' in content
    _advance(time_machine, seconds=31)
    content = signed_in.get("/").content.decode()
    assert 'data-idle-remaining="300"' in content


def test_a_background_request_reports_the_time_left_without_restarting_it(signed_in, time_machine):
    _advance(time_machine, minutes=3)
    content = signed_in.get("/", HTTP_X_CARETEXT_BACKGROUND="1").content.decode()
    assert 'data-idle-remaining="720"' in content
