"""When an SMS may go: message kinds, quiet hours and the automated-notice frequency cap.

Pure functions over values (no queries): the outbox (issue 7) asks them at send time.

- **Kinds.** Automated notices (reminders, result notices, broadcasts, follow-up nudges, and a
  staff message that is not a reply within 24 hours of the patient's own message) need
  consent, wait for quiet hours to end and are capped. Conversational kinds are not capped:
  a staff reply within 24 hours of the patient's message (needs consent, waits for quiet
  hours), and the two the patient has just asked for, which go at once and need no consent:
  keyword replies (STOP/START/HELP) and a one-time code requested on the secure page.
- **Quiet hours.** Non-urgent SMS go 08:00-21:00 in the patient's time zone (the clinic's
  when the patient has none). TCPA 47 CFR 64.1200(c)(1) forbids 21:00-08:00 for
  telemarketing; we hold every non-urgent notice to it.
- **Frequency cap.** The FCC's healthcare exemption (2015 TCPA Order, 47 CFR 64.1200(a)(9))
  allows at most one automated notice a day and three a week per patient. We count rolling windows (any 24
  hours, any 7 days), which is never looser than calendar days. A clinic may set lower caps
  in ``Tenant.settings["notice_cap"] = {"per_day": n, "per_week": m}``; never higher.
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, tzinfo

from django.db import models

from accounts.errors import ApplicationError

QUIET_HOURS_END = time(8)  # sending may start at 08:00 local
QUIET_HOURS_START = time(21)  # and stops at 21:00 local (21:00 itself is quiet)
STAFF_REPLY_WINDOW = timedelta(hours=24)
DAY = timedelta(days=1)
WEEK = timedelta(days=7)


class SmsKind(models.TextChoices):
    REMINDER = "reminder", "Appointment reminder"
    RESULT_NOTICE = "result_notice", "Result notice"
    BROADCAST = "broadcast", "Broadcast"
    NUDGE = "nudge", "Follow-up nudge"
    STAFF_MESSAGE = "staff_message", "Staff message (not a reply within 24 hours)"
    STAFF_REPLY = "staff_reply", "Staff reply within 24 hours of the patient's message"
    KEYWORD_REPLY = "keyword_reply", "Reply to STOP/START/HELP"
    ONE_TIME_CODE = "one_time_code", "One-time code the patient asked for"


@dataclass(frozen=True)
class KindRule:
    needs_consent: bool
    capped: bool
    quiet_hours: bool


KIND_RULES: dict[str, KindRule] = {
    SmsKind.REMINDER: KindRule(needs_consent=True, capped=True, quiet_hours=True),
    SmsKind.RESULT_NOTICE: KindRule(needs_consent=True, capped=True, quiet_hours=True),
    SmsKind.BROADCAST: KindRule(needs_consent=True, capped=True, quiet_hours=True),
    SmsKind.NUDGE: KindRule(needs_consent=True, capped=True, quiet_hours=True),
    SmsKind.STAFF_MESSAGE: KindRule(needs_consent=True, capped=True, quiet_hours=True),
    SmsKind.STAFF_REPLY: KindRule(needs_consent=True, capped=False, quiet_hours=True),
    # The patient is waiting for these right now; a code that arrives at 08:00 is useless.
    SmsKind.KEYWORD_REPLY: KindRule(needs_consent=False, capped=False, quiet_hours=False),
    SmsKind.ONE_TIME_CODE: KindRule(needs_consent=False, capped=False, quiet_hours=False),
}
AUTOMATED_KINDS = frozenset(kind for kind, rule in KIND_RULES.items() if rule.capped)


def kind_rule(kind: str) -> KindRule:
    """The rule of ``kind``; an unknown kind is a programming error (ValueError)."""
    try:
        return KIND_RULES[SmsKind(kind)]
    except ValueError:
        raise ValueError(f"unknown SMS kind {kind!r}") from None


def staff_message_kind(*, last_inbound_at: datetime | None, now: datetime) -> str:
    """STAFF_REPLY within 24 hours of the patient's last inbound message, else STAFF_MESSAGE."""
    if last_inbound_at is not None and now - last_inbound_at <= STAFF_REPLY_WINDOW:
        return SmsKind.STAFF_REPLY
    return SmsKind.STAFF_MESSAGE


# --- quiet hours ------------------------------------------------------------------------------


def _zone(value) -> tzinfo | None:
    if isinstance(value, tzinfo):
        return value
    if isinstance(value, str) and value:
        try:
            return zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            return None
    return None


def send_zone(*, tenant, patient) -> tzinfo:
    """The patient's time zone; the clinic's when the patient's is blank or unknown."""
    return _zone(patient.timezone) or _zone(tenant.timezone) or UTC


