"""The rows a run needs, written through the product's own services (as the tests' factories do).

Runs in the bench's main process after ``django.setup()`` with ``bench.settings``, connected
as the application role (RLS in force, as in production).
"""

from __future__ import annotations

import datetime
import secrets
from dataclasses import dataclass, field

from django.test import Client
from django.utils import timezone

from accounts.permissions import Role
from accounts.tenancy import tenant_scope
from messaging import links, services
from messaging.models import PatientSession
from tests.factories import (
    login_verified,
    make_conversation,
    make_member,
    make_tenant,
    make_textable_patient,
)

BIRTH_DATE = datetime.date(1984, 3, 9)
CLINIC_NUMBER_PAGE = "+12025550100"
CLINIC_NUMBER_INBOX = "+12025550101"
_phone_seq = iter(range(1000, 9999))

OUT_BODY = ("Your lab results are in and look normal. Please keep taking the same dose and book a "
            "follow-up visit in three months. Reply here if you have any questions.")
IN_BODY = "Thank you, that is good to hear. Can I come in on a Tuesday morning?"


def _phone() -> str:
    return f"+1202555{next(_phone_seq):04d}"


@dataclass
class World:
    page_tenant: object = None
    page_owner: object = None
    page_threads: list = field(default_factory=list)  # (thread, link) of 20-message threads
    page_cookies: list[str] = field(default_factory=list)  # verified patient sessions, one per client
    inbox_tenant: object = None
    inbox_owner: object = None
    inbox_patients: list = field(default_factory=list)
    staff_cookie: str = ""
    csrf_secret: str = ""


def verified_session(*, tenant, link) -> str:
    """A patient session on ``link`` with the birth date already given; returns the cookie value."""
    with tenant_scope(tenant):
        session, key = links.patient_session_start(tenant=tenant, link=link)
        PatientSession.objects.filter(pk=session.pk).update(dob_verified_at=timezone.now())
    return key


def fresh_sessions(*, tenant, links_: list, count: int) -> list[str]:
    """``count`` unverified sessions (for the identity-check POST), spread over ``links_``."""
    keys = []
    with tenant_scope(tenant):
        for i in range(count):
            _, key = links.patient_session_start(tenant=tenant, link=links_[i % len(links_)])
            keys.append(key)
    return keys


def build(*, page_threads: int = 8, thread_messages: int = 20, inbox_threads: int = 50, log=print) -> World:
    w = World()
    w.page_tenant = make_tenant(name="Bench Page Clinic", slug="bench-page")
    _set_number(w.page_tenant, CLINIC_NUMBER_PAGE)
    w.page_owner = make_member(tenant=w.page_tenant, role=Role.OWNER, email="owner@bench-page.test")
    for _ in range(page_threads):
        patient = make_textable_patient(tenant=w.page_tenant, owner=w.page_owner, birth_date=BIRTH_DATE, phone=_phone())
        w.page_threads.append(make_conversation(tenant=w.page_tenant, owner=w.page_owner, patient=patient,
                                                    count=thread_messages, out_body=OUT_BODY, in_body=IN_BODY))
    w.page_cookies = [verified_session(tenant=w.page_tenant, link=link) for _, link in w.page_threads]
    log(f"seeded {page_threads} patient threads of {thread_messages} messages")

    w.inbox_tenant = make_tenant(name="Bench Inbox Clinic", slug="bench-inbox")
    _set_number(w.inbox_tenant, CLINIC_NUMBER_INBOX)
    w.inbox_owner = make_member(tenant=w.inbox_tenant, role=Role.OWNER, email="owner@bench-inbox.test")
    for i in range(inbox_threads):
        patient = make_textable_patient(tenant=w.inbox_tenant, owner=w.inbox_owner, given_name="Inbox",
                                        family_name=f"Patient{i}", phone=_phone())
        with tenant_scope(w.inbox_tenant):
            services.message_send(tenant=w.inbox_tenant, actor=w.inbox_owner, patient=patient, body=OUT_BODY)
        w.inbox_patients.append(patient)
    client = Client()
    login_verified(client, w.inbox_owner, tenant=w.inbox_tenant)
    w.staff_cookie = client.cookies["caretext_session"].value
    w.csrf_secret = secrets.token_hex(16)  # 32 characters: Django accepts the unmasked secret as the token
    log(f"seeded {inbox_threads} inbox threads")
    analyze()
    return w


def analyze() -> None:
    """Statistics for the planner, as autovacuum keeps them on a live database: a freshly seeded
    one has none, and the planner then guesses (e.g. a clinic's index scan with the primary key
    as a filter) in ways production never sees."""
    from bench import env

    with env.owner_connection() as conn:
        conn.autocommit = True
        conn.execute("ANALYZE")


def _set_number(tenant, number: str) -> None:
    tenant.sms_number = number
    tenant.save(update_fields=["sms_number"])
