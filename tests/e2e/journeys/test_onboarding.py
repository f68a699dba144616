"""Journey 1: the owner signs in with TOTP and invites a clinician from the People page; the
clinician opens the emailed link, sets a password, enrols an authenticator app by typing the
key shown on the setup page, saves the backup codes and lands on the clinic's dashboard."""

from __future__ import annotations

import re

import pytest
from django.core import mail

from tests.e2e.journeys.support import Authenticator, in_thread, key_from_base32, sign_in
from tests.factories import PASSWORD

pytestmark = pytest.mark.slow

NEW_PASSWORD = "winter-lantern-orchard-42"


def test_owner_invites_a_clinician_who_sets_a_password_and_enrols_mfa(clinic, browser):
    base, tenant = browser.base, clinic["tenant"]
    invitee = f"new.clinician@{tenant.slug}.test"

    owner = browser.staff()
    sign_in(owner, base, clinic["owner"].email, clinic["owner_app"], PASSWORD)
    owner.get_by_role("navigation", name="Main").get_by_role("link", name="Settings").click()
    owner.locator("main").get_by_role("link", name="People", exact=True).click()
    assert owner.get_by_role("heading", name="People", level=1).is_visible()
    owner.get_by_label("Email").fill(invitee)
    owner.get_by_label("Role", exact=True).select_option(label="Clinician")
    owner.get_by_role("button", name="Send invitation").click()
    assert owner.get_by_role("status").inner_text().strip() == f"Invitation sent to {invitee}."
    assert invitee in owner.locator("section", has_text="Pending invitations").inner_text()

    # The invitation arrives by email (the locmem backend: the live server runs in this process).
    [email] = [m for m in mail.outbox if m.to == [invitee]]
    path = re.search(r"/invite/[\w-]+/", email.body).group(0)

    clinician = browser.staff()  # another person, another browser
    clinician.goto(base + path)
    assert clinician.get_by_role("heading", name=f"Join {tenant.name}").is_visible()
    assert "Clinician" in clinician.locator("main").inner_text()
    clinician.get_by_label("Full name").fill("Nadia Brennan")
    clinician.get_by_label("Password", exact=True).fill(NEW_PASSWORD)
    clinician.get_by_label("Password confirm").fill(NEW_PASSWORD)
    clinician.get_by_role("button", name="Create account and join").click()

    clinician.wait_for_url("**/accounts/mfa/setup/**")
    assert clinician.get_by_role("heading", name="Set up two-factor sign-in").is_visible()
    assert clinician.locator(".qr svg").count() == 1
    clinician.get_by_text("Can't scan? Enter this key instead").click()  # "scanning": type the key in the app
    app = Authenticator(key_from_base32(clinician.locator("code.secret").inner_text()))
    clinician.get_by_label("Code").fill(app.code())
    clinician.get_by_role("button", name="Turn on").click()

    assert clinician.get_by_role("heading", name="Save your backup codes").is_visible()
    assert clinician.get_by_role("list", name="Backup codes").locator("li").count() >= 8
    clinician.get_by_role("link", name="I saved them, continue").click()
    clinician.wait_for_url(f"{base}/")
    assert clinician.get_by_role("heading", name=tenant.name, level=1).is_visible()
    assert "Clinician" in clinician.locator(".who").inner_text()

    def enrolled():
        from accounts.models import Membership, TotpDevice
        from accounts.tenancy import tenant_scope

        with tenant_scope(tenant):
            membership = Membership.objects.select_related("user").get(user__email=invitee)
        return membership.role, membership.user.full_name, TotpDevice.objects.filter(
            user=membership.user, confirmed=True).count()

    assert in_thread(enrolled) == ("clinician", "Nadia Brennan", 1)
