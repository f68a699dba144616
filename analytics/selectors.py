"""Reminder and no-show figures for the owners' dashboard: aggregates only, never PHI.

Every function reads inside the caller's tenant scope (the scoped managers raise without one)
and runs a fixed number of queries whatever the amount of data. Weeks start on Monday at
00:00 in the clinic's time zone; a window is ``weeks`` whole weeks ending with the current one.

Definitions (shown on the page and in the CSV):

- A *reminder* is a reminder thread (Thread.kind "reminder") with at least one outbound
  message. It belongs to the week of its first outbound message, however many reminders the
  thread later carries. *Delivered*: at least one of its SMS reached the "delivered" state.
  *Opened*: one of its secure links was opened. *Confirmed / cancelled / reschedule requested*:
  the appointment's status now.
- An appointment is *reminded* when a reminder thread for it had an outbound message before it
  started. The *no-show rate* is no-shows / (no-shows + completed visits) among appointments
  that started in the window and before now; booked, confirmed, cancelled and reschedule-requested
  appointments are left out (nobody recorded whether the patient came).
- *Response time*: a patient's turn (one or more inbound messages in a row) is answered by the
  next outbound message a staff member sent in the same thread; the wait counts from the first
  message of the turn. Turns are bucketed by the week of that first message; the median is over
  the ``RESPONSE_SAMPLE`` most recent turns of the window.
"""

from __future__ import annotations

import datetime
import statistics
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from django.db.models import Count, Exists, OuterRef, Q, Subquery
from django.db.models.functions import TruncWeek
from django.utils import timezone

from accounts.models import Tenant
from accounts.tenancy import current_tenant
from messaging.models import (
    Direction,
    Message,
    MessageKind,
    OutboundSms,
    SecureLink,
    SmsStatus,
    Thread,
)
from patients.models import Appointment, AppointmentStatus
from patients.selectors import descriptor_choices, descriptor_filter, descriptor_names
from patients.services import clinic_zone

DEFAULT_WEEKS = 8
MAX_WEEKS = 52
MAX_LOCATIONS = 200
RESPONSE_SAMPLE = 5000  # most recent patient turns the median is computed over

FUNNEL_STEPS = ("sent", "delivered", "opened", "confirmed", "cancelled", "reschedule_requested")
FUNNEL_LABELS = {
    "sent": "Reminders sent", "delivered": "SMS delivered", "opened": "Link opened", "confirmed": "Confirmed",
    "cancelled": "Cancelled", "reschedule_requested": "Reschedule requested",
}


@dataclass(frozen=True)
class Window:
    """``weeks`` whole weeks (Monday 00:00, clinic time) ending with the current week."""

    zone: ZoneInfo
    weeks: tuple[datetime.date, ...]  # the Mondays, oldest first
    start: datetime.datetime
    end: datetime.datetime  # exclusive: next Monday 00:00
    now: datetime.datetime


def window_for(*, tenant: Tenant, weeks: int = DEFAULT_WEEKS, now: datetime.datetime | None = None) -> Window:
    zone = clinic_zone(tenant)
    now = now or timezone.now()
    today = now.astimezone(zone).date()
    this_monday = today - datetime.timedelta(days=today.weekday())
    mondays = tuple(this_monday - datetime.timedelta(weeks=n) for n in range(weeks - 1, -1, -1))
    return Window(zone=zone, weeks=mondays, start=_midnight(mondays[0], zone),
                  end=_midnight(this_monday + datetime.timedelta(weeks=1), zone), now=now)


def _midnight(day: datetime.date, zone: ZoneInfo) -> datetime.datetime:
    return datetime.datetime.combine(day, datetime.time.min, tzinfo=zone)


def _week_of(value) -> datetime.date:
    """TruncWeek's result (an aware datetime, or a date on some backends) as the Monday."""
    return value.date() if isinstance(value, datetime.datetime) else value


# --- the reminder funnel -------------------------------------------------------------------------


@dataclass
class FunnelRow:
    week: datetime.date | None  # None: the whole window
    sent: int = 0
    delivered: int = 0
    opened: int = 0
    confirmed: int = 0
    cancelled: int = 0
    reschedule_requested: int = 0

    def add(self, other: FunnelRow) -> None:
        for step in FUNNEL_STEPS:
            setattr(self, step, getattr(self, step) + getattr(other, step))


@dataclass
class Funnel:
    weeks: list[FunnelRow]
    total: FunnelRow


