"""Reads for messaging. Every function runs inside ``tenant_scope(tenant)``.

Opening a thread (its bodies are PHI) writes THREAD_OPENED; so does the patient opening it on
the secure page, which is what the patient-visible access log reads back.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from django.core.paginator import Page, Paginator
from django.db import transaction
from django.db.models import Count, Max, Q, QuerySet, Sum
from django.utils import timezone

from accounts.errors import NotFound
from audit.events import AuditEventType
from audit.services import PATIENT_ACTOR, audit_record
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


def inbox_page(*, tenant, user, box: str = "unassigned", assignee_id=None, kind: str = "", page=1,
               counts: InboxCounts | None = None) -> Page:
    """One page of a box. Listing names is a PHI read of many patients: PATIENT_SEARCHED.

    ``counts`` (this request's ``inbox_counts``) already holds the size of an unfiltered box:
    the paginator takes it from there instead of counting the box again."""
    threads = inbox_threads(tenant=tenant, user=user, box=box, assignee_id=assignee_id, kind=kind)
    paginator = Paginator(threads, INBOX_PAGE_SIZE)
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


def inbox_counts(*, tenant, user) -> InboxCounts:
    """How many threads (and unread ones) each box holds; no PHI."""
    open_ = Q(status=ThreadStatus.OPEN)
    agg = Thread.objects.aggregate(
        unassigned=Count("pk", filter=open_ & Q(assigned_to__isnull=True)),
        mine=Count("pk", filter=open_ & Q(assigned_to=user)),
        all=Count("pk", filter=open_),
        closed=Count("pk", filter=Q(status=ThreadStatus.CLOSED)),
        unread_unassigned=Count("pk", filter=open_ & Q(assigned_to__isnull=True, staff_unread__gt=0)),
        unread_mine=Count("pk", filter=open_ & Q(assigned_to=user, staff_unread__gt=0)),
        unread_all=Count("pk", filter=open_ & Q(staff_unread__gt=0)),
        unread_sum=Sum("staff_unread", filter=open_),
        locked=Count("pk", filter=Q(link_locked_at__isnull=False)),
        changed=Max("updated_at"),
        activity=Max("last_activity_at"),
    )
    unknown = InboundSms.objects.filter(outcome="unknown_number", triaged_at__isnull=True).count()
    return InboxCounts(unknown=unknown, **agg)


def unread_total(*, tenant) -> int:
    return Thread.objects.filter(status=ThreadStatus.OPEN).aggregate(n=Sum("staff_unread"))["n"] or 0


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


def patient_thread_open(*, tenant, session: PatientSession) -> tuple[Thread, list[Message]]:
    """The verified patient's thread without internal notes or held results. Opening it writes
    THREAD_OPENED (by the patient) and marks the clinic's messages shown as read by the patient
    (only when there are any), in one short transaction after the read, so nothing of the audit
    trail is held while the messages load. Nothing is returned (so nothing shown) if the audit
    write fails. ``session.thread`` is used as loaded (``links.session_attach`` joins the patient
    and the appointment into the session's one query)."""
    thread = session.thread
    now = timezone.now()
    messages = list(Message.objects.filter(thread_id=thread.pk).exclude(direction=Direction.NOTE)
                    .filter(Q(release_at__isnull=True) | Q(release_at__lte=now))
                    .only(*_PATIENT_MESSAGE_FIELDS).order_by("created_at", "id"))
    unread = [m.pk for m in messages if m.direction == Direction.OUTBOUND and m.patient_read_at is None]
    with transaction.atomic():
        if unread:  # most views show nothing new: no write then
            Message.objects.filter(pk__in=unread, patient_read_at__isnull=True).update(patient_read_at=now)
        audit_record(tenant=tenant, actor=PATIENT_ACTOR, event_type=AuditEventType.THREAD_OPENED, target=thread,
                     patient_id=thread.patient_id, details={"thread_id": str(thread.pk), "source": "patient"})
    return thread, messages


@dataclass(frozen=True)
class AccessEntry:
    who: str
    at: datetime


def patient_access_log(*, tenant, thread: Thread, limit: int = 50) -> list[AccessEntry]:
    """Who at the clinic opened this conversation and when, from the audit trail (staff only)."""
    from audit.models import AuditEvent

    # Two columns, not AuditEvent rows (details, hashes …): shown on every view of the page.
    events = (AuditEvent.objects.filter(event_type=AuditEventType.THREAD_OPENED, patient_id=thread.patient_id,
                                        object_id=str(thread.pk),
                                        actor_type="user")
              .order_by("-occurred_at").values_list("actor_user__full_name", "occurred_at")[:limit])
    return [AccessEntry(who=(name or "").strip() or "A member of the clinic's staff", at=at) for name, at in events]


def link_state_now(link: SecureLink) -> str:
    now = timezone.now()
    if link.revoked_at:
        return link.revoked_reason or "revoked"
    if link.expires_at <= now:
        return "expired"
    if link.locked_until and link.locked_until > now:
        return "locked"
    return "active"
