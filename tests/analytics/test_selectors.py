"""The dashboard's figures, computed by hand from data built through the real services."""

from __future__ import annotations

import datetime

import pytest

from accounts.tenancy import tenant_scope
from analytics.selectors import dashboard_get, location_names, window_for
from patients.models import AppointmentStatus as S
from tests.analytics.conftest import NOW, WEEK_1, WEEK_2, at


def board(tenant, **kwargs):
    with tenant_scope(tenant):
        return dashboard_get(tenant=tenant, weeks=kwargs.pop("weeks", 2), now=NOW, **kwargs)


def funnel_of(row) -> tuple:
    return (row.sent, row.delivered, row.opened, row.confirmed, row.cancelled, row.reschedule_requested)


def test_window_is_whole_weeks_from_monday_in_the_clinic_zone(tenant_a):
    tenant_a.timezone = "America/New_York"
    window = window_for(tenant=tenant_a, weeks=2, now=NOW)
    assert window.weeks == (WEEK_1, WEEK_2)
    assert window.start == datetime.datetime(2027, 3, 8, 5, 0, tzinfo=datetime.UTC)  # EST, before the DST change
    assert window.end == datetime.datetime(2027, 3, 22, 4, 0, tzinfo=datetime.UTC)  # EDT


@pytest.fixture
def funnel_data(builder):
    p1, p2, p3, p4 = (builder.patient() for _ in range(4))
    early = builder.appointment(p4, at(3, 10))
    first = builder.appointment(p1, at(12, 10))
    second = builder.appointment(p2, at(12, 11))
    third = builder.appointment(p3, at(19, 10), location="Room 9")
    builder.remind(early, at(2))  # before the window: not counted
    r1 = builder.remind(first, at(9))
    r2 = builder.remind(second, at(10))
    builder.remind(third, at(16))
    builder.remind(first, at(16, 15))  # a second reminder: the thread still counts once, in its first week
    builder.send(patient=p3, when=at(16, 16))  # a general message is no reminder
    builder.opened(r1)
    builder.undelivered(r2)
    builder.mark(first, S.CONFIRMED)
    builder.mark(third, S.CANCELLED)
    return builder


def test_funnel_counts_each_reminded_appointment_in_the_week_of_its_first_reminder(funnel_data, tenant_a):
    result = board(tenant_a).funnel
    assert [row.week for row in result.weeks] == [WEEK_1, WEEK_2]
    assert funnel_of(result.weeks[0]) == (2, 1, 1, 1, 0, 0)
    assert funnel_of(result.weeks[1]) == (1, 1, 0, 0, 1, 0)
    assert funnel_of(result.total) == (3, 2, 1, 1, 1, 0)


def test_funnel_reschedule_requests_and_longer_windows(funnel_data, tenant_a):
    with tenant_scope(tenant_a):
        from patients.models import Appointment

        second = Appointment.objects.get(starts_at=at(12, 11))
    funnel_data.mark(second, S.RESCHEDULE_REQUESTED)
    result = board(tenant_a, weeks=3).funnel
    assert funnel_of(result.weeks[1])[5] == 1
    assert funnel_of(result.weeks[0]) == (1, 1, 0, 0, 0, 0)  # the week of 1 March: the early reminder


def test_location_filter(funnel_data, tenant_a):
    result = board(tenant_a, location="Room 9").funnel
    assert funnel_of(result.weeks[0]) == (0, 0, 0, 0, 0, 0)
    assert funnel_of(result.weeks[1]) == (1, 1, 0, 0, 1, 0)
    with tenant_scope(tenant_a):
        assert location_names() == ["Room 1", "Room 9"]


@pytest.fixture
def outcome_data(builder):
    """Reminded: A no-show, B and C completed → 1/3. Not reminded: D and E no-shows, F
    completed, and I (reminded only after it started) completed → 2/4."""
    patients = [builder.patient() for _ in range(9)]
    a, b, c, d, e, f, g, h, i = (
        builder.appointment(p, starts, location=room) for p, starts, room in zip(patients, [
            at(9, 15), at(10, 15), at(16, 9), at(9, 16), at(16, 10), at(16, 11), at(10, 16), at(11, 15), at(9, 17)],
            ["Room 1", "Room 1", "Room 2", "Room 1", "Room 2", "Room 1", "Room 1", "Room 1", "Room 2"], strict=True))
    builder.remind(a, at(8, 9))
    builder.remind(b, at(8, 10))
    builder.remind(c, at(15, 9))
    builder.remind(g, at(8, 11))
    builder.remind(i, at(9, 18))  # after the appointment started
    for appointment, status in [(a, S.NO_SHOW), (b, S.COMPLETED), (c, S.COMPLETED), (d, S.NO_SHOW), (e, S.NO_SHOW),
                                (f, S.COMPLETED), (h, S.CANCELLED), (i, S.COMPLETED)]:
        builder.mark(appointment, status)
    # g stays booked: no recorded outcome, left out.
    return builder


