"""Bulk sends: many system messages (a reminder fan-out) in one transaction, set-based.

``messages_send_many`` is ``messaging.services.message_send`` (``actor=None``, ``patient=``,
``kind=``, ``appointment=``, ``idempotency_key=``) for a slice of notices at once, with the
same outcome row for row: the same refusals and their words, the same thread reuse (the
patient's newest open thread of the kind and appointment), one message, one fresh secure link
(not superseding: the outbox supersedes older links when the notice goes), an unsent notice of
the thread reused instead of a second SMS, quiet hours and the frequency cap in the outbox
row's send time, and the MESSAGE_SENT and LINK_CREATED audit events. What changes is the cost:
a fixed number of queries per slice (bulk inserts, one lookup per kind of row read) instead of
about twenty per message, and the outbox ids handed to Celery in batches after commit.

The caller holds the transaction and the patients' row locks (``patients_lock``), as
``message_send`` does per message, so a concurrent sender to the same patient waits.

Two rules are read here in bulk form beside their one-row originals; tests/reminders/
test_bulk.py holds each to its original:
* consent (``consent.selectors.can_sms``): ``_refusal_codes``;
* the frequency cap's history (``messaging.outbox._capped_times``): ``_capped_times_many``.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import psycopg
from django.db import connection, connections, models, transaction
from django.db.models import Q
from django.db.models.base import ModelState
from django.utils import timezone

from accounts.dbpipeline import flush, pipelined
from accounts.errors import ApplicationError
from accounts.selectors import RowLoader
from audit.events import AuditEventType
from audit.services import audit_chain_lock, audit_record_bulk
from consent.models import ConsentAction, ConsentChannel, ConsentEvent
from consent.policy import AUTOMATED_KINDS, kind_rule, next_allowed_send, notice_slot, send_zone
from consent.selectors import tenant_has_baa
from messaging.links import link_lifetime, new_secret
from messaging.models import (
    Direction,
    Message,
    OutboundSms,
    SecureLink,
    SmsStatus,
    Thread,
    ThreadStatus,
)
from messaging.outbox import BATCH_SIZE, enqueue_on_commit
from messaging.routing import secret_hash
from messaging.services import BODY_MAX, MESSAGE_SMS_KIND, REFUSALS, clean_text
from patients.models import Patient
from phi.fields import EncryptedField

CAP_HISTORY = timedelta(days=14)  # as messaging.outbox._capped_times
NOT_SENDABLE = "Not sent: SMS to this patient is not allowed."  # as messaging.services.send_refusal
KEY_REUSED = "This Idempotency-Key was already used for a different message."  # as message_send


@dataclass
class Notice:
    """One message of a slice. ``ref`` is the caller's id for it (a reminder id)."""

    ref: object
    patient: Patient
    body: str
    idempotency_key: str
    appointment_id: object = None


@dataclass
class SliceResult:
    sent: dict = field(default_factory=dict)  # ref -> message id
    refused: dict = field(default_factory=dict)  # ref -> staff-readable reason (no PHI)
    enqueued: int = 0  # outbox rows handed to workers on commit


# What sending reads of a patient (consent, number, language, zone) and a reminder's text
# (given name); the rest loads on access if a caller needs it.
PATIENT_FIELDS = ("id", "tenant_id", "given_name", "phone", "phone_index", "phone_changed_at", "phone_undeliverable_at",
                  "is_active", "preferred_language", "timezone")


_PATIENT_ROWS = RowLoader(Patient, PATIENT_FIELDS)
_PATIENTS_LOCK_SQL = (f"SELECT {_PATIENT_ROWS.columns('p')} FROM {Patient._meta.db_table} p "  # noqa: S608 - model names
                      "WHERE p.tenant_id = %s AND p.id = ANY(%b::uuid[]) ORDER BY p.id FOR UPDATE OF p")


