"""The core flow through services: send → outbox → local gateway SMS with only a link → open →
verify → read → reply → staff see it."""

from __future__ import annotations

import datetime

import pytest

from accounts.tenancy import tenant_scope
from audit.events import AuditEventType
from audit.models import AuditEvent
from messaging import links, selectors, services
from messaging.models import Direction, OutboundSms, SmsStatus, Thread
from messaging.routing import link_for_token
from tests.messaging.conftest import BIRTH_DATE, sent_sms, token_of


def test_send_writes_message_link_audit_and_outbox_and_sms_carries_only_the_link(
        tenant_a, alice, patient, django_capture_on_commit_callbacks):
    with tenant_scope(tenant_a), django_capture_on_commit_callbacks(execute=True):
        message = services.message_send(tenant=tenant_a, actor=alice, patient=patient,
                                        body="Your lab results for Ada Quill are normal.")
    [sms] = sent_sms()
    assert sms.to == "+12025550171"
    assert sms.kind == "link_notice"
    assert "Ada" not in sms.body and "Quill" not in sms.body and "lab" not in sms.body
    assert sms.body.startswith("Test Clinic: You have a new secure message. http://")
    with tenant_scope(tenant_a):
        row = OutboundSms.objects.get()
        assert row.status == SmsStatus.DELIVERED
        assert row.payload is None  # the token is erased once sent
        assert row.message_id == message.pk
        assert AuditEvent.objects.filter(event_type=AuditEventType.MESSAGE_SENT, object_id=str(message.pk)).exists()

    link = link_for_token(token_of(sms))
    assert link is not None and link.tenant_id == tenant_a.pk
    with tenant_scope(tenant_a):
        session, key = links.patient_session_start(tenant=tenant_a, link=link)
        state = links.session_state(session)
        assert state is not None and not state.verified
        assert not links.verify_birth_date(tenant=tenant_a, session=session, birth_date=datetime.date(1984, 3, 10))
        assert links.verify_birth_date(tenant=tenant_a, session=session, birth_date=BIRTH_DATE)
        session.refresh_from_db()
        assert links.session_state(session).verified
        opened = selectors.patient_thread_open(tenant=tenant_a, session=session)
        thread, messages = opened.thread, opened.messages
        assert [m.body for m in messages] == ["Your lab results for Ada Quill are normal."]
        reply = services.patient_reply(tenant=tenant_a, session=session, body="Thank you!")
        assert reply.direction == Direction.INBOUND
        thread.refresh_from_db()
        assert thread.staff_unread == 1
        opened = selectors.thread_open(tenant=tenant_a, actor=alice, thread_id=thread.pk)
        assert opened.staff_unread == 0
        bodies = [m.body for m in selectors.thread_messages(tenant=tenant_a, thread=thread)]
        assert bodies[-1] == "Thank you!"


def test_refusal_without_consent_writes_nothing(tenant_a, alice):
    from accounts.errors import ApplicationError
    from tests.factories import make_patient, sign_baa

    sign_baa(tenant=tenant_a, owner=alice)
    no_consent = make_patient(tenant=tenant_a)
    with tenant_scope(tenant_a):
        with pytest.raises(ApplicationError) as exc:
            services.message_send(tenant=tenant_a, actor=alice, patient=no_consent, body="Hello")
        assert "not agreed to SMS" in exc.value.message
        assert not Thread.objects.exists()
        assert not OutboundSms.objects.exists()
