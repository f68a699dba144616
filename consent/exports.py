"""One patient's consent history as CSV: a PHI export, audited as PATIENT_EXPORTED."""

from __future__ import annotations

import csv
import io
import zoneinfo

from django.db import transaction

from audit.events import AuditEventType
from audit.services import audit_record
from consent.selectors import consent_history_rows
from patients.models import Patient

COLUMNS = ("Occurred at", "Action", "Method", "Number", "Disclosure version", "Captured by", "Evidence",
           "Recorded at")
# A cell starting with one of these runs as a formula in spreadsheet apps, and the evidence
# note is free text (OWASP "CSV injection"): prefix such cells with a quote. Same rule as
# audit/reports/render_csv.py.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: str) -> str:
    return f"'{value}" if value.startswith(_FORMULA_START) else value


@transaction.atomic
def consent_history_csv(*, tenant, actor, patient: Patient) -> tuple[bytes, int]:
    """(UTF-8 CSV, row count) of the patient's ledger, times in the clinic's zone."""
    zone = zoneinfo.ZoneInfo(tenant.timezone)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    rows = consent_history_rows(tenant=tenant, patient=patient)
    for row in rows:
        event = row.event
        writer.writerow([_cell(value) for value in (
            event.occurred_at.astimezone(zone).isoformat(timespec="seconds"), event.get_action_display(),
            event.get_method_display(), row.number, event.disclosure_version, row.captured_by, row.evidence,
            event.created_at.astimezone(zone).isoformat(timespec="seconds"),
        )])
    audit_record(tenant=tenant, actor=actor, event_type=AuditEventType.PATIENT_EXPORTED, target=patient,
                 patient_id=patient.pk, details={"format": "csv", "row_count": len(rows)})
    return buffer.getvalue().encode("utf-8"), len(rows)