def patients_lock(patient_ids) -> dict:
    """The patients, re-read and locked until the transaction ends (in id order, so two
    slices never deadlock on each other), as ``message_send`` locks its one patient.
    On PostgreSQL one statement with the ids as one bound array (``select_bound``): the ORM's
    query, a thousand ids interpolated client-side and a thousand instances through
    ``Model.__init__``, cost a tenth of the fan-out's Python time."""
    ids = list(set(patient_ids))
    if connection.vendor != "postgresql":  # the demo's SQLite
        rows = Patient.objects.select_for_update(of=("self",)).filter(pk__in=ids).only(*PATIENT_FIELDS).order_by("pk")
        return {p.pk: p for p in rows}
    from accounts.tenancy import current_tenant

    conn = connections[connection.alias]  # the wrapper itself: RowLoader reads it per row
    patients = (_PATIENT_ROWS.build(row, conn) for row in select_bound(_PATIENTS_LOCK_SQL, [current_tenant().pk, ids]))
    return {p.pk: p for p in patients}


def messages_send_many(*, tenant, kind: str, notices: list[Notice], source: str = "system",
                       then: Callable[[SliceResult], None] | None = None) -> SliceResult:
    """Send each notice as ``message_send`` would (module docstring). Call inside a transaction,
    in the tenant's scope, with the patients locked. Returns what happened to each ``ref``.

    Everything is read first; then the writes go out pipelined (``accounts.dbpipeline``): each
    insert runs in the database, its foreign keys checked at once when the caller's transaction
    made them immediate, while Python builds the next table's rows. ``then(result)``: the caller's
    own writes for the messages sent, run inside the same pipeline (driver cursors only,
    ``execute_bound``; never the ORM)."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("messages_send_many must run inside the caller's transaction")
    result = SliceResult()
    now = timezone.now()
    sms_kind = MESSAGE_SMS_KIND[kind]  # automated kinds only: staff messages go one by one
    ready = _clean_bodies(notices, result)
    ready = _without_used_keys(tenant, ready, result)
    ready = _sendable(tenant, ready, sms_kind, result)
    if not ready:
        if then is not None:
            then(result)
        return result
    # Reads: the threads to reuse (bumped) or create, unsent notices of reused threads, the
    # frequency cap's history, and the audit chain's lock and head.
    threads, reused, new_threads = _threads_for(tenant, kind, ready, now)
    pending = _pending_notices(reused)
    history = _capped_times_many(tenant, [n.patient for n in ready]) if kind_rule(sms_kind).capped else {}
    chain_lock = audit_chain_lock(tenant)
    with pipelined():
        insert_many(Thread, new_threads)
        # Foreign keys are set by id: assigning instances costs a descriptor check per row.
        thread_of = [threads[(n.patient.pk, n.appointment_id)] for n in ready]
        messages = [new_row(Message, tenant_id=tenant.pk, thread_id=t.pk, direction=Direction.OUTBOUND, kind=kind,
                            body=n.body, source=source, idempotency_key=n.idempotency_key)
                    for n, t in zip(ready, thread_of, strict=True)]
        insert_many(Message, messages)
        lifetime = link_lifetime(tenant)
        tokens = [new_secret() for _ in ready]
        links = [new_row(SecureLink, tenant_id=tenant.pk, thread_id=t.pk, patient_id=t.patient_id,
                         token_hash=secret_hash(token), expires_at=now + lifetime)
                 for t, token in zip(thread_of, tokens, strict=True)]
        insert_many(SecureLink, links)
        _audit(tenant, kind, source, thread_of, messages, links, chain_lock)
        queued = _outbox(tenant, sms_kind, ready, messages, links, tokens, pending, history, now)
        for notice, message in zip(ready, messages, strict=True):
            result.sent[notice.ref] = message.pk
        if then is not None:
            then(result)
    for start in range(0, len(queued), BATCH_SIZE):
        enqueue_on_commit(tenant.pk, queued[start:start + BATCH_SIZE])
    result.enqueued = len(queued)
    return result


# --- checks (message_send's, before anything is written) --------------------------------------------


def _clean_bodies(notices, result) -> list[Notice]:
    ready = []
    for notice in notices:
        try:
            notice.body = clean_text(notice.body, field="body", max_length=BODY_MAX)
        except ApplicationError as exc:
            result.refused[notice.ref] = exc.message
            continue
        ready.append(notice)
    return ready


def _sendable(tenant, notices, sms_kind, result) -> list[Notice]:
    """Notices whose patient may be texted; the rest refused with ``message_send``'s words."""
    if not notices:
        return notices
    codes = _refusal_codes(tenant, [n.patient for n in notices], sms_kind)
    ready = []
    for notice in notices:
        code = codes[notice.patient.pk]
        if code:
            result.refused[notice.ref] = REFUSALS.get(code, NOT_SENDABLE)
        else:
            ready.append(notice)
    return ready


