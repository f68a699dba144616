from __future__ import annotations

import contextlib
import uuid
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, connection, models, transaction
from django.utils import timezone

from accounts.requestmeta import current_request_meta
from accounts.tenancy import uuid7
from audit.chain import link_hash
from audit.events import ALLOWED_DETAIL_KEYS, AuditEventType
from audit.models import AuditChainHead, AuditEvent


class AuditDetailsError(ValueError):
    pass


PATIENT_ACTOR = "patient"  # ``actor=PATIENT_ACTOR``: the patient on the secure page or by SMS
RECORD_KEYS = frozenset({"event_type", "target", "patient_id", "actor_label", "details"})  # audit_record_many
SEAL_BATCH = 1000  # events linked per sealing transaction
SEAL_ROUNDS = 50  # per seal_pending call; what is left then is the next committer's or the beat's
# How far back a committer looks for unsealed events. Sealed events leave dead entries in the
# ``audit_unsealed`` index until VACUUM; starting the scan here keeps it from wading through
# them. Events of a transaction that ran longer than this are left to the beat task, which
# looks back a day, and hourly over everything (audit.tasks).
SEAL_WINDOW = timedelta(minutes=10)


def _clean_details(details: dict[str, Any] | None) -> dict[str, Any]:
    details = details or {}
    unknown = set(details) - ALLOWED_DETAIL_KEYS
    if unknown:
        # A programming error, raised loudly in tests; the names are ours, never PHI.
        raise AuditDetailsError(f"audit details keys not allow-listed: {sorted(unknown)}")
    return details


def _actor_fields(actor, actor_label: str, meta: dict) -> tuple[str, Any, str]:
    """(actor_type, actor_user, actor_label) for ``actor`` as ``audit_record`` documents it."""
    from accounts.models import ApiKey, User

    if isinstance(actor, User):
        return "user", actor, actor_label
    if isinstance(actor, ApiKey):
        return "api_key", None, actor_label or actor.prefix
    if actor == PATIENT_ACTOR:
        return "patient", None, actor_label
    if meta.get("system_actor"):  # an integration with no user behind it (the MLLP listener)
        return "system", None, actor_label or meta["system_actor"]
    return ("anonymous" if meta.get("request_id") else "system"), None, actor_label


