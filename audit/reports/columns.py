"""How an audit event becomes a row: one definition per column, shared by the HTML table,
the CSV and the PDF so the three always agree.

Only what an auditor needs and nothing that could be PHI: users by email, event types by
label, and of ``details`` only the allow-listed keys (ALLOWED_DETAIL_KEYS), however old the row.
"""

from __future__ import annotations

import json
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass

from audit.events import ALLOWED_DETAIL_KEYS, AuditEventType
from audit.models import AuditEvent, BreakGlassReason


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    value: Callable[[AuditEvent, zoneinfo.ZoneInfo], str]
    pdf_width: float = 20.0  # mm at 7 pt: enough for the usual value on one line
    pdf_grow: float = 0.0  # share of the page width left over once every column has its pdf_width
    csv_value: Callable[[AuditEvent, zoneinfo.ZoneInfo], str] | None = None


def _time(event: AuditEvent, zone) -> str:
    return event.occurred_at.astimezone(zone).strftime("%a %Y-%m-%d %H:%M:%S")


def _time_iso(event: AuditEvent, zone) -> str:
    return event.occurred_at.astimezone(zone).isoformat(timespec="seconds")


def actor_display(event: AuditEvent) -> str:
    if event.actor_user_id is not None:
        # report_event_list annotates the email, so a page of rows costs no extra queries.
        email = getattr(event, "actor_email", None)
        return email if email is not None else event.actor_user.email
    if event.actor_type == "api_key":
        return f"API key {event.actor_label}".strip()
    return event.actor_label or (event.actor_type or "system").capitalize()


def action_display(event_type: int) -> str:
    try:
        return AuditEventType(event_type).label
    except ValueError:  # a type newer than this code
        return f"Event {event_type}"


def _reason(event: AuditEvent, zone) -> str:
    reason = (event.details or {}).get("reason", "")
    return dict(BreakGlassReason.choices).get(reason, str(reason))


def _format_value(value) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return "" if value is None else str(value)


def allowed_details(details) -> dict:
    if not isinstance(details, dict):
        return {}
    return {key: details[key] for key in sorted(details) if key in ALLOWED_DETAIL_KEYS}


def _details(event: AuditEvent, zone) -> str:
    return "; ".join(f"{key}={_format_value(value)}" for key, value in allowed_details(event.details).items())


def _object(event: AuditEvent, zone) -> str:
    return f"{event.object_type} {event.object_id}".strip()


COLUMNS: dict[str, Column] = {
    c.key: c
    for c in (
        Column("time", "Time", _time, 31, csv_value=_time_iso),
        Column("user", "User", lambda e, z: actor_display(e), 33, 1),
        Column("action", "Action", lambda e, z: action_display(e.event_type), 31),
        Column("object", "Object", _object, 25, 1),
        Column("patient", "Patient id", lambda e, z: str(e.patient_id or ""), 49),
        Column("ip", "IP address", lambda e, z: e.ip_address or "", 21),
        Column("user_agent", "Browser", lambda e, z: e.user_agent, 30, 2),
        Column("reason", "Reason", _reason, 35, 1),
        Column("details", "Details", _details, 30, 2),
    )
}


def columns_for(report) -> list[Column]:
    return [COLUMNS[key] for key in report.columns]


def row_cells(columns: list[Column], event: AuditEvent, zone, *, for_csv: bool = False) -> list[str]:
    return [(c.csv_value or c.value)(event, zone) if for_csv else c.value(event, zone) for c in columns]
