"""The patient's secure page in Chromium on a phone-sized screen with JavaScript off: open the
SMS link, get the birth date wrong once, get it right, read the message, reply, see the reply.

Runs against pytest-django's LiveServer (a thread in this process, same test database), started
by our own fixture rather than the ``live_server`` fixture: that one pulls ``transactional_db``
in ahead of ``committed_db``, so its flush would run as the application role, which may not
TRUNCATE the audit trail. ``committed_db`` makes the rows visible to the server thread and
empties the tables afterwards as the owner role.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import random
from pathlib import Path

import pytest

from accounts.tenancy import tenant_scope
from messaging import links, services
from messaging.models import Direction, Message, Thread
from tests.e2e.test_demo import CHROMIUM_ARGS
from tests.factories import make_member, make_tenant, make_textable_patient
from tests.messaging.conftest import sent_sms, token_of

pytestmark = pytest.mark.slow

BODY = "Your blood test came back normal. No need to come in."
REPLY = "Thank you! See you at my next check-up."
BIRTH = datetime.date(1979, 11, 23)


@pytest.fixture
def sms_token(committed_db):
    from accounts.permissions import Role

    tenant = make_tenant(name="Lakeside Family Clinic", slug=f"lakeside-{random.randint(0, 10**6)}")
    owner = make_member(tenant=tenant, role=Role.OWNER)
    patient = make_textable_patient(tenant=tenant, owner=owner, given_name="Rosa", family_name="Delgado",
                                    birth_date=BIRTH, phone="+12025550166")
    with tenant_scope(tenant):
        services.message_send(tenant=tenant, actor=owner, patient=patient, body=BODY)  # commits: SMS sent
    return tenant, token_of(sent_sms(to=patient.phone)[-1])


@pytest.fixture
def server(committed_db):
    from pytest_django.live_server_helper import LiveServer

    live = LiveServer("localhost")
    yield live
    live.stop()


@contextlib.contextmanager
def _phone():
    """Chromium as a phone (390x844, touch) with JavaScript off.

    The test's own database queries stay outside this block: while Playwright's event loop
    runs in this thread, Django hands out a separate, context-local connection that nobody
    closes, and the test database could not be dropped afterwards.
    """
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"),
                                    args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True,
                                      java_script_enabled=False)
        try:
            yield context.new_page()
        finally:
            context.close()
            browser.close()


def _fill_birth_date(page, date: datetime.date) -> None:
    page.get_by_label("Month").fill(str(date.month))
    page.get_by_label("Day", exact=True).fill(str(date.day))
    page.get_by_label("Year").fill(str(date.year))
    page.get_by_role("button", name="Continue").click()


def _patient_session(base: str, token: str, shots: Path) -> tuple[list[str], list[str]]:
    """What the patient does; returns (failed responses, console errors)."""
    console, failed = [], []
    with _phone() as page:
        page.on("console", lambda msg: console.append(msg.text) if msg.type == "error" else None)
        page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)

        page.goto(f"{base}/s/{token}")
        assert page.url == f"{base}/s/"  # the token left the address bar
        assert page.get_by_role("heading", name="Confirm it is you", level=1).is_visible()
        assert "Lakeside Family Clinic" in page.content() and "Rosa" not in page.content()
        page.screenshot(path=str(shots / "patient-birth-date.png"))

        _fill_birth_date(page, BIRTH.replace(day=BIRTH.day + 1))
        alert = page.get_by_role("alert").inner_text().strip()
        assert alert == "That does not match our records. Please try again."
        assert BODY not in page.content()
        _fill_birth_date(page, BIRTH)

        assert page.get_by_role("heading", name="Your messages", level=1).is_visible()
        assert page.get_by_text(BODY).is_visible()
        page.get_by_label("Your reply").fill(REPLY)
        send = page.get_by_role("button", name="Send reply")
        box = send.bounding_box()
        assert box["height"] >= 44 and box["x"] + box["width"] <= 390  # a real touch target, no sideways scroll
        send.click()
        assert page.get_by_role("status").inner_text().strip() == "Your reply was sent to the clinic."
        assert page.get_by_text(REPLY).is_visible()
        page.screenshot(path=str(shots / "patient-thread.png"), full_page=True)
    return failed, console


def test_patient_opens_verifies_reads_and_replies_on_a_phone(sms_token, server, tmp_path, monkeypatch):
    tenant, token = sms_token
    # The browser comes from 127.0.0.1, whose per-IP counters other runs share in Redis.
    monkeypatch.setattr(links, "IP_OPENS_PER_WINDOW", 10**6)
    monkeypatch.setattr(links, "IP_FAILURES_PER_WINDOW", 10**6)
    failed, console = _patient_session(server.url, token, tmp_path)
    # The wrong birth date is the one 4xx (Chromium echoes it to the console); the CSP blocks
    # nothing the pages need and no asset is missing.
    assert failed == [f"400 {server.url}/s/verify"]
    assert [m for m in console if "status of 400" not in m] == []
    with tenant_scope(tenant):
        assert [m.body for m in Message.objects.filter(direction=Direction.INBOUND)] == [REPLY]
        assert Thread.objects.get().staff_unread == 1

    keep = os.environ.get("CARETEXT_SCREENSHOTS")  # a folder to keep the pictures in, for a look
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        for name in ("patient-birth-date.png", "patient-thread.png"):
            Path(keep, name).write_bytes((tmp_path / name).read_bytes())
