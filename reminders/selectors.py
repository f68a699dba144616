"""Reads for reminders (R3). The upcoming list shows patient names, so it is audited."""

from __future__ import annotations

import datetime

from django.utils import timezone

from audit.events import AuditEventType
from audit.services import audit_record
from reminders.models import Reminder

UPCOMING_LIMIT = 200


def upcoming_reminders(*, tenant, actor, now=None) -> list[Reminder]:
    """Reminders of appointments that have not started yet (and those sent in the last day),
    soonest due first. Writes PATIENT_SEARCHED with the count (names are on the page)."""
    now = now or timezone.now()
    rows = list(Reminder.objects.select_related("appointment__patient")
                .filter(appointment__starts_at__gt=now - datetime.timedelta(hours=1))
                .order_by("due_at", "id")[:UPCOMING_LIMIT])
    audit_record(tenant=tenant, actor=actor, event_type=AuditEventType.PATIENT_SEARCHED,
                 details={"path_name": "reminders-list", "count": len(rows)})
    return rows