def reminder_funnel(*, window: Window, location: str = "") -> Funnel:
    """Reminders first sent in each week of the window and how far each got. One query."""
    outbound = Message.objects.filter(thread=OuterRef("pk"), direction=Direction.OUTBOUND)
    threads = Thread.objects.filter(kind=MessageKind.REMINDER)
    if location:
        threads = threads.filter(**_at_location(location, prefix="appointment__"))
    rows = (
        threads
        .annotate(first_sent=Subquery(outbound.order_by("created_at").values("created_at")[:1]))
        .filter(first_sent__gte=window.start, first_sent__lt=window.end)
        .annotate(
            week=TruncWeek("first_sent", tzinfo=window.zone),
            was_delivered=Exists(OutboundSms.objects.filter(message__thread=OuterRef("pk"),
                                                            status=SmsStatus.DELIVERED)),
            was_opened=Exists(SecureLink.objects.filter(thread=OuterRef("pk"), first_opened_at__isnull=False)),
        )
        .order_by()
        .values("week")
        .annotate(
            sent=Count("pk"),
            delivered=Count("pk", filter=Q(was_delivered=True)),
            opened=Count("pk", filter=Q(was_opened=True)),
            confirmed=Count("pk", filter=Q(appointment__status=AppointmentStatus.CONFIRMED)),
            cancelled=Count("pk", filter=Q(appointment__status=AppointmentStatus.CANCELLED)),
            reschedule_requested=Count("pk", filter=Q(appointment__status=AppointmentStatus.RESCHEDULE_REQUESTED)),
        )
    )
    by_week = {week: FunnelRow(week=week) for week in window.weeks}
    for row in rows:
        week = _week_of(row.pop("week"))
        if week in by_week:
            by_week[week] = FunnelRow(week=week, **row)
    total = FunnelRow(week=None)
    for row in by_week.values():
        total.add(row)
    return Funnel(weeks=list(by_week.values()), total=total)


# --- no-show rate, reminded vs not ---------------------------------------------------------------------


@dataclass
class NoShowCounts:
    no_show: int = 0
    completed: int = 0

    @property
    def seen(self) -> int:
        return self.no_show + self.completed

    @property
    def rate(self) -> float | None:
        """No-shows per recorded outcome, 0..1; None when there is none."""
        return self.no_show / self.seen if self.seen else None

    @property
    def rate_percent(self) -> float | None:
        return round(self.no_show * 100 / self.seen, 1) if self.seen else None

    def add(self, no_show: int, completed: int) -> None:
        self.no_show += no_show
        self.completed += completed


@dataclass
class NoShowRow:
    key: datetime.date | str | None  # the Monday, the location name, or None for the whole window
    reminded: NoShowCounts = field(default_factory=NoShowCounts)
    not_reminded: NoShowCounts = field(default_factory=NoShowCounts)


@dataclass
class NoShow:
    weeks: list[NoShowRow]
    locations: list[NoShowRow]
    total: NoShowRow


def _outcomes(*, window: Window, location: str):
    reminded = Message.objects.filter(
        thread__appointment=OuterRef("pk"), thread__kind=MessageKind.REMINDER, direction=Direction.OUTBOUND,
        created_at__lt=OuterRef("starts_at"))
    appointments = Appointment.objects.filter(
        starts_at__gte=window.start, starts_at__lt=min(window.end, window.now),
        status__in=(AppointmentStatus.NO_SHOW, AppointmentStatus.COMPLETED))
    if location:
        appointments = appointments.filter(**_at_location(location))
    return appointments.annotate(reminded=Exists(reminded)).order_by()


_OUTCOME_COUNTS = {
    "no_show": Count("pk", filter=Q(status=AppointmentStatus.NO_SHOW)),
    "completed": Count("pk", filter=Q(status=AppointmentStatus.COMPLETED)),
}


def no_show_rates(*, window: Window, location: str = "") -> NoShow:
    """No-show rate of reminded vs not-reminded past appointments by week and by location. Two queries."""
    by_week = {week: NoShowRow(key=week) for week in window.weeks}
    total = NoShowRow(key=None)
    weekly = (_outcomes(window=window, location=location)
              .annotate(week=TruncWeek("starts_at", tzinfo=window.zone))
              .values("week", "reminded").annotate(**_OUTCOME_COUNTS))
    for row in weekly:
        week = _week_of(row["week"])
        if week not in by_week:
            continue
        for target in (by_week[week], total):
            (target.reminded if row["reminded"] else target.not_reminded).add(row["no_show"], row["completed"])
    by_location: dict[str, NoShowRow] = {}
    names = descriptor_names(name="location_name") if not location else {}
    located = (_outcomes(window=window, location=location)
               .values("location_index", "reminded").annotate(**_OUTCOME_COUNTS).order_by())
    for row in located:  # grouped by the encrypted location's blind index, named after
        name = location or names.get(row["location_index"], "")
        target = by_location.setdefault(name, NoShowRow(key=name))
        (target.reminded if row["reminded"] else target.not_reminded).add(row["no_show"], row["completed"])
    by_location = dict(sorted(by_location.items(), key=lambda item: item[0].casefold()))
    return NoShow(weeks=list(by_week.values()), locations=list(by_location.values()), total=total)


