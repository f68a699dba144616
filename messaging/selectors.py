"""Reads for messaging. Every function runs inside ``tenant_scope(tenant)``.

Opening a thread (its bodies are PHI) writes THREAD_OPENED; so does the patient opening it on
the secure page, which is what the patient-visible access log reads back.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from django.core.paginator import Page, Paginator
from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone
from django_scopes.exceptions import ScopeError

from accounts.errors import NotFound
from accounts.models import User
from accounts.selectors import (
    COLLEAGUES_SQL,
    RowLoader,
    colleague_list_with_permission,
    colleagues_from_rows,
)
from accounts.tenancy import current_tenant
from audit.events import AuditEventType
from audit.services import PATIENT_ACTOR, audit_record, audit_record_with_reads
from messaging.models import (
    Direction,
    InboundSms,
    Message,
    MessageKind,
    OutboundSms,
    PatientSession,
    ReplyTemplate,
    SecureLink,
    Thread,
    ThreadStatus,
)
from messaging.services import thread_get
from patients.models import Patient

INBOX_PAGE_SIZE = 25
BOXES = ("unassigned", "mine", "all", "closed", "unknown")
_BOX_COUNTS = ("unassigned", "mine", "all", "closed")  # boxes whose size InboxCounts holds


def inbox_threads(*, tenant, user, box: str = "unassigned", assignee_id=None, kind: str = "") -> QuerySet[Thread]:
    """Threads in a box, newest activity first. Boxes: unassigned / mine / all (open) / closed."""
    threads = Thread.objects.select_related("patient", "assigned_to")
    if box == "closed":
        threads = threads.filter(status=ThreadStatus.CLOSED)
    else:
        threads = threads.filter(status=ThreadStatus.OPEN)
        if box == "unassigned":
            threads = threads.filter(assigned_to__isnull=True)
        elif box == "mine":
            threads = threads.filter(assigned_to=user)
    if assignee_id:
        threads = threads.filter(assigned_to_id=assignee_id)
    if kind in MessageKind.values:
        threads = threads.filter(kind=kind)
    return threads.order_by("-urgent", "-last_activity_at", "-id")


def _scoped(tenant) -> None:
    """The scoped manager's rule for the queries written out below: only inside ``tenant``'s scope
    (they also filter by ``tenant_id`` themselves, and RLS holds in the database)."""
    active = current_tenant()
    if active is None or active.pk != tenant.pk:
        raise ScopeError("inbox queries run inside their tenant's scope")


# What an inbox row shows (views_staff._inbox_rows): only these columns are loaded (a patient
# row carries a dozen encrypted columns the list never shows). Reading another field of a listed
# thread would cost a query per row: add it here instead.
_THREAD_ROWS = RowLoader(Thread, ("id", "tenant_id", "patient_id", "kind", "status", "assigned_to_id",
                                  "last_activity_at", "staff_unread", "urgent", "link_locked_at"))
_PATIENT_ROWS = RowLoader(Patient, ("id", "tenant_id", "given_name", "family_name"))
_USER_ROWS = RowLoader(User, ("id", "full_name", "email"))
# Names from the models' _meta only; every value is a bound parameter.
_ROW_SQL = (f"SELECT {_THREAD_ROWS.columns('t')}, {_PATIENT_ROWS.columns('p')}, {_USER_ROWS.columns('u')} "  # noqa: S608
            f"FROM {Thread._meta.db_table} t JOIN {Patient._meta.db_table} p ON p.id = t.patient_id "
            f"LEFT JOIN {User._meta.db_table} u ON u.id = t.assigned_to_id")
# The unassigned box has no assignees to join (one table less for PostgreSQL to plan under RLS).
_ROW_SQL_UNASSIGNED = (f"SELECT {_THREAD_ROWS.columns('t')}, {_PATIENT_ROWS.columns('p')}, "  # noqa: S608
                       f"{', '.join('NULL' for _ in _USER_ROWS.fields)} "
                       f"FROM {Thread._meta.db_table} t JOIN {Patient._meta.db_table} p ON p.id = t.patient_id")
_ROW_ORDER = " ORDER BY t.urgent DESC, t.last_activity_at DESC, t.id DESC"


class _InboxRows:
    """The threads of one box as the paginator reads them (``count()`` and one slice), each a
    single query written out: the ORM's compilation of the joined, filtered, ordered query cost
    more than the query. Rows are Thread instances with ``patient`` and ``assigned_to`` attached,
    as ``inbox_threads(...).select_related(...)`` gives them, loaded with the columns above only."""

    def __init__(self, *, tenant, user, box: str, assignee_id, kind: str):
        where, params = ["t.tenant_id = %s"], [tenant.pk]
        self.select = _ROW_SQL
        if box == "closed":
            where.append("t.status = %s")
            params.append(ThreadStatus.CLOSED.value)
        else:
            where.append("t.status = %s")
            params.append(ThreadStatus.OPEN.value)
            if box == "unassigned":
                where.append("t.assigned_to_id IS NULL")
                self.select = _ROW_SQL_UNASSIGNED
            elif box == "mine":
                where.append("t.assigned_to_id = %s")
                params.append(user.pk)
        if assignee_id:
            where.append("t.assigned_to_id = %s")
            params.append(int(assignee_id))
        if kind in MessageKind.values:
            where.append("t.kind = %s")
            params.append(kind)
        self.where, self.params = " WHERE " + " AND ".join(where), params

    def count(self) -> int:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT COUNT(*) FROM {Thread._meta.db_table} t{self.where}",  # noqa: S608  # nosec B608
                           self.params)  # table name from _meta; values bound
            return cursor.fetchone()[0]

    def __getitem__(self, key: slice) -> list[Thread]:
        start, stop = key.start or 0, key.stop
        with connection.cursor() as cursor:
            cursor.execute(f"{self.select}{self.where}{_ROW_ORDER} LIMIT %s OFFSET %s",
                           [*self.params, stop - start, start])
            rows = cursor.fetchall()
        conn = connections[DEFAULT_DB_ALIAS]
        n_thread = len(_THREAD_ROWS.fields)
        n_patient = n_thread + len(_PATIENT_ROWS.fields)
        patient_field, assignee_field = Thread.patient.field, Thread.assigned_to.field
        threads = []
        for row in rows:
            thread = _THREAD_ROWS.build(row[:n_thread], conn)
            patient_field.set_cached_value(thread, _PATIENT_ROWS.build(row[n_thread:n_patient], conn))
            assignee = _USER_ROWS.build(row[n_patient:], conn) if thread.assigned_to_id is not None else None
            assignee_field.set_cached_value(thread, assignee)
            threads.append(thread)
        return threads


def inbox_page(*, tenant, user, box: str = "unassigned", assignee_id=None, kind: str = "", page=1,
               counts: InboxCounts | None = None) -> Page:
    """One page of a box (as ``inbox_threads`` orders it). Listing names is a PHI read of many
    patients: PATIENT_SEARCHED.

    ``counts`` (this request's ``inbox_counts``) already holds the size of an unfiltered box:
    the paginator takes it from there instead of counting the box again."""
    _scoped(tenant)
    paginator = Paginator(_InboxRows(tenant=tenant, user=user, box=box, assignee_id=assignee_id, kind=kind),
                          INBOX_PAGE_SIZE)
    if counts is not None and not (assignee_id or kind) and box in _BOX_COUNTS:
        paginator.count = getattr(counts, box)  # Paginator.count is a cached_property
    result = paginator.get_page(page)
    audit_record(tenant=tenant, actor=user, event_type=AuditEventType.PATIENT_SEARCHED,
                 details={"path_name": "messaging-inbox", "count": len(result.object_list),
                          "filters": {"box": box, "kind": kind, "assignee": bool(assignee_id)}})
    return result


@dataclass(frozen=True)
class InboxCounts:
    unassigned: int
    mine: int
    all: int
    closed: int
    unknown: int
    unread_unassigned: int
    unread_mine: int
    unread_all: int
    # For inbox_fingerprint only: a change in any of them means the list may look different.
    unread_sum: int | None = None
    locked: int | None = None
    changed: datetime | None = None
    activity: datetime | None = None


# The box counts in one statement, written out: the page and its poll run it on every request,
# and the ORM's eleven filtered aggregates cost several times the query itself to build. The
# tenant filter is explicit (as the scoped manager would add it); RLS holds it in the database.
_INBOX_COUNTS_SQL = f"""
SELECT
  COUNT(*) FILTER (WHERE t.status = %(open)s AND t.assigned_to_id IS NULL),
  COUNT(*) FILTER (WHERE t.status = %(open)s AND t.assigned_to_id = %(user)s),
  COUNT(*) FILTER (WHERE t.status = %(open)s),
  COUNT(*) FILTER (WHERE t.status = %(closed)s),
  (SELECT COUNT(*) FROM {InboundSms._meta.db_table} i
    WHERE i.tenant_id = %(tenant)s AND i.outcome = 'unknown_number' AND i.triaged_at IS NULL),
  COUNT(*) FILTER (WHERE t.status = %(open)s AND t.assigned_to_id IS NULL AND t.staff_unread > 0),
  COUNT(*) FILTER (WHERE t.status = %(open)s AND t.assigned_to_id = %(user)s AND t.staff_unread > 0),
  COUNT(*) FILTER (WHERE t.status = %(open)s AND t.staff_unread > 0),
  SUM(t.staff_unread) FILTER (WHERE t.status = %(open)s),
  COUNT(*) FILTER (WHERE t.link_locked_at IS NOT NULL),
  MAX(t.updated_at),
  MAX(t.last_activity_at)
FROM {Thread._meta.db_table} t
WHERE t.tenant_id = %(tenant)s
"""  # noqa: S608  # nosec B608  # table names from _meta; values are bound


def inbox_counts(*, tenant, user) -> InboxCounts:
    """How many threads (and unread ones) each box holds, and the clinic's untriaged texts from
    unknown numbers; no PHI. One query."""
    _scoped(tenant)
    with connection.cursor() as cursor:
        cursor.execute(_INBOX_COUNTS_SQL, {"open": ThreadStatus.OPEN.value, "closed": ThreadStatus.CLOSED.value,
                                           "user": user.pk, "tenant": tenant.pk})
        row = cursor.fetchone()
    return InboxCounts(*row)


def inbox_counts_and_colleagues(*, tenant, user, permission: str) -> tuple[InboxCounts, list[User]]:
    """``inbox_counts`` and ``accounts.selectors.colleague_list_with_permission`` (the inbox's
    assignee filter) together: on PostgreSQL both statements go in one round trip."""
    _scoped(tenant)
    if connection.vendor != "postgresql":
        return inbox_counts(tenant=tenant, user=user), \
            colleague_list_with_permission(tenant=tenant, permission=permission)
    with connection.cursor() as cursor:
        cursor.execute(f"{COLLEAGUES_SQL}; {_INBOX_COUNTS_SQL}", {
            "open": ThreadStatus.OPEN.value, "closed": ThreadStatus.CLOSED.value, "user": user.pk,
            "tenant": tenant.pk})
        colleague_rows = cursor.fetchall()
        cursor.nextset()
        counts = InboxCounts(*cursor.fetchone())
    return counts, colleagues_from_rows(colleague_rows, permission, connection)


def unread_total(*, tenant) -> int:
    """Unread messages in the clinic's open threads (the nav's badge on every staff page)."""
    _scoped(tenant)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT SUM(staff_unread) FROM {Thread._meta.db_table} "  # noqa: S608  # nosec B608  # from _meta
                       "WHERE tenant_id = %s AND status = %s", [tenant.pk, ThreadStatus.OPEN.value])
        return cursor.fetchone()[0] or 0


@transaction.atomic
def thread_open(*, tenant, actor, thread_id) -> Thread:
    """The thread for a staff member to read: THREAD_OPENED is written and the unread count
    resets (the inbox is shared: one colleague reading it is enough)."""
    thread = thread_get(tenant=tenant, thread_id=thread_id)
    audit_record(tenant=tenant, actor=actor, event_type=AuditEventType.THREAD_OPENED, target=thread,
                 patient_id=thread.patient_id, details={"thread_id": str(thread.pk)})
    if thread.staff_unread:
        Thread.objects.filter(pk=thread.pk).update(staff_unread=0, link_locked_at=None)
        thread.staff_unread = 0
    return thread


def thread_messages_after(*, tenant, actor, thread: Thread, after: Message | None) -> list[Message]:
    """Staff messages of ``thread`` newer than ``after`` (all of them when None), for the open
    conversation's live update. Showing new bodies is a PHI read, so a non-empty batch writes
    THREAD_OPENED ({"method": "live_update", "count": n}); an empty poll writes nothing. The
    unread count is left alone: a screen left open is not someone reading (the next real
    opening of the thread resets it)."""
    messages = Message.objects.filter(thread=thread).select_related("sender")
    if after is not None:
        messages = messages.filter(Q(created_at__gt=after.created_at) | Q(created_at=after.created_at, id__gt=after.id))
    result = list(messages.order_by("created_at", "id"))
    if result:
        audit_record(tenant=tenant, actor=actor, event_type=AuditEventType.THREAD_OPENED, target=thread,
                     patient_id=thread.patient_id,
                     details={"thread_id": str(thread.pk), "method": "live_update", "count": len(result),
                              "message_id": str(result[-1].pk)})
    return result


def thread_message_get(*, tenant, thread: Thread, message_id) -> Message:
    """One message of ``thread`` (NotFound for another thread's or clinic's id)."""
    message = Message.objects.filter(thread=thread, pk=message_id).first()
    if message is None:
        raise NotFound()
    return message


def thread_neighbours(*, tenant, user, thread: Thread, box: str) -> tuple[Thread | None, Thread | None]:
    """(previous, next) thread around ``thread`` in the inbox order of ``box`` (urgent first,
    then newest activity), for the conversation page's j/k keys. Works by the sort key, so a
    thread that just left the box (assigned, closed) still has neighbours. No PHI is read:
    the caller links to them by id only."""
    threads = inbox_threads(tenant=tenant, user=user, box=box).select_related(None).only("pk")
    u, t, pk = thread.urgent, thread.last_activity_at, thread.pk
    later = Q(urgent__lt=u) | Q(urgent=u, last_activity_at__lt=t) | Q(urgent=u, last_activity_at=t, id__lt=pk)
    earlier = Q(urgent__gt=u) | Q(urgent=u, last_activity_at__gt=t) | Q(urgent=u, last_activity_at=t, id__gt=pk)
    following = threads.filter(later).first()
    previous = threads.filter(earlier).order_by("urgent", "last_activity_at", "id").first()
    return previous, following


def inbox_fingerprint(counts: InboxCounts) -> str:
    """A short digest of what the inbox list shows (box counts, unread, latest changes, locks),
    so the inbox's polling can answer "nothing new" without listing (and auditing) names."""
    return hashlib.sha256(repr(counts).encode()).hexdigest()[:16]


