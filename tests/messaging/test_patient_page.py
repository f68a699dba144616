"""The patient's secure page (/s/) through the Django test client: link → cookie → birth date →
(code) → thread, and everything that must not happen on the way."""

from __future__ import annotations

import datetime
import logging
import random
import re

import pytest
from django.db import transaction
from django.test import Client

from accounts.middleware import SecurityHeadersMiddleware
from accounts.tenancy import tenant_scope
from audit.events import AuditEventType
from audit.models import AuditEvent
from messaging import links, selectors, services, views_patient
from messaging.models import (
    Direction,
    Message,
    MessageKind,
    PatientSession,
    SecureLink,
    Thread,
    ThreadStatus,
)
from messaging.patient_i18n import EN, ES
from messaging.routing import link_for_token
from patients.models import Appointment, AppointmentStatus
from tests.factories import make_appointment, make_textable_patient
from tests.messaging.conftest import BIRTH_DATE, sent_sms, token_of

BODY = "Ada, your potassium result is slightly high; please call Dr. Rivera."
UNKNOWN = "A" * 43
NEUTRAL = "This link is invalid or has expired. Contact your clinic for a new one."
PHI = ("Ada", "Quill", "1984", "03/09", "3/9/", "09/03", "+1202555", "2025550171", "potassium", "Rivera")


def _client() -> Client:
    # A fresh address per client: the per-IP counters live in the shared Redis cache.
    return Client(REMOTE_ADDR=f"10.{random.randint(0, 255)}.{random.randint(0, 255)}.{random.randint(1, 254)}")


@pytest.fixture
def send(tenant_a, alice, patient, django_capture_on_commit_callbacks):
    """``send(body, ...)`` → (message, token of the SMS it caused)."""

    def _send(body: str = BODY, *, tenant=None, actor=None, to=None, **kwargs):
        tenant, actor, to = tenant or tenant_a, actor or alice, to or patient
        with tenant_scope(tenant), django_capture_on_commit_callbacks(execute=True):
            message = services.message_send(tenant=tenant, actor=actor, patient=to, body=body, **kwargs)
        return message, token_of(sent_sms(to=to.phone)[-1])

    return _send


@pytest.fixture
def appointment(tenant_a, alice, patient):
    return make_appointment(tenant=tenant_a, patient=patient, actor=alice)


def _open(client: Client, token: str):
    return client.get(f"/s/{token}")


def _dob(client: Client, date: datetime.date = BIRTH_DATE, **override):
    data = {"year": str(date.year), "month": str(date.month), "day": str(date.day), **override}
    return client.post("/s/verify", data)


def _signed_in(token: str) -> Client:
    client = _client()
    assert _open(client, token).status_code == 303
    assert _dob(client).status_code == 303
    return client


def _text(response) -> str:
    return response.content.decode()


def _events(tenant, event_type) -> list[AuditEvent]:
    with tenant_scope(tenant):
        return list(AuditEvent.objects.filter(event_type=event_type).order_by("occurred_at", "id"))


def _session_of(client: Client, tenant) -> PatientSession:
    from messaging.routing import session_for_key

    session = session_for_key(client.cookies[views_patient.COOKIE].value)
    assert session is not None and session.tenant_id == tenant.pk
    return session


# --- the link -------------------------------------------------------------------------------------


def test_open_exchanges_the_token_for_a_cookie_and_redirects_it_out_of_the_address_bar(send, settings):
    _, token = send()
    client = _client()
    response = _open(client, token)
    assert response.status_code == 303
    assert response["Location"] == "/s/"
    assert token not in response["Location"]
    cookie = response.cookies["ct_patient"]
    assert cookie.value and cookie.value != token
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Lax"
    assert cookie["path"] == "/s/"
    assert 0 < int(cookie["max-age"]) <= int(links.SESSION_IDLE.total_seconds())
    assert bool(cookie["secure"]) is settings.SECURE_COOKIES
    settings.SECURE_COOKIES = True  # production
    assert _client().get(f"/s/{token}").cookies["ct_patient"]["secure"] is True
    page = client.get("/s/")
    assert page.status_code == 200 and EN["verify_title"] in _text(page)
    assert "csrftoken" in client.cookies  # the forms' CSRF cookie is set for the anonymous patient


