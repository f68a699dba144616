"""Query budgets for the pages and webhooks issue #12 measures (items 6-8): the patient's secure
page and its identity check, the staff inbox, the patients list, Twilio's delivery and
inbound-SMS webhooks.

Each test asserts two things: the count does not grow with the rows shown (no N+1), and it
stays within a budget written out query by query, so a new query on these paths is a choice
someone makes, not an accident. The audit trail's own statements per event (an insert, and
the chain's sealing) belong to ``audit.services``: they are measured here once
(``audit_cost``) and added per event the path writes, so each budget counts this path's own
queries. Counts are taken through the Django test client with the full middleware stack;
inside the test's transaction every nested ``atomic`` adds a SAVEPOINT and its RELEASE, which
production (autocommit) does not run. The clinic's data key is cached per process, so every
measured request runs after a warm-up request.
"""

from __future__ import annotations

import datetime
import itertools
from urllib.parse import urlencode

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from twilio.request_validator import RequestValidator

from accounts.tenancy import tenant_scope
from audit.events import AuditEventType
from audit.models import AuditEvent
from messaging import links, services
from messaging.models import Direction, InboundSms, Message, OutboundSms, PatientSession, SmsStatus
from messaging.outbox import status_callback_url
from tests.factories import login_verified, make_conversation, make_textable_patient
from tests.messaging.conftest import BIRTH_DATE

BODY = "Your results are back and look normal. Keep the same dose; see you in three months."
TOKEN = "test-twilio-auth-token"
SITE = "https://ct.example.org"
CLINIC_NUMBER = "+12025550100"
_phones = itertools.count(2000)
_sids = itertools.count(1)


def _count(client: Client, method: str, path: str, **kwargs) -> tuple[int, object]:
    with CaptureQueriesContext(connection) as queries:
        response = getattr(client, method)(path, **kwargs)
    return len(queries), response


def _phone() -> str:
    return f"+1202555{next(_phones):04d}"


# --- the patient's secure page --------------------------------------------------------------------------------


def _thread(tenant, owner, *, messages: int):
    """A thread of ``messages`` alternating clinic and patient messages, and a link to it."""
    patient = make_textable_patient(tenant=tenant, owner=owner, birth_date=BIRTH_DATE, phone=_phone())
    return make_conversation(tenant=tenant, owner=owner, patient=patient, count=messages, out_body=BODY)


def _patient_client(tenant, link, *, verified: bool) -> Client:
    with tenant_scope(tenant):
        session, key = links.patient_session_start(tenant=tenant, link=link)
        if verified:
            PatientSession.objects.filter(pk=session.pk).update(dob_verified_at=timezone.now())
    client = Client()
    client.cookies["ct_patient"] = key
    return client


# The patient's session by its key hash, its clinic's scope entered, with its clinic, link,
# thread, patient and appointment (1: one statement, ``caretext_patient_session_open``, prepared
# once per connection and then only executed: the PREPARE is not counted); the messages, the
# clinic's access log and the THREAD_OPENED event, one query of two prepared statements with the
# event's INSERT riding on the first (1: ``audit_record_with_reads``); leaving the scope (1).
SECURE_PAGE_BUDGET = 3


def test_secure_page_queries_do_not_grow_with_the_thread(tenant_a, alice, audit_cost):
    _, short_link = _thread(tenant_a, alice, messages=2)
    _, long_link = _thread(tenant_a, alice, messages=20)
    short, long = (_patient_client(tenant_a, link, verified=True) for link in (short_link, long_link))
    for client in (short, long):
        assert client.get("/s/").status_code == 200  # warm-up: the data key, the idle clock
    small, _ = _count(short, "get", "/s/")
    large, response = _count(long, "get", "/s/")
    assert response.status_code == 200 and "three months. (18)" in response.content.decode()
    assert large == small <= SECURE_PAGE_BUDGET + audit_cost - 1, (small, audit_cost)  # the INSERT is in the read


def test_secure_page_still_audits_every_view_and_marks_new_messages_read(tenant_a, alice, audit_cost):
    thread, link = _thread(tenant_a, alice, messages=4)
    client = _patient_client(tenant_a, link, verified=True)
    for _ in range(3):
        assert client.get("/s/").status_code == 200
    with tenant_scope(tenant_a):
        opened = AuditEvent.objects.filter(event_type=AuditEventType.THREAD_OPENED, object_id=str(thread.pk),
                                           actor_type="patient")
        assert opened.count() == 3  # one PHI read, one event: none batched away
        unread = Message.objects.filter(thread=thread, direction=Direction.OUTBOUND, patient_read_at__isnull=True)
        assert not unread.exists()
        services.message_send(tenant=tenant_a, actor=alice, thread=thread, body="One more thing.")
    page_queries, _ = _count(client, "get", "/s/")
    with tenant_scope(tenant_a):
        assert not unread.exists()  # the new message was shown, so it is read
    # the read receipt, only when there is one: one UPDATE after the read
    # (the INSERT in the read: one less; the receipt: one more)
    assert page_queries <= SECURE_PAGE_BUDGET + audit_cost, (page_queries, audit_cost)


