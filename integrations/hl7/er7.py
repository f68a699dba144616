"""Reading HL7 v2 ER7 text: lenient about framing, strict about what we need.

python-hl7 does the parsing (delimiters from MSH-1/MSH-2, escapes). This module adds what real
feeds need around it: any of CR, LF or CRLF between segments, trailing whitespace, batch and
file envelopes (FHS/BHS … BTS/FTS), and field access that never raises on a short segment.

Errors are ``Hl7Error``s naming the field at fault as an HL7 location (``PID-3``). Their
messages never repeat a submitted value: they end up in ACKs and logs.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field

import hl7
from hl7.containers import Repetition
from hl7.exceptions import HL7Exception

_SEGMENT_BREAK = re.compile(r"\r\n|\n|\r")
ENVELOPE_SEGMENTS = frozenset({"FHS", "BHS", "BTS", "FTS"})
_DTM = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.\d{1,4})?([+-]\d{4})?$")

# HL7 table 0357 (message error condition codes): the ones we answer with.
REQUIRED_FIELD_MISSING = 101
DATA_TYPE_ERROR = 102
UNSUPPORTED_MESSAGE_TYPE = 200
UNSUPPORTED_EVENT_CODE = 201
UNKNOWN_KEY = 204
INTERNAL_ERROR = 207
SEGMENT_SEQUENCE_ERROR = 100
MESSAGE_ACCEPTED = 0  # table 0357: used with severity W for a warning on an accepted message
CODE_TEXT = {
    MESSAGE_ACCEPTED: "Message accepted",
    SEGMENT_SEQUENCE_ERROR: "Segment sequence error",
    REQUIRED_FIELD_MISSING: "Required field missing",
    DATA_TYPE_ERROR: "Data type error",
    UNSUPPORTED_MESSAGE_TYPE: "Unsupported message type",
    UNSUPPORTED_EVENT_CODE: "Unsupported event code",
    UNKNOWN_KEY: "Unknown key identifier",
    INTERNAL_ERROR: "Application internal error",
}


@dataclass(frozen=True)
class Location:
    """Where in a message: segment, field and (optionally) component, as in ERR-2 (ERL)."""

    segment: str
    field: int
    component: int = 0

    @property
    def label(self) -> str:
        return f"{self.segment}-{self.field}" + (f".{self.component}" if self.component else "")


class Hl7Error(Exception):
    """A message we refuse: AE (fix the data and resend) or AR (we will never take it)."""

    def __init__(self, message: str, *, location: Location | None, code: int = DATA_TYPE_ERROR, ack: str = "AE",
                 also: tuple[Hl7Error, ...] = (), severity: str = "E"):
        super().__init__(message)
        self.message = message
        self.location = location
        self.code = code
        self.ack = ack
        self.severity = severity  # ERR-4 (v2.5+): E error, W warning on a message we accepted
        self.also = also  # further faults in the same message, each its own ERR segment

    @property
    def all(self) -> tuple[Hl7Error, ...]:
        return (self, *self.also)


@dataclass(frozen=True)
class Accepted:
    """What a handler returns: the AA's MSA-3 text and warnings (ERR segments with severity W)."""

    text: str
    warnings: tuple[Hl7Error, ...] = ()


def warning(message: str, location: Location | None) -> Hl7Error:
    return Hl7Error(message, location=location, code=MESSAGE_ACCEPTED, severity="W")


@dataclass
class Envelope:
    """A payload split into messages; ``headers`` keeps the FHS/BHS lines for the batch ACK."""

    messages: list[str] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def is_batch(self) -> bool:
        return bool(self.headers)


