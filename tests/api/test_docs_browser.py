"""Swagger UI in Chromium under the real CSP: it renders the operations, and the browser
reports no Content-Security-Policy violation (no inline script or style, nothing off-site)."""

from __future__ import annotations

import os

import pytest

from tests.e2e.test_demo import CHROMIUM_ARGS

pytestmark = pytest.mark.slow


@pytest.fixture
def server(committed_db):
    from pytest_django.live_server_helper import LiveServer

    live = LiveServer("localhost")
    yield live
    live.stop()


def test_swagger_ui_renders_under_the_strict_csp(server):
    from playwright.sync_api import sync_playwright

    violations, off_site = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"),
                                    args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
            page.on("request", lambda r: off_site.append(r.url) if not r.url.startswith(server.url) else None)
            response = page.goto(f"{server.url}/api/docs/")
            assert response.status == 200
            page.wait_for_selector("[data-path=\"/api/v1/patients/{patient_id}/consent\"]", timeout=15_000)
            assert page.locator(".opblock").count() >= 10
        finally:
            browser.close()
    assert violations == []
    assert off_site == []
