"""Audit writes that don't queue behind each other: events written while another transaction
holds the chain head go in unsealed and are linked right after commit; bulk writes; what
verification says about events not sealed yet."""

import threading
import uuid
from datetime import timedelta

import psycopg
import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.tenancy import tenant_scope
from audit.events import AuditEventType
from audit.models import AuditEvent
from audit.services import AuditDetailsError, audit_record, audit_record_many, seal_pending
from audit.tasks import audit_seal
from tests.audit.support import superuser, verify
from tests.factories import make_tenant


def _write(tenant, count: int = 0):
    with tenant_scope(tenant):
        return audit_record(tenant=tenant, actor=None, event_type=AuditEventType.MESSAGE_SENT,
                            details={"count": count})


def _chain(tenant) -> list:
    with tenant_scope(tenant):
        return list(AuditEvent.objects.order_by("seq").values_list("seq", flat=True))


def test_audit_record_many_writes_linked_events_in_one_insert(tenant_a, alice):
    patients = [uuid.uuid4() for _ in range(3)]
    records = [{"event_type": AuditEventType.LINK_CREATED, "patient_id": p, "details": {"kind": "reminder"}}
               for p in patients]
    records.append({"event_type": AuditEventType.MESSAGE_SENT, "target": alice, "actor_label": "fan-out"})
    with tenant_scope(tenant_a), transaction.atomic():
        before = AuditEvent.objects.count()
        with CaptureQueriesContext(connection) as queries:
            events = audit_record_many(tenant=tenant_a, actor=alice, records=records)
        rows = list(AuditEvent.objects.order_by("seq")[before:])
    inserts = [q for q in queries.captured_queries if q["sql"].startswith('INSERT INTO "audit_auditevent"')]
    assert len(inserts) == 1
    assert [r.id for r in rows] == [e.id for e in events]  # chained in the order given
    by_id = {r.id: r for r in rows}
    assert [by_id[e.id].patient_id for e in events[:3]] == patients
    last = by_id[events[3].id]
    assert last.object_id == str(alice.pk) and last.actor_label == "fan-out"
    assert {(r.actor_type, r.actor_user_id, r.occurred_at) for r in rows} == {("user", alice.pk, rows[0].occurred_at)}
    assert by_id[events[0].id].details == {"kind": "reminder"}
    assert verify("--tenant", tenant_a.slug)[0]


def test_audit_record_many_rejects_what_audit_record_would(tenant_a, alice):
    with tenant_scope(tenant_a):
        with pytest.raises(AuditDetailsError):
            audit_record_many(tenant=tenant_a, actor=alice, records=[{"event_type": 300, "body": "x"}])
        with pytest.raises(AuditDetailsError):
            audit_record_many(tenant=tenant_a, actor=alice, records=[{"patient_id": None}])
        with pytest.raises(AuditDetailsError, match="allow-listed"):
            audit_record_many(tenant=tenant_a, actor=alice, records=[{"event_type": 300, "details": {"phone": 1}}])
        assert audit_record_many(tenant=tenant_a, actor=alice, records=[]) == []


