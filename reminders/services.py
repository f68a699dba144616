"""Writes for appointment reminders (R2). Call inside ``tenant_scope(tenant)``.

Scheduling rules (``reminders_schedule_for``), run whenever an appointment is created, moved or
changes status (patients.services calls it in the same transaction) and by the beat task for
upcoming appointments that have no reminder yet:

* An appointment gets reminders when it is booked or confirmed, starts in the future, the
  policy is enabled and its type is one of the policy's types (no types: every type).
  One row per offset: due at ``starts_at - offset``.
* Booked late (less than the first offset ahead): the first reminder is due at once; a later
  offset that is already past is not created (an unsent one is cancelled).
* Moved: unsent reminders get their due time recomputed. A sent reminder stays sent unless the
  appointment moved by more than ``RESEND_AFTER_MOVE`` (1 h) from the time it announced: then it
  is scheduled again for the new time (a new message, a new idempotency key).
* Not eligible any more (cancelled, no-show, completed, reschedule requested, past, type or
  offset no longer in the policy, policy disabled): unsent reminders are cancelled with a
  reason. They come back if the appointment becomes eligible again.

Sending (``reminders_send_due``) claims due reminders in slices and writes each slice in one
transaction through ``messaging.bulk.messages_send_many`` (``message_send``'s rules, set-based:
a clinic's whole next day is one beat run, not one transaction per reminder): the SMS is a link
notice only; quiet hours and the frequency cap hold it in the outbox ("waiting"), and the
reminder counts as sent once its message exists. A refusal (no consent, opted out, no BAA…)
marks the reminder skipped with the refusal's reason; nothing else is written.
"""

from __future__ import annotations

import datetime
import functools
import logging
import re
import string
import uuid

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from accounts.errors import ApplicationError
from accounts.selectors import RowLoader
from audit.events import AuditEventType
from audit.services import audit_record
from messaging.models import MessageKind, SecureLink
from patients.models import Appointment, AppointmentStatus, Language
from patients.services import descriptor_index
from reminders.models import (
    DEFAULT_TEMPLATE_EN,
    DEFAULT_TEMPLATE_ES,
    PLACEHOLDERS,
    Reminder,
    ReminderPolicy,
    ReminderStatus,
)

log = logging.getLogger(__name__)

ELIGIBLE_STATUSES = (AppointmentStatus.BOOKED, AppointmentStatus.CONFIRMED)
RESEND_AFTER_MOVE = datetime.timedelta(hours=1)
FOLLOW_UP_AFTER = datetime.timedelta(hours=24)
SEND_BATCH = 200  # follow-ups per run
SEND_SLICE = 1000  # reminders claimed and written per transaction
OFFSET_HOURS_MIN, OFFSET_HOURS_MAX = 1, 168
TEMPLATE_MAX = 1500
TYPES_MAX, TYPE_MAX_LENGTH = 30, 100

# Staff-readable reasons (no PHI).
WHY_CLOSED = "Appointment {status}."
WHY_PAST = "The appointment time has passed."
WHY_DISABLED = "Reminders are turned off in the reminder settings."
WHY_TYPE = "This appointment type gets no reminders (reminder settings)."
WHY_OFFSET = "This reminder time is no longer in the reminder settings."
WHY_TOO_LATE = "Booked or moved too close to the appointment for this reminder."
WHY_MOVED = "Scheduled again: the appointment moved."
WHY_BOOKED_LATE = "Booked less than the reminder time ahead: sent at once."


# --- policy -----------------------------------------------------------------------------------------


def reminder_policy_get(*, tenant) -> ReminderPolicy:
    """The clinic's policy, created with the defaults on first use."""
    policy = ReminderPolicy.objects.filter(tenant=tenant).first()
    if policy is not None:
        return policy
    policy = ReminderPolicy(tenant=tenant, template_en=DEFAULT_TEMPLATE_EN, template_es=DEFAULT_TEMPLATE_ES)
    try:
        with transaction.atomic():
            policy.save(force_insert=True)
    except IntegrityError:  # created by a concurrent request
        policy = ReminderPolicy.objects.get(tenant=tenant)
    return policy


