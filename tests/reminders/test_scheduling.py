"""Scheduling rules: which reminders an appointment gets, and how they follow its changes."""

from __future__ import annotations

import datetime

from patients.services import appointment_set_status, appointment_update
from reminders import services
from reminders.models import Reminder, ReminderStatus
from tests.reminders.conftest import T0, book

H = datetime.timedelta(hours=1)


def _rows(appointment):
    return {r.offset_minutes: r for r in Reminder.objects.filter(appointment=appointment)}


def _policy(tenant, alice, **changes):
    values = {"enabled": True, "appointment_types": "", "first_offset_hours": "48", "second_offset_hours": "",
              "follow_up_enabled": True, "template_en": "Hi {first_name}", "template_es": "Hola {first_name}"}
    values.update(changes)
    return services.reminder_policy_update(tenant=tenant, actor=alice, **values)


def test_default_policy_is_one_reminder_48_hours_before(tenant_a, patient, in_a):
    appointment = book(tenant_a, patient, hours=72)
    rows = _rows(appointment)
    assert list(rows) == [2880]
    assert rows[2880].due_at == T0 + 24 * H
    assert rows[2880].status == ReminderStatus.SCHEDULED
    policy = services.reminder_policy_get(tenant=tenant_a)
    assert policy.enabled and policy.second_offset_minutes is None and policy.follow_up_enabled
    assert "{appointment_date}" in policy.template_en and "{appointment_date}" in policy.template_es


def test_optional_second_reminder(tenant_a, alice, patient, in_a):
    _policy(tenant_a, alice, second_offset_hours="2")
    appointment = book(tenant_a, patient, hours=72)
    rows = _rows(appointment)
    assert sorted(rows) == [120, 2880]
    assert rows[120].due_at == T0 + 70 * H


def test_type_filter_and_disabled_policy(tenant_a, alice, patient, in_a):
    _policy(tenant_a, alice, appointment_types="New patient,  follow-UP ")
    assert _rows(book(tenant_a, patient, hours=72, appointment_type="Follow-up"))
    assert not _rows(book(tenant_a, patient, hours=73, appointment_type="Vaccination"))
    _policy(tenant_a, alice, enabled=False)
    assert not _rows(book(tenant_a, patient, hours=74, appointment_type="Follow-up"))


def test_disabling_the_policy_cancels_upcoming_reminders_and_enabling_brings_them_back(tenant_a, alice, patient, in_a):
    appointment = book(tenant_a, patient, hours=72)
    _policy(tenant_a, alice, enabled=False)
    row = _rows(appointment)[2880]
    assert row.status == ReminderStatus.CANCELLED and "turned off" in row.reason
    _policy(tenant_a, alice, enabled=True)
    assert _rows(appointment)[2880].status == ReminderStatus.SCHEDULED


def test_late_booking_gets_the_first_reminder_at_once_and_no_past_second(tenant_a, alice, patient, in_a):
    _policy(tenant_a, alice, second_offset_hours="2")
    soon = book(tenant_a, patient, hours=10)
    rows = _rows(soon)
    assert rows[2880].due_at == T0 and rows[2880].status == ReminderStatus.SCHEDULED
    assert rows[120].due_at == T0 + 8 * H  # still ahead: kept
    very_soon = book(tenant_a, patient, hours=1)
    rows = _rows(very_soon)
    assert list(rows) == [2880] and rows[2880].due_at == T0


def test_past_appointment_gets_none(tenant_a, patient, in_a):
    assert not _rows(book(tenant_a, patient, hours=-3))


def test_reschedule_recomputes_unsent_due_times(tenant_a, alice, patient, in_a):
    appointment = book(tenant_a, patient, hours=72)
    appointment_update(tenant=tenant_a, actor=alice, appointment=appointment, starts_at=T0 + 100 * H,
                       ends_at=T0 + 101 * H)
    row = _rows(appointment)[2880]
    assert row.due_at == T0 + 52 * H and row.starts_at == T0 + 100 * H and row.status == ReminderStatus.SCHEDULED


def test_a_sent_reminder_is_sent_again_only_when_the_appointment_moved_more_than_an_hour(
        tenant_a, alice, patient, in_a):
    appointment = book(tenant_a, patient, hours=30)  # late: due now
    assert services.reminders_send_due(tenant=tenant_a) == {"sent": 1}
    appointment_update(tenant=tenant_a, actor=alice, appointment=appointment, starts_at=T0 + 30.5 * H,
                       ends_at=T0 + 31.5 * H)
    assert _rows(appointment)[2880].status == ReminderStatus.SENT
    appointment_update(tenant=tenant_a, actor=alice, appointment=appointment, starts_at=T0 + 96 * H,
                       ends_at=T0 + 97 * H)
    row = _rows(appointment)[2880]
    assert row.status == ReminderStatus.SCHEDULED and row.due_at == T0 + 48 * H
    assert row.message_id is None and row.generation == 1 and "moved" in row.reason


def test_cancel_no_show_and_completed_cancel_unsent_reminders(tenant_a, alice, patient, in_a):
    for status in ("cancelled", "no_show", "completed"):
        appointment = book(tenant_a, patient, hours=72)
        appointment_set_status(tenant=tenant_a, actor=alice, appointment=appointment, status=status)
        row = _rows(appointment)[2880]
        assert row.status == ReminderStatus.CANCELLED, status
        assert row.reason.startswith("Appointment ")


def test_reschedule_requested_pauses_and_booked_again_resumes(tenant_a, alice, patient, in_a):
    appointment = book(tenant_a, patient, hours=72)
    appointment_set_status(tenant=tenant_a, actor=alice, appointment=appointment, status="reschedule_requested")
    assert _rows(appointment)[2880].status == ReminderStatus.CANCELLED
    appointment_set_status(tenant=tenant_a, actor=alice, appointment=appointment, status="booked")
    assert _rows(appointment)[2880].status == ReminderStatus.SCHEDULED


def test_scheduling_twice_creates_one_row(tenant_a, patient, in_a):
    appointment = book(tenant_a, patient, hours=72)
    services.reminders_schedule_for(tenant=tenant_a, appointment=appointment)
    services.reminders_schedule_for(tenant=tenant_a, appointment=appointment)
    assert Reminder.objects.filter(appointment=appointment).count() == 1


def test_upcoming_appointments_without_reminders_are_picked_up(tenant_a, patient, in_a):
    appointment = book(tenant_a, patient, hours=72)
    Reminder.objects.filter(appointment=appointment).delete()  # e.g. booked before reminders existed
    assert services.reminders_schedule_upcoming(tenant=tenant_a) == 1
    assert services.reminders_schedule_upcoming(tenant=tenant_a) == 0
    far = book(tenant_a, patient, hours=24 * 10)
    Reminder.objects.filter(appointment=far).delete()
    assert services.reminders_schedule_upcoming(tenant=tenant_a) == 0  # outside 48 h + 1 day
