"""What a report was asked for (validated by audit.forms.ReportFilterForm) and where a page
starts. Plain values: selectors and renderers never see request data."""

from __future__ import annotations

import uuid
import zoneinfo
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class ReportFilters:
    start: date  # inclusive, a day in the clinic's time zone
    end: date  # inclusive
    user_id: int | None = None
    patient_id: uuid.UUID | None = None
    event_type: int | None = None

    def window(self, zone: zoneinfo.ZoneInfo) -> tuple[datetime, datetime]:
        """[start, end) as aware datetimes: local midnight to the midnight after ``end``."""
        return (datetime.combine(self.start, time(), tzinfo=zone),
                datetime.combine(self.end + timedelta(days=1), time(), tzinfo=zone))

    def days(self) -> list[date]:
        return [self.start + timedelta(days=i) for i in range((self.end - self.start).days + 1)]

    def audit_summary(self) -> dict:
        """The filters as they go into AUDIT_* event details: no PHI, so never the patient id,
        only whether one was given."""
        return {"start": self.start.isoformat(), "end": self.end.isoformat(), "user": self.user_id,
                "action": self.event_type, "patient": self.patient_id is not None}


@dataclass(frozen=True)
class Cursor:
    """A position in a report's display order: the (occurred_at, id) of a row.

    ``forward`` pages continue after it (older rows in a newest-first report); backward
    pages end before it. Keyset paging stays as fast on page 500 as on page 1.
    """

    occurred_at: datetime
    event_id: uuid.UUID
    forward: bool = True

    def encode(self) -> str:
        micros = (self.occurred_at - _EPOCH) // timedelta(microseconds=1)
        return f"{micros}.{self.event_id.hex}"

    @classmethod
    def decode(cls, value: str, *, forward: bool) -> Cursor:
        """Raises ValueError for anything that isn't a cursor this module made."""
        micros, _, hex_id = value.partition(".")
        if not micros.isdigit() or len(micros) > 17:  # 17 digits: up to the year 5138
            raise ValueError("bad cursor")
        moment = _EPOCH + timedelta(microseconds=int(micros))
        return cls(occurred_at=moment, event_id=uuid.UUID(hex=hex_id), forward=forward)

    @classmethod
    def of(cls, event, *, forward: bool) -> Cursor:
        return cls(occurred_at=event.occurred_at, event_id=event.pk, forward=forward)
