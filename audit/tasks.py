"""Beat task for the audit trail. It takes no arguments (no PHI, R14) and enters each clinic's scope."""

from __future__ import annotations

import logging

from celery import shared_task

log = logging.getLogger(__name__)


@shared_task(acks_late=True, ignore_result=True)
def audit_seal(full: bool = False) -> int:
    """Every 15 s (beat), events of the last day that no committer sealed: the process died
    between commit and sealing, or the transaction ran longer than the committers' look-back
    (``SEAL_WINDOW``). Hourly with ``full``: all of them, however old. Normally there are none
    and this is one indexed existence check per clinic. Two runs at once are safe: sealers take
    the tenant's sealing lock with try."""
    from datetime import UTC, datetime, timedelta

    from django.utils import timezone

    from accounts.models import Tenant
    from audit.services import seal_pending

    since = datetime(1970, 1, 1, tzinfo=UTC) if full else timezone.now() - timedelta(days=1)

    sealed = 0
    # Deactivated clinics too: their last events must still join the chain.
    for tenant in Tenant.objects.order_by("pk"):
        try:
            sealed += seal_pending(tenant, since=since)
        except Exception:  # noqa: BLE001 - one clinic's trouble must not stop the others
            log.exception("audit sealing failed for tenant %s", tenant.pk)
    if sealed:
        log.warning("audit_seal sealed %s event(s) that no committer sealed", sealed)
    return sealed
