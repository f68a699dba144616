"""Celery tasks for the outbox. They take ids, never PHI or objects (R14), and ack late: a
worker that dies mid-task leaves the message on the broker, and the row's lease and the
sweeper cover a broker that loses it."""

from __future__ import annotations

import logging

from celery import shared_task

from accounts.tenancy import TenantTask, tenant_scope

log = logging.getLogger(__name__)


@shared_task(base=TenantTask, acks_late=True, ignore_result=True)
def outbox_send(*, tenant_id: int, sms_ids: list[str]) -> dict:
    """Try each row once (claimed row by row, so two workers never send the same one)."""
    from accounts.tenancy import current_tenant
    from messaging.outbox import sms_send_one

    tenant = current_tenant()
    outcomes: dict[str, int] = {}
    for sms_id in sms_ids[:500]:
        try:
            outcome = sms_send_one(tenant=tenant, sms_id=sms_id)
        except Exception:  # noqa: BLE001 - one bad row must not stop the batch; the sweeper retries it
            log.exception("outbox: SMS %s raised; it stays due for the sweeper", sms_id)
            outcome = "error"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return outcomes


@shared_task(acks_late=True, ignore_result=True)
def outbox_sweep() -> int:
    """Every minute (beat): hand out every due row of every active clinic, including rows stuck
    in "sending" past their lease. Redis losing a task loses nothing."""
    from accounts.models import Tenant
    from messaging.outbox import sweep_tenant

    total = 0
    for tenant in Tenant.objects.filter(is_active=True).order_by("pk"):
        with tenant_scope(tenant):
            try:
                total += sweep_tenant(tenant)
            except Exception:  # noqa: BLE001 - one clinic's trouble must not stop the others
                log.exception("outbox sweep failed for tenant %s", tenant.pk)
    return total
