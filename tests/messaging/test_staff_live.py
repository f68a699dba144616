"""Live updates on the staff side: the open conversation's poll (new messages only, audited only
when there are any, unread left alone), the inbox's poll (204 while nothing changed), the
next/previous links, and background polls never counting as activity for the idle timeout."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.tenancy import tenant_scope
from audit.events import AuditEventType
from audit.models import AuditEvent
from messaging import services
from messaging.inbound import inbound_sms_receive
from messaging.models import Thread
from tests.factories import make_textable_patient

BACKGROUND = {"HTTP_X_CARETEXT_BACKGROUND": "1", "HTTP_HX_REQUEST": "true"}
T0 = "2026-11-25 09:00:00+00:00"


def _patient_texts(tenant, patient, body="Can I come in earlier?") -> Thread:
    with tenant_scope(tenant):
        inbound = inbound_sms_receive(tenant=tenant, provider_id=f"SM{uuid.uuid4().hex}", from_number=patient.phone,
                                      body=body)
        return Thread.objects.get(pk=inbound.message.thread_id)


def _opened(tenant) -> list[AuditEvent]:
    with tenant_scope(tenant):
        return list(AuditEvent.objects.filter(event_type=AuditEventType.THREAD_OPENED).order_by("occurred_at", "id"))


def _poll_url(content: str) -> str:
    match = re.search(r'id="messages-poll"[^>]*hx-get="([^"]+)"', content)
    assert match, "no polling element on the page"
    return match.group(1).replace("&amp;", "&")


@pytest.fixture
def open_thread(client, login, alice, tenant_a, patient):
    """alice has the patient's conversation open; returns (thread, the page's poll URL)."""
    thread = _patient_texts(tenant_a, patient)
    login(alice)
    page = client.get(f"/inbox/t/{thread.pk}/")
    assert page.status_code == 200
    return thread, _poll_url(page.content.decode())


# --- the conversation's poll -------------------------------------------------------------------------


def test_the_thread_page_has_the_message_list_and_a_background_poll(client, open_thread, settings):
    thread, url = open_thread
    content = client.get(f"/inbox/t/{thread.pk}/").content.decode()
    assert '<ol class="conversation" id="messages">' in content
    assert f'hx-trigger="every {settings.STAFF_POLL_SECONDS}s"' in content
    assert "X-Caretext-Background" in content
    assert url.startswith(f"/inbox/t/{thread.pk}/messages/?")


def test_a_poll_with_nothing_new_is_204_and_audits_nothing(client, open_thread, tenant_a):
    _, url = open_thread
    before = len(_opened(tenant_a))
    response = client.get(url, **BACKGROUND)
    assert response.status_code == 204 and response.content == b""
    assert len(_opened(tenant_a)) == before


def test_a_patient_reply_comes_back_alone_and_is_audited_once(client, open_thread, tenant_a, patient):
    thread, url = open_thread
    _patient_texts(tenant_a, patient, body="Running ten minutes late, sorry!")
    before = len(_opened(tenant_a))
    response = client.get(url, **BACKGROUND)
    content = response.content.decode()
    assert response.status_code == 200
    assert "Running ten minutes late, sorry!" in content
    assert "Can I come in earlier?" not in content  # only what is new
    assert 'hx-swap-oob="beforeend:#messages"' in content
    assert "{#" not in content and "{%" not in content
    [event] = _opened(tenant_a)[before:]
    assert event.details["method"] == "live_update" and event.details["count"] == 1
    assert event.patient_id == thread.patient_id
    # The next poll asks after the new message: nothing new again, nothing audited.
    again = client.get(_poll_url(content), **BACKGROUND)
    assert again.status_code == 204
    assert len(_opened(tenant_a)) == before + 1


def test_a_poll_does_not_clear_the_unread_count(client, open_thread, tenant_a, patient):
    thread, url = open_thread
    _patient_texts(tenant_a, patient, body="Also, can I bring my daughter?")
    response = client.get(url, **BACKGROUND)
    assert response.status_code == 200
    with tenant_scope(tenant_a):
        thread.refresh_from_db()
    assert thread.staff_unread == 1  # a screen left open is not someone reading
    # The nav's Inbox link is re-sent with the new count.
    assert re.search(r'<a id="nav-inbox"[^>]*hx-swap-oob="true">Inbox <span class="nav-count">1</span>',
                     response.content.decode())


def test_after_must_be_a_message_of_this_conversation(client, open_thread, tenant_a, alice):
    thread, _ = open_thread
    other = make_textable_patient(tenant=tenant_a, owner=alice, phone="+12025550177")
    with tenant_scope(tenant_a):
        other_message = services.message_send(tenant=tenant_a, actor=alice, patient=other, body="Hello")
    for bad in ("not-a-uuid", str(uuid.uuid4()), str(other_message.pk)):
        response = client.get(f"/inbox/t/{thread.pk}/messages/", {"after": bad}, **BACKGROUND)
        assert response.status_code == 400
        assert response.content.decode().startswith("after:")


def test_another_clinics_thread_is_404_and_leaves_no_trace(client, login, charlie, tenant_a, tenant_b, patient):
    thread = _patient_texts(tenant_a, patient)
    login(charlie)
    before = len(_opened(tenant_a))
    response = client.get(f"/inbox/t/{thread.pk}/messages/", **BACKGROUND)
    assert response.status_code == 404
    assert "Can I come in earlier?" not in response.content.decode()
    assert len(_opened(tenant_a)) == before


def test_the_auditor_may_not_poll_a_conversation(client, login, dave, tenant_a, patient):
    thread = _patient_texts(tenant_a, patient)
    login(dave)
    assert client.get(f"/inbox/t/{thread.pk}/messages/", **BACKGROUND).status_code == 403


# --- the inbox's poll -------------------------------------------------------------------------------------


def _inbox_poll_url(content: str) -> str:
    match = re.search(r'id="inbox-list" hx-get="([^"]+)"', content)
    assert match, "no polling inbox list"
    return match.group(1).replace("&amp;", "&")


def test_the_inbox_poll_is_204_until_something_changes(client, login, alice, tenant_a, patient):
    _patient_texts(tenant_a, patient)
    login(alice)
    url = _inbox_poll_url(client.get("/inbox/", {"box": "all"}).content.decode())
    assert "box=all" in url
    with tenant_scope(tenant_a):
        searched = AuditEvent.objects.filter(event_type=AuditEventType.PATIENT_SEARCHED).count()
    assert client.get(url, **BACKGROUND).status_code == 204
    second = make_textable_patient(tenant=tenant_a, owner=alice, given_name="Zed", family_name="Orr",
                                   phone="+12025550188")
    _patient_texts(tenant_a, second, body="Hi, it's Zed")
    response = client.get(url, **BACKGROUND)
    content = response.content.decode()
    assert response.status_code == 200
    assert "Zed Orr" in content and 'id="inbox-list"' in content
    assert '<nav class="tabs" id="inbox-tabs" aria-label="Boxes" hx-swap-oob="true">' in content
    assert re.search(r'<a id="nav-inbox"[^>]*hx-swap-oob="true">Inbox <span class="nav-count">2</span>', content)
    with tenant_scope(tenant_a):
        events = list(AuditEvent.objects.filter(event_type=AuditEventType.PATIENT_SEARCHED).order_by("occurred_at", "id"))
    assert len(events) == searched + 1 and events[-1].details["count"] == 2
    # The refreshed list carries the new fingerprint: quiet again.
    assert client.get(_inbox_poll_url(content), **BACKGROUND).status_code == 204


def test_the_inbox_poll_names_a_bad_filter(client, login, alice):
    login(alice)
    response = client.get("/inbox/live/", {"box": "everything"}, **BACKGROUND)
    assert response.status_code == 400 and response.content.decode().startswith("box:")


def test_the_inbox_poll_never_shows_another_clinics_threads(client, login, charlie, tenant_a, patient):
    _patient_texts(tenant_a, patient)
    login(charlie)
    response = client.get("/inbox/live/", {"box": "all"}, **BACKGROUND)
    assert response.status_code == 200
    assert "Quill" not in response.content.decode()


# --- next / previous in the inbox order ---------------------------------------------------------------------


def test_thread_page_links_to_its_neighbours_in_the_box(client, login, alice, tenant_a, patient, time_machine):
    time_machine.move_to(T0, tick=False)
    older = _patient_texts(tenant_a, patient)
    time_machine.move_to(timezone.now() + timedelta(minutes=5), tick=False)
    newer = _patient_texts(tenant_a, make_textable_patient(tenant=tenant_a, owner=alice, phone="+12025550199"))
    login(alice)
    newest_page = client.get(f"/inbox/t/{newer.pk}/", {"box": "all"}).content.decode()
    assert f'rel="next" href="/inbox/t/{older.pk}/?box=all"' in newest_page
    assert 'rel="prev"' not in newest_page
    older_page = client.get(f"/inbox/t/{older.pk}/", {"box": "all"}).content.decode()
    assert f'rel="prev" href="/inbox/t/{newer.pk}/?box=all"' in older_page
    assert 'rel="next"' not in older_page
    assert 'id="back-to-inbox" href="/inbox/?box=all"' in older_page


# --- background polls are not activity -------------------------------------------------------------------


def test_a_session_that_only_polls_still_idles_out(client, open_thread, time_machine, alice):
    from accounts.models import UserSession

    thread, url = open_thread
    start = timezone.now()
    for minute in range(1, 15):  # a poll every minute for 14 minutes: the session stays valid...
        time_machine.move_to(start + timedelta(minutes=minute), tick=False)
        assert client.get(url, **BACKGROUND).status_code == 204
    time_machine.move_to(start + timedelta(minutes=15, seconds=30), tick=False)
    response = client.get(url, **BACKGROUND)  # ...but idle for 15 minutes all the same
    assert response.status_code == 401
    assert response["HX-Redirect"] == "/accounts/login/"
    assert UserSession.objects.get(user=alice).end_reason == "idle_timeout"
    # Later polls (signed out) also send the page to the login page instead of a login form.
    later = client.get(url, **BACKGROUND)
    assert later.status_code == 401 and later["HX-Redirect"].startswith("/accounts/login/")


def test_a_real_request_does_count_as_activity(client, open_thread, time_machine):
    thread, url = open_thread
    start = timezone.now()
    time_machine.move_to(start + timedelta(minutes=10), tick=False)
    assert client.get(f"/inbox/t/{thread.pk}/").status_code == 200  # a person opened a page
    time_machine.move_to(start + timedelta(minutes=20), tick=False)
    assert client.get(url, **BACKGROUND).status_code == 204  # 10 minutes idle: still signed in


def test_the_idle_logout_message_says_why(client, open_thread, time_machine):
    start = timezone.now()
    time_machine.move_to(start + timedelta(minutes=16), tick=False)
    response = client.get("/inbox/", follow=True)
    assert "You were signed out after 15 minutes without activity." in response.content.decode()