def test_a_post_redirect_leaves_the_cookie_to_the_page_it_leads_to(send):
    """The 303 after a POST goes to /s/, which renews the session cookie; the redirect itself
    does not set it again. Pages (and their form errors) renew it; sign-out still deletes it."""
    _, token = send()
    client = _client()
    assert _open(client, token).status_code == 303
    wrong = _dob(client, datetime.date(1990, 1, 1))
    assert wrong.status_code == 400 and int(wrong.cookies["ct_patient"]["max-age"]) > 0
    right = _dob(client)
    assert right.status_code == 303 and "ct_patient" not in right.cookies
    assert right["Cache-Control"] == "no-store" and right["Referrer-Policy"] == "no-referrer"
    page = client.get(right["Location"])
    assert page.status_code == 200 and int(page.cookies["ct_patient"]["max-age"]) > 0
    signed_out = client.post("/s/signout")
    assert signed_out.status_code == 303 and signed_out.cookies["ct_patient"]["max-age"] == 0


def test_every_patient_page_links_its_stylesheet_and_icon(send):
    """The static addresses are worked out once per process (``views_patient._urls``), not per page."""
    from django.templatetags.static import static

    _, token = send()
    client = _client()
    pages = [_client().get("/s/" + "A" * 43), _client().get("/s/")]  # the neutral page, the ended page
    assert _open(client, token).status_code == 303
    pages.append(client.get("/s/"))  # the birth-date step
    assert _dob(client).status_code == 303
    pages.append(client.get("/s/"))  # the thread
    for page in pages:
        html = _text(page)
        assert f'<link rel="stylesheet" href="{static("css/patient.css")}">' in html
        assert f'<link rel="icon" href="{static("img/favicon.svg")}" type="image/svg+xml">' in html


def test_unknown_expired_revoked_superseded_and_locked_links_look_the_same(
        tenant_a, alice, patient, send, time_machine):
    time_machine.move_to(datetime.datetime.now(datetime.UTC))
    _, superseded = send()
    with tenant_scope(tenant_a), transaction.atomic():
        links.link_create(tenant=tenant_a, thread=Thread.objects.get(), actor=alice)  # a newer link
        assert link_for_token(superseded).revoked_reason == "superseded"
    other = make_textable_patient(tenant=tenant_a, owner=alice, birth_date=BIRTH_DATE, phone="+12025550188")
    _, revoked = send(to=other)
    with tenant_scope(tenant_a):
        links.link_revoke(tenant=tenant_a, actor=alice, thread=link_for_token(revoked).thread)
    third = make_textable_patient(tenant=tenant_a, owner=alice, birth_date=BIRTH_DATE, phone="+12025550189")
    _, locked = send(to=third)
    locker = _client()
    _open(locker, locked)
    for _ in range(links.MAX_FAILURES):
        _dob(locker, datetime.date(1990, 1, 1))
    fourth = make_textable_patient(tenant=tenant_a, owner=alice, birth_date=BIRTH_DATE, phone="+12025550190")
    _, expiring = send(to=fourth)
    assert _open(_client(), expiring).status_code == 303  # usable until it expires
    assert link_for_token(revoked).revoked_reason == "staff"
    assert link_for_token(locked).locked_until is not None

    responses = {name: _open(_client(), token) for name, token in
                 (("unknown", UNKNOWN), ("superseded", superseded), ("revoked", revoked), ("locked", locked))}
    time_machine.shift(datetime.timedelta(days=links.DEFAULT_LIFETIME_DAYS, minutes=1))
    responses["expired"] = _open(_client(), expiring)

    bodies = {name: r.content for name, r in responses.items()}
    assert {r.status_code for r in responses.values()} == {404}
    assert len(set(bodies.values())) == 1, "the pages differ"
    assert NEUTRAL in _text(responses["unknown"])
    assert "Clinic A" not in _text(responses["locked"])  # not even the clinic of a known link
    assert all("ct_patient" not in r.cookies for r in responses.values())


def test_per_ip_open_limit_gives_the_same_neutral_page(send, monkeypatch):
    _, token = send()
    unknown = _open(_client(), UNKNOWN)
    monkeypatch.setattr(links, "IP_OPENS_PER_WINDOW", 2)
    client = _client()
    assert _open(client, token).status_code == 303
    assert _open(client, UNKNOWN).status_code == 404
    limited = _open(client, token)
    assert limited.status_code == 404
    assert limited.content == unknown.content


