"""A report as CSV: one header row, then one row per event, every cell as the columns define."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable

from audit.models import AuditEvent
from audit.reports.columns import Column, row_cells

# A cell starting with one of these runs as a formula in spreadsheet apps; attackers choose
# some cells (the email tried at a failed login, the browser's user agent). OWASP "CSV
# injection": prefix them with a quote.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _neutralise(value: str) -> str:
    return f"'{value}" if value.startswith(_FORMULA_START) else value


def render_csv(*, columns: list[Column], events: Iterable[AuditEvent], zone) -> tuple[bytes, int]:
    """(UTF-8 CSV, number of event rows)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([c.title for c in columns])
    count = 0
    for event in events:
        writer.writerow([_neutralise(value) for value in row_cells(columns, event, zone, for_csv=True)])
        count += 1
    return buffer.getvalue().encode("utf-8"), count
