"""Broadcast helpers for tests (also for the permission matrix's ``objects`` fixture)."""

from __future__ import annotations

import datetime
from zoneinfo import ZoneInfo

from accounts.tenancy import tenant_scope
from tests.factories import make_appointment, make_patient


def clinic_time(tenant, day: datetime.date, hour: int, minute: int = 0) -> datetime.datetime:
    return datetime.datetime.combine(day, datetime.time(hour, minute), tzinfo=ZoneInfo(tenant.timezone))


def book(tenant, patient, day: datetime.date, *, hour: int = 10, **overrides):
    """A booked appointment of ``patient`` at ``hour`` clinic time on ``day`` (Room 2, Follow-up)."""
    return make_appointment(tenant=tenant, patient=patient, starts_at=clinic_time(tenant, day, hour), **overrides)


def make_broadcast(*, tenant, owner, body: str = "The clinic is closed tomorrow. Please call to rebook.",
                   patients=None, **audience):
    """A sending broadcast to patients with an appointment tomorrow (clinic time). Without
    ``patients``, one patient with such an appointment is made (no consent needed to create)."""
    from broadcasts.services import broadcast_create
    from patients.services import clinic_today

    day = clinic_today(tenant) + datetime.timedelta(days=1)
    if patients is None:
        patients = [make_patient(tenant=tenant, actor=owner)]
        for patient in patients:
            book(tenant, patient, day, hour=12)
    audience.setdefault("audience", "appointments_on_day")
    audience.setdefault("day", day)
    with tenant_scope(tenant):
        return broadcast_create(tenant=tenant, actor=owner, body=body, **audience)