def test_the_token_never_reaches_the_logs(send, caplog, tenant_a):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="django.request")  # even if someone turns it up
    _, token = send()
    client = _client()
    assert _open(client, UNKNOWN).status_code == 404
    assert client.post(f"/s/{UNKNOWN}").status_code == 405
    assert _open(client, token).status_code == 303
    assert _dob(client, datetime.date(1999, 1, 1)).status_code == 400
    assert _dob(client).status_code == 303
    assert client.get("/s/").status_code == 200
    with tenant_scope(tenant_a):
        links.link_revoke(tenant=tenant_a, actor=None, thread=Thread.objects.get())
    assert _open(_client(), token).status_code == 404
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert token not in logged
    assert UNKNOWN not in logged
    assert "Quill" not in logged and "1984" not in logged


# --- before verification: nothing about the patient -----------------------------------------------


def test_no_phi_before_verification(send, tenant_a, appointment):
    _, token = send(kind=MessageKind.REMINDER, appointment=appointment)
    client = _client()
    pages = [_open(client, token), client.get("/s/"), _dob(client, datetime.date(1984, 3, 10)),
             _dob(client, datetime.date(1970, 1, 1), month="13"),  # (what was typed is echoed back)
             client.post("/s/reply", {"body": "hello"}),
             client.post("/s/appointment", {"action": "confirm"}), client.get("/s/")]
    for page in pages:
        text = _text(page)
        for value in PHI:
            assert value not in text, (value, page.status_code)
    assert "Clinic A" in _text(pages[1])  # only the clinic's name
    with tenant_scope(tenant_a):
        assert not Message.objects.filter(direction=Direction.INBOUND).exists()  # unverified: nothing written


def test_verified_patient_reads_the_thread_and_it_is_audited(send, tenant_a, alice):
    message, token = send()
    with tenant_scope(tenant_a):
        selectors.thread_open(tenant=tenant_a, actor=alice, thread_id=message.thread_id)  # staff read it
    client = _client()
    _open(client, token)
    assert _dob(client)["Location"] == "/s/?ok=verified"
    page = client.get("/s/")
    text = _text(page)
    assert page.status_code == 200
    assert BODY.replace("'", "&#x27;") in text
    assert EN["access_title"] in text and "A member of the clinic" in text
    assert EN["notice_verified"] not in text  # the notice shows only after the redirect
    assert EN["notice_verified"] in _text(client.get("/s/?ok=verified"))
    with tenant_scope(tenant_a):
        assert Message.objects.get(pk=message.pk).patient_read_at is not None
    verified = _events(tenant_a, AuditEventType.LINK_VERIFIED)
    opened = [e for e in _events(tenant_a, AuditEventType.THREAD_OPENED) if e.actor_type == "patient"]
    assert [e.actor_type for e in verified] == ["patient"]
    assert opened and opened[0].object_id == str(message.thread_id)


# --- wrong answers and bad input ------------------------------------------------------------------


def test_five_wrong_birth_dates_lock_the_link_and_tell_staff(send, tenant_a):
    _, token = send()
    client = _client()
    _open(client, token)
    for _ in range(links.MAX_FAILURES - 1):
        response = _dob(client, datetime.date(1984, 3, 10))
        assert response.status_code == 400
        text = _text(response).lower()
        assert EN["no_match"].lower() in text
        assert "remain" not in text and "left" not in text  # never how close the lock is
    assert _dob(client, BIRTH_DATE).status_code == 303  # right before the fifth wrong one: still works
    client = _client()
    _open(client, token)
    with tenant_scope(tenant_a):
        assert SecureLink.objects.get().failed_attempts == 0  # success resets the count
    for _ in range(links.MAX_FAILURES - 1):
        _dob(client, datetime.date(1984, 3, 10))
    final = _dob(client, datetime.date(1984, 3, 10))
    assert final.status_code == 404 and NEUTRAL in _text(final)
    assert final.cookies["ct_patient"]["max-age"] == 0
    assert _dob(client, BIRTH_DATE).status_code == 200  # the session is over: no more tries
    assert _open(_client(), token).status_code == 404  # and the link is locked
    with tenant_scope(tenant_a):
        thread = Thread.objects.get()
        assert thread.link_locked_at is not None and thread.staff_unread >= 1
    failed = _events(tenant_a, AuditEventType.LINK_FAILED)
    lock = _events(tenant_a, AuditEventType.LINK_LOCKED)
    assert len(failed) == 2 * links.MAX_FAILURES - 1
    assert len(lock) == 1
    assert {e.actor_type for e in failed + lock} == {"patient"}


