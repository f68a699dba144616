"""The patient's secure page as a phone sees it, with JavaScript off: touch targets of at least
44x44 CSS px (WCAG 2.5.5), no sideways scrolling, a label on every field, errors tied to their
fields (aria-describedby), ``<html lang>`` following the chosen language, a light page (HTML + CSS
+ JS under 30 KB, no script at all) and not one request to another site.

Shares the module-wide world of tests/e2e/test_accessibility.py (one committed clinic, one live
server, one Chromium); every check opens its own browser context.
"""

from __future__ import annotations

import os

import pytest

from messaging.patient_i18n import STRINGS
from tests.e2e.test_accessibility import (
    BIRTH,
    code_sent,
    committed_site,
    enter_birth_date,
    new_page,
    open_link,
    submit,
    verified,
)
from tests.e2e.test_demo import CHROMIUM_ARGS

pytestmark = pytest.mark.slow

WIDTH = 390  # the phone's viewport (tests.e2e.test_accessibility.PHONE)
TOUCH = 44  # CSS px, WCAG 2.1 2.5.5 (AAA) and Apple's HIG; Android asks 48 (patient.css gives 48)
PAGE_BUDGET = 30 * 1024  # bytes of HTML + CSS + JS for the thread page
CONTROLS = "a[href], button, input:not([type=hidden]), textarea, select"
FIELDS = "input:not([type=hidden]), textarea, select"


@pytest.fixture(scope="module")
def site(django_db_setup, django_db_blocker):
    with committed_site(django_db_blocker) as built:
        yield built


@pytest.fixture(scope="module")
def chromium(site):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"),
                                    args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def phone(chromium):
    return new_page(chromium, phone=True, java_script_enabled=False)


def _thread(page, site, lang):
    verified(page, site, site.appointment_token, lang)


def _signed_out(page, site, lang):
    open_link(page, site, site.appointment_token, lang)
    submit(page, "signout")


STEPS = {  # every step a patient can stand on, reached as a patient would
    "birth-date": lambda page, site, lang: open_link(page, site, site.appointment_token, lang),
    "code-request": lambda page, site, lang: verified(page, site, site.result_token, lang),
    "code-entry": code_sent,
    "thread": _thread,
    "signed-out": _signed_out,
    "invalid-link": lambda page, site, lang: page.goto(f"{site.url}/s/{'B' * 43}"),
}


def _boxes(page, selector: str) -> list[tuple[str, dict]]:
    """(a short description, bounding box) of every visible element matching ``selector``."""
    found = []
    for element in page.locator(selector).all():
        if element.is_visible():
            label = element.get_attribute("id") or element.get_attribute("name") or element.inner_text()[:30]
            found.append((f"{element.evaluate('e => e.tagName')}:{label}", element.bounding_box()))
    return found


@pytest.mark.parametrize("lang", ["en", "es"])
@pytest.mark.parametrize("step", list(STEPS))
def test_every_control_is_a_large_touch_target_and_nothing_scrolls_sideways(step, lang, site, chromium):
    with phone(chromium) as page:
        STEPS[step](page, site, lang)
        controls = _boxes(page, CONTROLS)
        everything = _boxes(page, "body *")
    if step not in ("signed-out", "invalid-link"):
        assert len(controls) >= 3  # the page's form, the language buttons, sign out
    small = [(what, round(b["width"]), round(b["height"])) for what, b in controls
             if b["width"] < TOUCH or b["height"] < TOUCH]
    assert small == []
    wide = [what for what, b in everything if b["x"] < 0 or b["x"] + b["width"] > WIDTH + 0.5]
    assert wide == []


@pytest.mark.parametrize("step", ["birth-date", "code-entry", "thread"])
def test_every_field_has_a_visible_label(step, site, chromium):
    """Each field has its own visible <label for=…>, and that label finds exactly that field."""
    with phone(chromium) as page:
        STEPS[step](page, site, "en")
        labels, found_by_label = {}, {}
        for field in page.locator(FIELDS).all():
            field_id = field.get_attribute("id")
            label = page.locator(f"label[for='{field_id}']")
            labels[field_id] = label.inner_text().strip() if label.count() == 1 and label.is_visible() else ""
            if labels[field_id]:
                found_by_label[field_id] = page.get_by_label(labels[field_id], exact=True).get_attribute("id")
    assert labels, "no fields on the page"
    assert all(labels.values()), labels
    assert found_by_label == {field_id: field_id for field_id in labels}


def _described_by(page, element) -> str:
    """The text of the elements an element's aria-describedby names (every id must exist)."""
    texts = []
    for ref in (element.get_attribute("aria-describedby") or "").split():
        target = page.locator(f"#{ref}")
        assert target.count() == 1, f"aria-describedby names a missing id: {ref}"
        texts.append(target.inner_text().strip())
    return " ".join(texts)


def _typo(page, site, lang):
    open_link(page, site, site.appointment_token, lang)
    enter_birth_date(page, 13, "x", 81)


def _wrong_date(page, site, lang):
    open_link(page, site, site.appointment_token, lang)
    enter_birth_date(page, BIRTH.month, BIRTH.day, 1991)