def _event(*, tenant, actor, meta: dict, now, event_type, target: models.Model | None = None, patient_id=None,
           actor_label: str = "", details: dict[str, Any] | None = None) -> AuditEvent:
    actor_type, actor_user, actor_label = _actor_fields(actor, actor_label, meta)
    return AuditEvent(
        tenant=tenant,
        occurred_at=now,
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
    event = _event(tenant=tenant, actor=actor, meta=current_request_meta(), now=timezone.now(),
                   event_type=event_type, target=target, patient_id=patient_id, actor_label=actor_label,
                   details=details)
    _write([event])
    return event


def audit_record_many(*, tenant, actor, records: list[dict[str, Any]]) -> list[AuditEvent]:
    """Write many events of one tenant and actor in one insert (a fan-out of reminders).

    Each record has ``event_type`` and optionally ``target``, ``patient_id``, ``actor_label``,
    ``details`` — the arguments of ``audit_record``. Same request metadata and time for all;
    their order in the chain is the order of ``records``. Call inside the action's transaction.
    """
    meta, now = current_request_meta(), timezone.now()
    # One uuid7 with its low 32 bits counting up: the sealer links the events of one moment in
    # id order, which is then the order given.
    first = uuid7().int & ~0xFFFFFFFF
    events = []
    for i, record in enumerate(records):
        unknown = set(record) - RECORD_KEYS
        if unknown or "event_type" not in record:
            raise AuditDetailsError(f"audit record keys: need event_type, got unknown {sorted(unknown)}")
        event = _event(tenant=tenant, actor=actor, meta=meta, now=now, **record)
        event.id = uuid.UUID(int=first + i)
        events.append(event)
    if events:
        _write(events)
    return events


# --- The chain ---------------------------------------------------------------------------------
#
# On PostgreSQL a tenant's events are inserted *unsealed* (seq NULL, no hashes): a plain insert in
# the business transaction, which never waits for another clinic action to commit. Right after
# the commit, ``seal_pending`` links whatever is unsealed into the chain, in batches, holding the
# tenant's sealing lock (a session advisory lock taken with try: a committer never queues behind
# another). A committer that can't get it leaves: the holder checks again for unsealed events
# *after* releasing the lock, so an event committed while it held the lock is never stranded.
# A crash between commit and sealing leaves events to the beat task (``audit.tasks``), and
# verification reports any left unsealed for long.
# The platform chain (no tenant; its rows are hidden from tenant scopes) is rare and, like the
# demo on SQLite (one writer), links inline under the head's row lock.

SEAL_LOCK_CLASS = 0x61756474  # "audt": the advisory-lock namespace of audit sealing, one key per tenant


def _chain_head(tenant_id) -> AuditChainHead:
    """The chain head, locked until the transaction ends (created on first use)."""
    name = AuditChainHead.chain_name(tenant_id)
    locked = AuditChainHead.objects.select_for_update().filter(chain=name)
    head = locked.first()
    if head is None:
        try:
            with transaction.atomic():
                AuditChainHead.objects.create(chain=name, tenant_id=tenant_id)
        except IntegrityError:
            pass  # a concurrent writer created it
        head = locked.get()
    return head


def _link(head: AuditChainHead, events: list[AuditEvent]) -> None:
    """Give ``events`` the next positions after ``head`` and move the head (not saved)."""
    for event in events:
        event.seq = head.seq + 1
        event.prev_hash = head.head_hash
        event.hash = link_hash(event.prev_hash, event)
        head.seq, head.head_hash = event.seq, event.hash


def _write(events: list[AuditEvent]) -> None:
    tenant_id = events[0].tenant_id
    inline = tenant_id is None or connection.vendor != "postgresql"
    # No savepoint: an audit write that fails must fail the action it records.
    with transaction.atomic(savepoint=False):
        head = _chain_head(tenant_id) if inline else None
        if head is not None:
            _link(head, events)
        if len(events) == 1:
            events[0].save(force_insert=True)
        else:
            AuditEvent.objects.bulk_create(events, batch_size=1000)
        if head is not None:
            head.save(update_fields=["seq", "head_hash", "updated_at"])
        elif _never_commits():
            seal_pending(events[0].tenant, check_first=False)
        else:
            _seal_after_commit(events[0].tenant)


def _never_commits() -> bool:
    """Inside a Django test case's transaction, which is rolled back, never committed: sealing
    after commit would never run there, so the same sealer runs right away instead."""
    blocks = connection.atomic_blocks
    return bool(blocks) and getattr(blocks[0], "_from_testcase", False)


def _seal_after_commit(tenant) -> None:
    """Run ``seal_pending`` once after the outermost commit (once per tenant and transaction)."""
    if any(getattr(func, "audit_seal_tenant", None) == tenant.pk for _, func, _ in connection.run_on_commit):
        return

    def seal():
        seal_pending(tenant, check_first=False)

    seal.audit_seal_tenant = tenant.pk
    # robust: the events are committed whatever happens here; a failure is logged and the beat
    # task seals them later.
    transaction.on_commit(seal, robust=True)


def _any_unsealed(tenant_id, since: datetime) -> bool:
    # Raw SQL: this runs after every audited commit, where the ORM's query building shows.
    with connection.cursor() as cursor:
        cursor.execute("SELECT EXISTS (SELECT 1 FROM audit_auditevent WHERE tenant_id = %s AND seq IS NULL "
                       "AND occurred_at >= %s)", [tenant_id, since])
        return cursor.fetchone()[0]


def seal_pending(tenant, *, check_first: bool = True, since: datetime | None = None) -> int:
    """Link the tenant's unsealed events written since ``since`` (default: SEAL_WINDOW ago) into
    its chain, in batches; how many it linked.

    Returns at once when another connection holds the tenant's sealing lock: that holder
    checks again after releasing it. Opens the tenant's scope itself when needed: it runs
    after a commit (possibly after the action's scope has ended) and from the beat task.
    """
    if connection.vendor != "postgresql":
        return 0  # SQLite: every event is linked inline
    from accounts.tenancy import current_tenant, tenant_scope

    since = since or timezone.now() - SEAL_WINDOW
    in_scope = current_tenant() is not None and current_tenant().pk == tenant.pk
    sealed = 0
    with contextlib.nullcontext() if in_scope else tenant_scope(tenant):
        pending = not check_first or _any_unsealed(tenant.pk, since)
        for _ in range(SEAL_ROUNDS):
            if not pending or not _seal_lock(tenant.pk, "pg_try_advisory_lock"):
                break
            try:
                linked = _seal_batch(tenant.pk, since)
            except BaseException:
                _seal_lock(tenant.pk, "pg_advisory_unlock")
                raise
            sealed += linked
            pending = _unlock_and_check(tenant.pk, since) or linked == SEAL_BATCH
    return sealed


def _unlock_and_check(tenant_id, since: datetime) -> bool:
    """Release the sealing lock, *then* look for unsealed events: a committer refused the lock
    meanwhile relies on this check. Two statements in one round trip (client-side binding
    sends them as one query); the second takes its snapshot after the first has released."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_unlock(%s::int, %s::int); "
                       "SELECT EXISTS (SELECT 1 FROM audit_auditevent WHERE tenant_id = %s AND seq IS NULL "
                       "AND occurred_at >= %s)", [SEAL_LOCK_CLASS, tenant_id, tenant_id, since])
        cursor.nextset()
        return cursor.fetchone()[0]


def _seal_lock(tenant_id, function: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {function}(%s::int, %s::int)", [SEAL_LOCK_CLASS, tenant_id])
        return cursor.fetchone()[0]


def _seal_batch(tenant_id, since: datetime) -> int:
    """Link up to SEAL_BATCH unsealed events written since ``since``, oldest first. Under the
    sealing lock nobody else moves this chain (a retention purge takes the same lock), so no
    transaction is needed: one read of the events with the head, one statement that seals
    them and moves the head."""
    name = AuditChainHead.chain_name(tenant_id)
    # The head comes with the events (RLS scopes both tables to the tenant). Raw SQL for the
    # same reason as _any_unsealed.
    events = list(AuditEvent.objects.raw(
        "SELECT e.*, h.seq AS head_seq, h.head_hash AS head_hash_now FROM audit_auditevent e "
        "LEFT JOIN audit_auditchainhead h ON h.chain = %s "
        "WHERE e.tenant_id = %s AND e.seq IS NULL AND e.occurred_at >= %s ORDER BY e.occurred_at, e.id LIMIT %s",
        [name, tenant_id, since, SEAL_BATCH]))
    if not events:
        return 0
    if events[0].head_seq is None:  # the clinic's first event
        AuditChainHead.objects.get_or_create(chain=name, defaults={"tenant_id": tenant_id})
        head = AuditChainHead(chain=name, tenant_id=tenant_id)
    else:
        head = AuditChainHead(chain=name, tenant_id=tenant_id, seq=events[0].head_seq,
                              head_hash=events[0].head_hash_now)
    _link(head, events)
    _store_seals(head, events)
    return len(events)


def _store_seals(head: AuditChainHead, events: list[AuditEvent]) -> None:
    # The app role may not UPDATE the trail; caretext_audit_seal (audit.dbsql) sets the three
    # chain columns of this tenant's unsealed rows (the append-only trigger allows nothing else)
    # and moves the head from where it was read, in one statement.
    with connection.cursor() as cursor:
        cursor.execute("SELECT caretext_audit_seal(%s, %s, %s::uuid[], %s::bigint[], %s::text[], %s::text[])",
                       [head.chain, events[0].seq - 1, [e.id for e in events], [e.seq for e in events],
                        [e.prev_hash for e in events], [e.hash for e in events]])
        stored = cursor.fetchone()[0]
    if stored != len(events):  # impossible under the lock: fail loudly (the function rolled back)
        raise RuntimeError(f"audit sealing linked {stored} of {len(events)} events")


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