def _refusal_codes(tenant, patients, sms_kind) -> dict:
    """``can_sms`` for many patients in two queries: patient id -> "" (allowed) or its reason."""
    rule = kind_rule(sms_kind)
    if not tenant_has_baa(tenant):
        return {p.pk: "no_baa" for p in patients}
    if not rule.needs_consent:
        return {p.pk: "" for p in patients}
    codes, consent_needed = {}, []
    for patient in patients:
        if not patient.is_active:
            codes[patient.pk] = "patient_inactive"
        elif patient.phone_undeliverable_at is not None:
            codes[patient.pk] = "number_undeliverable"
        elif not patient.phone_index:
            codes[patient.pk] = "no_phone"
        else:
            consent_needed.append(patient)
    latest, granted_before = {}, set()
    numbers = {p.pk: p.phone_index for p in consent_needed}
    for patient_id, phone_index, action, occurred_at in _sms_consent_rows(tenant, list(numbers)):
        if action == ConsentAction.GRANT:
            granted_before.add(patient_id)
        if phone_index == numbers[patient_id] and patient_id not in latest:
            latest[patient_id] = (action, occurred_at)  # newest first: the first row for the number decides
    for patient in consent_needed:
        codes[patient.pk] = _consent_code(patient, latest.get(patient.pk), patient.pk in granted_before)
    return codes


_CONSENT_ROWS_SQL = (f"SELECT patient_id, phone_index, action, occurred_at FROM {ConsentEvent._meta.db_table} "  # noqa: S608
                     "WHERE tenant_id = %s AND channel = %s AND patient_id = ANY(%b::uuid[]) "
                     "ORDER BY patient_id, occurred_at DESC, created_at DESC, id DESC")


def _sms_consent_rows(tenant, patient_ids: list) -> list[tuple]:
    """(patient id, phone index, action, occurred at) of the patients' SMS consent events, each
    patient's newest first. PostgreSQL: the ids as one bound array (``patients_lock``)."""
    if not patient_ids:
        return []
    if connection.vendor != "postgresql":  # the demo's SQLite
        return list(ConsentEvent.objects.filter(patient_id__in=patient_ids, channel=ConsentChannel.SMS)
                    .order_by("patient_id", "-occurred_at", "-created_at", "-id")
                    .values_list("patient_id", "phone_index", "action", "occurred_at"))
    return select_bound(_CONSENT_ROWS_SQL, [tenant.pk, ConsentChannel.SMS, patient_ids])


def _consent_code(patient, latest, granted_before: bool) -> str:
    """``consent.selectors.consent_summary`` on pre-read rows: "" when granted."""
    if latest is None:
        return "number_changed" if granted_before else "never_granted"
    action, occurred_at = latest
    if action == ConsentAction.REVOKE:
        return "revoked"
    if patient.phone_changed_at is not None and patient.phone_changed_at > occurred_at:
        return "number_changed"
    return ""


def _without_used_keys(tenant, notices, result) -> list[Notice]:
    """A key already used: the same message again is "sent" (nothing written), another one is
    refused, as ``message_send`` does for a retried request."""
    keys = [n.idempotency_key for n in notices if n.idempotency_key]
    if not keys:
        return notices
    existing = {m.idempotency_key: (m, patient_id) for m, patient_id in _messages_by_key(tenant, keys)}
    fresh = []
    for notice in notices:
        message, patient_id = existing.get(notice.idempotency_key, (None, None))
        if message is None:
            fresh.append(notice)
        elif patient_id == notice.patient.pk and message.body == notice.body:
            result.sent[notice.ref] = message.pk
        else:
            result.refused[notice.ref] = KEY_REUSED
    return fresh


