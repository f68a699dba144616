"""Reads for the audit reports. Every query leads with tenant + occurred_at, so it is a range
scan of one of the indexes ``audit_tenant_time``, ``audit_tenant_type_time``,
``audit_tenant_actor_time`` (or ``audit_tenant_patient_time``) bounded by the report's date
range, which the form caps (``Report.max_days``).

Must be called inside the tenant's scope (the request's); the explicit ``tenant=`` filter is
what the indexes lead with, not the isolation, which the scoped manager and RLS provide.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import Count, F, Q, QuerySet
from django.db.models.functions import ExtractHour, ExtractIsoWeekDay, TruncDate, TruncTime

from audit.models import AuditEvent
from audit.reports.columns import action_display
from audit.reports.definitions import DAILY_BY_TYPE, HOURLY, Report
from audit.reports.filters import Cursor, ReportFilters
from audit.reports.hours import WorkingHours, clinic_zone, working_hours_for

PAGE_SIZE = 50


def _event_types(report: Report, filters: ReportFilters) -> set[int]:
    types = {int(t) for t in report.event_types}
    if filters.event_type is not None:
        # The form only offers the report's own types; intersecting keeps the selector safe alone.
        types = {filters.event_type} & types if types else {filters.event_type}
        types = types or {-1}  # a type outside the report: nothing matches
    return types


def _outside_working_hours(events: QuerySet, hours: WorkingHours, zone) -> QuerySet:
    events = events.alias(local_time=TruncTime("occurred_at", tzinfo=zone),
                          local_day=ExtractIsoWeekDay("occurred_at", tzinfo=zone))
    on_a_working_day = Q(local_day__in=[day + 1 for day in hours.days])  # ISO: Monday = 1
    if hours.start < hours.end:
        in_hours = Q(local_time__gte=hours.start, local_time__lt=hours.end)
    elif hours.start > hours.end:  # overnight shift
        in_hours = Q(local_time__gte=hours.start) | Q(local_time__lt=hours.end)
    else:
        in_hours = Q()
    return events.exclude(on_a_working_day & in_hours) if hours.days else events


def _matching(*, tenant, report: Report, filters: ReportFilters, until: datetime) -> QuerySet[AuditEvent]:
    zone = clinic_zone(tenant)
    start, end = filters.window(zone)
    events = AuditEvent.objects.filter(tenant=tenant, occurred_at__gte=start, occurred_at__lt=min(end, until))
    types = _event_types(report, filters)
    if types:
        events = events.filter(event_type__in=sorted(types))
    if filters.user_id is not None:
        events = events.filter(actor_user_id=filters.user_id)
    if filters.patient_id is not None:
        events = events.filter(patient_id=filters.patient_id)
    if report.staff_only:
        events = events.filter(actor_user__isnull=False)
    if report.after_hours:
        events = _outside_working_hours(events, working_hours_for(tenant), zone)
    return events


def report_event_list(*, tenant, report: Report, filters: ReportFilters, until: datetime) -> QuerySet[AuditEvent]:
    """The report's events in display order, with the actor's email (not the whole user row:
    no password hashes in memory for a report)."""
    order = ("-occurred_at", "-id") if report.newest_first else ("occurred_at", "id")
    return (_matching(tenant=tenant, report=report, filters=filters, until=until)
            .annotate(actor_email=F("actor_user__email")).order_by(*order))


def report_event_count(*, tenant, report: Report, filters: ReportFilters, until: datetime) -> int:
    return _matching(tenant=tenant, report=report, filters=filters, until=until).count()


@dataclass(frozen=True)
class Chart:
    labels: list[str]
    datasets: list[dict]  # [{"label": str, "data": [int, ...]}]
    axis: str
    stacked: bool = False

    @property
    def total(self) -> int:
        return sum(sum(d["data"]) for d in self.datasets)

    def as_json(self) -> dict:
        return {"labels": self.labels, "datasets": self.datasets, "axis": self.axis, "stacked": self.stacked}


def report_chart(*, tenant, report: Report, filters: ReportFilters, until: datetime) -> Chart | None:
    """Counts for the report's chart, one grouped query. Missing buckets are zeros."""
    if report.chart is None:
        return None
    zone = clinic_zone(tenant)
    events = _matching(tenant=tenant, report=report, filters=filters, until=until).order_by()
    if report.chart == HOURLY:
        counts = events.annotate(bucket=ExtractHour("occurred_at", tzinfo=zone)).values("bucket").annotate(n=Count("pk"))
        by_hour = {row["bucket"]: row["n"] for row in counts}
        return Chart(labels=[f"{hour:02d}:00" for hour in range(24)],
                     datasets=[{"label": "Events", "data": [by_hour.get(hour, 0) for hour in range(24)]}],
                     axis="Events by hour of the day (clinic time)")
    days = filters.days()
    labels = [day.isoformat() for day in days]
    bucketed = events.annotate(bucket=TruncDate("occurred_at", tzinfo=zone))
    if report.chart == DAILY_BY_TYPE:
        counts = bucketed.values("bucket", "event_type").annotate(n=Count("pk"))
        grid = {(row["event_type"], row["bucket"]): row["n"] for row in counts}
        types = [int(t) for t in report.event_types] or sorted({t for t, _ in grid})
        datasets = [{"label": action_display(t), "data": [grid.get((t, day), 0) for day in days]} for t in types
                    if filters.event_type in (None, t)]
        return Chart(labels=labels, datasets=datasets, axis="Events per day", stacked=True)
    by_day = {row["bucket"]: row["n"] for row in bucketed.values("bucket").annotate(n=Count("pk"))}
    return Chart(labels=labels, datasets=[{"label": "Events", "data": [by_day.get(day, 0) for day in days]}],
                 axis="Events per day")


@dataclass(frozen=True)
class Page:
    rows: list[AuditEvent] = field(default_factory=list)
    next: Cursor | None = None  # the page after this one, in display order
    previous: Cursor | None = None


def _beyond(cursor: Cursor, lookup: str) -> Q:
    return (Q(**{f"occurred_at__{lookup}": cursor.occurred_at})
            | Q(occurred_at=cursor.occurred_at, **{f"id__{lookup}": cursor.event_id}))


def report_page(*, events: QuerySet[AuditEvent], report: Report, cursor: Cursor | None,
                size: int = PAGE_SIZE) -> Page:
    """One page of ``events`` (from ``report_event_list``), keyset-paged on (occurred_at, id)."""
    later_in_display = "lt" if report.newest_first else "gt"
    if cursor is None or cursor.forward:
        if cursor is not None:
            events = events.filter(_beyond(cursor, later_in_display))
        rows = list(events[: size + 1])
        more, rows = len(rows) > size, rows[:size]
        return Page(rows=rows, next=Cursor.of(rows[-1], forward=True) if more else None,
                    previous=Cursor.of(rows[0], forward=False) if (cursor is not None and rows) else None)
    earlier_in_display = "gt" if report.newest_first else "lt"
    rows = list(events.filter(_beyond(cursor, earlier_in_display)).reverse()[: size + 1])
    more, rows = len(rows) > size, rows[:size][::-1]
    return Page(rows=rows, next=Cursor.of(rows[-1], forward=True) if rows else None,
                previous=Cursor.of(rows[0], forward=False) if more else None)
