"""Celery tasks for webhooks. Ids only, never payloads (R14); ack late. The rows' leases and the
sweeper cover a worker that dies and a broker that loses a task."""

from __future__ import annotations

import logging

from celery import shared_task

from accounts.tenancy import TenantTask, tenant_scope

log = logging.getLogger(__name__)


@shared_task(base=TenantTask, acks_late=True, ignore_result=True)
def deliver(*, tenant_id: int, delivery_ids: list[str]) -> dict:
    """Try each delivery once (claimed row by row: two workers never send the same attempt)."""
    from accounts.tenancy import current_tenant
    from outbound.services import delivery_attempt

    tenant = current_tenant()
    outcomes: dict[str, int] = {}
    for delivery_id in delivery_ids[:500]:
        try:
            outcome = delivery_attempt(tenant=tenant, delivery_id=delivery_id)
        except Exception:  # noqa: BLE001 - one bad row must not stop the batch; its lease lets the sweeper retry
            log.exception("webhooks: delivery %s raised; it stays due for the sweeper", delivery_id)
            outcome = "error"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return outcomes


@shared_task(acks_late=True, ignore_result=True)
def outbound_sweep() -> int:
    """Every minute (beat): hand out every due webhook delivery of every active clinic, including
    deliveries stuck in "sending" past their lease."""
    from accounts.models import Tenant
    from outbound.services import sweep_tenant

    total = 0
    for tenant in Tenant.objects.filter(is_active=True).order_by("pk"):
        with tenant_scope(tenant):
            try:
                total += sweep_tenant(tenant)
            except Exception:  # noqa: BLE001 - one clinic's trouble must not stop the others
                log.exception("webhook sweep failed for tenant %s", tenant.pk)
    return total
