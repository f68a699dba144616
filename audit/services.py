from __future__ import annotations

import contextlib
import json
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, models, transaction
from django.utils import timezone

from accounts.dbpipeline import after_sync, flush
from accounts.dbprepared import execute_prepared, execute_prepared_many
from accounts.requestmeta import current_request_meta
from accounts.tenancy import uuid7
from audit.chain import link_many
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
    if not ALLOWED_DETAIL_KEYS.issuperset(details):  # (a fan-out checks thousands: no set built when all pass)
        unknown = set(details) - ALLOWED_DETAIL_KEYS
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
    rows = _bulk_rows(tenant, actor, records)
    if rows and not _write_bulk(tenant, rows):
        events = [row.event() for row in rows]
        _write(events)
        return events
    return [row.event(saved=True) for row in rows]


def audit_record_bulk(*, tenant, actor, records: list[dict[str, Any]], chain_lock=None) -> int:
    """``audit_record_many`` without model instances back (a fan-out writes thousands); how many.
    ``chain_lock``: what ``audit_chain_lock`` returned earlier in this transaction, for a writer
    that inserts inside ``accounts.dbpipeline.pipelined()``, where reading the lock would wait."""
    rows = _bulk_rows(tenant, actor, records)
    if rows and not _write_bulk(tenant, rows, chain_lock):
        _write([row.event() for row in rows])
    return len(rows)


def audit_chain_lock(tenant) -> tuple[bool, tuple[int, str] | None] | None:
    """Take the clinic's sealing lock for this transaction (try, never wait) and read its chain
    head, ahead of an ``audit_record_bulk(chain_lock=...)`` later in the same transaction: a
    pipelined writer does its reads before its writes. None where bulk writes never seal inline
    (not PostgreSQL, or no clinic)."""
    if tenant is None or connection.vendor != "postgresql":
        return None
    return _lock_chain_for_transaction(tenant.pk)


class _Row:
    """One event of a bulk write: the columns ``chain.canonical`` reads, without a model instance."""

    __slots__ = ("id", "tenant_id", "occurred_at", "event_type", "actor_type", "actor_user_id", "actor_label",
                 "object_type", "object_id", "patient_id", "ip_address", "user_agent", "request_id", "details",
                 "seq", "prev_hash", "hash")

    def event(self, *, saved: bool = False) -> AuditEvent:
        event = AuditEvent(**{name: getattr(self, name) for name in self.__slots__})
        if saved:
            event._state.adding, event._state.db = False, connection.alias
        return event


def _bulk_rows(tenant, actor, records) -> list[_Row]:
    meta, now = current_request_meta(), timezone.now()
    actor_type, actor_user, _ = _actor_fields(actor, "", meta)
    labels: dict[str, str] = {}  # the record's actor_label -> the one stored
    actor_user_id = actor_user.pk if actor_user is not None else None
    ip, user_agent, request_id = meta.get("ip"), (meta.get("user_agent") or "")[:300], meta.get("request_id") or ""
    tenant_id = tenant.pk if tenant is not None else None
    to_uuid = AuditEvent._meta.get_field("patient_id").to_python
    # One uuid7 with its low 32 bits counting up: the sealer links the events of one moment in
    # id order, which is then the order given.
    first = uuid7().int & ~0xFFFFFFFF
    rows = []
    for i, record in enumerate(records):
        if not RECORD_KEYS.issuperset(record) or "event_type" not in record:
            unknown = set(record) - RECORD_KEYS
            raise AuditDetailsError(f"audit record keys: need event_type, got unknown {sorted(unknown)}")
        row = _Row()
        label = record.get("actor_label", "")
        if label not in labels:
            labels[label] = _actor_fields(actor, label, meta)[2][:200]
        target, patient_id = record.get("target"), record.get("patient_id")
        row.id = uuid.UUID(int=first + i)
        row.tenant_id, row.occurred_at, row.event_type = tenant_id, now, int(record["event_type"])
        row.actor_type, row.actor_user_id, row.actor_label = actor_type, actor_user_id, labels[label]
        row.object_type = target._meta.label if target is not None else ""
        row.object_id = str(target.pk) if target is not None else ""
        # As the database will hand it back (the hash is computed before it is stored).
        row.patient_id = patient_id if patient_id is None or isinstance(patient_id, uuid.UUID) else to_uuid(patient_id)
        row.ip_address, row.user_agent, row.request_id = ip, user_agent, request_id
        row.details = _clean_details(record.get("details"))
        row.seq, row.prev_hash, row.hash = None, "", ""
        rows.append(row)
    return rows