_KEYED_ROWS = RowLoader(Message, ("id", "tenant_id", "thread_id", "body", "idempotency_key"))
# ``<> ''`` stated: the unique index on keys is partial (non-empty keys); without it PostgreSQL
# cannot use that index for a slice's keys and reads every message of the clinic.
_KEYED_SQL = (f"SELECT {_KEYED_ROWS.columns('m')}, t.patient_id FROM {Message._meta.db_table} m "  # noqa: S608
              f"JOIN {Thread._meta.db_table} t ON t.id = m.thread_id "
              "WHERE m.tenant_id = %s AND m.idempotency_key = ANY(%b::text[]) AND m.idempotency_key <> ''")


def _messages_by_key(tenant, keys: list) -> list[tuple]:
    """(message, its thread's patient id) for each message with one of ``keys``. PostgreSQL:
    the keys as one bound array (``patients_lock``)."""
    if connection.vendor != "postgresql":  # the demo's SQLite
        used = Message.objects.select_related("thread").filter(idempotency_key__in=keys).exclude(idempotency_key="")
        return [(m, m.thread.patient_id) for m in used]
    conn = connections[connection.alias]
    return [(_KEYED_ROWS.build(row[:-1], conn), row[-1]) for row in select_bound(_KEYED_SQL, [tenant.pk, keys])]


# --- writes ------------------------------------------------------------------------------------------


@functools.cache
def _defaults(model) -> tuple[dict, tuple]:
    """What ``Model.__init__`` gives a field not passed: (attname -> fixed default, ((attname,
    default function), ...)); ``new_row`` copies the first and calls the second per row."""
    fixed, made = {}, []
    for model_field in model._meta.concrete_fields:
        if model_field.has_default() and callable(model_field.default):
            made.append((model_field.attname, model_field.default))
        else:
            fixed[model_field.attname] = model_field.get_default()
    return fixed, tuple(made)


def new_row(model, **values):
    """``model(**values)`` for a row this module is about to insert, without ``Model.__init__``
    (a descriptor call per field: a fifth of the fan-out's Python time at thousands of rows).
    ``values`` are keyed by attname (``thread_id``, never ``thread``); the models built here have
    no init signal receivers (tests/reminders/test_bulk.py checks both)."""
    fixed, made = _defaults(model)
    obj = model.__new__(model)
    state = obj.__dict__
    state.update(fixed)
    for attname, default in made:
        if attname not in values:
            state[attname] = default()
    state.update(values)
    state["_state"] = ModelState()
    return obj


def insert_many(model, objs: list) -> None:
    """Insert ``objs`` as ``bulk_create`` would (each field prepares its value: defaults,
    ``auto_now``, encryption), but as ONE ``INSERT … SELECT FROM unnest(one array per column)``
    bound server-side: Django's psycopg cursor interpolates every value into the SQL text
    client-side, which costs more than the insert itself at a thousand rows. (COPY FROM is not an
    option: PostgreSQL refuses it on tables under row-level security.) RLS checks each row as
    for any insert."""
    if not objs:
        return
    if connection.vendor != "postgresql":  # the demo's SQLite: no arrays, and a few rows
        model.objects.bulk_create(objs)
        return
    fields, db_types, columns = _table_shape(model)
    # A column with one value for every row (tenant, timestamps, kind, status…) goes as one
    # parameter, not an array: each array element is dumped in Python. The primary key always
    # varies (and keeps unnest from having no array at all).
    select, scalars, arrays, casts = [], [], [], []
    for i, (model_field, db_type) in enumerate(zip(fields, db_types, strict=True)):
        values = _column(model_field, objs)
        if not model_field.primary_key and len(values) > 1 and values.count(values[0]) == len(values):
            select.append(f"%s::{db_type}")
            scalars.append(values[0])
        else:
            select.append(f"v.c{i}")
            arrays.append(values)
            casts.append((i, f"%b::{db_type}[]"))
    execute_bound(f"INSERT INTO {model._meta.db_table} ({columns}) SELECT {', '.join(select)} "  # noqa: S608 - model names
                  f"FROM unnest({', '.join(c for _, c in casts)}) AS v({', '.join(f'c{i}' for i, _ in casts)})",
                  [*scalars, *arrays])
    alias = connection.alias
    for obj in objs:
        obj._state.adding, obj._state.db = False, alias


