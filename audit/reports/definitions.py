"""The six audit reports, as data. Views, selectors and renderers read these; none of them
knows a report by name.

A report is a base filter (event types, staff actors only, outside working hours), the
filters a user may add, the columns it shows and the chart that summarises it.
"""

from __future__ import annotations

from dataclasses import dataclass

from accounts.errors import NotFound
from audit.events import AuditEventType as T

# Filter names, shared with audit.forms.ReportFilterForm.
START, END, USER, PATIENT, ACTION = "start", "end", "user", "patient", "action"

# Chart kinds (audit.reports.selectors.report_chart draws each).
DAILY = "daily"  # one bar a day
DAILY_BY_TYPE = "daily_by_type"  # one stacked bar a day, a colour per event type
HOURLY = "hourly"  # events per hour of the clinic's day


@dataclass(frozen=True)
class Report:
    slug: str  # in URLs and in the AUDIT_* events' details["report"]
    title: str
    description: str
    columns: tuple[str, ...]  # keys of audit.reports.columns.COLUMNS
    filters: tuple[str, ...] = (START, END, USER, ACTION)
    event_types: tuple[T, ...] = ()  # the base filter; empty: every event type
    staff_only: bool = False  # only events whose actor is a staff user
    after_hours: bool = False  # only events outside the clinic's working hours
    requires_patient: bool = False
    newest_first: bool = True
    chart: str | None = DAILY
    default_days: int = 30
    max_days: int = 366  # keeps every report an index range scan of at most a year

    @property
    def action_choices(self) -> list[tuple[int, str]]:
        types = self.event_types or tuple(T)
        return [(int(t), t.label) for t in types]


FAILED_LOGIN_TYPES = (T.LOGIN_FAILED, T.LOGIN_LOCKED_OUT, T.MFA_FAILED, T.MFA_THROTTLED, T.API_KEY_REJECTED)

REPORTS: dict[str, Report] = {
    r.slug: r
    for r in (
        Report(
            slug="access",
            title="Access report",
            description="Everything recorded in this clinic: who did what, to which record, when and from where.",
            columns=("time", "user", "action", "object", "patient", "ip", "details"),
            filters=(START, END, USER, PATIENT, ACTION),
        ),
        Report(
            slug="disclosures",
            title="Accounting of disclosures",
            description="Every recorded access to one patient's information, oldest first.",
            columns=("time", "user", "action", "object", "ip", "details"),
            filters=(PATIENT, START, END),
            requires_patient=True,
            newest_first=False,
            chart=None,
            default_days=366,
        ),
        Report(
            slug="failed-logins",
            title="Failed logins and lockouts",
            description="Rejected passwords, MFA codes and API keys, and the lockouts and throttles they caused.",
            columns=("time", "user", "action", "ip", "user_agent", "details"),
            event_types=FAILED_LOGIN_TYPES,
            chart=DAILY_BY_TYPE,
        ),
        Report(
            slug="after-hours",
            title="After-hours access",
            description="Staff activity outside the clinic's working hours.",
            columns=("time", "user", "action", "object", "patient", "ip"),
            staff_only=True,
            after_hours=True,
            chart=HOURLY,
        ),
        Report(
            slug="break-glass",
            title="Emergency access",
            description="Each time someone broke the glass to open a record, with the reason they gave.",
            columns=("time", "user", "reason", "patient", "ip"),
            filters=(START, END, USER, PATIENT),
            event_types=(T.BREAK_GLASS_STARTED,),
            chart=None,
            default_days=90,
        ),
        Report(
            slug="exports",
            title="Exports",
            description="Audit reports downloaded and patient data exported.",
            columns=("time", "user", "action", "patient", "ip", "details"),
            event_types=(T.AUDIT_EXPORTED, T.PATIENT_EXPORTED),
            chart=None,
            default_days=90,
        ),
    )
}


def report_get(slug: str) -> Report:
    try:
        return REPORTS[slug]
    except KeyError:
        raise NotFound() from None
