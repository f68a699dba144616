"""What each supported message does, through the shared EHR services (``integrations.ehr``).

ADT^A01/A04/A05/A08/A28/A31: create or update the patient (PID).
SIU^S12/S13/S14/S15/S26: upsert the appointment (SCH, TQ1, AIS/AIL/AIP) for the PID patient.
ORU^R01: a result notice (OBR-4 and OBX lines) for a patient already on file.

Each handler returns the MSA-3 text of its AA, or raises Hl7Error / ApplicationError; the
caller runs it in one transaction, so a refused message writes nothing.
"""

from __future__ import annotations

import datetime
from zoneinfo import ZoneInfo

from integrations import ehr
from integrations.hl7 import er7
from integrations.hl7.er7 import REQUIRED_FIELD_MISSING, Hl7Error, Location
from integrations.hl7.patients import patient_for_pid, patient_upsert_from_pid, phone_warnings
from messaging.services import BODY_MAX
from patients.models import AppointmentStatus

ADT_EVENTS = frozenset({"A01", "A04", "A05", "A08", "A28", "A31"})
# S14 (modification) keeps the current status: moving a room must not undo a confirmation.
SIU_STATUS = {"S12": AppointmentStatus.BOOKED, "S13": AppointmentStatus.BOOKED, "S14": None,
              "S15": AppointmentStatus.CANCELLED, "S26": AppointmentStatus.NO_SHOW}
DEFAULT_MINUTES = 30  # an SIU with a start but no end or duration
MAX_MINUTES = 24 * 60  # a longer duration is a unit mix-up: fall back to the default
_MINUTES = {"S": 1 / 60, "SEC": 1 / 60, "M": 1, "MIN": 1, "H": 60, "HR": 60, "D": 1440}
RESULT_INTRO = "Your results are ready; your care team will review them with you."
FINAL_RESULT_STATUSES = frozenset({"", "F", "C", "A"})  # final, corrected, some results (OBR-25)
APPOINTMENT_FIELD_LOCATIONS = {
    "external_id": Location("SCH", 2), "starts_at": Location("SCH", 11, 4), "ends_at": Location("SCH", 11, 5),
    "provider_name": Location("AIP", 3), "location_name": Location("AIL", 3),
    "appointment_type": Location("SCH", 8), "reason": Location("SCH", 7), "status": Location("SCH", 25),
}


def adt_patient(*, tenant, actor, message, event: str) -> er7.Accepted:
    pid = er7.require_segment(message, "PID")
    result = patient_upsert_from_pid(tenant=tenant, actor=actor, pid=pid)
    return er7.Accepted("Patient created." if result.created else "Patient updated.", phone_warnings(result))


# --- SIU -----------------------------------------------------------------------------------------


def _coded_text(segment, field_num: int) -> str:
    return er7.value(segment, field_num, 2) or er7.value(segment, field_num, 1)


def _time_location(message) -> Location:
    return Location("TQ1", 7) if er7.first_segment(message, "TQ1") is not None else Location("SCH", 11, 4)


def _start_candidates(message, sch):
    tq1, ais, ail, aip = (er7.first_segment(message, n) for n in ("TQ1", "AIS", "AIL", "AIP"))
    return [(er7.value(tq1, 7), Location("TQ1", 7)), (er7.value(sch, 11, 4), Location("SCH", 11, 4)),
            (er7.value(ais, 4), Location("AIS", 4)), (er7.value(ail, 6), Location("AIL", 6)),
            (er7.value(aip, 6), Location("AIP", 6))]


def _parse_time(raw: str, location: Location, zone) -> datetime.datetime:
    try:
        return er7.parse_timestamp(raw, zone=zone)
    except ValueError:
        raise Hl7Error(f"{location.label} is not an HL7 timestamp (YYYYMMDDHHMM[SS][+ZZZZ]).",
                       location=location) from None


def _duration(segment, amount_field: int, unit_field: int) -> datetime.timedelta | None:
    amount = er7.value(segment, amount_field)
    if not amount:
        return None
    try:
        minutes = float(amount) * _MINUTES.get(er7.value(segment, unit_field).upper() or "M", 1)
    except ValueError:
        return None
    return datetime.timedelta(minutes=minutes) if 0 < minutes <= MAX_MINUTES else None


def _appointment_times(message, sch, zone) -> tuple[datetime.datetime, datetime.datetime]:
    raw, where = next(((r, loc) for r, loc in _start_candidates(message, sch) if r), ("", None))
    if not raw:
        location = _time_location(message)
        raise Hl7Error(f"Required: the appointment start ({location.label}, or AIS-4).", location=location,
                       code=REQUIRED_FIELD_MISSING)
    starts_at = _parse_time(raw, where, zone)
    tq1, ais = er7.first_segment(message, "TQ1"), er7.first_segment(message, "AIS")
    for end_raw, end_where in ((er7.value(tq1, 8), Location("TQ1", 8)), (er7.value(sch, 11, 5), Location("SCH", 11, 5))):
        if end_raw:
            return starts_at, _parse_time(end_raw, end_where, zone)
    duration = _duration(ais, 7, 8) or _duration(sch, 9, 10) or datetime.timedelta(minutes=DEFAULT_MINUTES)
    return starts_at, starts_at + duration