def _code_typo(page, site, lang):
    code_sent(page, site, lang)
    page.fill("#code", "12")
    submit(page, "code")


def _wrong_code(page, site, lang):
    code_sent(page, site, lang)
    page.fill("#code", "000000")
    submit(page, "code")


def _empty_reply(page, site, lang):
    _thread(page, site, lang)
    submit(page, "reply")


WRONG_ANSWERS = ("birth-date-wrong", "code-wrong")
ERRORS = {  # a mistake: (how, the element that must carry it, the keys of the messages it must read)
    "birth-date-typo": (_typo, "#dob-month", ["err_month"]),
    "birth-date-typo-year": (_typo, "#dob-year", ["err_year"]),
    "birth-date-wrong": (_wrong_date, "fieldset.pt-date", ["no_match"]),
    "code-typo": (_code_typo, "#code", ["err_code_format"]),
    "code-wrong": (_wrong_code, "#code", ["code_wrong"]),
    "reply-empty": (_empty_reply, "#reply", ["err_reply_required"]),
}


@pytest.mark.parametrize("lang", ["en", "es"])
@pytest.mark.parametrize("mistake", list(ERRORS))
def test_error_messages_are_tied_to_their_fields(mistake, lang, site, chromium):
    how, selector, keys = ERRORS[mistake]
    with phone(chromium) as page:
        how(page, site, lang)
        element = page.locator(selector)
        description = _described_by(page, element)
        invalid = element.get_attribute("aria-invalid")
        title = page.title()
        invalid_without_description = [e.get_attribute("id") for e in page.locator("[aria-invalid=true]").all()
                                       if not (e.get_attribute("aria-describedby") or "").strip()]
    for key in keys:
        assert STRINGS[lang][key] in description, description
    if mistake not in WRONG_ANSWERS:  # a wrong answer is not a badly filled field
        assert invalid == "true"
    assert invalid_without_description == []
    assert title.startswith(STRINGS[lang]["error_prefix"] + ": ")  # the tab says so before anything is read


def test_the_page_language_follows_the_patients_choice(site, chromium):
    with phone(chromium) as page:
        open_link(page, site, site.appointment_token, "en")
        english = page.locator("html").get_attribute("lang"), page.locator("h1").inner_text()
        page.locator("button[name=lang][value=es]").click()
        page.wait_for_load_state("load")
        spanish = page.locator("html").get_attribute("lang"), page.locator("h1").inner_text()
        pressed = page.locator("button[name=lang][value=es]").get_attribute("aria-pressed")
        own_lang = page.locator("button[name=lang][value=en]").get_attribute("lang")
        # The birth date's fields follow the Spanish order: day, month, year.
        order = [e.get_attribute("name") for e in page.locator(".pt-date-fields input").all()]
        page.locator("button[name=lang][value=en]").click()
        page.wait_for_load_state("load")
        back = page.locator("html").get_attribute("lang")
    assert english == ("en", STRINGS["en"]["verify_title"])
    assert spanish == ("es", STRINGS["es"]["verify_title"])
    assert pressed == "true" and own_lang == "en"  # "English" is read as English on a Spanish page
    assert order == ["day", "month", "year"]
    assert back == "en"


def test_the_thread_page_is_light_and_talks_to_no_other_site(site, chromium):
    """Bytes over the wire for the verified thread page with an empty cache (its HTML, CSS and
    any JS), and every request the whole visit made."""
    requests, weighed = [], []
    with phone(chromium) as page:
        page.on("request", lambda r: requests.append(r.url))
        _thread(page, site, "en")
        cookies = page.context.cookies()
    with phone(chromium) as page:  # a cold cache, the same patient session
        page.context.add_cookies(cookies)
        page.on("request", lambda r: requests.append(r.url))
        page.on("requestfinished", lambda r: weighed.append(
            (r.resource_type, r.url, r.sizes()["responseBodySize"] + r.sizes()["responseHeadersSize"])))
        response = page.goto(f"{site.url}/s/")  # the thread page, as on a reload
        page.wait_for_load_state("load")
        html = response.text()
        heading = page.locator("h1").inner_text()
    assert heading == STRINGS["en"]["thread_title"]
    off_site = [url for url in requests if not url.startswith(site.url + "/")]
    assert off_site == []
    kinds = {kind for kind, _, _ in weighed}
    assert {"document", "stylesheet"} <= kinds and "script" not in kinds and "<script" not in html
    assert all(size > 0 for kind, _, size in weighed if kind in ("document", "stylesheet")), weighed
    page_bytes = sum(size for kind, _, size in weighed if kind in ("document", "stylesheet", "script"))
    assert page_bytes < PAGE_BUDGET, weighed


def test_a_patient_confirms_the_appointment_with_javascript_off(site, chromium):
    with phone(chromium) as page:
        _thread(page, site, "es")
        page.locator("button[name=action][value=confirm]").click()
        page.wait_for_load_state("load")
        notice = page.get_by_role("status").inner_text().strip()
        status = page.locator(".pt-facts dd").last.inner_text().strip()
    assert notice == STRINGS["es"]["notice_confirm"]
    assert status == STRINGS["es"]["status_confirmed"]