def next_allowed_send(patient_tz, now: datetime, *, urgent: bool = False, clinic_tz=None) -> datetime:
    """``now`` if it is 08:00-21:00 in ``patient_tz`` (or ``urgent``), else the next 08:00 there.

    ``patient_tz`` is a zone name or tzinfo; blank or unknown falls back to ``clinic_tz``; if
    neither is usable this raises ValueError rather than guess (a guess could text at 3 am).
    The next 08:00 is a wall-clock time, so it stays 08:00 across DST changes.
    """
    if now.tzinfo is None:
        raise ValueError("next_allowed_send needs an aware datetime")
    if urgent:
        return now
    zone = _zone(patient_tz) or _zone(clinic_tz)
    if zone is None:
        raise ValueError("no usable time zone for the patient or the clinic")
    local = now.astimezone(zone)
    if QUIET_HOURS_END <= local.time() < QUIET_HOURS_START:
        return now
    day = local.date() if local.time() < QUIET_HOURS_END else local.date() + timedelta(days=1)
    return datetime.combine(day, QUIET_HOURS_END, tzinfo=zone).astimezone(UTC)


# --- frequency cap ----------------------------------------------------------------------------


@dataclass(frozen=True)
class NoticeCap:
    per_day: int
    per_week: int


DEFAULT_NOTICE_CAP = NoticeCap(per_day=1, per_week=3)


def notice_cap_validate(value) -> NoticeCap:
    """A clinic's ``{"per_day": n, "per_week": m}``: whole numbers from 1 up to the defaults.

    Raises ApplicationError naming the bad keys. Higher than the default is refused: the
    exemption's limits are a ceiling, not a default.
    """
    if not isinstance(value, dict):
        raise ApplicationError("The notice cap must name per_day and per_week.",
                               fields={"notice_cap": ["Give per_day and per_week."]})
    errors: dict[str, list[str]] = {}
    unknown = sorted(set(value) - {"per_day", "per_week"})
    for key in unknown:
        errors[key] = ["Not a notice cap setting."]
    limits = {"per_day": DEFAULT_NOTICE_CAP.per_day, "per_week": DEFAULT_NOTICE_CAP.per_week}
    cleaned = {}
    for key, ceiling in limits.items():
        number = value.get(key, ceiling)
        if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= ceiling:
            errors[key] = [f"A whole number from 1 to {ceiling}."]
        else:
            cleaned[key] = number
    if errors:
        raise ApplicationError("The notice cap may only be lowered.", fields=errors)
    return NoticeCap(**cleaned)


def notice_cap_for(tenant) -> NoticeCap:
    """The clinic's cap; the default when unset, and also when malformed or too high (a bad
    setting must never loosen the cap, and must not stop notices either)."""
    raw = (tenant.settings or {}).get("notice_cap")
    if raw is None:
        return DEFAULT_NOTICE_CAP
    try:
        return notice_cap_validate(raw)
    except ApplicationError:
        return DEFAULT_NOTICE_CAP


def _fits(candidate: datetime, sent: list[datetime], window: timedelta, limit: int) -> bool:
    """Whether one more notice at ``candidate`` keeps every ``window``-long span at ``limit``.

    The fullest span containing ``candidate`` starts at ``candidate`` or at a sent time within
    ``window`` before it, so those starts are the only ones to check.
    """
    starts = [candidate] + [s for s in sent if candidate - window < s <= candidate]
    for start in starts:
        if sum(1 for s in sent if start <= s < start + window) + 1 > limit:
            return False
    return True


def _cap_slot(now: datetime, sent: list[datetime], cap: NoticeCap) -> datetime:
    candidates = sorted({now} | {s + span for s in sent for span in (DAY, WEEK) if s + span > now})
    for candidate in candidates:
        if _fits(candidate, sent, DAY, cap.per_day) and _fits(candidate, sent, WEEK, cap.per_week):
            return candidate
    raise AssertionError("unreachable: the last candidate is past every sent notice")


def notice_slot(tenant, patient, now: datetime, sent_times: list[datetime]) -> datetime:
    """When the next automated notice to ``patient`` may go: ``now`` or later.

    ``sent_times`` are the send times of the automated notices already sent or scheduled to
    this patient (older than a week may be left out). The slot keeps every rolling day and
    week within the clinic's cap and falls outside quiet hours.

    A notice that cannot go now is never dropped: the outbox holds it until this slot and
    merges every notice due then into one SMS (the SMS only says "you have a new secure
    message"; the thread holds each item). Conversational kinds do not call this.
    """
    if now.tzinfo is None:
        raise ValueError("notice_slot needs an aware datetime")
    cap, zone = notice_cap_for(tenant), send_zone(tenant=tenant, patient=patient)
    recent = [s for s in sent_times if s > now - 2 * WEEK]
    slot = now
    for _ in range(50):  # each round moves forward; it settles within two or three
        capped = _cap_slot(slot, recent, cap)
        allowed = next_allowed_send(zone, capped)
        if allowed == capped:
            return capped
        slot = allowed
    raise AssertionError("notice_slot did not settle")