# --- The chain ---------------------------------------------------------------------------------
#
# On PostgreSQL a tenant's events are inserted *unsealed* (seq NULL, no hashes): a plain insert in
# the business transaction, which never waits for another clinic action to commit. Right after
# the commit, ``seal_pending`` links whatever is unsealed into the chain, in batches, holding the
# tenant's sealing lock (a session advisory lock taken with try: a committer never queues behind
# another). A committer that can't get it leaves: the holder checks again for unsealed events
# *after* releasing the lock, so an event committed while it held the lock is never stranded.
# A process seals a tenant's chain after a commit at most once per ``AUDIT_SEAL_INTERVAL``
# (``_seal_due``): a commit inside the interval leaves its events to the next sealing of that
# chain (any process's, or the beat's), so an event waits at most about the interval or the
# beat's period, and is never left for good.
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
    if events:
        head.head_hash = link_many(head.head_hash, events, head.seq + 1)
        head.seq = events[-1].seq


_INSERT_ONE = ("INSERT INTO audit_auditevent (id, tenant_id, occurred_at, event_type, actor_type, actor_user_id, "
               "actor_label, object_type, object_id, patient_id, ip_address, user_agent, request_id, details, seq, "
               "prev_hash, hash) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, NULL, '', '')")


def _insert_one_params(e: AuditEvent) -> list:
    return [e.id, e.tenant_id, e.occurred_at, e.event_type, e.actor_type, e.actor_user_id, e.actor_label,
            e.object_type, e.object_id, e.patient_id, e.ip_address, e.user_agent, e.request_id, json.dumps(e.details)]


def _insert_one(e: AuditEvent) -> None:
    """One unsealed event (PostgreSQL, a clinic's chain): a prepared INSERT, linked after commit."""
    with connection.cursor() as cursor:
        execute_prepared(cursor, "caretext_audit_insert_one", _INSERT_ONE, _insert_one_params(e))
    e._state.adding, e._state.db = False, connection.alias


def _write(events: list[AuditEvent]) -> None:
    tenant_id = events[0].tenant_id
    inline = tenant_id is None or connection.vendor != "postgresql"
    if len(events) == 1 and not inline and not connection.in_atomic_block and connection.get_autocommit():
        # One INSERT commits on its own: no transaction around it (its BEGIN and COMMIT were two
        # of an audited request's round trips).
        _insert_one(events[0])
        _seal_unsealed(events[0].tenant)
        return
    # No savepoint: an audit write that fails must fail the action it records.
    with transaction.atomic(savepoint=False):
        head = _chain_head(tenant_id) if inline else None
        if head is not None:
            _link(head, events)
        if len(events) == 1 and not inline:
            _insert_one(events[0])
        elif len(events) == 1:
            events[0].save(force_insert=True)
        else:
            AuditEvent.objects.bulk_create(events, batch_size=1000)
        if head is not None:
            head.save(update_fields=["seq", "head_hash", "updated_at"])
        else:
            _seal_unsealed(events[0].tenant)


def _seal_unsealed(tenant) -> None:
    """Have the events just inserted unsealed linked: after commit (throttled, ``_seal_after_commit``;
    at once in autocommit), or right away in a test's transaction, which never commits. Under
    manual transaction management (no ``atomic``, autocommit off) nothing can run after the
    commit: the next sealing of the chain links them (the beat task's at the latest)."""
    if _never_commits():
        seal_pending(tenant, check_first=False)
    elif connection.in_atomic_block or connection.get_autocommit():
        _seal_after_commit(tenant)


