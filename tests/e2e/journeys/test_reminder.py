"""Journey 3: the front desk books tomorrow's appointment; the reminder job texts the patient
a link; the patient opens it on a phone, confirms the appointment on the secure page; the
front desk's appointments page shows it confirmed."""

from __future__ import annotations

import datetime
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import expect

from tests.e2e.journeys.support import fill_birth_date, in_thread, link_token, sign_in, sms_to
from tests.factories import PASSWORD, make_textable_patient

pytestmark = pytest.mark.slow

BIRTH = datetime.date(1966, 4, 2)
PHONE = "+12025550183"


@pytest.fixture
def patient(clinic):
    return make_textable_patient(tenant=clinic["tenant"], owner=clinic["owner"], given_name="Elif",
                                 family_name="Marchetti", birth_date=BIRTH, phone=PHONE)


def _run_reminder_job():
    from reminders.tasks import reminders_due

    return reminders_due()


def test_reminder_for_tomorrow_is_confirmed_by_the_patient(clinic, patient, browser):
    base, tenant = browser.base, clinic["tenant"]
    tomorrow = (datetime.datetime.now(ZoneInfo(tenant.timezone)) + datetime.timedelta(days=1)).date()

    desk = browser.staff()
    sign_in(desk, base, clinic["staff"].email, clinic["staff_app"], PASSWORD)
    desk.goto(f"{base}/patients/{patient.pk}/")
    desk.get_by_role("link", name="Book appointment").click()
    desk.get_by_label("Starts").fill(f"{tomorrow.isoformat()}T10:00")
    desk.get_by_label("Ends").fill(f"{tomorrow.isoformat()}T10:30")
    desk.get_by_label("Type", exact=True).fill("Follow-up")
    desk.get_by_label("Provider").fill("Dr. Rivera")
    desk.get_by_label("Location").fill("Room 2")
    desk.get_by_role("button", name="Book").click()
    expect(desk.get_by_role("status")).to_contain_text("Appointment booked.")
    status = desk.locator("select[id^='status-']")
    expect(status).to_have_count(1)
    expect(status).to_have_value("booked")
    day_url = desk.url
    assert sms_to(PHONE) == []  # nothing texted yet: the reminder job sends it

    # The beat task (every minute in production). Booked less than 48 h ahead: due at once.
    assert in_thread(_run_reminder_job) == 1
    [(kind, text)] = sms_to(PHONE)
    assert kind == "link_notice"
    assert "Elif" not in text and "Marchetti" not in text and "Rivera" not in text and "10:00" not in text

    phone = browser.phone()
    phone.goto(f"{base}/s/{link_token(text)}")
    fill_birth_date(phone, BIRTH)
    card = phone.get_by_role("region", name="Your appointment")
    expect(card).to_contain_text("Dr. Rivera")
    expect(card).to_contain_text("Room 2")
    card.get_by_role("button", name="Confirm").click()
    expect(phone.get_by_role("status")).to_have_text("Thank you. Your appointment is confirmed.")
    expect(phone.get_by_role("region", name="Your appointment")).to_contain_text("Confirmed")

    desk.goto(day_url)
    status = desk.locator("select[id^='status-']")
    expect(status).to_have_value("confirmed")
    assert status.locator("option:checked").inner_text().strip() == "Confirmed"
    desk.goto(f"{base}/patients/{patient.pk}/")
    expect(desk.get_by_role("region", name="Appointments").locator("tbody tr")).to_contain_text("Confirmed")
