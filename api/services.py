"""Writes the API composes from the domain services (R2), so one request is one transaction."""

from __future__ import annotations

from django.db import transaction

from patients.models import Appointment
from patients.services import appointment_set_status, appointment_update


@transaction.atomic
def api_appointment_patch(*, tenant, actor, appointment: Appointment, changes: dict,
                          status: str | None = None) -> Appointment:
    """Edit fields, then move the status: both or neither (a refused status undoes the edit)."""
    if changes:
        appointment = appointment_update(tenant=tenant, actor=actor, appointment=appointment, **changes)
    if status is not None:
        appointment = appointment_set_status(tenant=tenant, actor=actor, appointment=appointment, status=status)
    return appointment