def thread_messages(*, tenant, thread: Thread, include_notes: bool = True,
                    released_only: bool = False) -> list[Message]:
    """The thread's messages in order. The patient's view passes ``include_notes=False`` and
    ``released_only=True`` (a held result notice is not theirs to see yet)."""
    messages = Message.objects.filter(thread=thread).select_related("sender")
    if not include_notes:
        messages = messages.exclude(direction=Direction.NOTE)
    if released_only:
        messages = messages.filter(Q(release_at__isnull=True) | Q(release_at__lte=timezone.now()))
    return list(messages.order_by("created_at", "id"))


def thread_sms(*, tenant, thread: Thread) -> list[OutboundSms]:
    """The SMS sent for this thread (status, attempts, errors) for staff; never the body."""
    return list(OutboundSms.objects.filter(Q(link__thread=thread) | Q(message__thread=thread))
                .distinct().order_by("-created_at")[:20])


def thread_links(*, tenant, thread: Thread) -> list[SecureLink]:
    return list(SecureLink.objects.filter(thread=thread).order_by("-created_at")[:10])


def patient_threads(*, tenant, patient) -> list[Thread]:
    return list(Thread.objects.filter(patient=patient).select_related("assigned_to").order_by("-last_activity_at")[:20])


def reply_templates(*, tenant) -> list[ReplyTemplate]:
    return list(ReplyTemplate.objects.all().order_by("name"))