def _template_errors(body: str) -> list[str]:
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(body) if name is not None]
    except ValueError:
        return ["Use {placeholder} with matching braces; write {{ for a brace."]
    if not body.strip():
        return ["This field is required."]
    if len(body) > TEMPLATE_MAX:
        return [f"Use at most {TEMPLATE_MAX} characters (this has {len(body)})."]
    bad = sorted({n for n in names if n not in PLACEHOLDERS})
    if bad:
        return [f"Unknown placeholder {{{bad[0]}}}. Use: " + ", ".join(f"{{{p}}}" for p in PLACEHOLDERS)]
    return []


def _offset_minutes(value, *, field: str, errors: dict, required: bool) -> int | None:
    if value in (None, ""):
        if required:
            errors[field] = ["This field is required."]
        return None
    try:
        hours = int(str(value).strip())
    except ValueError:
        errors[field] = ["Enter a whole number of hours."]
        return None
    if not OFFSET_HOURS_MIN <= hours <= OFFSET_HOURS_MAX:
        errors[field] = [f"Enter between {OFFSET_HOURS_MIN} and {OFFSET_HOURS_MAX} hours."]
        return None
    return hours * 60


def parse_types(text: str) -> list[str]:
    return [t for t in dict.fromkeys(" ".join(part.split()) for part in (text or "").split(",")) if t]


@transaction.atomic
def reminder_policy_update(*, tenant, actor, enabled: bool, appointment_types: str, first_offset_hours,
                           second_offset_hours, follow_up_enabled: bool, template_en: str,
                           template_es: str) -> ReminderPolicy:
    """Validate everything first (errors name the form field), then save, audit the changed
    field names and reschedule upcoming appointments under the new rules."""
    errors: dict[str, list[str]] = {}
    types = parse_types(appointment_types)
    if len(types) > TYPES_MAX or any(len(t) > TYPE_MAX_LENGTH for t in types):
        errors["appointment_types"] = [f"Use at most {TYPES_MAX} types of at most {TYPE_MAX_LENGTH} characters."]
    first = _offset_minutes(first_offset_hours, field="first_offset_hours", errors=errors, required=True)
    second = _offset_minutes(second_offset_hours, field="second_offset_hours", errors=errors, required=False)
    if first and second and second >= first:
        errors["second_offset_hours"] = ["The second reminder must come closer to the appointment than the first."]
    texts = {}
    for field, value in (("template_en", template_en), ("template_es", template_es)):
        texts[field] = (value or "").replace("\r\n", "\n").strip()
        problems = _template_errors(texts[field])
        if problems:
            errors[field] = problems
    if errors:
        raise ApplicationError("Please correct the highlighted fields.", fields=errors)
    policy = reminder_policy_get(tenant=tenant)
    policy = ReminderPolicy.objects.select_for_update().get(pk=policy.pk)
    values = {"enabled": bool(enabled), "appointment_types": types, "first_offset_minutes": first,
              "second_offset_minutes": second, "follow_up_enabled": bool(follow_up_enabled), **texts}
    changed = sorted(name for name, value in values.items() if getattr(policy, name) != value)
    if not changed:
        return policy
    for name in changed:
        setattr(policy, name, values[name])
    policy.full_clean(exclude=["tenant", "template_en", "template_es"])
    policy.save(update_fields=[*changed, "updated_at"])
    audit_record(tenant=tenant, actor=actor, event_type=AuditEventType.TENANT_SETTINGS_CHANGED, target=policy,
                 details={"fields": changed})
    if {"enabled", "appointment_types", "first_offset_minutes", "second_offset_minutes"} & set(changed):
        now = timezone.now()
        upcoming = Appointment.objects.filter(starts_at__gt=now).filter(
            Q(status__in=ELIGIBLE_STATUSES) | Q(reminders__status=ReminderStatus.SCHEDULED)).distinct()
        for appointment in upcoming.order_by("starts_at").iterator(chunk_size=500):
            reminders_schedule_for(tenant=tenant, appointment=appointment, policy=policy, now=now)
    return policy


# --- scheduling ------------------------------------------------------------------------------------


def _type_matches(policy: ReminderPolicy, appointment: Appointment) -> bool:
    if not policy.appointment_types:
        return True
    wanted = {t.casefold() for t in policy.appointment_types}
    return " ".join((appointment.appointment_type or "").split()).casefold() in wanted


