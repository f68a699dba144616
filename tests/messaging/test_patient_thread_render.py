"""The thread page's messages and access list, built in Python (``views_patient._MESSAGE_HTML``,
``_ACCESS_HTML``) rather than by the template engine: every value escaped as autoescape would
(``linebreaksbr`` for bodies), each message on its side, and the page's error summary only
when there are errors."""

from __future__ import annotations

import random

from django.template.defaultfilters import linebreaksbr
from django.test import Client
from django.utils.html import escape

from accounts.models import Tenant
from accounts.tenancy import tenant_scope
from audit.events import AuditEventType
from messaging import selectors, services
from messaging.patient_i18n import EN
from tests.messaging.conftest import BIRTH_DATE, sent_sms, token_of

CLINIC_BODY = "<script>alert('x')</script> & \"quoted\"\r\nsecond line\rthird line\n\nfifth"
PATIENT_BODY = "<b>Thanks</b> & see you\nat 10 o'clock"
HOSTILE_CLINIC = "A & B <Clinic>"
HOSTILE_STAFF = "Dr <i>Alice</i> & Co"


def _signed_in(token: str) -> Client:
    client = Client(REMOTE_ADDR=f"10.{random.randint(0, 255)}.{random.randint(0, 255)}.{random.randint(1, 254)}")
    assert client.get(f"/s/{token}").status_code == 303
    date = BIRTH_DATE
    assert client.post("/s/verify", {"year": date.year, "month": date.month, "day": date.day}).status_code == 303
    return client


def test_messages_and_access_entries_are_escaped_as_autoescape_would(tenant_a, alice, patient,
                                                                    django_capture_on_commit_callbacks):
    with tenant_scope(tenant_a), django_capture_on_commit_callbacks(execute=True):
        message = services.message_send(tenant=tenant_a, actor=alice, patient=patient, body=CLINIC_BODY)
    token = token_of(sent_sms(to=patient.phone)[-1])
    Tenant.objects.filter(pk=tenant_a.pk).update(name=HOSTILE_CLINIC)
    alice.full_name = HOSTILE_STAFF
    alice.save(update_fields=["full_name"])
    with tenant_scope(tenant_a):
        selectors.thread_open(tenant=tenant_a, actor=alice, thread_id=message.thread_id)
    client = _signed_in(token)
    assert client.post("/s/reply", {"body": PATIENT_BODY, "nonce": "n" * 20}).status_code == 303

    page = client.get("/s/")
    text = page.content.decode()
    assert page.status_code == 200
    # The bodies as {{ body|linebreaksbr }} under autoescape prints them.
    clinic_html, patient_html = linebreaksbr(CLINIC_BODY, autoescape=True), linebreaksbr(PATIENT_BODY, autoescape=True)
    assert f'<p class="pt-body">{clinic_html}</p>' in text
    assert f'<p class="pt-body">{patient_html}</p>' in text
    assert "<script" not in text and "<b>Thanks" not in text and "<i>Alice" not in text
    assert HOSTILE_CLINIC not in text and escape(HOSTILE_CLINIC) in text
    # Oldest first, each on its side, with who wrote it.
    clinic_at = text.index(f'<li class="pt-message pt-theirs">\n      <p class="pt-meta"><strong>{escape(HOSTILE_CLINIC)}')
    patient_at = text.index(f'<li class="pt-message pt-mine">\n      <p class="pt-meta"><strong>{EN["from_you"]}')
    assert clinic_at < patient_at
    # Who at the clinic read it.
    assert f"<li><strong>{escape(HOSTILE_STAFF)}</strong> · " in text
    # No errors: no summary, no invalid field.
    assert "pt-error-summary" not in text and "aria-invalid" not in text and EN["error_prefix"] not in text

    refused = client.post("/s/reply", {"body": "   ", "nonce": "m" * 20})
    text = refused.content.decode()
    assert refused.status_code == 400
    assert "pt-error-summary" in text and 'id="reply-error"' in text and f"<title>{EN['error_prefix']}: " in text
    assert text.count('aria-invalid="true"') == 1  # the reply only, not the appointment note


def test_a_thread_no_one_at_the_clinic_opened_says_so(tenant_a, alice, patient, django_capture_on_commit_callbacks):
    with tenant_scope(tenant_a), django_capture_on_commit_callbacks(execute=True):
        services.message_send(tenant=tenant_a, actor=alice, patient=patient, body="Hello")
    client = _signed_in(token_of(sent_sms(to=patient.phone)[-1]))
    text = client.get("/s/").content.decode()
    assert EN["access_none"] in text and '<ul class="pt-access">' not in text
    assert text.count('class="pt-message ') == 1


def test_a_view_whose_event_cannot_be_stored_shows_nothing_and_records_nothing(
        committed_db, tenant_a, alice, patient, monkeypatch, django_capture_on_commit_callbacks):
    """The event rides on the read (``audit_record_with_reads``): when the database refuses it, the
    read fails with it, and the patient gets the error page, not the thread."""
    from audit import services as audit_services
    from audit.models import AuditEvent

    with tenant_scope(tenant_a), django_capture_on_commit_callbacks(execute=True):
        services.message_send(tenant=tenant_a, actor=alice, patient=patient, body="Your results are ready to discuss.")
    client = _signed_in(token_of(sent_sms(to=patient.phone)[-1]))
    assert "Your results are ready" in client.get("/s/").content.decode()
    with tenant_scope(tenant_a):
        opened = AuditEvent.objects.filter(event_type=AuditEventType.THREAD_OPENED, actor_type="patient")
        before = opened.count()
    real = audit_services._insert_one_params

    def refused(event):
        params = real(event)
        params[9] = "not-a-uuid"  # patient_id: the database refuses the row
        return params

    monkeypatch.setattr(audit_services, "_insert_one_params", refused)
    client.raise_request_exception = False
    page = client.get("/s/")
    assert page.status_code == 500
    assert "Your results are ready" not in page.content.decode()
    with tenant_scope(tenant_a):
        assert opened.count() == before
