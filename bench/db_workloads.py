"""In-process database workloads (issue #12 item 9: the audit write side)."""

from __future__ import annotations

import itertools
import statistics
import threading
import time
import uuid

from bench.figures import figure, interleave

_plain_seq = itertools.count(10**12)  # far above any real chain position: no clash with audit_record


def _writers(tenant, write_one, *, writers: int, per_writer: int, settle=None) -> float:
    """Events/s of ``writers`` threads each writing ``per_writer`` events, one transaction each.
    ``settle`` runs inside the clock after the writers are done (the chain: until all is sealed)."""
    from django.db import connection, transaction

    from accounts.tenancy import tenant_scope

    barrier = threading.Barrier(writers + 1)
    failures: list[str] = []

    def work():
        try:
            with tenant_scope(tenant):
                barrier.wait()
                for _ in range(per_writer):
                    with transaction.atomic():
                        write_one()
        except Exception as exc:  # noqa: BLE001 - reported, the figure is then void
            failures.append(f"{type(exc).__name__}: {exc}")
        finally:
            connection.close()

    threads = [threading.Thread(target=work) for _ in range(writers)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    if settle is not None and not failures:
        settle()
    elapsed = time.perf_counter() - start
    if failures:
        raise RuntimeError(f"audit writers failed: {failures[0]}")
    return writers * per_writer / elapsed


def _sealed(tenant, left_over: list[int]):
    """Stop the chained clock only when every event is linked into the chain: the committers
    seal after each commit; whatever they left is sealed here, inside the clock."""
    from accounts.tenancy import tenant_scope
    from audit.models import AuditEvent
    from audit.services import seal_pending

    def settle():
        with tenant_scope(tenant):
            left_over.append(seal_pending(tenant))
            if AuditEvent.objects.filter(seq__isnull=True).exists():
                raise RuntimeError("audit events left unsealed after the writers finished")

    return settle


def _check_chain(tenant) -> None:
    """Out of the clock: the chain is intact (the plain rows' made-up positions left aside)."""
    from accounts.tenancy import tenant_scope
    from audit.chain import verify_events
    from audit.models import AuditChainHead, AuditEvent

    with tenant_scope(tenant):
        head = AuditChainHead.objects.get(chain=AuditChainHead.chain_name(tenant.pk))
        events = AuditEvent.objects.filter(seq__lt=10**12).order_by("seq", "id").iterator(chunk_size=2000)
        problem = verify_events(events, base_seq=head.base_seq, base_hash=head.base_hash, head_seq=head.seq,
                                head_hash=head.head_hash)
    if problem:
        raise RuntimeError(f"audit chain broken after the bench: {problem}")


def audit_writes(tenant, rounds: int, *, writers: int = 8, per_writer: int = 100) -> list[dict]:
    """audit_record (per-tenant hash chain: inserted unsealed, linked into the chain in batches
    right after each commit) vs inserting the same row into the same table without the chain
    (no head, no hash), 8 writers, one tenant. The chained clock stops when every event is
    sealed (``sealed_after_join``: how many the committers had left, normally 0)."""
    from audit.events import AuditEventType
    from audit.models import AuditEvent
    from audit.services import audit_record

    patient_id, thread_id = uuid.uuid4(), str(uuid.uuid4())
    details = {"thread_id": thread_id, "kind": "general", "direction": "outbound", "source": "web"}

    def chained():
        audit_record(tenant=tenant, actor=None, event_type=AuditEventType.MESSAGE_SENT, patient_id=patient_id,
                     details=details)

    def plain():
        from django.utils import timezone

        AuditEvent(tenant=tenant, occurred_at=timezone.now(), event_type=int(AuditEventType.MESSAGE_SENT),
                   actor_type="system", patient_id=patient_id, details=details, seq=next(_plain_seq),
                   prev_hash="0" * 64, hash="0" * 64).save(force_insert=True)

    left_over: list[int] = []
    value, ref = interleave(
        rounds, lambda: _writers(tenant, chained, writers=writers, per_writer=per_writer,
                                 settle=_sealed(tenant, left_over)),
        lambda: _writers(tenant, plain, writers=writers, per_writer=per_writer))
    _check_chain(tenant)
    return [figure("audit_write_chained", statistics.median(value), "events/s", statistics.median(ref),
                   f"plain inserts of the same rows, {writers} writers, same tenant", 0.5, True,
                   rounds=rounds, events=writers * per_writer * rounds, sealed_after_join=sum(left_over))]