def _why_not(policy: ReminderPolicy, appointment: Appointment, now) -> str:
    """Why the appointment gets no reminders now ("" if it does)."""
    if appointment.status not in ELIGIBLE_STATUSES:
        return WHY_CLOSED.format(status=appointment.get_status_display().lower())
    if appointment.starts_at <= now:
        return WHY_PAST
    if not policy.enabled:
        return WHY_DISABLED
    if not _type_matches(policy, appointment):
        return WHY_TYPE
    return ""


def _cancel(reminder: Reminder, reason: str) -> None:
    if reminder.status == ReminderStatus.CANCELLED and reminder.reason == reason:
        return
    reminder.status, reminder.reason = ReminderStatus.CANCELLED, reason
    reminder.save(update_fields=["status", "reason", "updated_at"])


@transaction.atomic
def reminders_schedule_for(*, tenant, appointment: Appointment, policy: ReminderPolicy | None = None,
                           now=None) -> list[Reminder]:
    """Create or recompute the appointment's reminders (rules in the module docstring).
    Returns its reminders that are scheduled afterwards."""
    now = now or timezone.now()
    policy = policy or reminder_policy_get(tenant=tenant)
    # NO KEY UPDATE (see patients.services._appointment_locked): a fan-out holding one of these
    # reminders inserts a thread referencing the appointment; FOR UPDATE here would deadlock with it.
    appointment = Appointment.objects.select_for_update(no_key=True).filter(pk=appointment.pk).first()
    if appointment is None:
        return []
    existing = {r.offset_minutes: r for r in Reminder.objects.select_for_update().filter(appointment=appointment)}
    why_not = _why_not(policy, appointment, now)
    offsets = [] if why_not else policy.offsets
    for offset, reminder in existing.items():
        if reminder.status == ReminderStatus.SENT:
            continue
        if offset not in offsets:
            _cancel(reminder, why_not or WHY_OFFSET)
    scheduled = []
    for position, offset in enumerate(sorted(offsets, reverse=True)):
        due = appointment.starts_at - datetime.timedelta(minutes=offset)
        late = due < now
        reminder = existing.get(offset)
        if late and position > 0:  # only the first reminder is sent late
            if reminder is not None and reminder.status != ReminderStatus.SENT:
                _cancel(reminder, WHY_TOO_LATE)
            continue
        due = now if late else due
        reason = WHY_BOOKED_LATE if late else ""
        if reminder is None:
            reminder = Reminder(tenant=tenant, appointment=appointment, offset_minutes=offset, due_at=due,
                                starts_at=appointment.starts_at, reason=reason)
            reminder.full_clean(exclude=["tenant", "appointment", "message"], validate_constraints=False)
            try:
                with transaction.atomic():
                    reminder.save(force_insert=True)
            except IntegrityError:  # a concurrent run created it: theirs stands
                continue
            scheduled.append(reminder)
            continue
        moved = abs(appointment.starts_at - reminder.starts_at) > RESEND_AFTER_MOVE
        if reminder.status == ReminderStatus.SENT and not moved:
            continue
        if reminder.status == ReminderStatus.SKIPPED and reminder.starts_at == appointment.starts_at:
            continue  # refused for this time already; a move (or a new appointment) tries again
        if reminder.status == ReminderStatus.SCHEDULED and late and reminder.due_at <= now:
            due = reminder.due_at  # already due: keep its place in the queue
        changes = {"due_at": due, "starts_at": appointment.starts_at, "status": ReminderStatus.SCHEDULED,
                   "reason": reason}
        if reminder.status == ReminderStatus.SENT:
            changes.update(generation=reminder.generation + 1, message_id=None, sent_at=None,
                           follow_up_sent_at=None, reason=WHY_MOVED)
        changed = [name for name, value in changes.items() if getattr(reminder, name) != value]
        if changed:
            for name in changed:
                setattr(reminder, name, changes[name])
            reminder.save(update_fields=[*(n.removesuffix("_id") for n in changed), "updated_at"])
        scheduled.append(reminder)
    return scheduled


