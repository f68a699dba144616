"""Sending: the message, the SMS (only a link), languages, refusals, the outbox's holds,
idempotency under concurrent beat runs, follow-ups and the patient's confirmation."""

from __future__ import annotations

import datetime
import threading

from accounts.tenancy import tenant_scope
from audit.models import AuditEvent
from integrations.models import LocalSms
from messaging import links
from messaging import services as messaging_services
from messaging.models import Message, MessageKind, OutboundSms, SecureLink, SmsStatus, Thread
from messaging.routing import link_for_token
from patients.models import Appointment, AppointmentStatus
from reminders import services
from reminders.models import Reminder, ReminderStatus
from reminders.tasks import reminders_due
from tests.factories import make_patient, make_tenant, make_textable_patient, sign_baa
from tests.messaging.conftest import sent_sms, token_of
from tests.reminders.conftest import BIRTH_DATE, T0, book

H = datetime.timedelta(hours=1)


def _send(tenant, capture, now=None):
    with capture(execute=True):
        return services.reminders_send_due(tenant=tenant, now=now)


def test_due_reminder_sends_a_reminder_message_and_an_sms_with_only_a_link(
        tenant_a, patient, in_a, django_capture_on_commit_callbacks, _frozen):
    appointment = book(tenant_a, patient, hours=72, instructions="Bring your inhaler.")
    assert _send(tenant_a, django_capture_on_commit_callbacks) == {}  # not due yet
    _frozen.move_to(T0 + 24 * H, tick=False)
    assert _send(tenant_a, django_capture_on_commit_callbacks) == {"sent": 1}
    reminder = Reminder.objects.get(appointment=appointment)
    assert reminder.status == ReminderStatus.SENT and reminder.sent_at == T0 + 24 * H
    message = reminder.message
    assert message.kind == MessageKind.REMINDER and message.thread.appointment_id == appointment.pk
    assert message.thread.kind == MessageKind.REMINDER and message.sender_id is None
    assert message.idempotency_key == f"reminder:{reminder.pk}"
    # Clinic A is in New York: 12:00 UTC on 5 March 2026 is 7:00 AM there.
    assert message.body.startswith("Hi Ada, this is a reminder of your appointment on Thursday, March 5, 2026 "
                                   "at 7:00 AM with Dr. Rivera at Room 2.")
    assert "Bring your inhaler." in message.body
    [sms] = sent_sms()
    assert sms.kind == "link_notice" and "/s/" in sms.body
    for secret in ("Ada", "Quill", "Rivera", "Room", "inhaler", "March", "7:00"):
        assert secret not in sms.body
    assert _send(tenant_a, django_capture_on_commit_callbacks) == {}  # nothing twice
    assert Message.objects.count() == 1


def test_spanish_speaking_patient_gets_the_spanish_text(tenant_a, alice, in_a, django_capture_on_commit_callbacks):
    luis = make_textable_patient(tenant=tenant_a, owner=alice, given_name="Luis", family_name="Herrera",
                                 preferred_language="es", phone="+12025550172")
    book(tenant_a, luis, hours=30, provider_name="Dra. Soto", location_name="Sala 1")
    assert _send(tenant_a, django_capture_on_commit_callbacks) == {"sent": 1}
    body = Message.objects.get().body
    assert body.startswith("Hola Luis, le recordamos su cita el martes 3 de marzo de 2026 a las 13:00 "
                           "con Dra. Soto en Sala 1.")
    assert "\n\n\n" not in body  # the empty {instructions} line is folded


def test_refusal_marks_the_reminder_skipped_and_writes_nothing_else(
        tenant_a, alice, in_a, django_capture_on_commit_callbacks):
    sign_baa(tenant=tenant_a, owner=alice)
    no_consent = make_patient(tenant=tenant_a, actor=alice)
    appointment = book(tenant_a, no_consent, hours=30)
    audit_before = AuditEvent.objects.count()
    assert _send(tenant_a, django_capture_on_commit_callbacks) == {"skipped": 1}
    reminder = Reminder.objects.get(appointment=appointment)
    assert reminder.status == ReminderStatus.SKIPPED and "not agreed to SMS" in reminder.reason
    assert not Message.objects.exists() and not Thread.objects.exists() and not OutboundSms.objects.exists()
    assert AuditEvent.objects.count() == audit_before
    assert _send(tenant_a, django_capture_on_commit_callbacks) == {}  # not retried every minute


def test_cancelled_by_the_patient_outside_the_hook_is_not_sent(tenant_a, patient, in_a,
                                                               django_capture_on_commit_callbacks):
    appointment = book(tenant_a, patient, hours=30)
    Appointment.objects.filter(pk=appointment.pk).update(status=AppointmentStatus.CANCELLED)
    assert _send(tenant_a, django_capture_on_commit_callbacks) == {"cancelled": 1}
    assert not Message.objects.exists()


def test_quiet_hours_hold_the_sms_but_the_reminder_is_sent(tenant_a, alice, in_a, django_capture_on_commit_callbacks):
    sleeper = make_textable_patient(tenant=tenant_a, owner=alice, timezone="Etc/GMT-12", phone="+12025550173")  # 00:00
    book(tenant_a, sleeper, hours=30)
    assert _send(tenant_a, django_capture_on_commit_callbacks) == {"sent": 1}
    assert OutboundSms.objects.get().status == SmsStatus.WAITING
    assert not LocalSms.objects.exists()


