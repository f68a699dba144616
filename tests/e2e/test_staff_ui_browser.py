"""The staff dashboard in Chromium with JavaScript on: the keyboard inbox (j/k/arrows/Enter, r,
Escape, ?), a patient's reply appearing on an open conversation without a reload (htmx
polling), the session-timeout warning and "Stay signed in", the confirmation before a
destructive form, and no Content-Security-Policy violation on the busiest pages.

Signs in by handing Chromium a verified session cookie (tests.factories.login_verified); the
sign-in pages themselves are walked through in tests/e2e/journeys/. Everything that touches the
database happens before Playwright starts, or in a worker thread (support.in_thread).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import random
import time
import uuid

import pytest

from tests.e2e.journeys.support import in_thread
from tests.e2e.test_demo import CHROMIUM_ARGS

pytestmark = pytest.mark.slow

REPLY = "Running ten minutes late, sorry!"
# Reported by Chromium's securitypolicyviolation event, collected before any page script runs.
CSP_WATCH = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__cspViolations.push(e.violatedDirective + " " + (e.blockedURI || "inline"));
});
"""


@pytest.fixture
def server(committed_db):
    from pytest_django.live_server_helper import LiveServer

    live = LiveServer("localhost")
    yield live
    live.stop()


@pytest.fixture
def desk(committed_db):
    """A clinic with an owner (signed in: the session cookie), three patients who texted in and
    an API key. Returns a dict of ids and the cookie."""
    from django.conf import settings
    from django.test import Client

    from accounts import services as account_services
    from accounts.permissions import Role
    from accounts.tenancy import tenant_scope
    from messaging.inbound import inbound_sms_receive
    from tests.factories import login_verified, make_member, make_tenant, make_textable_patient

    tenant = make_tenant(name="Lakeside Family Clinic", slug=f"lakeside-{random.randint(0, 10**6)}")
    owner = make_member(tenant=tenant, role=Role.OWNER)
    threads, phones = [], []
    for n, (given, family) in enumerate((("Rosa", "Delgado"), ("Amir", "Haddad"), ("June", "Okafor"))):
        phone = f"+120255501{60 + n}"
        make_textable_patient(tenant=tenant, owner=owner, given_name=given, family_name=family, phone=phone)
        with tenant_scope(tenant):
            inbound = inbound_sms_receive(tenant=tenant, provider_id=f"SM{uuid.uuid4().hex}", from_number=phone,
                                          body=f"Hello from {given}")
        threads.append(str(inbound.message.thread_id))
        phones.append(phone)
    with tenant_scope(tenant):
        account_services.api_key_create(tenant=tenant, actor=owner, name="EHR feed", scopes=["patients:read"])
    client = login_verified(Client(), owner, tenant=tenant)
    return {"tenant": tenant, "cookie": client.cookies[settings.SESSION_COOKIE_NAME].value, "threads": threads,
            "phones": phones}


@contextlib.contextmanager
def _staff_page(base: str, cookie: str):
    from django.conf import settings
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"),
                                    args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        context.set_default_timeout(15_000)
        context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": cookie, "url": base}])
        context.add_init_script(CSP_WATCH)
        page = context.new_page()
        console = []
        page.on("console", lambda msg: console.append(msg.text) if msg.type == "error" else None)
        page.console_errors = console
        try:
            yield page
        finally:
            context.close()
            browser.close()


def _focused_href(page) -> str:
    return page.evaluate("document.activeElement && document.activeElement.getAttribute('href') || ''")


def _no_csp_violations(page, where: str) -> None:
    assert page.evaluate("window.__cspViolations") == [], where
    assert not [m for m in page.console_errors if "Content Security Policy" in m], (where, page.console_errors)


def _patient_replies(tenant, phone: str, body: str) -> None:
    from accounts.tenancy import tenant_scope
    from messaging.inbound import inbound_sms_receive

    with tenant_scope(tenant):
        inbound_sms_receive(tenant=tenant, provider_id=f"SM{uuid.uuid4().hex}", from_number=phone, body=body)


def _restart_idle_clock(session_key: str) -> None:
    from importlib import import_module

    from django.conf import settings
    from django.utils import timezone

    from accounts.middleware import LAST_SEEN

    session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    session[LAST_SEEN] = timezone.now().timestamp()
    session.save()