@pytest.mark.parametrize(("data", "field", "message"), [
    ({"month": "13"}, "month", EN["err_month"]),
    ({"day": "31", "month": "2"}, "day", EN["err_day_month"]),
    ({"year": "19x4"}, "year", EN["err_year"]),
    ({"day": ""}, "day", EN["err_day"]),
    ({"month": "-1"}, "month", EN["err_month"]),
])
def test_bad_date_formats_name_the_field_and_do_not_count(send, tenant_a, data, field, message):
    _, token = send()
    client = _client()
    _open(client, token)
    response = _dob(client, **data)
    text = _text(response)
    assert response.status_code == 400
    assert f"{EN[field]}: {message}" in text
    assert 'aria-invalid="true"' in text
    with tenant_scope(tenant_a):
        assert SecureLink.objects.get().failed_attempts == 0
    assert _events(tenant_a, AuditEventType.LINK_FAILED) == []


def test_per_ip_failure_limit(send, tenant_a, monkeypatch):
    monkeypatch.setattr(links, "IP_FAILURES_PER_WINDOW", 2)
    _, token = send()
    client = _client()
    _open(client, token)
    assert _dob(client, datetime.date(1984, 3, 10)).status_code == 400
    assert _dob(client, datetime.date(1984, 3, 11)).status_code == 400
    blocked = _dob(client, BIRTH_DATE)  # even the right answer waits
    assert blocked.status_code == 429 and EN["too_many_tries"] in _text(blocked)
    assert len(_events(tenant_a, AuditEventType.LINK_FAILED)) == 2
    assert _events(tenant_a, AuditEventType.LINK_VERIFIED) == []


# --- step-up: a texted code -----------------------------------------------------------------------


def test_result_notice_needs_a_code_that_is_texted_alone_and_works_once(
        send, tenant_a, django_capture_on_commit_callbacks):
    _, token = send(kind=MessageKind.RESULT_NOTICE)
    client = _signed_in(token)
    page = client.get("/s/")
    assert EN["code_title"] in _text(page) and EN["send_code"] in _text(page)
    assert all(value not in _text(page) for value in PHI)
    assert client.post("/s/reply", {"body": "hi"})["Location"] == "/s/"  # not verified yet: back to the step
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post("/s/code/send")["Location"] == "/s/?ok=code_sent"
    [sms] = [s for s in sent_sms() if s.kind == "one_time_code"]
    code = re.search(r"\b(\d{6})\b", sms.body).group(1)
    assert sms.body.startswith("Test Clinic: ") and not re.search(r"\d{3,}", sms.body.replace(code, ""))
    assert all(value not in sms.body for value in PHI)  # the code, the clinic's label and fixed words only
    assert [e.actor_type for e in _events(tenant_a, AuditEventType.LINK_CODE_SENT)] == ["patient"]
    assert EN["code_sent_intro"] in _text(client.get("/s/"))
    too_soon = client.post("/s/code/send")
    assert too_soon.status_code == 429 and EN["code_too_soon"] in _text(too_soon)

    bad = client.post("/s/code", {"code": "12ab"})
    assert bad.status_code == 400 and EN["err_code_format"] in _text(bad)
    assert _events(tenant_a, AuditEventType.LINK_FAILED) == []  # a typo does not count
    wrong = client.post("/s/code", {"code": f"{(int(code) + 1) % 10**6:06d}"})
    assert wrong.status_code == 400 and EN["code_wrong"] in _text(wrong)
    assert [e.details["step"] for e in _events(tenant_a, AuditEventType.LINK_FAILED)] == ["code"]
    assert client.post("/s/code", {"code": code})["Location"] == "/s/?ok=verified"
    assert BODY.split(",")[1].strip() in _text(client.get("/s/"))

    second = _signed_in(token)  # another session of the same link: the code was spent
    assert second.post("/s/code", {"code": code}).status_code == 400
    assert EN["code_title"] in _text(second.get("/s/"))


