"""Celery tasks for broadcasts: ids only (R14), no PHI in arguments or logs."""

from __future__ import annotations

import logging

from celery import shared_task

from accounts.tenancy import TenantTask, tenant_scope

log = logging.getLogger(__name__)


@shared_task(acks_late=True, ignore_result=True)
def broadcasts_tick() -> int:
    """Every 10 seconds (beat, config/settings.py): for each active clinic with a broadcast
    sending, hand each such broadcast to a worker for one slice. Returns how many were handed out.

    A duplicated or late tick is harmless: the slice takes the broadcast's row lock with
    SKIP LOCKED and does nothing if the previous slice was under 10 seconds ago.
    """
    from accounts.models import Tenant
    from broadcasts.models import Broadcast, BroadcastStatus

    handed = 0
    for tenant in Tenant.objects.filter(is_active=True).order_by("pk"):
        with tenant_scope(tenant):
            ids = [str(pk) for pk in Broadcast.objects.filter(status=BroadcastStatus.SENDING).values_list(
                "pk", flat=True)]
        for broadcast_id in ids:
            try:
                broadcast_send_slice.apply_async(kwargs={"tenant_id": tenant.pk, "broadcast_id": broadcast_id},
                                                 ignore_result=True)
                handed += 1
            except Exception as exc:  # noqa: BLE001 - a broker hiccup: the next tick tries again
                log.warning("broadcasts: could not enqueue broadcast %s (%s)", broadcast_id, type(exc).__name__)
    return handed


@shared_task(base=TenantTask, acks_late=True, ignore_result=True)
def broadcast_send_slice(*, tenant_id: int, broadcast_id: str) -> int:
    """One slice of one broadcast (``broadcasts.services.broadcast_send_slice``)."""
    from accounts.tenancy import current_tenant
    from broadcasts.models import Broadcast
    from broadcasts.services import broadcast_send_slice as send_slice

    broadcast = Broadcast.objects.filter(pk=broadcast_id).first()
    if broadcast is None:
        return 0
    return send_slice(tenant=current_tenant(), broadcast=broadcast)