def test_no_show_rate_reminded_vs_not(outcome_data, tenant_a):
    result = board(tenant_a).no_show
    total = result.total
    assert (total.reminded.no_show, total.reminded.completed, total.reminded.rate_percent) == (1, 2, 33.3)
    assert (total.not_reminded.no_show, total.not_reminded.completed, total.not_reminded.rate_percent) == (2, 2, 50.0)
    week_1, week_2 = result.weeks
    assert (week_1.reminded.no_show, week_1.reminded.completed) == (1, 1)
    assert (week_1.not_reminded.no_show, week_1.not_reminded.completed) == (1, 1)
    assert (week_2.reminded.no_show, week_2.reminded.completed) == (0, 1)
    assert (week_2.not_reminded.no_show, week_2.not_reminded.completed) == (1, 1)
    by_room = {row.key: row for row in result.locations}
    assert sorted(by_room) == ["Room 1", "Room 2"]
    assert (by_room["Room 1"].reminded.no_show, by_room["Room 1"].reminded.completed) == (1, 1)
    assert (by_room["Room 1"].not_reminded.no_show, by_room["Room 1"].not_reminded.completed) == (1, 1)
    assert (by_room["Room 2"].reminded.no_show, by_room["Room 2"].reminded.completed) == (0, 1)
    assert (by_room["Room 2"].not_reminded.no_show, by_room["Room 2"].not_reminded.completed) == (1, 1)
    only_2 = board(tenant_a, location="Room 2").no_show.total
    assert (only_2.reminded.seen, only_2.not_reminded.rate_percent) == (1, 50.0)


def test_response_time_median_by_week(builder, tenant_a):
    p1, p2 = builder.patient(), builder.patient()
    thread_1 = builder.send(patient=p1, when=at(9, 9)).thread
    thread_2 = builder.send(patient=p2, when=at(9, 9, 1)).thread
    builder.patient_texts(p1, at(9, 10))
    builder.patient_texts(p1, at(9, 10, 5))  # the same turn: the wait counts from 10:00
    builder.send(thread=thread_1, when=at(9, 10, 35))  # 35 minutes
    builder.patient_texts(p1, at(9, 12))
    builder.send(thread=thread_1, when=at(9, 12, 10))  # 10 minutes
    builder.patient_texts(p2, at(10, 8))
    builder.send(thread=thread_2, when=at(10, 8, 5), system=True)  # an automatic message is no staff reply
    builder.send(thread=thread_2, when=at(10, 9, 30))  # 90 minutes
    builder.patient_texts(p2, at(16, 10))
    builder.send(thread=thread_2, when=at(16, 10, 20))  # 20 minutes
    builder.patient_texts(p1, at(17, 9))  # not answered yet
    result = board(tenant_a).responses
    week_1, week_2 = result.weeks
    assert (week_1.answered, week_1.waiting, week_1.median_minutes) == (3, 0, 35.0)
    assert (week_2.answered, week_2.waiting, week_2.median_minutes) == (1, 1, 20.0)
    assert (result.total.answered, result.total.waiting, result.total.median_minutes) == (4, 1, 27.5)
    assert not result.sample_limited


def test_week_boundaries_follow_the_clinic_zone(builder, tenant_a):
    tenant_a.timezone = "America/New_York"
    tenant_a.save(update_fields=["timezone"])
    # Monday 15 March 03:00 UTC is still Sunday 14 March, 23:00 in New York: the week of 8 March.
    patient = builder.patient(timezone="Asia/Tokyo")
    late_sunday = builder.appointment(patient, datetime.datetime(2027, 3, 15, 3, 30, tzinfo=datetime.UTC))
    builder.remind(late_sunday, datetime.datetime(2027, 3, 15, 3, 0, tzinfo=datetime.UTC))
    builder.mark(late_sunday, S.NO_SHOW)
    result = board(tenant_a)
    assert [row.sent for row in result.funnel.weeks] == [1, 0]
    assert [row.reminded.no_show for row in result.no_show.weeks] == [1, 0]


def test_another_clinics_data_is_never_counted(builder_b, tenant_a, tenant_b, time_machine):
    time_machine.move_to(at(1, 9), tick=False)
    patient = builder_b.patient()
    appointment = builder_b.appointment(patient, at(10, 10), location="Room B")
    thread = builder_b.remind(appointment, at(9)).thread
    builder_b.mark(appointment, S.NO_SHOW)
    builder_b.patient_texts(patient, at(10, 11))
    builder_b.send(thread=thread, when=at(10, 12))
    mine = board(tenant_a)
    assert mine.is_empty
    assert funnel_of(mine.funnel.total) == (0, 0, 0, 0, 0, 0)
    assert mine.no_show.locations == []
    with tenant_scope(tenant_a):
        assert location_names() == []
    theirs = board(tenant_b)
    assert theirs.funnel.total.sent == 1 and theirs.no_show.total.reminded.no_show == 1
    assert theirs.responses.total.answered == 1


def test_the_response_sample_is_bounded(builder, tenant_a):
    patient = builder.patient()
    builder.send(patient=patient, when=at(9, 9))
    for minute in range(3):
        builder.patient_texts(patient, at(9, 10, minute))
    with tenant_scope(tenant_a):
        from analytics.selectors import response_times

        result = response_times(window=window_for(tenant=tenant_a, weeks=2, now=NOW), sample=2)
    assert result.sample_limited
    assert result.total.waiting == 1