def audit_record_in_statement(*, name: str, sql: tuple[str, ...], params: list, tenant, actor,
                              event_type: AuditEventType, target: models.Model | None = None, patient_id=None,
                              actor_label: str = "", details: dict[str, Any] | None = None) -> AuditEvent:
    """``audit_record`` for an action that is data-modifying SQL, on PostgreSQL and a clinic's
    chain: the action and its event go to the database as one statement.

    ``sql``: the action's statements (each an UPDATE, INSERT or DELETE with ``%s``
    placeholders); ``params``: their values, in order. Each runs as a data-modifying WITH of the
    event's INSERT (once, whatever the INSERT reads of it), so the action and its event commit or
    fail together with no transaction of their own: outside one, no BEGIN and no COMMIT round
    trip; inside one, they join it. The whole is prepared once per connection as ``name``
    (``accounts.dbprepared``: one fixed text per name). The event is linked into the chain after
    commit, as ``audit_record``'s. The other arguments are ``audit_record``'s."""
    event = _statement_event("audit_record_in_statement", tenant=tenant, actor=actor, event_type=event_type,
                             target=target, patient_id=patient_id, actor_label=actor_label, details=details)
    actions = ", ".join(f"action_{i} AS ({statement})" for i, statement in enumerate(sql))
    with connection.cursor() as cursor:
        execute_prepared(cursor, name, f"WITH {actions} {_INSERT_ONE}", [*params, *_insert_one_params(event)])
    _inserted_unsealed(event)
    return event


def _statement_event(writer: str, *, tenant, **fields) -> AuditEvent:
    """A new event for a writer that puts it in a statement of its own making (PostgreSQL, a
    clinic's chain only: it goes in unsealed and is linked after commit)."""
    if tenant is None or connection.vendor != "postgresql":
        raise ValueError(f"{writer} writes to a clinic's chain on PostgreSQL only")
    return _event(tenant=tenant, meta=current_request_meta(), now=timezone.now(), **fields)


def _inserted_unsealed(event: AuditEvent) -> None:
    """``event`` is in the table now, unsealed: it is a stored row, and it is linked (``_seal_unsealed``)."""
    event._state.adding, event._state.db = False, connection.alias
    _seal_unsealed(event.tenant)


def audit_record_with_reads(*, reads: list[tuple[str, str, list]], tenant, actor, event_type: AuditEventType,
                            target: models.Model | None = None, patient_id=None, actor_label: str = "",
                            details: dict[str, Any] | None = None) -> tuple[AuditEvent, list[list[tuple]]]:
    """``audit_record`` for reading PHI on PostgreSQL, on a clinic's chain: the event and the reads
    it records go to the database as one query, and the rows of each read come back.

    ``reads``: ``(name, sql, params)`` per statement (each a plain SELECT with ``%s`` placeholders,
    prepared once per connection as ``name``: ``accounts.dbprepared``, one fixed text per name).
    The event's INSERT runs as a data-modifying WITH of the first read (once, whatever that read
    returns), and all of them in one round trip: the event is stored exactly when the rows are
    read (one implicit transaction; inside an ``atomic`` block they join it), so nothing is shown
    that the trail does not record. A failed insert fails the reads. Linked into the chain after
    commit, as ``audit_record``'s events. The other arguments are ``audit_record``'s."""
    event = _statement_event("audit_record_with_reads", tenant=tenant, actor=actor, event_type=event_type,
                             target=target, patient_id=patient_id, actor_label=actor_label, details=details)
    (name, sql, params), *rest = reads
    first = (name, f"WITH audit_event AS ({_INSERT_ONE}) {sql}", [*_insert_one_params(event), *params])
    results = []
    with connection.cursor() as cursor:
        execute_prepared_many(cursor, [first, *rest])
        for i in range(len(reads)):
            if i:
                cursor.nextset()
            results.append(cursor.fetchall())
    _inserted_unsealed(event)
    return event, results


# A bulk write on PostgreSQL (``_write_bulk``) links its events into the chain in the insert itself
# when the tenant's sealing lock is free: it takes the lock for its transaction (try: it never
# waits), reads the head, computes each event's seq and hashes here and inserts the rows sealed
# while moving the head in the same statement, so there is no second write per event. The lock
# then stays held until the transaction ends: committers refused it meanwhile leave their events
# unsealed, and this writer, like every holder, checks for unsealed events after releasing it
# (after its commit, not throttled). Lock busy, or a value the database would hand back
# differently from what was hashed (a float in details): the rows go in unsealed, as ever.

