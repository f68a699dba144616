"""Beat task for reminders, and the per-clinic task it hands out. Arguments are ids only (no
PHI, R14); the per-clinic task enters the clinic's scope (``TenantTask``)."""

from __future__ import annotations

import logging

from celery import shared_task

from accounts.tenancy import TenantTask, tenant_scope

log = logging.getLogger(__name__)

# A clinic's run left waiting this long in the queue is dropped: the next beat (every 60 s,
# config/settings.py) hands the clinic out again, so a backlog never stacks runs of one clinic.
RUN_EXPIRES_SECONDS = 60


@shared_task(acks_late=True, ignore_result=True)
def reminders_due() -> int:
    """Every minute (beat): hand each active clinic to the worker pool as its own task
    (``reminders_run_for_tenant``, the clinic's id only), so the clinics' runs (schedule,
    send, follow up) spread over every worker process instead of one process walking them in
    turn. Returns how many clinics it handed out.

    Eager Celery (``CELERY_TASK_ALWAYS_EAGER``: the demo, most tests) runs them here in turn and
    returns the reminders sent, as one process always did.

    Two runs of a clinic at once are safe (two beats, a redelivered task): rows are unique per
    appointment and offset, sends are claimed with SKIP LOCKED and each message has an
    idempotency key.
    """
    from accounts.models import Tenant

    tenant_ids = list(Tenant.objects.filter(is_active=True).order_by("pk").values_list("pk", flat=True))
    if reminders_run_for_tenant.app.conf.task_always_eager:
        sent = 0
        for tenant in Tenant.objects.filter(pk__in=tenant_ids).order_by("pk"):
            with tenant_scope(tenant):
                sent += _run(tenant)
        return sent
    handed = 0
    for tenant_id in tenant_ids:
        try:
            reminders_run_for_tenant.apply_async(kwargs={"tenant_id": tenant_id}, expires=RUN_EXPIRES_SECONDS,
                                                 retry=False, ignore_result=True)
            handed += 1
        except Exception as exc:  # noqa: BLE001 - the broker is down: the next beat hands the clinics out
            log.warning("reminders: could not hand out the run of tenant %s (%s)", tenant_id, type(exc).__name__)
    return handed


@shared_task(base=TenantTask, acks_late=True, ignore_result=True)
def reminders_run_for_tenant(*, tenant_id: int) -> int:
    """One clinic's reminders run (in its scope); returns the reminders it sent."""
    from accounts.tenancy import current_tenant

    return _run(current_tenant())


def _run(tenant) -> int:
    from reminders.services import reminders_run_for_tenant as run_for_tenant

    try:
        return run_for_tenant(tenant=tenant).get("sent", 0)
    except Exception:  # noqa: BLE001 - one clinic's trouble must not stop the others (nor fail the task: the next beat retries)
        log.exception("reminders run failed for tenant %s", tenant.pk)
        return 0