def test_code_expires_after_ten_minutes(send, tenant_a, time_machine, django_capture_on_commit_callbacks):
    time_machine.move_to(datetime.datetime.now(datetime.UTC))
    _, token = send(kind=MessageKind.RESULT_NOTICE)
    client = _signed_in(token)
    with django_capture_on_commit_callbacks(execute=True):
        client.post("/s/code/send")
    code = re.search(r"(\d{6})", [s for s in sent_sms() if s.kind == "one_time_code"][0].body).group(1)
    time_machine.shift(datetime.timedelta(minutes=6))
    client.get("/s/")  # keeps the session alive
    time_machine.shift(datetime.timedelta(minutes=5))
    response = client.post("/s/code", {"code": code})
    assert response.status_code == 400 and EN["code_wrong"] in _text(response)


def test_links_older_than_a_day_need_a_code(send, time_machine):
    time_machine.move_to(datetime.datetime.now(datetime.UTC))
    _, token = send()
    time_machine.shift(datetime.timedelta(hours=25))
    client = _signed_in(token)
    page = client.get("/s/")
    assert EN["code_title"] in _text(page) and "potassium" not in _text(page)


# --- the session ----------------------------------------------------------------------------------


def test_idle_session_ends_after_ten_minutes(send, time_machine):
    time_machine.move_to(datetime.datetime.now(datetime.UTC))
    _, token = send()
    client = _signed_in(token)
    time_machine.shift(datetime.timedelta(minutes=9))
    assert "potassium" in _text(client.get("/s/"))  # each request restarts the idle clock
    time_machine.shift(datetime.timedelta(minutes=9))
    assert "potassium" in _text(client.get("/s/"))
    time_machine.shift(datetime.timedelta(minutes=11))
    ended = client.get("/s/")
    assert ended.status_code == 200
    assert EN["ended_title"] in _text(ended) and "potassium" not in _text(ended)
    assert ended.cookies["ct_patient"]["max-age"] == 0


def test_no_cookie_forged_cookie_and_ended_session_get_the_same_page(send):
    _, token = send()
    bare = _client().get("/s/")
    forged = _client()
    forged.cookies["ct_patient"] = "B" * 43
    link_as_cookie = _client()
    link_as_cookie.cookies["ct_patient"] = token  # the link token is not a session key
    pages = [bare, forged.get("/s/"), link_as_cookie.get("/s/")]
    assert {p.status_code for p in pages} == {200}
    assert len({p.content for p in pages}) == 1
    assert EN["ended_title"] in _text(bare) and ES["ended_title"] in _text(bare)


def test_sign_out_ends_the_session(send, tenant_a):
    _, token = send()
    client = _signed_in(token)
    key = client.cookies["ct_patient"].value
    response = client.post("/s/signout")
    assert response.status_code == 303 and response["Location"] == "/s/?signed_out=1"
    assert response.cookies["ct_patient"]["max-age"] == 0
    assert EN["signed_out_title"] in _text(client.get(response["Location"]))
    replay = _client()
    replay.cookies["ct_patient"] = key
    page = replay.get("/s/")
    assert EN["ended_title"] in _text(page) and "potassium" not in _text(page)
    with tenant_scope(tenant_a):
        assert PatientSession.objects.get().ended_at is not None
    assert [e.actor_type for e in _events(tenant_a, AuditEventType.PATIENT_SIGNED_OUT)] == ["patient"]


def test_csrf_is_required(send):
    _, token = send()
    client = Client(enforce_csrf_checks=True, REMOTE_ADDR="10.9.8.7")
    _open(client, token)
    page = client.get("/s/")
    assert page.status_code == 200, _text(page)
    assert client.post("/s/verify", {"year": "1984", "month": "3", "day": "9"}).status_code == 403
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', _text(page)).group(1)
    data = {"year": "1984", "month": "3", "day": "9", "csrfmiddlewaretoken": csrf}
    # What a browser sends under Referrer-Policy: no-referrer: refused (why the form pages are same-origin).
    assert client.post("/s/verify", data, HTTP_ORIGIN="null").status_code == 403
    response = client.post("/s/verify", data, HTTP_ORIGIN="http://testserver")
    assert response.status_code == 303