def test_the_idle_clock_is_written_at_most_once_a_minute(tenant_a, alice, time_machine):
    time_machine.move_to(timezone.now(), tick=False)
    _, link = _thread(tenant_a, alice, messages=2)
    client = _patient_client(tenant_a, link, verified=True)
    with tenant_scope(tenant_a):
        session = PatientSession.objects.get(link=link, dob_verified_at__isnull=False)
    assert client.get("/s/").status_code == 200
    time_machine.shift(datetime.timedelta(seconds=30))
    quiet, _ = _count(client, "get", "/s/")
    time_machine.shift(datetime.timedelta(seconds=31))
    touched, _ = _count(client, "get", "/s/")
    assert touched == quiet + 1
    with tenant_scope(tenant_a):
        session.refresh_from_db()
    assert session.last_seen_at == timezone.now()


# The session gate as above (2 with leaving the scope); the session marked, the link's counters
# reset and LINK_VERIFIED written are one statement, counted as the event's insert (audit_cost),
# with no transaction of its own (no savepoint here, no BEGIN and COMMIT in production).
VERIFY_BUDGET = 2


def test_identity_check_post_budget(tenant_a, alice, audit_cost):
    _, link = _thread(tenant_a, alice, messages=2)
    _patient_client(tenant_a, link, verified=False).post("/s/verify", {"year": "1984", "month": "3", "day": "9"})
    client = _patient_client(tenant_a, link, verified=False)
    with CaptureQueriesContext(connection) as captured:
        response = client.post("/s/verify", data={"year": str(BIRTH_DATE.year), "month": str(BIRTH_DATE.month),
                                                 "day": str(BIRTH_DATE.day)})
    assert response.status_code == 303
    assert len(captured) <= VERIFY_BUDGET + audit_cost
    assert not [q for q in captured.captured_queries if "SAVEPOINT" in q["sql"]]
    with tenant_scope(tenant_a):
        link.refresh_from_db()
        assert link.verified_at is not None and link.failed_attempts == 0
        assert AuditEvent.objects.filter(event_type=AuditEventType.LINK_VERIFIED, object_id=str(link.pk)).count() == 2


# --- staff lists --------------------------------------------------------------------------------------------


def _staff_client(user, tenant) -> Client:
    client = Client()
    login_verified(client, user, tenant=tenant)
    return client


def _open_threads(tenant, owner, count: int) -> None:
    for i in range(count):
        patient = make_textable_patient(tenant=tenant, owner=owner, given_name="Inbox", family_name=f"Patient{i}",
                                        phone=_phone())
        with tenant_scope(tenant):
            services.message_send(tenant=tenant, actor=owner, patient=patient, body=BODY)


# The signed-in staff request (4: session, the user with their MFA device (accounts.backends), the
# user's memberships with their clinics in one round trip (the user setting set and cleared around
# them), the clinic's scope; 1 more to leave it), the colleagues for the filter and the box counts
# with the texts from unknown numbers in one round trip (1), the page's rows (1; its size comes
# from the box counts); plus PATIENT_SEARCHED. The nav's unread count comes with the box counts.
INBOX_BUDGET = 7


def test_inbox_queries_do_not_grow_with_rows(tenant_a, alice, audit_cost):
    _open_threads(tenant_a, alice, 2)
    client = _staff_client(alice, tenant_a)
    client.get("/inbox/")
    few, _ = _count(client, "get", "/inbox/")
    _open_threads(tenant_a, alice, 28)  # more than a page
    many, response = _count(client, "get", "/inbox/")
    assert response.status_code == 200 and len(response.context["rows"]) == 25
    assert "Patient27" in response.content.decode()
    assert many == few <= INBOX_BUDGET + audit_cost
    filtered, response = _count(client, "get", "/inbox/", data={"box": "all", "kind": "general"})
    assert response.status_code == 200
    assert filtered == many + 1  # a filtered box is counted by the paginator


# The signed-in staff request as for the inbox (5), then in a transaction (savepoint, release)
# the patients count and page (2), the nav's unread count (1); plus PATIENT_SEARCHED.
PATIENT_LIST_BUDGET = 10


def test_patients_list_queries_do_not_grow_with_rows(tenant_a, alice, audit_cost):
    _open_threads(tenant_a, alice, 2)
    client = _staff_client(alice, tenant_a)
    client.get("/patients/")
    few, _ = _count(client, "get", "/patients/")
    _open_threads(tenant_a, alice, 20)
    many, response = _count(client, "get", "/patients/")
    assert response.status_code == 200
    assert many == few <= PATIENT_LIST_BUDGET + audit_cost


# --- Twilio webhooks ----------------------------------------------------------------------------------------


@pytest.fixture
def twilio(settings, tenant_a):
    settings.SITE_URL, settings.TWILIO_AUTH_TOKEN, settings.SMS_GATEWAY = SITE, TOKEN, "local"
    tenant_a.sms_number = CLINIC_NUMBER
    tenant_a.save(update_fields=["sms_number"])
    return tenant_a