def _provider(aip) -> str:
    parts = [er7.value(aip, 3, c) for c in (6, 3, 2)]  # prefix, given, family (XCN)
    return (" ".join(p for p in parts if p) or er7.value(aip, 3, 1))[:200]


def _location(ail) -> str:
    described = er7.value(ail, 3, 9)
    parts = [er7.value(ail, 3, c) for c in (4, 1, 2)]  # facility, point of care, room (PL)
    return (described or " ".join(p for p in parts if p))[:200]


def siu_appointment(*, tenant, actor, message, event: str) -> er7.Accepted:
    sch = er7.require_segment(message, "SCH")
    external_id = er7.value(sch, 2) or er7.value(sch, 1)
    if not external_id:
        raise Hl7Error("Required: the appointment id (SCH-2 filler or SCH-1 placer).", location=Location("SCH", 2),
                       code=REQUIRED_FIELD_MISSING)
    starts_at, ends_at = _appointment_times(message, sch, ZoneInfo(tenant.timezone))
    pid = er7.require_segment(message, "PID")
    found = patient_for_pid(tenant=tenant, actor=actor, pid=pid, create=True)
    patient = found.patient
    ais = er7.first_segment(message, "AIS")
    appointment, created = ehr.ehr_appointment_upsert(
        tenant=tenant, actor=actor, source="hl7", external_id=external_id[:200], patient=patient,
        starts_at=starts_at, ends_at=ends_at, status=SIU_STATUS[event],
        provider_name=_provider(er7.first_segment(message, "AIP")),
        location_name=_location(er7.first_segment(message, "AIL")),
        appointment_type=(_coded_text(sch, 8) or _coded_text(ais, 3))[:100], reason=_coded_text(sch, 7) or None)
    return er7.Accepted(f"Appointment {'created' if created else 'updated'} ({appointment.status}).",
                        phone_warnings(found))


# --- ORU -----------------------------------------------------------------------------------------


def _obx_value(obx) -> str:
    kind = er7.value(obx, 2).upper()
    if kind in ("ED", "RP"):  # encapsulated documents and references: not for a text message
        return ""
    values = []
    for rep in range(1, er7.repetitions(obx, 5) + 1):
        parts = er7.components(obx, 5, rep)
        if kind in ("CE", "CWE", "CNE") and len(parts) > 1:
            parts = [parts[1] or parts[0]]
        values.append(" ".join(p for p in parts if p))
    return " ".join(v for v in values if v)


def _result_lines(message) -> list[str]:
    """The first OBR's test name with the fixed sentence, then each OBX (later OBRs as headings)."""
    lines: list[str] = []
    for seg in message:
        name = er7.segment_id(seg)
        if name == "OBR":
            test = _coded_text(seg, 4)
            if not lines:
                lines.append(f"{test}: {RESULT_INTRO}" if test else RESULT_INTRO)
            elif test:
                lines.append(test)
        elif name == "OBX":
            label, result, units = _coded_text(seg, 3), _obx_value(seg), er7.value(seg, 6) or er7.value(seg, 6, 2)
            if result:
                lines.append(" ".join(p for p in (f"{label}:" if label else "", result, units) if p))
    return lines or [RESULT_INTRO]


def _result_body(message) -> str:
    lines, body = _result_lines(message), ""
    for line in lines:
        candidate = f"{body}\n{line}" if body else line
        if len(candidate) > BODY_MAX - 60:
            return f"{body}\nMore results: ask your care team."
        body = candidate
    return body


def oru_result(*, tenant, actor, message, event: str) -> str:
    pid = er7.require_segment(message, "PID")
    obr = er7.require_segment(message, "OBR")
    patient = patient_for_pid(tenant=tenant, actor=actor, pid=pid, create=False).patient
    status = er7.value(obr, 25).upper()
    if status not in FINAL_RESULT_STATUSES:
        return "Accepted; preliminary results are not sent to the patient."
    order_id = er7.value(obr, 3) or er7.value(obr, 2) or er7.value(er7.first_segment(message, "MSH"), 10)
    if not order_id:
        raise Hl7Error("Required: the order number (OBR-3 filler or OBR-2 placer).", location=Location("OBR", 3),
                       code=REQUIRED_FIELD_MISSING)
    # A corrected result (C) is news again; a re-sent final (F) is a duplicate.
    external_id = f"{order_id}/{'C' if status == 'C' else 'F'}"
    _, outcome = ehr.ehr_result_notice(tenant=tenant, actor=actor, source="hl7", patient=patient,
                                       external_id=external_id, body=_result_body(message))
    if outcome == "created":
        return "Result notice created."
    if outcome == "duplicate":
        return "Result already received."
    return f"Accepted; the patient cannot be texted ({outcome})."


HANDLERS = {
    **{("ADT", e): adt_patient for e in ADT_EVENTS},
    **{("SIU", e): siu_appointment for e in SIU_STATUS},
    ("ORU", "R01"): oru_result,
}
FIELD_LOCATIONS = {"ADT": {}, "SIU": APPOINTMENT_FIELD_LOCATIONS, "ORU": {"external_id": Location("OBR", 3),
                                                                           "body": Location("OBX", 5)}}
