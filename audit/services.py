from __future__ import annotations

from typing import Any

from django.db import IntegrityError, models, transaction
from django.utils import timezone

from accounts.requestmeta import current_request_meta
from audit.chain import link_hash
from audit.events import ALLOWED_DETAIL_KEYS, AuditEventType
from audit.models import AuditChainHead, AuditEvent


class AuditDetailsError(ValueError):
    pass


PATIENT_ACTOR = "patient"  # ``actor=PATIENT_ACTOR``: the patient on the secure page or by SMS


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

    ``actor`` is a User, an ApiKey, ``PATIENT_ACTOR`` (the event's ``patient_id`` acted), or
    None for the system/anonymous. Request metadata (IP, user agent, request id) comes from the
    current request, if any; a listener that is not a web request (MLLP) sets ``system_actor``
    in it so its events say which interface acted.
    """
    from accounts.models import ApiKey, User

    meta = current_request_meta()
    actor_type, actor_user = "system", None
    if isinstance(actor, User):
        actor_type, actor_user = "user", actor
    elif isinstance(actor, ApiKey):
        actor_type, actor_label = "api_key", actor_label or actor.prefix
    elif actor == PATIENT_ACTOR:
        actor_type = "patient"
    elif meta.get("system_actor"):  # an integration with no user behind it (the MLLP listener)
        actor_label = actor_label or meta["system_actor"]
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
    _append(event)
    return event


def audit_chain_head_lock(tenant_id) -> AuditChainHead:
    """The chain head, locked until the caller's transaction ends (created on first use)."""
    name = AuditChainHead.chain_name(tenant_id)
    head = AuditChainHead.objects.select_for_update().filter(chain=name).first()
    if head is None:
        try:
            with transaction.atomic():
                AuditChainHead.objects.create(chain=name, tenant_id=tenant_id)
        except IntegrityError:
            pass  # a concurrent writer created it
        head = AuditChainHead.objects.select_for_update().get(chain=name)
    return head


@transaction.atomic
def _append(event: AuditEvent) -> None:
    """Link ``event`` after the chain head and insert it. Holds the head's row lock until the
    surrounding transaction commits: audit writes of one tenant are serialised, which is
    what keeps the chain gap-free when many workers write at once."""
    head = audit_chain_head_lock(event.tenant_id)
    event.seq = head.seq + 1
    event.prev_hash = head.head_hash
    event.hash = link_hash(event.prev_hash, event)
    event.save(force_insert=True)
    head.seq, head.head_hash = event.seq, event.hash
    head.save(update_fields=["seq", "head_hash", "updated_at"])


BREAK_GLASS_MINUTES = 60
BREAK_GLASS_NOTE_MIN = 10


@transaction.atomic
def break_glass_start(*, tenant, actor, patient_id, reason: str, note: str, minutes: int = BREAK_GLASS_MINUTES):
    """Open one patient's record to ``actor`` for ``minutes``, with a reason. Audited and
    shown to the clinic's owners until one of them acknowledges it."""
    from datetime import timedelta

    from accounts.errors import ApplicationError
    from audit.models import BreakGlassGrant, BreakGlassReason

    fields = {}
    if reason not in BreakGlassReason.values:
        fields["reason"] = [f"Choose one of: {', '.join(BreakGlassReason.values)}."]
    if len((note or "").strip()) < BREAK_GLASS_NOTE_MIN:
        fields["note"] = [f"Explain why in at least {BREAK_GLASS_NOTE_MIN} characters."]
    if not 1 <= minutes <= 240:
        fields["minutes"] = ["Between 1 and 240 minutes."]
    if fields:
        raise ApplicationError("Emergency access needs a reason.", fields=fields)
    grant = BreakGlassGrant(tenant=tenant, user=actor, patient_id=patient_id, reason=reason, note=note.strip(),
                            expires_at=timezone.now() + timedelta(minutes=minutes))
    grant.save(force_insert=True)
    audit_record(tenant=tenant, actor=actor, event_type=AuditEventType.BREAK_GLASS_STARTED, target=grant,
                 patient_id=patient_id, details={"reason": reason, "expires_at": grant.expires_at.isoformat()})
    return grant


@transaction.atomic
def break_glass_acknowledge(*, tenant, actor, grant):
    grant.acknowledged_by = actor
    grant.acknowledged_at = timezone.now()
    grant.save(update_fields=["acknowledged_by", "acknowledged_at", "updated_at"])
    audit_record(tenant=tenant, actor=actor, event_type=AuditEventType.BREAK_GLASS_REVIEWED, target=grant,
                 patient_id=grant.patient_id)
    return grant
