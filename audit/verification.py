"""Recompute audit chains from the database and compare them with heads and checkpoints.

This is the audit chain verifier that R6 allows to read events without the ORM scope: the
platform chain belongs to no tenant. Tenant chains are still read inside their tenant's scope.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Count, Min
from django.utils import timezone

from accounts.models import Tenant
from accounts.tenancy import tenant_scope, unscoped
from audit.chain import ChainProblem, verify_events
from audit.models import AuditChainHead, AuditEvent

# Events are sealed into the chain right after their transaction commits (audit.services); one
# still unsealed after this long means sealing is failing (or was held back), which is a problem.
UNSEALED_GRACE = timedelta(minutes=5)


@dataclass
class ChainReport:
    chain: str
    events: int
    head_seq: int
    head_hash: str
    problem: ChainProblem | None
    unsealed: int = 0  # events written but not yet linked into the chain
    oldest_unsealed: datetime | None = None


def _rows(tenant_id):
    return AuditEvent.unscoped_objects.filter(tenant_id=tenant_id) if tenant_id else \
        AuditEvent.unscoped_objects.filter(tenant__isnull=True)


def _events(tenant_id) -> Iterator[AuditEvent]:
    return _rows(tenant_id).filter(seq__isnull=False).order_by("seq", "id").iterator(chunk_size=2000)


def _unsealed(tenant_id) -> tuple[int, datetime | None]:
    found = _rows(tenant_id).filter(seq__isnull=True).aggregate(n=Count("pk"), oldest=Min("occurred_at"))
    return found["n"], found["oldest"]


def _unsealed_problem(count: int, oldest: datetime | None) -> ChainProblem | None:
    if oldest is None or timezone.now() - oldest <= UNSEALED_GRACE:
        return None
    return ChainProblem(None, None, f"{count} event(s) not sealed into the chain, the oldest since "
                                    f"{oldest.isoformat(timespec='seconds')} (sealing is failing?)")


def _check(tenant_id, checkpoints: list[dict]) -> ChainReport:
    name = AuditChainHead.chain_name(tenant_id)
    head = AuditChainHead.objects.filter(chain=name).first() or AuditChainHead(chain=name, tenant_id=tenant_id)
    counted = []

    def counting(events):
        for event in events:
            counted.append(1)
            yield event

    with unscoped():
        problem = verify_events(counting(_events(tenant_id)), base_seq=head.base_seq, base_hash=head.base_hash,
                                head_seq=head.seq, head_hash=head.head_hash)
        if problem is None:
            problem = _check_checkpoints(tenant_id, head, checkpoints)
        unsealed, oldest = _unsealed(tenant_id)
    return ChainReport(name, len(counted), head.seq, head.head_hash, problem or _unsealed_problem(unsealed, oldest),
                       unsealed, oldest)


def _check_checkpoints(tenant_id, head: AuditChainHead, checkpoints: list[dict]) -> ChainProblem | None:
    for point in checkpoints:
        seq, wanted = int(point["seq"]), point["head_hash"]
        if seq > head.seq:
            return ChainProblem(None, None, f"checkpoint at seq {seq} is beyond the head (seq {head.seq}): "
                                            f"events were removed and the chain rebuilt")
        if seq == head.base_seq and wanted == head.base_hash or seq == 0:
            continue
        event = _events_at(tenant_id, seq)
        if event is None or event.hash != wanted:
            return ChainProblem(seq, str(event.id) if event else None,
                                "differs from the exported checkpoint: history before it was rewritten")
    return None


def _events_at(tenant_id, seq: int) -> AuditEvent | None:
    rows = AuditEvent.unscoped_objects.filter(seq=seq)
    rows = rows.filter(tenant_id=tenant_id) if tenant_id else rows.filter(tenant__isnull=True)
    return rows.first()


def verify(tenants: list[Tenant], *, platform: bool, checkpoints: list[dict] | None = None) -> list[ChainReport]:
    checkpoints = checkpoints or []
    reports = []
    for tenant in tenants:
        mine = [c for c in checkpoints if c["chain"] == AuditChainHead.chain_name(tenant.pk)]
        with tenant_scope(tenant):
            reports.append(_check(tenant.pk, mine))
    if platform:
        reports.append(_check(None, [c for c in checkpoints if c["chain"] == "platform"]))
    return reports


def checkpoints(tenants: list[Tenant], *, platform: bool) -> list[dict]:
    """The current head of each chain, to be stored outside the database."""
    now = timezone.now().isoformat()
    points = []
    for tenant in tenants:
        with tenant_scope(tenant):
            head = AuditChainHead.objects.filter(chain=AuditChainHead.chain_name(tenant.pk)).first()
            if head:
                points.append({"chain": head.chain, "tenant": tenant.slug, "seq": head.seq,
                               "head_hash": head.head_hash, "at": now})
    if platform:
        head = AuditChainHead.objects.filter(chain="platform").first()
        if head:
            points.append({"chain": "platform", "tenant": None, "seq": head.seq, "head_hash": head.head_hash, "at": now})
    return points