# The columns that vary per row go as arrays (binary), those of the whole batch as scalars.
_BULK_VARYING = ("id", "event_type", "actor_label", "object_type", "object_id", "patient_id")
_UNNEST = ("SELECT v.id, %s::bigint, %s::timestamptz, v.event_type, %s::text, %s::bigint, v.actor_label, "
           "v.object_type, v.object_id, v.patient_id, %s::inet, %s::text, %s::text, v.details::jsonb, {chain} "
           "FROM unnest(%b::uuid[], %b::smallint[], %b::text[], %b::text[], %b::text[], %b::uuid[], %b::text[]{arrays}) "
           "AS v(id, event_type, actor_label, object_type, object_id, patient_id, details{names})")
_COLUMNS = ("INSERT INTO audit_auditevent (id, tenant_id, occurred_at, event_type, actor_type, actor_user_id, "
            "actor_label, object_type, object_id, patient_id, ip_address, user_agent, request_id, details, seq, "
            "prev_hash, hash) ")
_INSERT_UNSEALED = _COLUMNS + _UNNEST.format(chain="NULL::bigint, '', ''", arrays="", names="")
# Moves the head from where it was read and inserts the rows only if it did (a data-modifying
# WITH runs once, whatever the main statement reads of it).
_INSERT_SEALED = ("WITH moved AS (UPDATE audit_auditchainhead SET seq = %s, head_hash = %s, "  # noqa: S608
                  "updated_at = %s WHERE chain = %s AND seq = %s AND head_hash = %s AND tenant_id = %s RETURNING 1) " + _COLUMNS
                  + _UNNEST.format(chain="v.seq, v.prev_hash, v.hash", arrays=", %b::bigint[], %b::text[], %b::text[]",
                                   names=", seq, prev_hash, hash")
                  + " WHERE EXISTS (SELECT 1 FROM moved)")


def _write_bulk(tenant, rows: list[_Row], chain_lock=None) -> bool:
    """Insert ``rows`` in one statement, sealed inline when the sealing lock is free (above);
    False when this is not PostgreSQL or not a tenant's chain (then ``_write`` links inline).
    ``chain_lock``: the lock already tried and the head read (``audit_chain_lock``). Inside a
    pipeline the insert's row count is checked when the pipeline ends (``after_sync``)."""
    import json

    if tenant is None or connection.vendor != "postgresql":
        return False
    first = rows[0]
    shared = [first.tenant_id, first.occurred_at, first.actor_type, first.actor_user_id, first.ip_address,
              first.user_agent, first.request_id]
    varying = [[getattr(row, name) for row in rows] for name in _BULK_VARYING]
    varying.append([json.dumps(row.details) for row in rows])
    with transaction.atomic(savepoint=False):
        as_stored = all(_hashes_as_stored(r.details) for r in rows)
        if chain_lock is None:
            chain_lock = _lock_chain_for_transaction(tenant.pk) if as_stored else (False, None)
        locked, head = chain_lock
        if not as_stored:
            head = None
        if head is None:
            _execute_binary(_INSERT_UNSEALED, [*shared, *varying])
            if _never_commits():
                seal_pending(tenant, check_first=False)
            else:  # holding the lock (no head yet): a holder checks after releasing it
                _seal_after_commit(tenant, check=locked)
            return True
        head_seq, head_hash = head
        link_many(head_hash, rows, head_seq + 1)
        chain_name = AuditChainHead.chain_name(tenant.pk)
        stored = _execute_binary(_INSERT_SEALED, [
            rows[-1].seq, rows[-1].hash, timezone.now(), chain_name, head_seq, head_hash, tenant.pk, *shared, *varying,
            [r.seq for r in rows], [r.prev_hash for r in rows], [r.hash for r in rows]])

        count = len(rows)

        def check():
            if stored.rowcount != count:  # impossible under the lock: fail the action loudly
                raise RuntimeError(f"audit chain head moved while linking {count} events inline")

        after_sync(check)
        if not _never_commits():
            _seal_after_commit(tenant, check=True)
    return True


def _hashes_as_stored(value) -> bool:
    """Whether ``value`` comes back from jsonb as it is (a float may not: 1e16 reads back an int)."""
    if isinstance(value, dict):
        return all(_hashes_as_stored(v) for v in value.values())
    if isinstance(value, list | tuple):
        return all(_hashes_as_stored(v) for v in value)
    return not isinstance(value, float)


