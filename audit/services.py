from __future__ import annotations

from typing import Any

from django.db import models
from django.utils import timezone

from accounts.requestmeta import current_request_meta
from audit.events import ALLOWED_DETAIL_KEYS, AuditEventType
from audit.models import AuditEvent


class AuditDetailsError(ValueError):
    pass


def _clean_details(details: dict[str, Any] | None) -> dict[str, Any]:
    details = details or {}
    unknown = set(details) - ALLOWED_DETAIL_KEYS
    if unknown:
        # A programming error, raised loudly in tests; the names are ours, never PHI.
        raise AuditDetailsError(f"audit details keys not allow-listed: {sorted(unknown)}")
    return details


def audit_record(
    *,
    tenant,
    actor,
    event_type: AuditEventType,
    target: models.Model | None = None,
    patient_id=None,
    actor_label: str = "",
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Write one audit event. Call inside the transaction of the action it records.

    ``actor`` is a User, an ApiKey, or None for the system/anonymous. Request metadata
    (IP, user agent, request id) comes from the current request, if any.
    """
    from accounts.models import ApiKey, User

    meta = current_request_meta()
    actor_type, actor_user = "system", None
    if isinstance(actor, User):
        actor_type, actor_user = "user", actor
    elif isinstance(actor, ApiKey):
        actor_type, actor_label = "api_key", actor_label or actor.prefix
    elif meta.get("request_id"):
        actor_type = "anonymous"
    event = AuditEvent(
        tenant=tenant,
        occurred_at=timezone.now(),
        event_type=int(event_type),
        actor_type=actor_type,
        actor_user=actor_user,
        actor_label=actor_label[:200],
        object_type=target._meta.label if target is not None else "",
        object_id=str(target.pk) if target is not None else "",
        patient_id=patient_id,
        ip_address=meta.get("ip"),
        user_agent=(meta.get("user_agent") or "")[:300],
        request_id=meta.get("request_id") or "",
        details=_clean_details(details),
    )
    event.save(force_insert=True)
    return event
