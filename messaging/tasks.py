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
    """Pace the rows on the clinic's sender, then try each due one once (claimed row by row, so
    two workers never send the same one).

    Runs on the send pool (threads: sending is waiting on the gateway). It sends at most
    ``outbox.SEND_CHUNK`` rows itself and hands the rest to other tasks, so a batch of 100 is
    sent in parallel; rows whose slot on the sender is later are woken then (a countdown: the
    row holds the slot and decides, the broker only wakes a worker; a lost wake-up leaves the
    row due for the sweeper).
    """
    from accounts.tenancy import current_tenant
    from messaging.outbox import pace, sms_send_one

    tenant = current_tenant()
    plan = pace(tenant, sms_ids[:500])
    _wake(tenant_id, plan.handoff, countdown=None)
    for wait, group in sorted(plan.later.items()):
        _wake(tenant_id, group, countdown=wait + 0.05)  # a hair after the slot: the claim then finds it due
    outcomes: dict[str, int] = {"handed_off": len(plan.handoff), "paced": sum(map(len, plan.later.values()))}
    for sms_id in plan.send:
        try:
            outcome = sms_send_one(tenant=tenant, sms_id=sms_id)
        except Exception:  # noqa: BLE001 - one bad row must not stop the batch; the sweeper retries it
            log.exception("outbox: SMS %s raised; it stays due for the sweeper", sms_id)
            outcome = "error"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return outcomes


def _wake(tenant_id: int, ids: list, *, countdown: float | None) -> None:
    """Hand ``ids`` to the send pool (in chunks, now or after ``countdown`` seconds). A broker
    failure loses nothing: the rows are due or hold their slot, and the sweeper offers them."""
    from messaging.outbox import SEND_CHUNK

    step = SEND_CHUNK if countdown is None else max(SEND_CHUNK, len(ids))  # a wake-up splits itself when it runs
    for start in range(0, len(ids), step):
        chunk = [str(i) for i in ids[start:start + step]]
        try:
            outbox_send.apply_async(kwargs={"tenant_id": tenant_id, "sms_ids": chunk}, countdown=countdown,
                                    retry=False, ignore_result=True)
        except Exception as exc:  # noqa: BLE001 - the sweeper hands the rows out
            log.warning("outbox: could not hand out %d SMS (%s); the sweeper will", len(chunk), type(exc).__name__)


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