def reminders_schedule_upcoming(*, tenant, now=None) -> int:
    """Schedule reminders for upcoming appointments in the reminder window that have none yet
    (appointments imported without the hook, or a policy turned on). Cheap when there are none."""
    now = now or timezone.now()
    policy = reminder_policy_get(tenant=tenant)
    if not policy.enabled or not policy.offsets:
        return 0
    window_end = now + datetime.timedelta(minutes=max(policy.offsets)) + datetime.timedelta(days=1)
    candidates = Appointment.objects.filter(starts_at__gt=now, starts_at__lte=window_end,
                                            status__in=ELIGIBLE_STATUSES, reminders__isnull=True)
    if policy.appointment_types:
        # The type is encrypted: match its blind index.
        candidates = candidates.filter(type_index__in=[descriptor_index(tenant, "appointment_type", kind)
                                                       for kind in policy.appointment_types])
    count = 0
    for appointment in candidates.order_by("starts_at")[:1000]:
        count += len(reminders_schedule_for(tenant=tenant, appointment=appointment, policy=policy, now=now))
    return count


# --- sending ----------------------------------------------------------------------------------------

_DAYS_ES = ("lunes", "martes", "miércoles", "jueves", "viernes", "sábado", "domingo")
_MONTHS_ES = ("enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto", "septiembre", "octubre",
              "noviembre", "diciembre")


@functools.lru_cache(maxsize=4096)
def _when(starts_at, zone, spanish: bool) -> tuple[str, str]:
    """(date, time) of ``starts_at`` in ``zone`` as the reminder says them: a fan-out renders
    thousands of appointments that start at a few dozen times."""
    local = timezone.localtime(starts_at, zone)
    if spanish:
        return (f"{_DAYS_ES[local.weekday()]} {local.day} de {_MONTHS_ES[local.month - 1]} de {local.year}",
                local.strftime("%H:%M"))
    return local.strftime("%A, %B %-d, %Y"), local.strftime("%-I:%M %p")


def reminder_render(*, tenant, policy: ReminderPolicy, appointment: Appointment) -> str:
    """The reminder text in the patient's language (PHI: only ever a message body, shown on the
    secure page after verification)."""
    from patients.services import clinic_zone

    patient = appointment.patient
    spanish = patient.preferred_language == Language.SPANISH
    date, time = _when(appointment.starts_at, clinic_zone(tenant), spanish)
    template = policy.template_es if spanish else policy.template_en
    values = {p: "" for p in PLACEHOLDERS}
    values.update(first_name=patient.given_name, appointment_date=date, appointment_time=time,
                  provider=appointment.provider_name or ("su proveedor" if spanish else "your provider"),
                  location=appointment.location_name or tenant.name, instructions=appointment.instructions or "")
    body = template.format(**values)
    if " \n" in body or "\t\n" in body:  # the tests first: a fan-out renders thousands, most need neither
        body = re.sub(r"[ \t]+\n", "\n", body)
    if "\n\n\n" in body:
        body = re.sub(r"\n{3,}", "\n\n", body)
    return body.strip()


def reminders_send_due(*, tenant, now=None, slice_size: int = SEND_SLICE) -> dict[str, int]:
    """Send every scheduled reminder that is due, slice by slice (``_send_slice``): each slice
    claimed with SKIP LOCKED and written in one transaction, so two runs at once never send one
    twice and memory stays flat whatever the count. A slice that raises is retried one
    reminder at a time: one reminder's trouble never holds up the others (it stays scheduled
    for the next run)."""
    now = now or timezone.now()
    outcomes: dict[str, int] = {}
    troubled: set = set()  # ids that raised in this run: not claimed again until the next
    while True:
        try:
            counts = _send_slice(tenant=tenant, now=now, limit=slice_size, exclude=troubled)
        except Exception:  # noqa: BLE001 - isolated below, reminder by reminder
            log.exception("reminders: a slice raised; sending its reminders one by one")
            counts = _send_one_by_one(tenant=tenant, now=now, limit=slice_size, troubled=troubled)
            if set(counts) == {"error"}:  # every one failed alone too: stop here, the next run retries
                outcomes["error"] = outcomes.get("error", 0) + counts["error"]
                return outcomes
        if not counts:
            return outcomes
        for outcome, n in counts.items():
            outcomes[outcome] = outcomes.get(outcome, 0) + n


def _due(now):
    return Reminder.objects.filter(status=ReminderStatus.SCHEDULED, due_at__lte=now).order_by("due_at", "id")


