"""Journey 2: the front desk adds a patient, records SMS consent and sends a secure message;
the text carries only the neutral notice and the link; the patient, on a phone with JavaScript
off, opens it, gets the birth date wrong once, then right, reads and replies; the front desk,
still on the conversation page, sees the reply arrive without reloading and answers; the
patient, still on the secure page, reloads and reads the answer; the new text's link works
too, the first one no longer does."""

from __future__ import annotations

import datetime

import pytest
from playwright.sync_api import expect

from tests.e2e.journeys.support import fill_birth_date, link_token, sign_in, sms_to
from tests.factories import PASSWORD, daytime_zone

pytestmark = pytest.mark.slow

GIVEN, FAMILY, MRN = "Rosalind", "Achterberg", "LFC-77120"
BIRTH = datetime.date(1979, 11, 23)
PHONE = "+12025550182"
BODY = "Your iron levels are back to normal. Keep the supplements for one more month."
REPLY = "Great news, thank you! Should I book a check in three months?"
ANSWER = "Yes please: the front desk can book you for February."


def test_message_reaches_patient_by_link_only_and_reply_appears_live(clinic, settings, browser):
    settings.STAFF_POLL_SECONDS = 1
    base = browser.base

    desk = browser.staff()
    sign_in(desk, base, clinic["staff"].email, clinic["staff_app"], PASSWORD)

    # A new patient, through the patient form.
    desk.get_by_role("navigation", name="Main").get_by_role("link", name="Patients").click()
    desk.get_by_role("link", name="Add patient").click()
    desk.get_by_label("MRN").fill(MRN)
    desk.get_by_label("First name").fill(GIVEN)
    desk.get_by_label("Last name").fill(FAMILY)
    desk.get_by_label("Date of birth").fill(BIRTH.isoformat())
    desk.get_by_label("Mobile phone").fill("(202) 555-0182")
    desk.get_by_label("Time zone (optional)").fill(daytime_zone())  # midday there: no quiet-hours hold
    desk.get_by_role("button", name="Add patient").click()
    expect(desk.get_by_role("heading", name=f"{GIVEN} {FAMILY}", level=1)).to_be_visible()
    patient_url = desk.url

    # SMS consent, in the consent panel of the patient page.
    consent = desk.locator("#consent")
    expect(consent.get_by_role("status")).to_contain_text("No consent for this number")
    consent.get_by_label("Consent", exact=True).select_option("grant")
    consent.get_by_label("How it was given").select_option("verbal")
    consent.get_by_label("Note").fill("Agreed at the front desk, read the disclosure aloud")
    consent.get_by_role("button", name="Record").click()
    expect(desk.locator("#consent").get_by_role("status")).to_contain_text("May be texted")

    # The message.
    desk.goto(patient_url)
    desk.get_by_role("link", name="Send a secure message").click()
    desk.get_by_role("textbox", name="Message").fill(BODY)
    desk.get_by_role("button", name="Send").click()
    desk.wait_for_url("**/inbox/t/**")
    expect(desk.locator("#messages")).to_contain_text(BODY)

    # The text: the neutral notice and the link, nothing about the patient or the message.
    [(kind, text)] = sms_to(PHONE)
    assert kind == "link_notice"
    for secret in (GIVEN, FAMILY, MRN, BODY, "iron", BIRTH.isoformat(), "11/23", "1979"):
        assert secret.lower() not in text.lower(), secret
    token = link_token(text)

    # The patient, on a phone with JavaScript off.
    phone = browser.phone()
    phone.goto(f"{base}/s/{token}")
    assert phone.url == f"{base}/s/"  # the token left the address bar
    expect(phone.get_by_role("heading", name="Confirm it is you", level=1)).to_be_visible()
    assert BODY not in phone.content() and GIVEN not in phone.content()
    fill_birth_date(phone, BIRTH.replace(year=BIRTH.year + 1))
    expect(phone.get_by_role("alert")).to_have_text("That does not match our records. Please try again.")
    assert BODY not in phone.content()
    fill_birth_date(phone, BIRTH)
    expect(phone.get_by_role("heading", name="Your messages", level=1)).to_be_visible()
    expect(phone.get_by_text(BODY)).to_be_visible()

    # Staff stay on the conversation page; nothing reloads it from here on.
    desk.evaluate("window.__journeyMarker = 'still the same page'")
    navigations = []
    desk.on("framenavigated", lambda frame: navigations.append(frame.url) if frame == desk.main_frame else None)

    phone.get_by_label("Your reply").fill(REPLY)
    phone.get_by_role("button", name="Send reply").click()
    expect(phone.get_by_role("status")).to_have_text("Your reply was sent to the clinic.")

    expect(desk.locator("#messages")).to_contain_text(REPLY, timeout=10_000)  # the live update
    assert desk.evaluate("window.__journeyMarker") == "still the same page" and navigations == []

    desk.get_by_role("textbox", name="Reply", exact=True).fill(ANSWER)
    desk.locator("#reply").get_by_role("button", name="Send reply").click()
    expect(desk.locator("#messages")).to_contain_text(ANSWER)

    # The answer goes out as a new link notice, again without its text. The new link supersedes the
    # first, but the patient's open session goes on: a reload shows the answer.
    texts = sms_to(PHONE)
    assert [kind for kind, _ in texts] == ["link_notice", "link_notice"]
    assert all(ANSWER not in body and REPLY not in body and GIVEN not in body for _, body in texts)
    phone.reload()
    expect(phone.get_by_text(ANSWER)).to_be_visible()
    # The first text's link opens nothing any more; the new one works after the birth date.
    phone.context.clear_cookies()
    phone.goto(f"{base}/s/{link_token(texts[0][1])}")
    assert ANSWER not in phone.content() and BODY not in phone.content()
    phone.goto(f"{base}/s/{link_token(texts[-1][1])}")
    fill_birth_date(phone, BIRTH)
    expect(phone.get_by_text(ANSWER)).to_be_visible()
    expect(phone.get_by_text(REPLY)).to_be_visible()
    expect(phone.get_by_text(BODY)).to_be_visible()
