"""Running a report for a person: read, render, and record that they saw or took it.

Reading and rendering happen *before* the audit transaction: ``audit_record`` holds the
clinic's chain-head lock until its transaction commits, and a PDF of a few thousand rows must
not stall every other audited action of the clinic while it renders. The event is written
before anything is returned, so no report leaves without its record; a render that fails
leaves no false record behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from accounts.errors import ApplicationError
from audit.events import AuditEventType
from audit.reports import selectors
from audit.reports.columns import action_display, columns_for
from audit.reports.definitions import Report
from audit.reports.filters import Cursor, ReportFilters
from audit.reports.hours import clinic_zone
from audit.reports.render_csv import render_csv
from audit.reports.render_pdf import render_pdf
from audit.services import audit_record

# Downloads are built in memory inside the request (the tenant scope and RLS end with it), so
# they are bounded. Past these, the page asks for a narrower range instead of truncating: an
# accounting that silently drops rows would be worse than none.
EXPORT_LIMITS = {"csv": 50_000, "pdf": 5_000}
CONTENT_TYPES = {"csv": "text/csv; charset=utf-8", "pdf": "application/pdf"}


class ReportTooLarge(ApplicationError):
    code = "report_too_large"


@dataclass(frozen=True)
class ReportPage:
    page: selectors.Page
    chart: selectors.Chart | None
    total: int
    generated_at: datetime


@dataclass(frozen=True)
class ReportDownload:
    filename: str
    content_type: str
    body: bytes
    row_count: int


@transaction.atomic
def _record(*, tenant, actor, event_type: AuditEventType, report: Report, filters: ReportFilters,
            fmt: str, row_count: int) -> None:
    # The patient asked about goes in the event's own patient_id column, never in details: the
    # look at a patient's history is then part of that patient's accounting of disclosures.
    audit_record(tenant=tenant, actor=actor, event_type=event_type, patient_id=filters.patient_id,
                 details={"report": report.slug, "format": fmt, "row_count": row_count,
                          "filters": filters.audit_summary()})


def report_view(*, tenant, actor, report: Report, filters: ReportFilters, cursor: Cursor | None) -> ReportPage:
    """One page of the report plus its chart; records AUDIT_REPORT_VIEWED with the rows shown."""
    until = timezone.now()  # the page, chart and total describe the same moment
    chart = selectors.report_chart(tenant=tenant, report=report, filters=filters, until=until)
    total = chart.total if chart is not None else selectors.report_event_count(
        tenant=tenant, report=report, filters=filters, until=until)
    events = selectors.report_event_list(tenant=tenant, report=report, filters=filters, until=until)
    page = selectors.report_page(events=events, report=report, cursor=cursor)
    _record(tenant=tenant, actor=actor, event_type=AuditEventType.AUDIT_REPORT_VIEWED, report=report,
            filters=filters, fmt="html", row_count=len(page.rows))
    return ReportPage(page=page, chart=chart, total=total, generated_at=until)


def _filename(*, tenant, report: Report, filters: ReportFilters, fmt: str) -> str:
    # Dates and slugs only: the patient id stays out of file names (they end up in mail and logs).
    return f"caretext-{tenant.slug}-{report.slug}-{filters.start:%Y%m%d}-{filters.end:%Y%m%d}.{fmt}"


def describe_filters(*, tenant, report: Report, filters: ReportFilters, user_email: str | None) -> list[str]:
    parts = [f"{filters.start:%Y-%m-%d} to {filters.end:%Y-%m-%d} ({tenant.timezone})"]
    if user_email:
        parts.append(f"user {user_email}")
    if filters.event_type is not None:
        parts.append(f"action {action_display(filters.event_type)}")
    if filters.patient_id is not None:
        parts.append(f"patient {filters.patient_id}")
    return parts


def report_export(*, tenant, actor, report: Report, filters: ReportFilters, fmt: str,
                  user_email: str | None = None) -> ReportDownload:
    """The whole report as CSV or PDF; records AUDIT_EXPORTED with the rows it holds.

    Raises ReportTooLarge (nothing recorded) past EXPORT_LIMITS[fmt] rows.
    """
    until = timezone.now()
    total = selectors.report_event_count(tenant=tenant, report=report, filters=filters, until=until)
    if total > EXPORT_LIMITS[fmt]:
        raise ReportTooLarge(
            f"{total:,} events match; a {fmt.upper()} download holds at most {EXPORT_LIMITS[fmt]:,}. "
            "Narrow the date range or add a filter.")
    zone, columns = clinic_zone(tenant), columns_for(report)
    events = selectors.report_event_list(tenant=tenant, report=report, filters=filters, until=until)
    if fmt == "csv":
        body, count = render_csv(columns=columns, events=events.iterator(chunk_size=2000), zone=zone)
    else:
        heading = [
            f"Clinic: {tenant.name}",
            "Filters: " + "; ".join(describe_filters(tenant=tenant, report=report, filters=filters,
                                                     user_email=user_email)),
            f"Generated {until.astimezone(zone):%Y-%m-%d %H:%M:%S %Z} by {actor.email}; {total:,} events",
        ]
        body, count = render_pdf(title=report.title, heading=heading, columns=columns,
                                 events=events.iterator(chunk_size=2000), zone=zone)
    _record(tenant=tenant, actor=actor, event_type=AuditEventType.AUDIT_EXPORTED, report=report,
            filters=filters, fmt=fmt, row_count=count)
    return ReportDownload(filename=_filename(tenant=tenant, report=report, filters=filters, fmt=fmt),
                          content_type=CONTENT_TYPES[fmt], body=body, row_count=count)