def _lock_chain_for_transaction(tenant_id) -> tuple[bool, tuple[int, str] | None]:
    """Take the tenant's sealing lock until the transaction ends, if free, and read the head
    *after* taking it (a second statement: its own snapshot). (locked, (seq, hash) or None:
    busy, or no head yet)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s::int, %s::int); "
                       "SELECT seq, head_hash FROM audit_auditchainhead WHERE chain = %s AND tenant_id = %s",
                       [SEAL_LOCK_CLASS, tenant_id, AuditChainHead.chain_name(tenant_id), tenant_id])
        locked = cursor.fetchone()[0]
        cursor.nextset()
        head = cursor.fetchone()
    return locked, (head[0], head[1]) if locked and head is not None else None


def _execute_binary(sql: str, params):
    """Run ``sql`` on Django's connection (same transaction, same tenant setting) with
    server-side binding (``%b``: arrays sent in binary, far cheaper to build than Django's
    client-side interpolation of thousands of values); its cursor, whose ``rowcount`` is the
    rows it affected (inside a pipeline, once the pipeline has synchronised). The cursor is
    left open for that (closing resets the count; a client-side cursor holds nothing on the
    server). Shown to ``CaptureQueriesContext`` like any query."""
    import psycopg

    connection.ensure_connection()
    cursor = psycopg.Cursor(connection.connection)
    cursor.execute(sql, params)
    flush()  # pipelined: all of it to the server now (``accounts.dbpipeline.flush``)
    if connection.queries_logged:
        connection.queries_log.append({"sql": sql, "time": "0.000"})
    return cursor


def _never_commits() -> bool:
    """Inside a Django test case's transaction, which is rolled back, never committed: sealing
    after commit would never run there, so the same sealer runs right away instead."""
    blocks = connection.atomic_blocks
    return bool(blocks) and getattr(blocks[0], "_from_testcase", False)


def _seal_after_commit(tenant, *, check: bool = False) -> None:
    """Run ``seal_pending`` once after the outermost commit (once per tenant and transaction),
    unless this process sealed the tenant's chain less than ``AUDIT_SEAL_INTERVAL`` ago.
    ``check``: this transaction held the sealing lock (``_write_bulk``), so after commit it
    must look for events it kept others from sealing, whatever the interval."""
    for _, func, _ in connection.run_on_commit:
        if getattr(func, "audit_seal_tenant", None) == tenant.pk:
            func.audit_seal_check = func.audit_seal_check or check
            return

    def seal():
        if seal.audit_seal_check:
            seal_pending(tenant)  # one existence check when, as usual, nobody was refused
        elif _seal_due(tenant.pk):
            seal_pending(tenant, check_first=False)

    seal.audit_seal_tenant, seal.audit_seal_check = tenant.pk, check
    # robust: the events are committed whatever happens here; a failure is logged and the beat
    # task seals them later.
    transaction.on_commit(seal, robust=True)


# Throttle of after-commit sealing, per process and tenant: tenant id -> when this process last
# sealed after a commit (``_clock``, monotonic seconds). Sealing costs four round trips; on
# every page view (each writes an event) that was a large part of the request. A commit
# inside the interval leaves its events unsealed; they are linked by the next sealing of the
# tenant's chain: this process's next commit after the interval, any other process's
# after-commit sealing (it links every pending event, not only its own), or at the latest the
# beat task (``audit.tasks``, every 15 s).
_last_seal: dict = {}
_clock = time.monotonic


def _seal_interval() -> float:
    """``settings.AUDIT_SEAL_INTERVAL`` seconds; unset: at once under tests (``TESTING``, where
    tests read the chain right after a commit), else 1 s. 0 seals after every commit."""
    value = getattr(settings, "AUDIT_SEAL_INTERVAL", None)
    if value is None:
        return 0.0 if getattr(settings, "TESTING", False) else 1.0
    return float(value)


def _seal_due(tenant_id) -> bool:
    """Whether an after-commit sealing of ``tenant_id`` should run now (and if so, note it)."""
    interval = _seal_interval()
    if interval <= 0:
        return True
    now = _clock()
    last = _last_seal.get(tenant_id)
    if last is not None and 0 <= now - last < interval:
        return False
    _last_seal[tenant_id] = now  # a race between threads lets two seal: harmless, they take a try-lock
    return True


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
