"""A clinic's working hours, for the after-hours report.

``Tenant.settings["working_hours"] = {"start": "07:00", "end": "19:00", "days": [0, 1, 2, 3, 4]}``
in the clinic's own time zone; days count from Monday = 0 (Python's ``date.weekday()``).
An end before the start is an overnight shift (a day from 19:00 to 07:00). A malformed
setting falls back to the default instead of failing the report, and the page says so.
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from datetime import datetime, time

DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


@dataclass(frozen=True)
class WorkingHours:
    start: time
    end: time
    days: tuple[int, ...]
    source: str = "default"  # "default" | "clinic" | "invalid" (the clinic's setting is malformed)

    def contains(self, moment: datetime) -> bool:
        """Whether a local (clinic time zone) moment is inside working hours."""
        if moment.weekday() not in self.days:
            return False
        at = moment.time()
        if self.start < self.end:
            return self.start <= at < self.end
        if self.start > self.end:  # overnight
            return at >= self.start or at < self.end
        return True  # start == end: around the clock on working days

    def describe(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}, {_describe_days(self.days)}"


DEFAULT_WORKING_HOURS = WorkingHours(start=time(7), end=time(19), days=(0, 1, 2, 3, 4))


def _describe_days(days: tuple[int, ...]) -> str:
    if not days:
        return "no working days"
    if list(days) == list(range(days[0], days[-1] + 1)) and len(days) > 2:
        return f"{DAY_NAMES[days[0]]}-{DAY_NAMES[days[-1]]}"
    return ", ".join(DAY_NAMES[d] for d in days)


def _parse_time(value) -> time:
    if not isinstance(value, str) or len(value) != 5:
        raise ValueError("time must be HH:MM")
    return time.fromisoformat(value)


def working_hours_for(tenant) -> WorkingHours:
    raw = (tenant.settings or {}).get("working_hours")
    if raw is None:
        return DEFAULT_WORKING_HOURS
    try:
        days = raw.get("days", list(DEFAULT_WORKING_HOURS.days))
        if not isinstance(days, list) or not all(isinstance(d, int) and 0 <= d <= 6 for d in days):
            raise ValueError("days must be integers 0-6")
        return WorkingHours(start=_parse_time(raw.get("start", "07:00")), end=_parse_time(raw.get("end", "19:00")),
                            days=tuple(sorted(set(days))), source="clinic")
    except (AttributeError, ValueError, TypeError):
        return WorkingHours(DEFAULT_WORKING_HOURS.start, DEFAULT_WORKING_HOURS.end, DEFAULT_WORKING_HOURS.days,
                            source="invalid")


def clinic_zone(tenant) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(tenant.timezone)
