"""The dashboard in Chromium: the strict CSP lets the charts draw (static JS, data from
json_script), with no console errors. Uses the same LiveServer pattern as tests/e2e."""

from __future__ import annotations

import datetime
import os
import random

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone

from accounts.permissions import Role
from accounts.tenancy import tenant_scope
from messaging.inbound import inbound_sms_receive
from messaging.models import MessageKind
from messaging.services import message_send
from patients.models import AppointmentStatus
from patients.services import appointment_set_status
from tests.e2e.test_demo import CHROMIUM_ARGS
from tests.factories import (
    login_verified,
    make_appointment,
    make_member,
    make_tenant,
    make_textable_patient,
)

pytestmark = pytest.mark.slow

CANVASES = ("analytics-funnel", "analytics-no-show", "analytics-response")


@pytest.fixture
def server(committed_db):
    from pytest_django.live_server_helper import LiveServer

    live = LiveServer("localhost")
    yield live
    live.stop()


@pytest.fixture
def owner_cookie(committed_db):
    tenant = make_tenant(name="Harbor Clinic", slug=f"harbor-{random.randint(0, 10**6)}")
    owner = make_member(tenant=tenant, role=Role.OWNER)
    patient = make_textable_patient(tenant=tenant, owner=owner, phone="+12025550177")
    now = timezone.now()
    upcoming = make_appointment(tenant=tenant, patient=patient, actor=owner)
    missed = make_appointment(tenant=tenant, patient=patient, actor=owner, starts_at=now - datetime.timedelta(hours=3))
    with tenant_scope(tenant):
        thread = message_send(tenant=tenant, actor=owner, patient=patient, body="See you tomorrow.",
                              kind=MessageKind.REMINDER, appointment=upcoming).thread
        appointment_set_status(tenant=tenant, actor=owner, appointment=missed, status=AppointmentStatus.NO_SHOW)
        inbound_sms_receive(tenant=tenant, provider_id=f"SM{random.randint(0, 10**9):032d}",
                            from_number=patient.phone, body="Can I come later?")
        message_send(tenant=tenant, actor=owner, thread=thread, body="Yes, at 11.")
    client = Client()
    login_verified(client, owner, tenant=tenant)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def test_the_charts_draw_under_the_csp(server, owner_cookie):
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"),
                                    args=CHROMIUM_ARGS)
        context = browser.new_context()
        context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": owner_cookie, "url": server.url}])
        page = context.new_page()
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        try:
            response = page.goto(f"{server.url}/analytics/?weeks=4")
            assert response.status == 200
            page.wait_for_load_state("load")
            drawn = page.evaluate(
                "ids => ids.map(id => !!(window.Chart && window.Chart.getChart(document.getElementById(id))))",
                list(CANVASES))
            table_text = page.locator("#funnel-heading + p + figure + .table-wrap tfoot").inner_text()
        finally:
            context.close()
            browser.close()
    assert drawn == [True, True, True]
    assert "All weeks\t1\t1" in table_text
    assert errors == []