def _send_one_by_one(*, tenant, now, limit: int, troubled: set) -> dict[str, int]:
    counts: dict[str, int] = {}
    for reminder_id in _due(now).exclude(pk__in=troubled).values_list("pk", flat=True)[:limit]:
        try:
            outcome = reminder_send(tenant=tenant, reminder_id=reminder_id, now=now)
        except Exception:  # noqa: BLE001 - one reminder's trouble must not stop the others; retried next run
            log.exception("reminders: reminder %s raised; it stays scheduled", reminder_id)
            troubled.add(reminder_id)
            outcome = "error"
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts


def reminder_send(*, tenant, reminder_id, now=None) -> str:
    """Send one due reminder (a slice of one); returns sent | skipped | cancelled | busy
    (claimed elsewhere, or not due)."""
    counts = _send_slice(tenant=tenant, now=now or timezone.now(), limit=1, ids=[reminder_id])
    return next(iter(counts), "busy")


# What sending reads of a claimed reminder and its appointment (``_why_not``, ``reminder_render``,
# the idempotency key). The rest is never read here (reminders are updated by id): loading it
# cost a tenth of the fan-out's Python time, mostly timestamps parsed for nothing.
CLAIM_REMINDER_FIELDS = ("id", "tenant_id", "appointment_id", "offset_minutes", "generation")
CLAIM_APPOINTMENT_FIELDS = ("id", "tenant_id", "patient_id", "status", "starts_at", "provider_name", "location_name",
                            "appointment_type", "instructions")
_REMINDER_ROWS = RowLoader(Reminder, CLAIM_REMINDER_FIELDS)
_APPOINTMENT_ROWS = RowLoader(Appointment, CLAIM_APPOINTMENT_FIELDS)
# ``_due`` with its appointment, claimed: the ORM's query as written out, for PostgreSQL (below).
_CLAIM_SQL = (
    f"SELECT {_REMINDER_ROWS.columns('r')}, {_APPOINTMENT_ROWS.columns('a')} "  # noqa: S608 - model names
    f"FROM {Reminder._meta.db_table} r JOIN {Appointment._meta.db_table} a ON a.id = r.appointment_id "
    "WHERE r.tenant_id = %s AND r.status = %s AND r.due_at <= %s {only} "
    "ORDER BY r.due_at, r.id LIMIT %s FOR UPDATE OF r SKIP LOCKED")


def _claim(*, tenant, now, limit: int, ids, exclude) -> list[Reminder]:
    """Up to ``limit`` due reminders (``_due``'s order) locked until the transaction ends,
    skipping those another run holds, each with its appointment (the fields above).
    PostgreSQL: one statement bound server-side and rows built by ``RowLoader``: compiling the
    ORM's query and running ``Model.__init__`` for two models a row cost more than the query."""
    from django.db import connection, connections

    if connection.vendor != "postgresql":  # the demo's SQLite
        claimed = (_due(now).select_for_update(skip_locked=True, of=("self",)).select_related("appointment")
                   .only(*CLAIM_REMINDER_FIELDS, *(f"appointment__{name}" for name in CLAIM_APPOINTMENT_FIELDS)))
        if ids is not None:
            claimed = claimed.filter(pk__in=ids)
        if exclude:
            claimed = claimed.exclude(pk__in=exclude)
        return list(claimed[:limit])
    from messaging.bulk import select_bound

    only, params = [], [tenant.pk, ReminderStatus.SCHEDULED, now]
    if ids is not None:
        only.append("AND r.id = ANY(%b::uuid[])")
        params.append([_uuid(i) for i in ids])
    if exclude:
        only.append("AND NOT (r.id = ANY(%b::uuid[]))")
        params.append([_uuid(i) for i in exclude])
    split = len(CLAIM_REMINDER_FIELDS)
    cache = Reminder._meta.get_field("appointment").set_cached_value
    conn, reminders = connections[connection.alias], []  # the wrapper itself: RowLoader reads it per row
    for row in select_bound(_CLAIM_SQL.format(only=" ".join(only)), [*params, limit]):
        reminder = _REMINDER_ROWS.build(row[:split], conn)
        cache(reminder, _APPOINTMENT_ROWS.build(row[split:], conn))  # as select_related leaves it
        reminders.append(reminder)
    return reminders


def _uuid(value) -> uuid.UUID:
    """A reminder id as the ORM would take it (a UUID or its text; anything else raises)."""
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