def test_frequency_cap_holds_the_second_reminder_of_the_day(tenant_a, patient, in_a,
                                                            django_capture_on_commit_callbacks):
    book(tenant_a, patient, hours=30)
    book(tenant_a, patient, hours=33)
    assert _send(tenant_a, django_capture_on_commit_callbacks) == {"sent": 2}
    assert sorted(OutboundSms.objects.values_list("status", flat=True)) == [SmsStatus.DELIVERED, SmsStatus.WAITING]
    assert len(sent_sms()) == 1


def test_two_beat_runs_at_once_send_one_message(committed_db):
    from tests.factories import make_member

    tenant = make_tenant(slug="busy-reminders")
    owner = make_member(tenant=tenant, role="owner")
    patient = make_textable_patient(tenant=tenant, owner=owner, phone="+12025550174")
    appointments = [book(tenant, patient, hours=30 + n) for n in range(3)]
    barrier, errors = threading.Barrier(2), []

    def run():
        from django.db import connection as thread_connection

        try:
            barrier.wait(timeout=10)
            with tenant_scope(tenant):
                services.reminders_run_for_tenant(tenant=tenant)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            thread_connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    reminders_due()  # and a third run through the beat task itself
    with tenant_scope(tenant):
        for appointment in appointments:
            [reminder] = Reminder.objects.filter(appointment=appointment)
            assert reminder.status == ReminderStatus.SENT
            assert Message.objects.filter(thread__appointment=appointment).count() == 1
        assert Message.objects.count() == 3


def _open_newest_link(tenant):
    link = SecureLink.objects.order_by("-created_at").first()
    session, _ = links.patient_session_start(tenant=tenant, link=link)
    return session


def test_follow_up_once_when_the_link_is_not_opened(tenant_a, patient, in_a, django_capture_on_commit_callbacks):
    appointment = book(tenant_a, patient, hours=40)
    _send(tenant_a, django_capture_on_commit_callbacks)
    reminder = Reminder.objects.get(appointment=appointment)
    assert services.reminders_follow_up(tenant=tenant_a, now=T0 + 23 * H) == 0  # not a day yet
    with django_capture_on_commit_callbacks(execute=True):
        assert services.reminders_follow_up(tenant=tenant_a, now=T0 + 25 * H) == 1
    reminder.refresh_from_db()
    assert reminder.follow_up_sent_at == T0 + 25 * H
    assert OutboundSms.objects.count() == 2 and SecureLink.objects.count() == 2
    assert services.reminders_follow_up(tenant=tenant_a, now=T0 + 30 * H) == 0  # at most once
    assert OutboundSms.objects.count() == 2


def test_no_follow_up_when_opened_confirmed_or_disabled(tenant_a, alice, patient, in_a,
                                                        django_capture_on_commit_callbacks):
    opened = book(tenant_a, patient, hours=40)
    _send(tenant_a, django_capture_on_commit_callbacks)
    _open_newest_link(tenant_a)
    assert services.reminders_follow_up(tenant=tenant_a, now=T0 + 25 * H) == 0
    assert Reminder.objects.get(appointment=opened).follow_up_sent_at is None

    other = make_textable_patient(tenant=tenant_a, owner=alice, phone="+12025550175")
    confirmed = book(tenant_a, other, hours=41)
    _send(tenant_a, django_capture_on_commit_callbacks)
    Appointment.objects.filter(pk=confirmed.pk).update(status=AppointmentStatus.CONFIRMED)
    assert services.reminders_follow_up(tenant=tenant_a, now=T0 + 25 * H) == 0

    Appointment.objects.filter(pk=confirmed.pk).update(status=AppointmentStatus.BOOKED)
    services.reminder_policy_update(tenant=tenant_a, actor=alice, enabled=True, appointment_types="",
                                    first_offset_hours="48", second_offset_hours="", follow_up_enabled=False,
                                    template_en="Hi {first_name}", template_es="Hola {first_name}")
    assert services.reminders_follow_up(tenant=tenant_a, now=T0 + 25 * H) == 0


def test_patient_confirms_on_the_secure_page_after_a_reminder(tenant_a, patient, in_a,
                                                              django_capture_on_commit_callbacks):
    appointment = book(tenant_a, patient, hours=40)
    _send(tenant_a, django_capture_on_commit_callbacks)
    [sms] = sent_sms()
    link = link_for_token(token_of(sms))
    with tenant_scope(tenant_a):
        session, _ = links.patient_session_start(tenant=tenant_a, link=link)
        assert links.verify_birth_date(tenant=tenant_a, session=session, birth_date=BIRTH_DATE)
        session.refresh_from_db()
        messaging_services.patient_appointment_action(tenant=tenant_a, session=session, action="confirm")
        appointment.refresh_from_db()
        assert appointment.status == AppointmentStatus.CONFIRMED
        # Confirmed: no follow-up, and the reminder stays sent.
        assert services.reminders_follow_up(tenant=tenant_a, now=T0 + 25 * H) == 0
        assert Reminder.objects.get(appointment=appointment).status == ReminderStatus.SENT


def test_seed_demo_sends_the_due_reminders(db):
    from django.core.management import call_command

    from accounts.models import Tenant

    call_command("seed_demo", stdout=__import__("io").StringIO())
    tenant = Tenant.objects.get(slug="sunrise")
    with tenant_scope(tenant):
        statuses = sorted(Reminder.objects.values_list("status", flat=True))
        assert statuses.count(ReminderStatus.SENT) == 5  # every upcoming demo appointment with consent
        assert statuses.count(ReminderStatus.SKIPPED) == 1  # the demo patient without consent
        assert Message.objects.filter(kind=MessageKind.REMINDER, source="system").count() == 5
