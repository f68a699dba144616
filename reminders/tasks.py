"""Beat task for reminders. It takes no arguments (no PHI, R14) and enters each clinic's scope."""

from __future__ import annotations

import logging

from celery import shared_task

from accounts.tenancy import tenant_scope

log = logging.getLogger(__name__)


@shared_task(acks_late=True, ignore_result=True)
def reminders_due() -> int:
    """Every minute (beat): for every active clinic, schedule reminders for upcoming
    appointments that have none, send the due ones and the follow-ups. Two runs at once are
    safe: rows are unique per appointment and offset, sends are claimed with SKIP LOCKED and
    each message has an idempotency key."""
    from accounts.models import Tenant
    from reminders.services import reminders_run_for_tenant

    sent = 0
    for tenant in Tenant.objects.filter(is_active=True).order_by("pk"):
        with tenant_scope(tenant):
            try:
                sent += reminders_run_for_tenant(tenant=tenant).get("sent", 0)
            except Exception:  # noqa: BLE001 - one clinic's trouble must not stop the others
                log.exception("reminders run failed for tenant %s", tenant.pk)
    return sent