def _baa_signed_long_ago(tenant) -> None:
    """As a process sees a clinic whose BAA is settled (signed minutes or years ago): remembered,
    no query (``consent.selectors.tenant_has_baa``). The factory signs it "now", in the test's
    transaction, which the selector rightly keeps asking about."""
    from consent import selectors

    selectors._BAA_SIGNED.add((connection.settings_dict["NAME"], tenant.pk))


def _signed_post(client: Client, url: str, params: dict) -> tuple[int, object]:
    signature = RequestValidator(TOKEN).compute_signature(url, params)
    return _count(client, "post", url.removeprefix(SITE), data=urlencode(params),
                  content_type="application/x-www-form-urlencoded", headers={"X-Twilio-Signature": signature})


# The clinic by id (1), its scope (1, and 1 to leave it), the outbox row moved on by its provider
# id in one conditional UPDATE (1): "sent" and "delivered" need no lock, read or transaction.
STATUS_BUDGET = 4


def test_status_webhook_budget(twilio, alice):
    patient = make_textable_patient(tenant=twilio, owner=alice, phone=_phone())
    with tenant_scope(twilio):
        services.message_send(tenant=twilio, actor=alice, patient=patient, body=BODY)
        sid = f"SM{next(_sids):032x}"
        OutboundSms.objects.update(status=SmsStatus.SENT, provider_id=sid)
    params = {"MessageSid": sid, "SmsSid": sid, "AccountSid": "AC" + "0" * 32, "MessageStatus": "delivered"}
    queries, response = _signed_post(Client(), status_callback_url(twilio), params)
    assert response.status_code == 200
    with tenant_scope(twilio):
        assert OutboundSms.objects.get(provider_id=sid).status == SmsStatus.DELIVERED
    assert queries <= STATUS_BUDGET


# The clinic by number (1), its scope (2); in one transaction (savepoint, release): the open
# thread of the patients with that number, locked, with its patient, and in the same statement
# whether a webhook endpoint takes the message, the patient's consent (the signed BAA is
# remembered per process) and the thread's unsent notice (1), the message and the InboundSms row
# (2; a repeated SID is refused by its unique index, not looked up first), the thread bumped (1);
# plus MESSAGE_RECEIVED. The unsent notice (its link young and live) answers the text as it is.
INBOUND_BUDGET = 9
# The same when the thread's last notice has gone: a fresh link (1), the unsent notice looked for
# under lock (1) and a new one written (1); plus LINK_CREATED.
INBOUND_NEW_NOTICE_BUDGET = INBOUND_BUDGET + 3


def test_inbound_webhook_budget(twilio, alice, audit_cost):
    patient = make_textable_patient(tenant=twilio, owner=alice, phone=_phone())
    with tenant_scope(twilio):
        services.message_send(tenant=twilio, actor=alice, patient=patient, body=BODY)
    _baa_signed_long_ago(twilio)
    url = SITE + "/integrations/twilio/inbound"
    counts = []
    for _ in range(2):
        sid = f"SM{next(_sids):032x}"
        params = {"MessageSid": sid, "SmsSid": sid, "AccountSid": "AC" + "0" * 32, "From": patient.phone,
                  "To": CLINIC_NUMBER, "Body": "Thanks, see you on Tuesday.", "NumMedia": "0"}
        queries, response = _signed_post(Client(), url, params)
        assert response.status_code == 200
        counts.append(queries)
    with tenant_scope(twilio):
        assert InboundSms.objects.filter(outcome="message").count() == 2
    assert counts[0] == counts[1] <= INBOUND_BUDGET + audit_cost


def test_inbound_webhook_budget_when_the_last_notice_went(twilio, alice, audit_cost):
    from integrations.sms.faulty import FaultyGateway
    from messaging.outbox import sms_send_one

    patient = make_textable_patient(tenant=twilio, owner=alice, phone=_phone())
    with tenant_scope(twilio):
        services.message_send(tenant=twilio, actor=alice, patient=patient, body=BODY)
    _baa_signed_long_ago(twilio)
    url = SITE + "/integrations/twilio/inbound"
    counts = []
    for _ in range(2):
        with tenant_scope(twilio):
            for row in OutboundSms.objects.filter(status=SmsStatus.QUEUED):
                assert sms_send_one(tenant=twilio, sms_id=row.pk, gateway=FaultyGateway()) == "sent"
        sid = f"SM{next(_sids):032x}"
        params = {"MessageSid": sid, "SmsSid": sid, "AccountSid": "AC" + "0" * 32, "From": patient.phone,
                  "To": CLINIC_NUMBER, "Body": "Thanks, see you on Tuesday.", "NumMedia": "0"}
        queries, response = _signed_post(Client(), url, params)
        assert response.status_code == 200
        counts.append(queries)
    with tenant_scope(twilio):
        assert OutboundSms.objects.filter(notification="link_notice", status=SmsStatus.QUEUED).count() == 1
    assert counts[0] == counts[1] <= INBOUND_NEW_NOTICE_BUDGET + 2 * audit_cost
