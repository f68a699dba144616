"""Fixtures for the browser journeys: a live server, Chromium (Debian's, never a downloaded
one), a clinic with its people, and a full-page screenshot of every open page when a test
fails (``test-artifacts/screenshots/<test name>-<n>.png``).

Fixture order matters: everything that touches the database is set up before ``browser``
starts Playwright in this thread (see support.in_thread). Tests list ``browser`` last.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

import pytest

from tests.e2e.test_demo import CHROMIUM_ARGS

ROOT = Path(__file__).resolve().parents[3]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
STAFF_VIEWPORT = {"width": 1280, "height": 800}
PHONE_VIEWPORT = {"width": 390, "height": 844}


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the item, so fixtures can tell in teardown whether the test failed."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"_journey_{report.when}", report)


def _failed(node) -> bool:
    return any(getattr(getattr(node, f"_journey_{when}", None), "failed", False) for when in ("setup", "call"))


def save_failure_screenshots(browser, test_name: str, folder: Path = SCREENSHOTS) -> list[Path]:
    """A full-page PNG of every page still open in ``browser``; returns the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", test_name)
    saved = []
    n = 0
    for context in browser.contexts:
        for page in context.pages:
            n += 1
            path = folder / f"{stem}-{n}.png"
            try:
                page.screenshot(path=str(path), full_page=True, timeout=10_000)
                saved.append(path)
            except Exception:  # noqa: BLE001 - a crashed page must not hide the test's own failure
                continue
    return saved


@pytest.fixture
def server(committed_db):
    """pytest-django's LiveServer (a thread of this process, same test database); see
    tests/e2e/test_patient_page_browser.py for why not the ``live_server`` fixture."""
    from pytest_django.live_server_helper import LiveServer

    live = LiveServer("localhost")
    yield live
    live.stop()


@pytest.fixture(autouse=True)
def _generous_ip_limits(monkeypatch):
    """The browser comes from 127.0.0.1, whose per-IP counters other runs share in Redis."""
    from messaging import links

    monkeypatch.setattr(links, "IP_OPENS_PER_WINDOW", 10**6)
    monkeypatch.setattr(links, "IP_FAILURES_PER_WINDOW", 10**6)


@pytest.fixture
def browser(server, request):
    """Chromium; ``browser.staff()`` and ``browser.phone()`` open fresh contexts (separate cookies).
    On failure, every open page is saved as a full-page screenshot before anything closes."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"),
                                     args=CHROMIUM_ARGS)
        handle = _Browser(chromium, server.url)
        try:
            yield handle
        finally:
            if _failed(request.node):
                save_failure_screenshots(chromium, request.node.name)
            for context in list(chromium.contexts):
                context.close()
            chromium.close()


class _Browser:
    def __init__(self, chromium, base: str):
        self.chromium = chromium
        self.base = base

    def staff(self):
        """A desktop browser window (JavaScript on), as at the front desk."""
        context = self.chromium.new_context(viewport=STAFF_VIEWPORT)
        context.set_default_timeout(15_000)
        return context.new_page()

    def phone(self):
        """A phone (390x844, touch) with JavaScript off, as the patient's."""
        context = self.chromium.new_context(viewport=PHONE_VIEWPORT, is_mobile=True, has_touch=True,
                                            java_script_enabled=False)
        context.set_default_timeout(15_000)
        return context.new_page()


@pytest.fixture
def clinic(committed_db):
    """A clinic with a signed BAA and one person per role, each with an authenticator app.

    Returns a dict: ``tenant``, and per role (owner, clinician, staff, auditor) the user and
    ``<role>_app`` (support.Authenticator)."""
    from accounts.permissions import Role
    from tests.e2e.journeys.support import authenticator_for
    from tests.factories import make_member, make_tenant, sign_baa

    n = random.randint(0, 10**6)
    tenant = make_tenant(name="Lakeside Family Clinic", slug=f"lakeside-{n}")
    world = {"tenant": tenant}
    for role in (Role.OWNER, Role.CLINICIAN, Role.STAFF, Role.AUDITOR):
        user = make_member(tenant=tenant, role=role, email=f"{role}-{n}@lakeside.test")
        world[str(role)] = user
        world[f"{role}_app"] = authenticator_for(user)
    sign_baa(tenant=tenant, owner=world["owner"])
    return world