# --- staff response time -----------------------------------------------------------------------------


@dataclass
class ResponseRow:
    week: datetime.date | None
    answered: int = 0
    waiting: int = 0  # turns with no staff reply yet
    median_minutes: float | None = None


@dataclass
class ResponseTimes:
    weeks: list[ResponseRow]
    total: ResponseRow
    sample_limited: bool  # the window had more turns than RESPONSE_SAMPLE


def response_times(*, window: Window, sample: int = RESPONSE_SAMPLE) -> ResponseTimes:
    """Median minutes from a patient's turn to the next staff reply, by week. One query over at
    most ``sample`` + 1 inbound messages, the median computed here (it works the same on every
    database)."""
    reply = Message.objects.filter(thread=OuterRef("thread"), direction=Direction.OUTBOUND, sender__isnull=False,
                                   created_at__gt=OuterRef("created_at"))
    inbound = list(
        Message.objects.filter(direction=Direction.INBOUND, created_at__gte=window.start, created_at__lt=window.end)
        .annotate(replied_at=Subquery(reply.order_by("created_at").values("created_at")[:1]))
        .order_by("-created_at", "-id")
        .values_list("thread_id", "created_at", "replied_at")[:sample + 1]
    )
    limited = len(inbound) > sample
    # A turn: the inbound messages of a thread answered by the same reply; the first one waited longest.
    turns: dict[tuple, datetime.datetime] = {}
    for thread_id, created_at, replied_at in inbound[:sample]:
        key = (thread_id, replied_at)  # replied_at None: the thread's unanswered turn
        if key not in turns or created_at < turns[key]:
            turns[key] = created_at
    waits: dict[datetime.date, list[float]] = {week: [] for week in window.weeks}
    waiting: dict[datetime.date, int] = {week: 0 for week in window.weeks}
    for (_thread_id, replied_at), asked_at in turns.items():
        local = asked_at.astimezone(window.zone).date()
        week = local - datetime.timedelta(days=local.weekday())
        if week not in waits:
            continue
        if replied_at is None:
            waiting[week] += 1
        else:
            waits[week].append((replied_at - asked_at).total_seconds() / 60)
    rows = [ResponseRow(week=week, answered=len(waits[week]), waiting=waiting[week],
                        median_minutes=_median(waits[week])) for week in window.weeks]
    every = [minutes for values in waits.values() for minutes in values]
    total = ResponseRow(week=None, answered=len(every), waiting=sum(waiting.values()), median_minutes=_median(every))
    return ResponseTimes(weeks=rows, total=total, sample_limited=limited)


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


# --- the filter's choices ----------------------------------------------------------------------------


def location_names() -> list[str]:
    """The clinic's distinct appointment locations (rooms, sites), sorted (encrypted: one query
    for the distinct blind indexes, one per location to name it)."""
    return descriptor_choices(name="location_name", limit=MAX_LOCATIONS)


def _at_location(location: str, *, prefix: str = "") -> dict:
    """Filter arguments for appointments at ``location`` (case-insensitive, by blind index)."""
    return descriptor_filter(tenant=current_tenant(), name="location_name", value=location, prefix=prefix)



# --- the whole dashboard -----------------------------------------------------------------------------


@dataclass
class Dashboard:
    window: Window
    location: str
    funnel: Funnel
    no_show: NoShow
    responses: ResponseTimes

    @property
    def is_empty(self) -> bool:
        return not (self.funnel.total.sent or self.no_show.total.reminded.seen
                    or self.no_show.total.not_reminded.seen or self.responses.total.answered
                    or self.responses.total.waiting)


def dashboard_get(*, tenant: Tenant, weeks: int = DEFAULT_WEEKS, location: str = "",
                  now: datetime.datetime | None = None) -> Dashboard:
    """Every figure of the dashboard: four queries, whatever the amount of data. Response times
    are the whole clinic's (a conversation has no location)."""
    window = window_for(tenant=tenant, weeks=weeks, now=now)
    return Dashboard(window=window, location=location, funnel=reminder_funnel(window=window, location=location),
                     no_show=no_show_rates(window=window, location=location), responses=response_times(window=window))
