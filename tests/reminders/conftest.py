"""Reminder fixtures: a frozen clock at noon UTC (a textable patient's zone is then UTC, so
moving the clock by whole days keeps it daytime for the outbox), clinic A's patient Ada."""

from __future__ import annotations

import datetime

import pytest

from accounts.tenancy import tenant_scope
from tests.factories import make_appointment, make_textable_patient

T0 = datetime.datetime(2026, 3, 2, 12, 0, tzinfo=datetime.UTC)
BIRTH_DATE = datetime.date(1984, 3, 9)


@pytest.fixture(autouse=True)
def _frozen(time_machine):
    time_machine.move_to(T0, tick=False)
    return time_machine


@pytest.fixture
def patient(tenant_a, alice):
    return make_textable_patient(tenant=tenant_a, owner=alice, given_name="Ada", family_name="Quill",
                                 birth_date=BIRTH_DATE, phone="+12025550171")


@pytest.fixture
def in_a(tenant_a):
    with tenant_scope(tenant_a):
        yield tenant_a


def book(tenant, patient, *, hours: float, **overrides):
    """An appointment ``hours`` after T0 through appointment_create (which schedules reminders)."""
    starts_at = T0 + datetime.timedelta(hours=hours)
    return make_appointment(tenant=tenant, patient=patient, starts_at=starts_at, **overrides)