def reply_template_get(*, tenant, template_id) -> ReplyTemplate:
    from accounts.errors import NotFound
    from accounts.selectors import _uuid_or_404

    template = ReplyTemplate.objects.filter(pk=_uuid_or_404(template_id)).first()
    if template is None:
        raise NotFound()
    return template


def unknown_inbound(*, tenant, actor, include_triaged: bool = False) -> list[InboundSms]:
    """Texts from numbers the clinic does not know, for triage (PHI read: audited)."""
    rows = InboundSms.objects.filter(outcome="unknown_number")
    if not include_triaged:
        rows = rows.filter(triaged_at__isnull=True)
    rows = list(rows.order_by("-created_at")[:100])
    audit_record(tenant=tenant, actor=actor, event_type=AuditEventType.PATIENT_SEARCHED,
                 details={"path_name": "messaging-unknown", "count": len(rows)})
    return rows


SMS_OUTBOX_PAGE_SIZE = 50


@transaction.atomic
def local_sms_page(*, tenant, actor, page=1) -> Page:
    """The demo's SMS outbox: the local gateway's SMS that this clinic's outbox sent, newest
    first. The page shows patients' numbers, so it is audited as a listing (PATIENT_SEARCHED).

    ``LocalSms`` is global (demo only); a row is shown only if one of this clinic's
    ``OutboundSms`` rows (tenant-scoped, RLS) carries its provider id. Every SMS goes through
    the outbox, so nothing is missed; matching on the number as well would show a clinic the
    texts another clinic sent to a patient they share.
    """
    from integrations.models import LocalSms

    ours = OutboundSms.objects.exclude(provider_id="").values("provider_id")
    rows = LocalSms.objects.filter(provider_id__in=ours).order_by("-created_at", "-id")
    result = Paginator(rows, SMS_OUTBOX_PAGE_SIZE).get_page(page)
    audit_record(tenant=tenant, actor=actor, event_type=AuditEventType.PATIENT_SEARCHED,
                 details={"path_name": "messaging-sms-outbox", "count": len(result.object_list)})
    return result