# --- replying -------------------------------------------------------------------------------------


def _nonce(page) -> str:
    return re.search(r'name="nonce" value="([^"]+)"', _text(page)).group(1)


def test_reply_reaches_staff_and_a_double_submit_stores_one(send, tenant_a):
    message, token = send()
    client = _signed_in(token)
    nonce = _nonce(client.get("/s/"))
    for _ in range(2):
        response = client.post("/s/reply", {"body": "Thank you, I will call tomorrow.", "nonce": nonce})
        assert response.status_code == 303 and response["Location"] == "/s/?ok=sent"
    page = _text(client.get("/s/?ok=sent"))
    assert "Thank you, I will call tomorrow." in page and EN["notice_sent"] in page
    with tenant_scope(tenant_a):
        inbound = Message.objects.filter(direction=Direction.INBOUND)
        assert inbound.count() == 1 and inbound.get().source == "patient"
        assert Thread.objects.get().staff_unread == 1
    received = _events(tenant_a, AuditEventType.MESSAGE_RECEIVED)
    assert [e.actor_type for e in received] == ["patient"]


def test_empty_and_oversized_replies_are_refused_with_a_field_message(send, tenant_a):
    _, token = send()
    client = _signed_in(token)
    empty = client.post("/s/reply", {"body": "   ", "nonce": "n" * 20})
    assert empty.status_code == 400 and EN["err_reply_required"] in _text(empty)
    long = client.post("/s/reply", {"body": "x" * (services.PATIENT_REPLY_MAX + 1), "nonce": "m" * 20})
    assert long.status_code == 400
    assert EN["err_reply_too_long"].replace("{max}", str(services.PATIENT_REPLY_MAX)) in _text(long)
    assert 'id="reply-error"' in _text(long)
    with tenant_scope(tenant_a):
        assert not Message.objects.filter(direction=Direction.INBOUND).exists()


def test_reply_to_a_closed_thread_reopens_it(send, tenant_a, alice):
    message, token = send()
    with tenant_scope(tenant_a):
        services.thread_set_status(tenant=tenant_a, actor=alice, thread=message.thread, status=ThreadStatus.CLOSED)
    client = _signed_in(token)
    assert client.post("/s/reply", {"body": "One more question", "nonce": "q" * 22}).status_code == 303
    with tenant_scope(tenant_a):
        thread = Thread.objects.get()
        assert thread.status == ThreadStatus.OPEN and thread.staff_unread == 1


# --- appointments ---------------------------------------------------------------------------------


def _status(tenant, appointment) -> str:
    with tenant_scope(tenant):
        return Appointment.objects.get(pk=appointment.pk).status


def test_appointment_confirm_reschedule_cancel_and_double_clicks(send, tenant_a, appointment):
    _, token = send("Reminder: your visit is tomorrow.", kind=MessageKind.REMINDER, appointment=appointment)
    client = _signed_in(token)
    page = _text(client.get("/s/"))
    assert EN["appointment_title"] in page and "Dr. Rivera" in page and EN["confirm"] in page
    for action, status in (("confirm", AppointmentStatus.CONFIRMED), ("reschedule",
                                                                       AppointmentStatus.RESCHEDULE_REQUESTED)):
        for _ in range(2):  # the second click changes nothing
            response = client.post("/s/appointment", {"action": action, "note": "Mornings suit me"})
            assert response.status_code == 303 and response["Location"] == f"/s/?ok={action}"
        assert _status(tenant_a, appointment) == status
    assert client.post("/s/appointment", {"action": "cancel"})["Location"] == "/s/?ok=cancel"
    assert _status(tenant_a, appointment) == AppointmentStatus.CANCELLED
    page = _text(client.get("/s/?ok=cancel"))
    assert EN["notice_cancel"] in page and EN["appointment_closed"] in page
    late = client.post("/s/appointment", {"action": "confirm"})
    assert late.status_code == 409 and EN["err_appointment"] in _text(late)
    bogus = client.post("/s/appointment", {"action": "delete"})
    assert bogus.status_code == 400
    with tenant_scope(tenant_a):
        answers = [m.body for m in Message.objects.filter(direction=Direction.INBOUND).order_by("created_at", "id")]
    assert answers == ["Confirmed the appointment.\n\nMornings suit me",
                       "Asked to reschedule the appointment.\n\nMornings suit me", "Cancelled the appointment."]
    assert len(_events(tenant_a, AuditEventType.PATIENT_APPOINTMENT_ACTION)) == 3


