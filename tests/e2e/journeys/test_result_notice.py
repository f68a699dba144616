"""Journey 4: a clinician sends a result notice; the patient passes the birth-date check and is
then asked for a one-time code texted to their phone; five wrong codes lock the link (the
neutral "cannot be used" page, no hint why), and the staff conversation shows the lock."""

from __future__ import annotations

import datetime
import re

import pytest
from playwright.sync_api import expect

from tests.e2e.journeys.support import fill_birth_date, link_token, sign_in, sms_to
from tests.factories import PASSWORD, make_textable_patient

pytestmark = pytest.mark.slow

BIRTH = datetime.date(1990, 8, 14)
PHONE = "+12025550184"
RESULT = "Your thyroid panel is normal: TSH 2.1 mIU/L. No change to your dose."


@pytest.fixture
def patient(clinic):
    return make_textable_patient(tenant=clinic["tenant"], owner=clinic["owner"], given_name="Jonah",
                                 family_name="Vasquez-Lund", birth_date=BIRTH, phone=PHONE)


def test_result_notice_needs_the_texted_code_and_five_wrong_codes_lock_the_link(clinic, patient, browser):
    base = browser.base

    doctor = browser.staff()
    sign_in(doctor, base, clinic["clinician"].email, clinic["clinician_app"], PASSWORD)
    doctor.goto(f"{base}/patients/{patient.pk}/")
    doctor.get_by_role("link", name="Send a secure message").click()
    doctor.get_by_label("Kind").select_option(label="Result notice")
    doctor.get_by_role("textbox", name="Message").fill(RESULT)
    doctor.get_by_role("button", name="Send").click()
    doctor.wait_for_url("**/inbox/t/**")
    thread_url = doctor.url
    expect(doctor.locator("#messages")).to_contain_text(RESULT)
    expect(doctor.locator(".badge-locked")).to_have_count(0)

    [(kind, notice)] = sms_to(PHONE)
    assert kind == "link_notice" and "TSH" not in notice and "thyroid" not in notice.lower()

    phone = browser.phone()
    phone.goto(f"{base}/s/{link_token(notice)}")
    fill_birth_date(phone, BIRTH)
    expect(phone.get_by_role("heading", name="Enter the code we text you", level=1)).to_be_visible()
    assert RESULT not in phone.content()
    phone.get_by_role("button", name="Text me a code").click()
    expect(phone.get_by_text("We sent a 6-digit code to your phone.")).to_be_visible()

    codes = [body for kind, body in sms_to(PHONE) if kind == "one_time_code"]
    assert len(codes) == 1
    real = re.search(r"\b(\d{6})\b", codes[0]).group(1)
    assert "Jonah" not in codes[0] and "TSH" not in codes[0]

    wrong = [f"{(int(real) + n) % 10**6:06d}" for n in range(1, 6)]
    for attempt, code in enumerate(wrong, start=1):
        phone.get_by_label("6-digit code").fill(code)
        phone.get_by_role("button", name="Check code").click()
        if attempt < 5:
            expect(phone.get_by_role("alert")).to_have_text(
                "That code is not right or has expired. Try again or send a new code.")
            assert RESULT not in phone.content()

    # Locked: the neutral page every unusable link gets, in English and Spanish.
    expect(phone.get_by_role("heading", name="This link cannot be used", level=1)).to_be_visible()
    assert RESULT not in phone.content() and "locked" not in phone.content().lower()
    phone.goto(f"{base}/s/")  # the right code cannot help any more: the session is gone
    assert RESULT not in phone.content()

    doctor.goto(thread_url)
    expect(doctor.locator(".badge-locked")).to_have_text("link locked")
    expect(doctor.get_by_role("region", name="Secure links").locator(".link-state")).to_have_text("locked")