def inbound_get(*, tenant, inbound_id) -> InboundSms:
    from accounts.errors import NotFound
    from accounts.selectors import _uuid_or_404

    row = InboundSms.objects.filter(pk=_uuid_or_404(inbound_id), outcome="unknown_number").first()
    if row is None:
        raise NotFound()
    return row


# --- the patient's side --------------------------------------------------------------------------


# What the patient's page shows of a message: the sender is never shown, so never joined.
_PATIENT_MESSAGE_FIELDS = ("id", "tenant_id", "thread_id", "direction", "body", "created_at", "patient_read_at")
_PATIENT_MESSAGE_ROWS = RowLoader(Message, _PATIENT_MESSAGE_FIELDS)
_MESSAGE_BODY = Message._meta.get_field("body")
# What the patient sees of the thread: no internal notes, no result held for release; oldest first.
# (tests/messaging/test_patient_page.py checks it against the same query written with the ORM.)
_PATIENT_MESSAGES_SQL = (
    f"SELECT {_PATIENT_MESSAGE_ROWS.columns('m')} FROM messaging_message m"  # noqa: S608  # nosec B608  # fixed column names
    " WHERE m.tenant_id = %s AND m.thread_id = %s AND m.direction <> %s AND (m.release_at IS NULL OR m.release_at <= %s)"
    " ORDER BY m.created_at, m.id")