def decode(data: bytes) -> str:
    """HL7 v2 is ASCII in practice, UTF-8 since v2.8; Latin-1 never fails as a fallback."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def split_payload(text: str) -> Envelope:
    """One message, a batch or a file → its messages (each with CR between segments).

    Lines that come before the first MSH and are not envelope segments stay with the first
    "message", so garbage is answered with an AR rather than dropped silently.
    """
    envelope = Envelope()
    grouped: list[list[str]] = []
    current: list[str] | None = None
    for line in _SEGMENT_BREAK.split(text.strip().strip("\x0b\x1c")):
        line = line.rstrip()
        if not line.strip():
            continue
        seg_id = line[:3]
        if seg_id in ENVELOPE_SEGMENTS:
            if seg_id in ("FHS", "BHS"):
                envelope.headers.setdefault(seg_id, line)
            current = None
            continue
        if seg_id == "MSH" or current is None:
            current = []
            grouped.append(current)
        current.append(line)
    envelope.messages = ["\r".join(lines) for lines in grouped]
    return envelope


def parse_message(text: str) -> hl7.Message:
    if not text.startswith("MSH") or len(text) < 8:
        raise Hl7Error("The message does not start with an MSH segment.", location=Location("MSH", 1),
                       code=SEGMENT_SEQUENCE_ERROR, ack="AR")
    try:
        return hl7.parse(text)
    except (HL7Exception, ValueError, IndexError):
        raise Hl7Error("The message could not be parsed as HL7 v2 ER7.", location=Location("MSH", 2),
                       code=SEGMENT_SEQUENCE_ERROR, ack="AR") from None


def segment_id(segment) -> str:
    return str(segment[0]).strip()


def segments(message: hl7.Message, name: str) -> list:
    return [seg for seg in message if segment_id(seg) == name]


def first_segment(message: hl7.Message, name: str):
    found = segments(message, name)
    return found[0] if found else None


def require_segment(message: hl7.Message, name: str):
    seg = first_segment(message, name)
    if seg is None:
        raise Hl7Error(f"The message has no {name} segment.", location=Location(name, 0),
                       code=SEGMENT_SEQUENCE_ERROR)
    return seg


def value(segment, field_num: int, component: int = 1, repetition: int = 1, subcomponent: int = 1) -> str:
    """The unescaped value at this path, or "" when the segment is shorter (never raises)."""
    if segment is None:
        return ""
    try:
        return str(segment.extract_field(1, field_num, repetition, component, subcomponent)).strip()
    except (IndexError, KeyError, TypeError, ValueError):
        return ""


def repetitions(segment, field_num: int) -> int:
    if segment is None or field_num >= len(segment):
        return 0
    item = segment(field_num)
    return len(item) if item and isinstance(item[0], Repetition) else 1


def components(segment, field_num: int, repetition: int = 1) -> list[str]:
    """Every component of one repetition, unescaped (first subcomponents)."""
    if segment is None or field_num >= len(segment):
        return []
    try:
        rep = segment(field_num)(repetition)
    except (IndexError, TypeError):
        return []
    count = len(rep) if isinstance(rep, Repetition) else 1
    return [value(segment, field_num, c, repetition) for c in range(1, count + 1)]


def parse_timestamp(raw: str, *, zone: datetime.tzinfo) -> datetime.datetime:
    """HL7 DTM/TS (``YYYYMMDDHHMM[SS[.S]][+ZZZZ]``) as an aware datetime; minute precision at least.

    A time without an offset is the clinic's local time (what schedulers send).
    """
    match = _DTM.match(raw.strip().split("^")[0])
    if not match or match.group(5) is None:
        raise ValueError("not an HL7 timestamp to the minute")
    year, month, day, hour, minute, second = (int(g or 0) for g in match.groups()[:6])
    naive = datetime.datetime(year, month, day, hour, minute, second)
    offset = match.group(7)
    if offset:
        sign = 1 if offset[0] == "+" else -1
        delta = datetime.timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5]))
        return naive.replace(tzinfo=datetime.timezone(sign * delta))
    return naive.replace(tzinfo=zone)


def parse_date(raw: str) -> datetime.date:
    """HL7 DT/DTM to a date: the first eight digits (``YYYYMMDD``)."""
    match = _DTM.match(raw.strip())
    if not match or match.group(3) is None:
        raise ValueError("not an HL7 date")
    return datetime.date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