def test_keyboard_inbox_live_reply_and_no_csp_violations(desk, server, settings, tmp_path):
    from playwright.sync_api import expect

    settings.STAFF_POLL_SECONDS = 1
    base = server.url
    with _staff_page(base, desk["cookie"]) as page:
        page.goto(f"{base}/inbox/?box=all")
        links = page.locator("#inbox-list a.thread-link")
        expect(links).to_have_count(3)
        hrefs = [links.nth(i).get_attribute("href") for i in range(3)]
        _no_csp_violations(page, "inbox")

        page.keyboard.press("j")
        assert _focused_href(page) == hrefs[0]
        page.screenshot(path=str(tmp_path / "inbox.png"), full_page=True)
        page.keyboard.press("j")
        assert _focused_href(page) == hrefs[1]
        page.keyboard.press("k")
        assert _focused_href(page) == hrefs[0]
        page.keyboard.press("ArrowDown")
        assert _focused_href(page) == hrefs[1]
        page.keyboard.press("Enter")
        page.wait_for_url(f"{base}{hrefs[1]}")

        # The conversation: r goes to the reply box, and typing there is just typing.
        page.keyboard.press("r")
        reply = page.locator("#reply-form textarea")
        expect(reply).to_be_focused()
        page.keyboard.type("jk?")
        assert page.url == f"{base}{hrefs[1]}"
        expect(reply).to_have_value("jk?")
        reply.fill("")
        page.evaluate("document.activeElement.blur()")  # out of the box: shortcuts work again
        page.keyboard.press("?")
        expect(page.locator("#kbd-help")).to_be_visible()
        page.keyboard.press("Escape")  # closes the dialog, and only that
        expect(page.locator("#kbd-help")).to_be_hidden()
        assert page.url == f"{base}{hrefs[1]}"
        page.keyboard.press("j")
        page.wait_for_url(f"{base}{hrefs[2]}")
        page.keyboard.press("k")
        page.wait_for_url(f"{base}{hrefs[1]}")

        # A patient replies while the page is open: it appears without a reload.
        page.evaluate("window.__sameDocument = true")
        thread_index = desk["threads"].index(hrefs[1].split("/")[3])
        in_thread(_patient_replies, desk["tenant"], desk["phones"][thread_index], REPLY)
        expect(page.locator("#messages")).to_contain_text(REPLY, timeout=6_000)
        assert page.evaluate("window.__sameDocument") is True  # no navigation happened
        expect(page.locator("#messages li.bubble")).to_have_count(2)
        page.screenshot(path=str(tmp_path / "thread.png"), full_page=True)
        _no_csp_violations(page, "thread")

        page.keyboard.press("Escape")
        page.wait_for_url(f"{base}/inbox/?box=all")

        for path in ("/analytics/", "/reports/access/", "/settings/", "/"):
            page.goto(f"{base}{path}")
            page.wait_for_load_state("load")
            _no_csp_violations(page, path)
        assert page.evaluate("typeof htmx") == "object"  # the vendored htmx loaded under the CSP


def test_session_warning_stay_signed_in_then_expiry(desk, server, settings, tmp_path):
    from playwright.sync_api import expect

    base = server.url
    with _staff_page(base, desk["cookie"]) as page:
        # Chromium took a while to start: restart the idle clock now, then make it short.
        in_thread(_restart_idle_clock, desk["cookie"])
        settings.SESSION_IDLE_TIMEOUT = datetime.timedelta(seconds=4)  # the warning shows at half: 2 s
        page.goto(f"{base}/")
        loaded = time.monotonic()
        warning = page.locator("#session-warning")
        assert warning.get_attribute("role") == "alertdialog"
        expect(warning).to_be_hidden()
        remaining = int(page.locator("body").get_attribute("data-idle-remaining"))
        assert page.locator("body").get_attribute("data-idle-seconds") == "4" and remaining >= 3
        expect(warning).to_be_visible(timeout=4_000)
        assert time.monotonic() - loaded >= remaining - 2 - 0.5  # not at once: 2 s (half the limit) before the end
        page.screenshot(path=str(tmp_path / "warning.png"))
        stay = warning.get_by_role("button", name="Stay signed in")
        expect(stay).to_be_focused()
        stay.click()
        expect(warning).to_be_hidden()
        clicked = time.monotonic()
        # Past the first deadline, still signed in: the keepalive restarted the server's clock.
        page.wait_for_timeout(max(0.0, 4.5 - (clicked - loaded)) * 1000)
        assert page.url == f"{base}/"
        # Left alone, the warning comes back and then the page goes to the sign-in page.
        expect(warning).to_be_visible(timeout=4_000)
        page.wait_for_url("**/accounts/login/**", timeout=8_000)
        expect(page.get_by_role("status")).to_contain_text("You were signed out after 4 seconds without activity")
        page.goto(f"{base}/inbox/")
        assert "/accounts/login/" in page.url  # really signed out


def test_destructive_forms_ask_first(desk, server):
    from playwright.sync_api import expect

    base = server.url
    with _staff_page(base, desk["cookie"]) as page:
        page.goto(f"{base}/settings/api-keys/")
        revoke = page.get_by_role("button", name="Revoke")
        revoke.click()
        dialog = page.locator("#confirm-dialog")
        expect(dialog).to_be_visible()
        expect(dialog).to_contain_text("Revoke the API key “EHR feed”?")
        expect(page.locator("#confirm-cancel")).to_be_focused()  # the safe choice is the default
        page.locator("#confirm-cancel").click()
        expect(dialog).to_be_hidden()
        page.reload()
        expect(page.get_by_role("button", name="Revoke")).to_have_count(1)  # nothing was revoked

        page.get_by_role("button", name="Revoke").click()
        page.locator("#confirm-ok").click()
        page.wait_for_load_state("load")
        expect(page.get_by_role("button", name="Revoke")).to_have_count(0)
        expect(page.locator("table")).to_contain_text("Revoked")
        _no_csp_violations(page, "api keys")