# Who at the clinic opened the thread (staff THREAD_OPENED events), newest first.
_ACCESS_LOG_SQL = (
    "SELECT u.full_name, e.occurred_at FROM audit_auditevent e LEFT JOIN accounts_user u ON u.id = e.actor_user_id"
    " WHERE e.tenant_id = %s AND e.actor_type = 'user' AND e.event_type = %s AND e.object_id = %s"
    " AND e.patient_id = %s ORDER BY e.occurred_at DESC LIMIT %s")


@dataclass(frozen=True)
class AccessEntry:
    who: str
    at: datetime


@dataclass(frozen=True)
class OpenedThread:
    thread: Thread
    messages: list[Message]  # what the patient sees, oldest first
    access: list[AccessEntry]  # who at the clinic opened the thread, newest first


def patient_thread_open(*, tenant, session: PatientSession, access_limit: int = 50) -> OpenedThread:
    """The verified patient's thread without internal notes or held results, and who at the
    clinic opened it (staff THREAD_OPENED events). Opening it writes THREAD_OPENED (by the
    patient); nothing is returned (so nothing shown) if that write fails. The clinic's messages
    shown are then marked read by the patient (only when there are any). ``session.thread`` is
    used as loaded (``routing.patient_session`` joins the patient and the appointment into the
    session's one query).

    On PostgreSQL the event, the messages and the access list are one round trip
    (``audit_record_with_reads``): the page's hottest path, written out (no ORM compile); the
    tenant condition is lock 2's. Neither access-list column is encrypted."""
    thread = session.thread
    now = timezone.now()
    audited = {"tenant": tenant, "actor": PATIENT_ACTOR, "event_type": AuditEventType.THREAD_OPENED, "target": thread,
               "patient_id": thread.patient_id, "details": {"thread_id": str(thread.pk), "source": "patient"}}
    if connection.vendor == "postgresql":
        _, (rows, events) = audit_record_with_reads(reads=[
            ("caretext_patient_messages_opened", _PATIENT_MESSAGES_SQL, [tenant.pk, thread.pk, Direction.NOTE, now]),
            ("caretext_patient_access_log", _ACCESS_LOG_SQL,
             [tenant.pk, int(AuditEventType.THREAD_OPENED), str(thread.pk), thread.patient_id, access_limit])],
            **audited)
        messages = [_PATIENT_MESSAGE_ROWS.build(row, connection) for row in rows]
    else:  # the demo's SQLite stores uuids and times its own way: the ORM knows how
        from audit.models import AuditEvent

        messages = list(Message.objects.filter(thread_id=thread.pk).exclude(direction=Direction.NOTE)
                        .filter(Q(release_at__isnull=True) | Q(release_at__lte=now))
                        .only(*_PATIENT_MESSAGE_FIELDS).order_by("created_at", "id"))
        events = list(AuditEvent.objects.filter(event_type=AuditEventType.THREAD_OPENED, patient_id=thread.patient_id,
                                                object_id=str(thread.pk), actor_type="user")
                      .order_by("-occurred_at").values_list("actor_user__full_name", "occurred_at")[:access_limit])
        audit_record(**audited)
    _MESSAGE_BODY.open_many(messages)  # the page shows every one
    unread = [m.pk for m in messages if m.direction == Direction.OUTBOUND and m.patient_read_at is None]
    if unread:  # most views show nothing new
        Message.objects.filter(pk__in=unread, patient_read_at__isnull=True).update(patient_read_at=now)
    access = [AccessEntry(who=(name or "").strip() or "A member of the clinic's staff", at=at) for name, at in events]
    return OpenedThread(thread=thread, messages=messages, access=access)


def link_state_now(link: SecureLink) -> str:
    now = timezone.now()
    if link.revoked_at:
        return link.revoked_reason or "revoked"
    if link.expires_at <= now:
        return "expired"
    if link.locked_until and link.locked_until > now:
        return "locked"
    return "active"