def test_a_committer_does_not_wait_for_a_busy_sealer_which_seals_its_event_after(committed_db, monkeypatch):
    """A is sealing when B commits: B's attempt to seal is refused at once and B goes on with
    its event unsealed; A, after releasing the lock, finds B's event and links it too."""
    import audit.services as services

    tenant = make_tenant(slug="busy-sealer")
    a_sealing, b_done = threading.Event(), threading.Event()
    real_batch, errors = services._seal_batch, []

    def slow_batch(tenant_id, since):
        linked = real_batch(tenant_id, since)
        if threading.current_thread().name == "sealer-a":
            a_sealing.set()
            assert b_done.wait(30)
        return linked

    monkeypatch.setattr(services, "_seal_batch", slow_batch)

    def sealer_a():
        from django.db import connection as thread_connection

        try:
            _write(tenant, 1)  # A's commit, then A's sealing, held up inside its batch
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            thread_connection.close()

    thread = threading.Thread(target=sealer_a, name="sealer-a")
    thread.start()
    assert a_sealing.wait(30)
    event = _write(tenant, 2)  # would block here if committers queued behind the sealer
    with tenant_scope(tenant):
        assert AuditEvent.objects.get(pk=event.pk).seq is None
    ok, output = verify("--tenant", "busy-sealer")
    assert ok and "1 not yet sealed" in output
    b_done.set()
    thread.join(30)
    assert errors == []
    assert _chain(tenant) == [1, 2, 3]  # TENANT_CREATED, A's, B's: nothing left unsealed
    with tenant_scope(tenant):
        assert AuditEvent.objects.get(pk=event.pk).seq == 3
    ok, output = verify("--tenant", "busy-sealer")
    assert ok and "not yet sealed" not in output


def _sealer_lock(conn, tenant):
    """Take the tenant's sealing lock on another connection: a sealer that is busy (or died)."""
    from audit.services import SEAL_LOCK_CLASS

    conn.execute("SELECT pg_advisory_lock(%s, %s)", [SEAL_LOCK_CLASS, tenant.pk])


def test_events_left_unsealed_are_flagged_and_the_beat_task_seals_them(committed_db, time_machine):
    tenant = make_tenant(slug="stranded")
    with superuser() as conn:  # a sealer holds the lock and then dies
        _sealer_lock(conn, tenant)
        _write(tenant)
    assert _chain(tenant) == [1, None]
    time_machine.move_to(timezone.now() + timedelta(minutes=6), tick=False)
    ok, output = verify("--tenant", "stranded")
    assert not ok and "1 event(s) not sealed into the chain" in output
    assert audit_seal() == 1
    assert _chain(tenant) == [1, 2]
    assert verify("--tenant", "stranded")[0]
    assert seal_pending(tenant) == 0


def test_sealing_sets_only_the_chain_columns_of_unsealed_events(committed_db):
    tenant = make_tenant(slug="sealonly")
    with superuser() as conn:
        _sealer_lock(conn, tenant)
        unsealed = _write(tenant)
    with tenant_scope(tenant):  # the app role, through the sealing function: sealed rows are final (RLS)
        sealed = AuditEvent.objects.get(seq=1)
        with pytest.raises(Exception, match="linked 0 of 1"), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT caretext_audit_seal(%s, 1, %s::uuid[], '{2}'::bigint[], '{x}'::text[], "
                           "'{y}'::text[])", [f"tenant:{tenant.pk}", [sealed.id]])
    with superuser() as conn:  # not even the owner or a superuser may change anything else
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            conn.execute("UPDATE audit_auditevent SET seq = 2, prev_hash = 'a', hash = 'b', actor_label = 'x' "
                         "WHERE id = %s", [unsealed.id])
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            conn.execute("UPDATE audit_auditevent SET seq = 9 WHERE id = %s", [sealed.id])
    assert seal_pending(tenant) == 1
    assert verify("--tenant", "sealonly")[0]


def test_concurrent_bulk_and_single_writers_leave_one_sealed_chain(committed_db):
    tenant = make_tenant(slug="bulky")
    errors = []

    def writer(n):
        from django.db import connection as thread_connection

        try:
            for i in range(8):
                with tenant_scope(tenant), transaction.atomic():
                    if i % 2:
                        audit_record_many(tenant=tenant, actor=None, records=[
                            {"event_type": AuditEventType.LINK_CREATED, "details": {"count": k}} for k in range(5)])
                    else:
                        audit_record(tenant=tenant, actor=None, event_type=AuditEventType.MESSAGE_SENT)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            thread_connection.close()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert _chain(tenant) == list(range(1, 2 + 5 * (4 + 4 * 5)))
    assert verify("--tenant", "bulky")[0]
