"""The dashboard's figures as chart data (read by static/js/analytics.js), table rows and CSV.

Only counts, rates, minutes, week dates and location names (clinic rooms) leave here: no PHI.
"""

from __future__ import annotations

import csv
import io

from analytics.selectors import FUNNEL_LABELS, FUNNEL_STEPS, Dashboard, NoShowCounts

# A cell starting with one of these runs as a formula in spreadsheet apps; location names are
# typed by staff or come from an EHR (OWASP "CSV injection"): prefix them with a quote.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _neutralise(value) -> str:
    text = "" if value is None else str(value)
    return f"'{text}" if text.startswith(_FORMULA_START) else text


def percent(counts: NoShowCounts) -> float | None:
    return counts.rate_percent


def week_label(week) -> str:
    return week.isoformat()


def chart_data(board: Dashboard) -> dict:
    labels = [week_label(row.week) for row in board.funnel.weeks]
    return {
        "funnel": {
            "labels": labels, "axis": "Reminders",
            "datasets": [{"label": FUNNEL_LABELS[step], "data": [getattr(row, step) for row in board.funnel.weeks]}
                         for step in FUNNEL_STEPS],
        },
        "no_show": {
            "labels": labels, "axis": "No-show rate (%)",
            "datasets": [
                {"label": "Reminded", "data": [percent(row.reminded) for row in board.no_show.weeks]},
                {"label": "Not reminded", "data": [percent(row.not_reminded) for row in board.no_show.weeks]},
            ],
        },
        "response": {
            "labels": labels, "axis": "Median minutes to a staff reply",
            "datasets": [{"label": "Median minutes", "data": [row.median_minutes for row in board.responses.weeks]}],
        },
    }


CSV_HEADER = ["section", "week_starting", "location", "measure", "value"]


def _no_show_rows(section: str, week: str, location: str, row) -> list[list]:
    out = []
    for group, counts in (("reminded", row.reminded), ("not_reminded", row.not_reminded)):
        rate = percent(counts)
        out += [
            [section, week, location, f"{group}_no_show", counts.no_show],
            [section, week, location, f"{group}_completed", counts.completed],
            [section, week, location, f"{group}_no_show_rate_percent", "" if rate is None else rate],
        ]
    return out


def render_csv(board: Dashboard) -> bytes:
    """Long format (one figure per line), so it pivots in any spreadsheet. ``week_starting`` is
    the Monday (clinic time) or "all"; ``location`` is the filter, a location, or "all"."""
    scope = board.location or "all"
    rows: list[list] = []
    for row in [*board.funnel.weeks, board.funnel.total]:
        week = week_label(row.week) if row.week else "all"
        rows += [["reminder_funnel", week, scope, step, getattr(row, step)] for step in FUNNEL_STEPS]
    for row in [*board.no_show.weeks, board.no_show.total]:
        rows += _no_show_rows("no_show_by_week", week_label(row.key) if row.key else "all", scope, row)
    for row in board.no_show.locations:
        rows += _no_show_rows("no_show_by_location", "all", row.key or "(no location)", row)
    for row in [*board.responses.weeks, board.responses.total]:
        week = week_label(row.week) if row.week else "all"
        median = "" if row.median_minutes is None else row.median_minutes
        rows += [["staff_response", week, "all", "answered_turns", row.answered],
                 ["staff_response", week, "all", "unanswered_turns", row.waiting],
                 ["staff_response", week, "all", "median_minutes", median]]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_HEADER)
    writer.writerows([_neutralise(cell) for cell in row] for row in rows)
    return buffer.getvalue().encode("utf-8")