# --- isolation ------------------------------------------------------------------------------------


def test_a_session_reaches_only_its_own_thread_and_clinic(send, tenant_a, tenant_b, alice, charlie, patient):
    _, token_a = send()
    patient_b = make_textable_patient(tenant=tenant_b, owner=charlie, birth_date=BIRTH_DATE, phone="+12025550172")
    message_b, token_b = send("Clinic B only: bring your inhaler.", tenant=tenant_b, actor=charlie, to=patient_b)
    other_a = make_textable_patient(tenant=tenant_a, owner=alice, birth_date=BIRTH_DATE, phone="+12025550173")
    message_a2, _ = send("Another patient's note about insulin.", to=other_a)

    client = _signed_in(token_a)
    page = _text(client.get("/s/"))
    assert "potassium" in page and "inhaler" not in page and "insulin" not in page
    # Ids in the request are ignored: the session is bound to its thread.
    for thread_id in (message_b.thread_id, message_a2.thread_id):
        client.post("/s/reply", {"body": "Swapped id", "nonce": "s" * 20 + str(thread_id)[:4],
                                 "thread": str(thread_id), "thread_id": str(thread_id)})
    with tenant_scope(tenant_b):
        assert not Message.objects.filter(direction=Direction.INBOUND).exists()
    with tenant_scope(tenant_a):
        assert set(Message.objects.filter(direction=Direction.INBOUND).values_list("thread_id", flat=True)) == {
            Thread.objects.get(patient=patient).pk}

    client_b = _signed_in(token_b)
    page_b = _text(client_b.get("/s/"))
    assert "inhaler" in page_b and "potassium" not in page_b and "Clinic B" in page_b
    # A's session key used after A's link is revoked: over; B's key still works for B only.
    with tenant_scope(tenant_a):
        links.link_revoke(tenant=tenant_a, actor=alice, thread=Thread.objects.get(patient=patient))
    assert EN["ended_title"] in _text(client.get("/s/"))
    assert "inhaler" in _text(client_b.get("/s/"))


# --- language -------------------------------------------------------------------------------------


def test_spanish_from_the_patient_record_and_from_the_switch(tenant_a, alice, send):
    hablante = make_textable_patient(tenant=tenant_a, owner=alice, birth_date=BIRTH_DATE, phone="+12025550174",
                                     preferred_language="es")
    _, token = send(to=hablante)
    client = _client()
    _open(client, token)
    page = _text(client.get("/s/"))
    assert '<html lang="es">' in page and ES["birth_date"] in page and EN["birth_date"] not in page
    assert page.index('name="day"') < page.index('name="month"')  # día / mes / año
    bad = _dob(client, month="13")
    assert bad.status_code == 400 and ES["err_month"] in _text(bad)

    _, token_en = send()
    english = _signed_in(token_en)
    assert '<html lang="en">' in _text(english.get("/s/"))
    response = english.post("/s/language", {"lang": "es"})
    assert response.status_code == 303
    page = _text(english.get(response["Location"]))
    assert '<html lang="es">' in page and ES["thread_title"] in page and ES["notice_language"] in page
    assert english.post("/s/language", {"lang": "fr"}).status_code == 400


def test_every_string_is_translated():
    assert set(EN) == set(ES)
    assert all(ES[k] for k in ES)


# --- headers --------------------------------------------------------------------------------------


