"""Held result notices: the clinic's delay, what the patient sees meanwhile, and release."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import Tenant
from accounts.tenancy import tenant_scope
from integrations.sms.faulty import FaultyGateway
from messaging import selectors, services
from messaging.models import Message, MessageKind, OutboundSms, PatientSession, SmsStatus, Thread
from messaging.outbox import sms_send_one


@pytest.fixture
def held(tenant_a):
    Tenant.objects.filter(pk=tenant_a.pk).update(result_release_minutes=120)
    tenant_a.refresh_from_db()
    return tenant_a


def _session(tenant, message) -> PatientSession:
    link = message.thread.links.order_by("-created_at").first()
    return PatientSession.objects.create(tenant=tenant, link=link, thread=message.thread, patient=link.patient,
                                         key_hash="h" * 64, last_seen_at=timezone.now(),
                                         dob_verified_at=timezone.now(), code_verified_at=timezone.now())


def test_a_held_result_is_neither_texted_nor_shown_until_its_time(held, alice, patient, time_machine):
    time_machine.move_to(timezone.now(), tick=False)
    with tenant_scope(held):
        message = services.message_send(tenant=held, actor=alice, patient=patient, kind=MessageKind.RESULT_NOTICE,
                                        body="Your HbA1c is 6.1%.")
        assert message.release_at == timezone.now() + timedelta(minutes=120)
        row = OutboundSms.objects.get(message=message)
        assert row.status == SmsStatus.WAITING and row.next_attempt_at >= message.release_at
        assert sms_send_one(tenant=held, sms_id=row.pk, gateway=FaultyGateway()) == "skipped"
        session = _session(held, message)
        shown = selectors.patient_thread_open(tenant=held, session=session).messages
        assert shown == []
        assert services.messages_mark_read_by_patient(tenant=held, session=session) == 0
        # Staff see it, marked as held.
        assert [m.pk for m in selectors.thread_messages(tenant=held, thread=message.thread)] == [message.pk]
        time_machine.move_to(message.release_at + timedelta(seconds=1), tick=False)
        shown = selectors.patient_thread_open(tenant=held, session=session).messages
        assert [m.pk for m in shown] == [message.pk]


def test_release_now_shows_it_and_sends_the_notice(held, alice, patient, django_capture_on_commit_callbacks):
    from integrations.models import LocalSms

    with tenant_scope(held):
        message = services.message_send(tenant=held, actor=alice, patient=patient, kind=MessageKind.RESULT_NOTICE,
                                        body="Your HbA1c is 6.1%.")
        with django_capture_on_commit_callbacks(execute=True):
            services.message_release(tenant=held, actor=alice, message=message)
        message.refresh_from_db()
        assert message.release_at <= timezone.now()
        assert OutboundSms.objects.get(message=message).status == SmsStatus.DELIVERED
    assert LocalSms.objects.filter(to=patient.phone, kind="link_notice").count() == 1


def test_without_a_delay_results_go_at_once_and_other_kinds_are_never_held(held, alice, patient):
    Tenant.objects.filter(pk=held.pk).update(result_release_minutes=None)
    held.refresh_from_db()
    with tenant_scope(held):
        message = services.message_send(tenant=held, actor=alice, patient=patient, kind=MessageKind.RESULT_NOTICE,
                                        body="Normal.")
        assert message.release_at is None
    Tenant.objects.filter(pk=held.pk).update(result_release_minutes=60)
    held.refresh_from_db()
    with tenant_scope(held):
        general = services.message_send(tenant=held, actor=alice, thread=Thread.objects.get(), body="Hello")
        assert general.release_at is None


def test_release_page_needs_results_send_and_redirects(client, login, held, alice, bob, patient):
    with tenant_scope(held):
        message = services.message_send(tenant=held, actor=alice, patient=patient, kind=MessageKind.RESULT_NOTICE,
                                        body="Your HbA1c is 6.1%.")
    login(bob)
    assert client.post(f"/inbox/m/{message.pk}/release/").status_code == 403
    login(alice)
    page = client.get(f"/inbox/t/{message.thread_id}/")
    assert b"Held until" in page.content and b"Release now" in page.content
    response = client.post(f"/inbox/m/{message.pk}/release/")
    assert response.status_code == 302 and response["Location"] == f"/inbox/t/{message.thread_id}/"
    with tenant_scope(held):
        assert Message.objects.get(pk=message.pk).release_at <= timezone.now()