def update_many(model, objs: list, names: tuple[str, ...]) -> None:
    """``save(update_fields=names)`` for each of ``objs`` (existing rows), as ONE ``UPDATE … FROM
    unnest(arrays)`` bound server-side (``insert_many``): no row count is read, so it may run
    pipelined. Each field prepares its value as in a save (encryption, ``auto_now``)."""
    if not objs:
        return
    if connection.vendor != "postgresql":  # the demo's SQLite
        for obj in objs:
            obj.save(update_fields=list(names))
        return
    fields = [model._meta.get_field(name) for name in names]
    pk = model._meta.pk
    quote = connection.ops.quote_name
    sets = ", ".join(f"{quote(f.column)} = v.c{i}" for i, f in enumerate(fields))
    arrays = ", ".join(f"%b::{f.cast_db_type(connection)}[]" for f in [pk, *fields])
    names_sql = ", ".join(["id", *(f"c{i}" for i in range(len(fields)))])
    execute_bound(f"UPDATE {model._meta.db_table} AS t SET {sets} FROM unnest({arrays}) AS v({names_sql}) "  # noqa: S608
                  f"WHERE t.{quote(pk.column)} = v.id",
                  [[obj.pk for obj in objs], *(_column(f, objs) for f in fields)])


@functools.cache
def _table_shape(model) -> tuple[list, list[str], str]:
    """(concrete fields, their PostgreSQL cast types, the quoted column list) of ``model``:
    the same for every insert, worked out once."""
    fields = model._meta.concrete_fields
    return (list(fields), [field.cast_db_type(connection) for field in fields],
            ", ".join(connection.ops.quote_name(field.column) for field in fields))


_AS_IS = (models.UUIDField, models.ForeignKey, models.CharField, models.TextField, models.DateTimeField,
          models.IntegerField, models.BooleanField)


def _column(field, objs: list) -> list:
    """One column's values. Encrypted fields seal (``pre_save``) and auto-now fields stamp as in
    ``bulk_create``; the rest (uuids, aware datetimes, text, numbers, booleans, foreign keys'
    ids) are what Django's per-value preparation would pass on unchanged, so they are taken as
    they are: that preparation was a third of the fan-out's Python time."""
    if isinstance(field, EncryptedField):
        return [None if (v := field.pre_save(obj, True)) is None else v.blob for obj in objs]
    if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
        return [field.pre_save(obj, True) for obj in objs]
    if isinstance(field, _AS_IS):
        return [getattr(obj, field.attname) for obj in objs]
    return [field.get_db_prep_save(field.pre_save(obj, True), connection) for obj in objs]


def select_bound(sql: str, params) -> list[tuple]:
    """``execute_bound`` for a query: its rows, as psycopg loads them on Django's connection
    (aware datetimes, uuids, bytes; ``RowLoader.build`` applies the fields' converters)."""
    if connection.vendor != "postgresql":
        raise RuntimeError("select_bound needs PostgreSQL")
    connection.ensure_connection()
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def execute_bound(sql: str, params) -> None:
    """Run ``sql`` on Django's connection (same transaction, same tenant setting) with
    server-side parameter binding; ``%b`` placeholders send arrays in binary (ten times
    cheaper to build than text arrays)."""
    if connection.vendor != "postgresql":
        raise RuntimeError("execute_bound needs PostgreSQL")
    connection.ensure_connection()
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(sql, params)
    flush()  # pipelined: all of it to the server now (``accounts.dbpipeline.flush``)