def test_every_patient_page_is_private(send, django_capture_on_commit_callbacks):
    _, token = send(kind=MessageKind.RESULT_NOTICE)
    client = _client()
    responses = [_open(_client(), UNKNOWN), _client().get("/s/"), _open(client, token), client.get("/s/"),
                 _dob(client, month="13"), _dob(client)]
    responses.append(client.get("/s/"))  # the code step
    with django_capture_on_commit_callbacks(execute=True):
        responses.append(client.post("/s/code/send"))
    responses += [client.post("/s/code", {"code": "000000"}), client.post("/s/language", {"lang": "es"}),
                  client.post("/s/signout"), client.get("/s/?signed_out=1")]
    for response in responses:
        assert response["Cache-Control"] == "no-store", response
        assert response["Content-Security-Policy"] == SecurityHeadersMiddleware.CSP
        text = _text(response)
        # A page with a POST form must let the browser send its Origin (no-referrer sends
        # "Origin: null", which the CSRF check refuses); every other response sends nothing.
        expected = "same-origin" if '<form method="post"' in text else "no-referrer"
        assert response["Referrer-Policy"] == expected, (response.status_code, text[:200])
        if response.status_code in (200, 400, 404) and response.get("Content-Type", "").startswith("text/html"):
            assert "<script" not in text and "style=" not in text and " on" + "click" not in text
            assert '<meta name="viewport"' in text
    assert responses[2]["Referrer-Policy"] == "no-referrer"  # the link's redirect
    assert responses[0]["Referrer-Policy"] == "no-referrer"  # the neutral page


# --- the audit table for patient URLs (tests/audit/test_coverage.py PATIENT_AUDITED) ----------------


def _audited_request(name: str, client: Client, token: str):
    if name == "patient-home":
        return client.get("/s/")
    if name == "patient-verify":
        return _dob(_opened(token))
    if name == "patient-code-send":
        return client.post("/s/code/send")
    if name == "patient-code":
        return client.post("/s/code", {"code": "000000"})  # a wrong code is audited as LINK_FAILED
    if name == "patient-reply":
        return client.post("/s/reply", {"body": "Thanks", "nonce": "n" * 16})
    if name == "patient-appointment":
        return client.post("/s/appointment", {"action": "confirm"})
    if name == "patient-signout":
        return client.post("/s/signout")
    raise AssertionError(name)


def _opened(token: str) -> Client:
    client = _client()
    assert _open(client, token).status_code == 303
    return client


ALSO = {"patient-code": AuditEventType.LINK_FAILED}  # a wrong answer writes the failure instead


@pytest.mark.parametrize("name", ["patient-home", "patient-verify", "patient-code-send", "patient-code",
                                  "patient-reply", "patient-appointment", "patient-signout"])
def test_each_patient_url_writes_the_event_the_coverage_table_declares(name, tenant_a, alice, patient, send,
                                                                       appointment):
    from tests.audit.test_coverage import PATIENT_AUDITED

    if name == "patient-appointment":
        _, token = send("See you soon.", kind=MessageKind.REMINDER, appointment=appointment)
    elif name in ("patient-code-send", "patient-code"):  # result notices need the texted code
        _, token = send(kind=MessageKind.RESULT_NOTICE)
    else:
        _, token = send()
    client = _signed_in(token)
    if name == "patient-code":
        assert client.post("/s/code/send").status_code == 303
    expected = ALSO.get(name, PATIENT_AUDITED[name])
    before = len(_events(tenant_a, expected))
    response = _audited_request(name, client, token)
    assert response.status_code < 500
    events = _events(tenant_a, expected)
    assert len(events) > before, name
    assert events[-1].actor_type == "patient"


def test_a_clinic_answer_does_not_sign_the_patient_out_but_the_old_token_opens_nothing(send, tenant_a, alice,
                                                                                       patient):
    _, first = send("How are you feeling today?")
    reader = _signed_in(first)
    nonce = _nonce(reader.get("/s/"))
    assert reader.post("/s/reply", {"body": "Better, thanks. Can I come later?", "nonce": nonce}).status_code == 303
    # The clinic answers within 24 h of the patient's message: sent at once, with a newer link
    # that supersedes the first one.
    _, second = send("We moved your visit to 3pm.")
    assert second != first
    # The open session goes on and shows the answer without a new sign-in...
    page = reader.get("/s/")
    assert page.status_code == 200 and "We moved your visit to 3pm." in _text(page)
    # ...but the superseded token opens nothing any more, and the new one works.
    assert _open(_client(), first).status_code == 404
    assert _open(_client(), second).status_code == 303
    # A staff revoke still ends the open session at once.
    with tenant_scope(tenant_a):
        thread = Thread.objects.get(patient=patient)
        links.link_revoke(tenant=tenant_a, actor=alice, thread=thread)
    after = _text(reader.get("/s/"))
    assert "We moved your visit to 3pm." not in after and "How are you feeling" not in after
