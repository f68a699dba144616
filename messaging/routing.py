"""Find a secure link or a patient session before the tenant is known.

The only place messaging reads across tenants, and only one row at a time by a SHA-256 hash
of a 256-bit secret: the ORM scope is lifted (``unscoped``, allow-listed) and the database
shows the row through the RLS read policy on its hash column (``hash_lookup``). The caller
then opens the row's tenant scope for everything else.

``patient_session`` does both for every patient page: on PostgreSQL one statement
(``caretext_patient_session_open``, messaging migrations 0003 and 0004) finds the session by its hash,
enters its clinic's scope on the database session and returns the session with everything a
page needs; the ORM scope is then opened without setting the database one again. That statement
is prepared once per connection (``execute_prepared``): planning it cost more than running it.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Iterator

from django.db import connection

from accounts.dbprepared import execute_prepared
from accounts.models import Tenant
from accounts.selectors import RowLoader
from accounts.tenancy import (
    clear_database_tenant,
    current_tenant,
    hash_lookup,
    tenant_scope,
    unscoped,
)
from messaging.models import PatientSession, SecureLink, Thread
from patients.models import Appointment, Patient

TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{43}")


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def link_for_token(token: str) -> SecureLink | None:
    """The link whose token is ``token`` (any state), with its tenant; None if unknown."""
    if not isinstance(token, str) or not TOKEN_RE.fullmatch(token):
        return None
    digest = secret_hash(token)
    with hash_lookup("app.link_hash", digest), unscoped():
        return SecureLink.objects.select_related("tenant").filter(token_hash=digest).first()


def session_for_key(key: str) -> PatientSession | None:
    """The patient session whose cookie value is ``key`` (any state), with its tenant."""
    if not isinstance(key, str) or not TOKEN_RE.fullmatch(key):
        return None
    digest = secret_hash(key)
    with hash_lookup("app.session_hash", digest), unscoped():
        return PatientSession.objects.select_related("tenant").filter(key_hash=digest).first()


# Everything a patient page reads about its session, as ``caretext_patient_session_open`` returns
# it: one row-typed column per model. The columns are selected by name, from the models' fields,
# in a statement written once per process (no ORM compile on every patient request).
_SESSION_ROWS = (
    (PatientSession, "session_row"),
    (Tenant, "tenant_row"),
    (SecureLink, "link_row"),
    (Thread, "thread_row"),
    (Patient, "patient_row"),
    (Appointment, "appointment_row"),
)
_LOADERS = tuple(RowLoader(model) for model, _ in _SESSION_ROWS)
_open_sql: str | None = None


def _open_query() -> str:
    global _open_sql
    if _open_sql is None:
        quote = connection.ops.quote_name
        columns = ", ".join(f"(r.{row}).{quote(f.column)}" for model, row in _SESSION_ROWS
                            for f in model._meta.concrete_fields)
        _open_sql = f"SELECT {columns} FROM caretext_patient_session_open(%s) r"  # noqa: S608  # nosec B608  # model columns
    return _open_sql


def _objects(row) -> PatientSession | None:
    """The session with its clinic, link, thread, patient and appointment (None if the thread has
    none), as ``select_related`` would load them: each model's columns through its fields'
    database converters (``accounts.selectors.RowLoader``: encrypted fields stay sealed until read); the
    relations cached on the objects."""
    if row is None:
        return None
    objects, start = [], 0
    for loader in _LOADERS:
        values = row[start:start + len(loader.fields)]
        start += len(loader.fields)
        if values[loader.fields.index(loader.model._meta.pk)] is None:  # the LEFT JOIN found no appointment
            objects.append(None)
            continue
        objects.append(loader.build(values, connection))
    session, tenant, link, thread, patient, appointment = objects
    PatientSession.tenant.field.set_cached_value(session, tenant)
    PatientSession.link.field.set_cached_value(session, link)
    SecureLink.thread.field.set_cached_value(link, thread)
    Thread.patient.field.set_cached_value(thread, patient)
    Thread.appointment.field.set_cached_value(thread, appointment)
    return session


def _bind(session: PatientSession) -> PatientSession:
    """Point the session's thread and patient at the objects loaded through its link (a session
    is bound to its link's thread and patient by construction; checked, never assumed)."""
    thread = session.link.thread
    if session.thread_id == thread.pk:
        session.thread = thread
        if session.patient_id == thread.patient_id:
            session.patient = thread.patient
    return session


@contextlib.contextmanager
def patient_session(key: str, *, appointment: bool = True) -> Iterator[PatientSession | None]:
    """The live-or-not patient session whose cookie value is ``key``, inside its clinic's scope,
    with its clinic, link, thread, patient and the thread's appointment loaded (``appointment``
    False leaves the appointment to load lazily where that saves a query: without PostgreSQL);
    None (and no scope) if the key is malformed or unknown or the clinic is inactive. The scope
    ends with the block. Opened inside another tenant scope, it takes the plain path (separate
    statements), whose scope restores the outer one."""
    if not isinstance(key, str) or not TOKEN_RE.fullmatch(key):
        yield None
        return
    if connection.vendor != "postgresql" or current_tenant() is not None:
        yield from _patient_session_plain(key, appointment=appointment)
        return
    try:  # app.tenant_id is set (exactly when a row comes back): cleared however this ends
        with connection.cursor() as cursor:
            execute_prepared(cursor, "caretext_session_open", _open_query(), [secret_hash(key)])
            row = cursor.fetchone()
        session = _objects(row)
    except BaseException:
        clear_database_tenant()
        raise
    if session is None:  # no row: the function set nothing
        yield None
        return
    with tenant_scope(session.tenant, database_set=True):
        yield _bind(session)


def _patient_session_plain(key: str, *, appointment: bool) -> Iterator[PatientSession | None]:
    """``patient_session`` in separate statements (SQLite, the demo, or a scope already open)."""
    row = session_for_key(key)
    if row is None or not row.tenant.is_active:
        yield None
        return
    tenant = row.tenant
    with tenant_scope(tenant):
        related = ("thread__patient", "thread__appointment") if appointment else ("thread__patient",)
        link = SecureLink.objects.select_related(*related).filter(pk=row.link_id).first()
        if link is None:
            yield None
            return
        row.link = link
        yield _bind(row)
