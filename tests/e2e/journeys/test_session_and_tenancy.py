"""Journey 6: a staff session left idle ends (the warning shows first, where the page has one)
and the next click lands on the sign-in page saying why; signed in again, a clinic A user who
opens a clinic B conversation URL gets a 404 that says nothing about it."""

from __future__ import annotations

import datetime
import random
import re
import time

import pytest
from playwright.sync_api import expect

from tests.e2e.journeys.support import sign_in
from tests.factories import PASSWORD, make_member, make_tenant, make_textable_patient

pytestmark = pytest.mark.slow

IDLE_SECONDS = 4
# accounts/middleware.py: the idle logout says so ("… after 4 seconds without activity …"); the
# absolute limit says "Your session expired."
EXPIRED = re.compile(r"You were signed out after .+ without activity\. Please sign in again\.")


@pytest.fixture
def other_clinic_thread(committed_db):
    """A conversation of another clinic (B): its URL is all clinic A's user knows."""
    from accounts.permissions import Role
    from accounts.tenancy import tenant_scope
    from messaging import services
    from messaging.models import Thread

    tenant = make_tenant(name="Harbor Street Medical", slug=f"harbor-{random.randint(0, 10**6)}")
    owner = make_member(tenant=tenant, role=Role.OWNER)
    patient = make_textable_patient(tenant=tenant, owner=owner, given_name="Wilhelmina", family_name="Osei",
                                    birth_date=datetime.date(1961, 6, 6), phone="+12025550186")
    with tenant_scope(tenant):
        services.message_send(tenant=tenant, actor=owner, patient=patient, body="Harbor Street private note")
        return Thread.objects.get(patient=patient).pk


def test_idle_session_ends_and_another_clinics_thread_is_404(clinic, other_clinic_thread, settings, browser):
    settings.SESSION_IDLE_TIMEOUT = datetime.timedelta(seconds=IDLE_SECONDS)
    base = browser.base

    desk = browser.staff()
    sign_in(desk, base, clinic["staff"].email, clinic["staff_app"], PASSWORD)
    signed_in_at = time.monotonic()
    expect(desk.get_by_role("heading", name=clinic["tenant"].name, level=1)).to_be_visible()

    warning = desk.locator("#session-warning")
    if warning.count():
        # The page warns before the idle logout, then takes itself to the sign-in page.
        assert warning.get_attribute("role") == "alertdialog"
        if time.monotonic() - signed_in_at < 1.5:  # it shows halfway through a limit this short
            assert not warning.is_visible()
        expect(warning).to_be_visible(timeout=IDLE_SECONDS * 1000)
        expect(warning.get_by_role("button", name="Stay signed in")).to_be_visible()
        desk.wait_for_url("**/accounts/login/**", timeout=(IDLE_SECONDS + 5) * 1000)
    else:
        desk.wait_for_timeout(max(0.0, IDLE_SECONDS + 1 - (time.monotonic() - signed_in_at)) * 1000)
        desk.get_by_role("link", name="Patients").first.click()
        desk.wait_for_url("**/accounts/login/**")
    expect(desk.get_by_role("heading", name="Sign in", level=1)).to_be_visible()
    expect(desk.get_by_role("status")).to_contain_text(EXPIRED)
    assert desk.goto(f"{base}/patients/").url.startswith(f"{base}/accounts/login/")  # really signed out

    # Signed in again (a fresh idle allowance), clinic A's user tries clinic B's conversation.
    settings.SESSION_IDLE_TIMEOUT = datetime.timedelta(minutes=15)
    sign_in(desk, base, clinic["staff"].email, clinic["staff_app"], PASSWORD)
    response = desk.goto(f"{base}/inbox/t/{other_clinic_thread}/")
    assert response.status == 404
    page = desk.content()
    assert "Wilhelmina" not in page and "Osei" not in page and "Harbor Street" not in page
    assert desk.get_by_role("heading", level=1).count() == 1
    # and their own inbox still works
    assert desk.goto(f"{base}/inbox/").status == 200
