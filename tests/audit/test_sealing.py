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
    inserts = [q for q in queries.captured_queries if "INSERT INTO audit_auditevent" in q["sql"]]
    assert len(inserts) == 1
    assert not [q for q in queries.captured_queries if "caretext_audit_seal" in q["sql"]]  # linked in the insert
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


def test_after_commit_sealing_runs_at_most_once_per_interval_per_process(committed_db, monkeypatch, settings):
    """AUDIT_SEAL_INTERVAL > 0: a commit within the interval after this process's last sealing
    leaves its event unsealed; the next commit after it (or the beat task) links it."""
    import audit.services as services

    tenant = make_tenant(slug="throttled")
    clock = [1000.0]
    monkeypatch.setattr(services, "_clock", lambda: clock[0])
    monkeypatch.setattr(services, "_last_seal", {})
    settings.AUDIT_SEAL_INTERVAL = 1.0
    _write(tenant, 1)  # first sealing in this process: at once
    assert _chain(tenant) == [1, 2]
    clock[0] += 0.5
    _write(tenant, 2)  # inside the interval: no sealing
    assert _chain(tenant) == [1, 2, None]
    clock[0] += 0.4
    _write(tenant, 3)  # still inside (counted from the last sealing, not the last commit)
    assert _chain(tenant) == [1, 2, None, None]
    clock[0] += 0.2
    _write(tenant, 4)  # past it: this sealing links the two left before, in order
    assert _chain(tenant) == [1, 2, 3, 4, 5]
    with tenant_scope(tenant):
        counts = list(AuditEvent.objects.order_by("seq").values_list("details__count", flat=True))
    assert counts[1:] == [1, 2, 3, 4]
    clock[0] += 0.1
    _write(tenant, 5)
    assert _chain(tenant)[-1] is None
    assert audit_seal() == 1  # the beat task is not throttled
    assert _chain(tenant) == [1, 2, 3, 4, 5, 6]
    assert verify("--tenant", "throttled")[0]


def test_seal_interval_defaults_to_at_once_only_under_tests(settings):
    from audit.services import _seal_interval

    del settings.AUDIT_SEAL_INTERVAL
    settings.TESTING = True
    assert _seal_interval() == 0
    settings.TESTING = False
    assert _seal_interval() == 1.0
    settings.AUDIT_SEAL_INTERVAL = 0
    assert _seal_interval() == 0


def _bulk(tenant, count: int = 3, details=None):
    return audit_record_many(tenant=tenant, actor=None, records=[
        {"event_type": AuditEventType.LINK_CREATED, "patient_id": str(uuid.uuid4()).upper(),
         "details": details or {"count": k, "kind": "reminder"}} for k in range(count)])


def test_a_bulk_write_links_its_events_in_the_insert_and_they_verify(committed_db):
    tenant = make_tenant(slug="inline")
    with tenant_scope(tenant), transaction.atomic():
        with CaptureQueriesContext(connection) as queries:
            events = _bulk(tenant, 4)
        # Sealed before commit, by the insert itself: no second write per event.
        assert list(AuditEvent.objects.filter(pk__in=[e.pk for e in events]).order_by("seq")
                    .values_list("seq", flat=True)) == [2, 3, 4, 5]
    assert [e.seq for e in events] == [2, 3, 4, 5]
    assert not [q for q in queries.captured_queries if "caretext_audit_seal" in q["sql"]]
    with tenant_scope(tenant):  # the patient id as the database normalised it, which is what was hashed
        assert AuditEvent.objects.get(pk=events[0].pk).patient_id == events[0].patient_id
    ok, output = verify("--tenant", "inline")
    assert ok and "not yet sealed" not in output
    _write(tenant)  # a later single event links after them
    assert _chain(tenant) == [1, 2, 3, 4, 5, 6]
    assert verify("--tenant", "inline")[0]


def test_a_single_writer_during_an_inline_bulk_batch_keeps_the_chain_valid(committed_db, monkeypatch, settings):
    """The bulk writer holds the sealing lock from its insert to its commit. A single event
    committed meanwhile cannot be sealed by its writer; the bulk writer links it after its
    commit, even when after-commit sealing is throttled."""
    import audit.services as services

    tenant = make_tenant(slug="inline-busy")
    monkeypatch.setattr(services, "_last_seal", {})
    monkeypatch.setattr(services, "_clock", lambda: 5000.0)  # a frozen clock: never past the interval
    settings.AUDIT_SEAL_INTERVAL = 3600
    bulk_written, single_done, errors = threading.Event(), threading.Event(), []

    def bulk_writer():
        from django.db import connection as thread_connection

        try:
            with tenant_scope(tenant), transaction.atomic():
                _bulk(tenant, 5)
                bulk_written.set()
                assert single_done.wait(30)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            thread_connection.close()

    thread = threading.Thread(target=bulk_writer)
    thread.start()
    assert bulk_written.wait(30)
    event = _write(tenant, 99)  # its sealing is refused at once (the lock is held), it does not wait
    with tenant_scope(tenant):
        assert AuditEvent.objects.get(pk=event.pk).seq is None
    single_done.set()
    thread.join(30)
    assert errors == []
    assert _chain(tenant) == [1, 2, 3, 4, 5, 6, 7]  # the bulk batch inline, then the single event
    with tenant_scope(tenant):
        assert AuditEvent.objects.get(pk=event.pk).seq == 7
    ok, output = verify("--tenant", "inline-busy")
    assert ok and "not yet sealed" not in output


def test_a_bulk_write_goes_in_unsealed_when_the_sealing_lock_is_busy(committed_db):
    tenant = make_tenant(slug="bulk-busy")
    with superuser() as conn:
        _sealer_lock(conn, tenant)
        with tenant_scope(tenant), transaction.atomic():
            _bulk(tenant, 3)
        assert _chain(tenant) == [1, None, None, None]
        conn.execute("SELECT pg_advisory_unlock_all()")  # now, not whenever the closed session's backend exits
        assert seal_pending(tenant) == 3
    assert _chain(tenant) == [1, 2, 3, 4]
    assert verify("--tenant", "bulk-busy")[0]


def test_a_bulk_write_with_a_float_in_details_is_sealed_after_commit(committed_db):
    """jsonb may hand a float back in another form (1e16 reads back as an integer): such rows
    are hashed as read back, by the sealer, never inline."""
    tenant = make_tenant(slug="bulk-float")
    with tenant_scope(tenant), transaction.atomic():
        events = _bulk(tenant, 2, details={"count": 1e16})
        assert AuditEvent.objects.filter(pk__in=[e.pk for e in events], seq__isnull=True).count() == 2
    assert _chain(tenant) == [1, 2, 3]
    assert verify("--tenant", "bulk-float")[0]