@transaction.atomic
def _send_slice(*, tenant, now, limit: int, ids=None, exclude=()) -> dict[str, int]:
    """Claim up to ``limit`` due reminders (SKIP LOCKED) and send them in this one transaction:
    cancel those no longer eligible, render the rest and hand them to
    ``messaging.bulk.messages_send_many`` (the rules of ``message_send``, set-based); a refusal
    marks the reminder skipped with its reason. Returns {outcome: count}; {} when none was due."""
    from messaging import bulk

    _slice_start()
    reminders = _claim(tenant=tenant, now=now, limit=limit, ids=ids, exclude=exclude)
    if not reminders:
        return {}
    policy = reminder_policy_get(tenant=tenant)
    by_reason: dict[str, list] = {}
    live = []
    for reminder in reminders:
        why_not = (_why_not(policy, reminder.appointment, now)
                   or ("" if reminder.offset_minutes in policy.offsets else WHY_OFFSET))
        if why_not:
            by_reason.setdefault(why_not, []).append(reminder.pk)
        else:
            live.append(reminder)
    _set_status(by_reason, ReminderStatus.CANCELLED)
    counts = {"cancelled": len(reminders) - len(live)} if len(live) < len(reminders) else {}
    if not live:
        return counts
    patients = bulk.patients_lock(r.appointment.patient_id for r in live)
    notices = []
    for reminder in live:
        appointment = reminder.appointment
        appointment.patient = patients[appointment.patient_id]
        notices.append(bulk.Notice(ref=reminder.pk, patient=appointment.patient, appointment_id=appointment.pk,
                                   body=reminder_render(tenant=tenant, policy=policy, appointment=appointment),
                                   idempotency_key=reminder.idempotency_key))
    # The reminders are marked sent in the same pipeline as the messages' inserts (their ids are
    # known before the database has them).
    result = bulk.messages_send_many(tenant=tenant, kind=MessageKind.REMINDER, notices=notices,
                                     then=lambda done: _mark_sent(done.sent, now))
    skipped: dict[str, list] = {}
    for ref, reason in result.refused.items():
        skipped.setdefault(reason[:300], []).append(ref)
    _set_status(skipped, ReminderStatus.SKIPPED)
    for outcome, n in (("sent", len(result.sent)), ("skipped", len(result.refused))):
        if n:
            counts[outcome] = n
    return counts


def _slice_start() -> None:
    """Three settings for this slice's transaction, in one round trip (PostgreSQL).

    ``synchronous_commit = off`` (this transaction only): the commit does not wait for the WAL
    to reach the disk. Safe because of what a lost slice means and what comes after it. A crash can lose the last
    few hundred milliseconds of such commits, never part of one (a transaction stays atomic)
    and never a later synchronous commit's work: the WAL is written in order, and a synchronous
    commit flushes everything before its own commit record. So a lost slice is as if it never
    ran: its reminders are still scheduled and due (the next run sends them; their idempotency
    keys keep a retry from doubling), and its messages, links, outbox rows and audit events are
    gone with them (the chain head moves in the same transaction). Nothing of it reaches a
    patient first: an outbox row goes to the gateway only after ``messaging.outbox._claim`` has
    marked it "sending" in a synchronous commit of its own (``sms_send_one``), which flushes the
    slice with it, and a secure link only ever travels in such an SMS. (Staff may see the slice
    before it is durable, as they may see any committed row before a crash that loses it.)

    ``DISCARD PLANS``: PostgreSQL plans each foreign-key check once per connection and keeps the
    plan until the table's statistics change. A worker's connection lives for hours: a check
    first planned while a table was small keeps its sequential scan while a fan-out grows the
    table by thousands of rows a second, faster than autovacuum analyses it (or ever, where
    autovacuum is off). `make bench` saw a 100,000-reminder fan-out fall from 1,900 to under 700
    reminders/s and on down, each outbox row's check reading every secure link. Discarding makes
    the slice plan them again against the tables as they are (a few plans, well under a
    millisecond a slice); prepared statements stay, only replanned.

    ``SET CONSTRAINTS ALL IMMEDIATE``: the foreign keys (deferrable, as Django makes them) are
    checked at the end of each insert instead of all at the commit. The slice inserts in
    dependency order (threads, messages, links, outbox rows), so nothing it writes needs the
    deferral; and the checks, a third of the slice's database time, then run inside the
    pipelined inserts (``messaging.bulk.messages_send_many``), while Python builds the next
    table's rows, instead of at a commit that Python can only wait for."""
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit = off; SET CONSTRAINTS ALL IMMEDIATE; DISCARD PLANS")