def _threads_for(tenant, kind, notices, now) -> tuple[dict, set, list]:
    """(patient id, appointment id) -> the newest open thread of ``kind`` for it, bumped to
    ``now``; a new thread where there is none (``messaging.services.thread_for_patient``).
    Also returns the ids of the threads that existed before, and the new threads, for the
    caller to insert."""
    wanted = {(n.patient.pk, n.appointment_id) for n in notices}
    found = {}
    for thread in _open_threads(tenant, kind, wanted):
        for key in ((thread.patient_id, thread.appointment_id), (thread.patient_id, None)):
            if key in wanted and key not in found:
                found[key] = thread
    if found:
        Thread.objects.filter(pk__in=[t.pk for t in found.values()]).update(last_activity_at=now, updated_at=now)
    new = [new_row(Thread, tenant_id=tenant.pk, patient_id=p, kind=kind, appointment_id=a, last_activity_at=now)
           for p, a in sorted(wanted - set(found), key=str)]
    reused = {t.pk for t in found.values()}
    found.update({(t.patient_id, t.appointment_id): t for t in new})
    for thread in found.values():
        thread.last_activity_at = now
    return found, reused, new


_THREAD_ROWS = RowLoader(Thread)
_OPEN_THREADS_SQL = (f"SELECT {_THREAD_ROWS.columns('t')} FROM {Thread._meta.db_table} t "  # noqa: S608 - model names
                     "WHERE t.tenant_id = %s AND t.kind = %s AND t.status = %s AND t.patient_id = ANY(%b::uuid[]) {only} "
                     "ORDER BY t.last_activity_at DESC FOR UPDATE OF t")


def _open_threads(tenant, kind, wanted: set) -> list:
    """The open threads of ``kind`` of the patients in ``wanted`` ((patient id, appointment id)
    pairs), newest activity first, locked. When every pair names an appointment (the usual
    case) only those appointments' threads. PostgreSQL: the ids as bound arrays, as
    ``patients_lock``."""
    patient_ids = list({p for p, _ in wanted})
    appointment_ids = list({a for _, a in wanted}) if all(a is not None for _, a in wanted) else None
    if connection.vendor != "postgresql":  # the demo's SQLite
        rows = (Thread.objects.select_for_update(of=("self",))
                .filter(kind=kind, status=ThreadStatus.OPEN, patient_id__in=patient_ids).order_by("-last_activity_at"))
        if appointment_ids is not None:
            rows = rows.filter(appointment_id__in=appointment_ids)
        return list(rows)
    params = [tenant.pk, kind, ThreadStatus.OPEN, patient_ids]
    only = ""
    if appointment_ids is not None:
        only = "AND t.appointment_id = ANY(%b::uuid[])"
        params.append(appointment_ids)
    conn = connections[connection.alias]
    return [_THREAD_ROWS.build(row, conn) for row in select_bound(_OPEN_THREADS_SQL.format(only=only), params)]


def _audit(tenant, kind, source, threads, messages, links, chain_lock) -> None:
    """MESSAGE_SENT and LINK_CREATED for each message, in ``message_send``'s order."""
    records = []
    for thread, message, link in zip(threads, messages, links, strict=True):
        records.append({"event_type": AuditEventType.MESSAGE_SENT, "target": message, "patient_id": thread.patient_id,
                        "details": {"thread_id": str(thread.pk), "kind": kind, "direction": "outbound",
                                    "source": source}})
        records.append({"event_type": AuditEventType.LINK_CREATED, "target": link, "patient_id": thread.patient_id,
                        "details": {"thread_id": str(thread.pk)}})
    audit_record_bulk(tenant=tenant, actor=None, records=records, chain_lock=chain_lock)


def _pending_notices(reused: set) -> dict:
    """Thread id -> its unsent link notice (queued or waiting), locked; only threads that
    existed before can have one."""
    pending = {}
    if reused:
        for row in OutboundSms.objects.select_for_update(of=("self",)).select_related("link").filter(
                link__thread_id__in=reused, notification="link_notice",
                status__in=[SmsStatus.QUEUED, SmsStatus.WAITING]):
            pending.setdefault(row.link.thread_id, row)
    return pending