def _set_status(ids_by_reason: dict[str, list], status: str) -> None:
    stamp = timezone.now()
    for reason, ids in ids_by_reason.items():
        Reminder.objects.filter(pk__in=ids).update(status=status, reason=reason, updated_at=stamp)


def _mark_sent(sent: dict, now) -> None:
    """Reminder id -> its message id, in one UPDATE (RLS keeps it to the tenant)."""
    from django.db import connection

    from messaging.bulk import execute_bound

    if sent and connection.vendor != "postgresql":  # the demo's SQLite
        for reminder_id, message_id in sent.items():
            Reminder.objects.filter(pk=reminder_id).update(status=ReminderStatus.SENT, message_id=message_id,
                                                           sent_at=now, updated_at=timezone.now())
    elif sent:
        execute_bound(
            f"UPDATE {Reminder._meta.db_table} AS r SET status = %s, message_id = v.message_id, sent_at = %s, "  # noqa: S608
            "updated_at = %s FROM unnest(%b::uuid[], %b::uuid[]) AS v(id, message_id) WHERE r.id = v.id",
            [ReminderStatus.SENT, now, timezone.now(), list(sent), list(sent.values())])


# --- follow-up --------------------------------------------------------------------------------------


def _follow_up_candidates(now):
    from django.db.models import Exists, OuterRef

    opened = SecureLink.objects.filter(thread_id=OuterRef("message__thread_id"), first_opened_at__isnull=False,
                                       first_opened_at__gte=OuterRef("sent_at"))
    followed = Reminder.objects.filter(appointment_id=OuterRef("appointment_id"), follow_up_sent_at__isnull=False)
    return Reminder.objects.filter(
        status=ReminderStatus.SENT, follow_up_sent_at__isnull=True, sent_at__lte=now - FOLLOW_UP_AFTER,
        appointment__starts_at__gt=now, appointment__status=AppointmentStatus.BOOKED, message__isnull=False,
    ).exclude(Exists(opened)).exclude(Exists(followed))


def reminders_follow_up(*, tenant, now=None) -> int:
    """One more link notice for a reminder nobody opened within a day of sending, while the
    appointment is still upcoming and unanswered (booked: not confirmed, cancelled or asked to
    reschedule). At most one attempt per appointment, whatever its outcome."""
    now = now or timezone.now()
    policy = reminder_policy_get(tenant=tenant)
    if not policy.follow_up_enabled:
        return 0
    ids = list(_follow_up_candidates(now).order_by("sent_at", "id").values_list("pk", flat=True)[:SEND_BATCH])
    sent = 0
    for reminder_id in ids:
        try:
            sent += reminder_follow_up_one(tenant=tenant, reminder_id=reminder_id, now=now)
        except Exception:  # noqa: BLE001 - as above
            log.exception("reminders: follow-up for reminder %s raised", reminder_id)
    return sent


@transaction.atomic
def reminder_follow_up_one(*, tenant, reminder_id, now=None) -> int:
    from messaging.models import Thread
    from messaging.services import link_resend

    now = now or timezone.now()
    reminder = (_follow_up_candidates(now).select_for_update(skip_locked=True, of=("self",))
                .select_related("message").filter(pk=reminder_id).first())
    if reminder is None:
        return 0
    reminder.follow_up_sent_at = now
    try:
        with transaction.atomic():
            link_resend(tenant=tenant, actor=None, thread=Thread.objects.get(pk=reminder.message.thread_id))
    except ApplicationError as exc:
        reminder.reason = f"Follow-up not sent: {exc.message}"[:300]
        reminder.save(update_fields=["follow_up_sent_at", "reason", "updated_at"])
        return 0
    reminder.save(update_fields=["follow_up_sent_at", "updated_at"])
    return 1


def reminders_run_for_tenant(*, tenant, now=None) -> dict[str, int]:
    """One beat run for one clinic: schedule, send, follow up."""
    now = now or timezone.now()
    scheduled = reminders_schedule_upcoming(tenant=tenant, now=now)
    outcomes = reminders_send_due(tenant=tenant, now=now)
    follow_ups = reminders_follow_up(tenant=tenant, now=now)
    return {"scheduled": scheduled, **outcomes, "follow_ups": follow_ups}