def _outbox(tenant, sms_kind, notices, messages, links, tokens, pending, history, now) -> list:
    """Each message's link notice: an unsent notice of its thread (``pending``) gets the new
    link (one SMS, the newest link), otherwise a new outbox row due now, after quiet hours or
    at the cap's next slot (``history``: ``_capped_times_many``). Returns the ids due now (to
    hand to workers after commit). Writes only (it runs pipelined)."""
    new_rows, changed = [], []
    for notice, message, link, token in zip(notices, messages, links, tokens, strict=True):
        row = pending.get(message.thread_id)
        if row is not None:  # reuse: the row keeps its time and status, carries the newest link
            row.link_id, row.payload, row.message_id = link.pk, token, message.pk
            if not row._state.adding and row not in changed:
                changed.append(row)
            continue
        patient = notice.patient
        due = _send_time(tenant, patient, sms_kind, now, history.setdefault(patient.pk, []))
        row = new_row(OutboundSms, tenant_id=tenant.pk, patient_id=patient.pk, message_id=message.pk, link_id=link.pk,
                          to=patient.phone,
                          to_index=patient.phone_index,  # = blind_index(tenant, "phone", phone): patients._set_indexes
                          notification="link_notice", sms_kind=sms_kind, payload=token,
                          language=patient.preferred_language,
                          status=SmsStatus.QUEUED if due <= now else SmsStatus.WAITING, next_attempt_at=due)
        new_rows.append(row)
        pending[message.thread_id] = row
        if kind_rule(sms_kind).capped:
            history[patient.pk].append(due)
    update_many(OutboundSms, changed, ("link", "payload", "message", "updated_at"))
    insert_many(OutboundSms, new_rows)
    return [row.pk for row in new_rows if row.status == SmsStatus.QUEUED]


def _send_time(tenant, patient, sms_kind, now, capped_times: list) -> datetime:
    """``messaging.outbox.send_time`` with the patient's cap history passed in."""
    rule = kind_rule(sms_kind)
    if rule.capped:
        return notice_slot(tenant, patient, now, capped_times)
    if rule.quiet_hours:
        return next_allowed_send(send_zone(tenant=tenant, patient=patient), now)
    return now


_CAPPED_TIMES_SQL = (f"SELECT patient_id, sent_at, next_attempt_at FROM {OutboundSms._meta.db_table} "  # noqa: S608
                     "WHERE tenant_id = %s AND patient_id = ANY(%b::uuid[]) AND sms_kind = ANY(%s::text[]) "
                     "AND NOT (status = ANY(%s::text[])) "
                     "AND (sent_at >= %s OR (sent_at IS NULL AND next_attempt_at >= %s))")


def _capped_times_many(tenant, patients) -> dict:
    """``messaging.outbox._capped_times`` for many patients in one query: patient id -> when
    their automated notices went or are due (last 14 days)."""
    since = timezone.now() - CAP_HISTORY
    times = defaultdict(list)
    patient_ids = list({p.pk for p in patients})
    if connection.vendor != "postgresql":  # the demo's SQLite
        recent = Q(sent_at__gte=since) | Q(sent_at__isnull=True, next_attempt_at__gte=since)
        rows = (OutboundSms.objects.filter(recent, patient_id__in=patient_ids, sms_kind__in=list(AUTOMATED_KINDS))
                .exclude(status__in=[SmsStatus.CANCELLED, SmsStatus.FAILED])
                .values_list("patient_id", "sent_at", "next_attempt_at"))
    else:  # the same query with the ids as one bound array (``patients_lock``)
        rows = select_bound(_CAPPED_TIMES_SQL, [tenant.pk, patient_ids, sorted(AUTOMATED_KINDS),
                                                [SmsStatus.CANCELLED, SmsStatus.FAILED], since, since])
    for patient_id, sent_at, due in rows:
        moment = sent_at or due
        if moment and moment >= since:
            times[patient_id].append(moment)
    return times
