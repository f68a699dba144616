"""PID → the shared EHR patient services (``integrations.ehr``).

PID-3 identifiers (MRN: the CX typed MR, else the first), PID-5 name (the legal one, type L,
if several), PID-7 birth date, PID-13 phone (a mobile, CP, or the primary, PRN, if typed),
PID-15 language. Missing optional values are None, so an update never erases what we have.
"""

from __future__ import annotations

from dataclasses import dataclass

from integrations import ehr
from integrations.hl7 import er7
from integrations.hl7.er7 import (
    DATA_TYPE_ERROR,
    REQUIRED_FIELD_MISSING,
    UNKNOWN_KEY,
    Hl7Error,
    Location,
)

MRN = Location("PID", 3)
# Where each ``ehr_patient_upsert`` argument comes from, to name it in an ERR segment.
FIELD_LOCATIONS = {
    "mrn": MRN, "external_ids": MRN, "patient": MRN,
    "family_name": Location("PID", 5, 1), "given_name": Location("PID", 5, 2),
    "birth_date": Location("PID", 7), "phone": Location("PID", 13), "email": Location("PID", 13),
    "preferred_language": Location("PID", 15),
}
_SPANISH = {"es", "spa", "spanish", "espanol", "español", "sp"}
_ENGLISH = {"en", "eng", "english"}
_MAX_EXTERNAL_IDS = 19  # patients.validation.EXTERNAL_IDS_MAX is 20
_NOT_KEPT = frozenset({"SS", "SSN"})  # social security numbers: we never need them, so never store them


@dataclass(frozen=True)
class PidValues:
    mrn: str
    external_ids: dict
    family_name: str | None
    given_name: str | None
    birth_date: object
    phone: str | None
    email: str | None
    preferred_language: str | None


def _mrn_and_ids(pid) -> tuple[str, dict]:
    ids = []
    for rep in range(1, er7.repetitions(pid, 3) + 1):
        ident = er7.value(pid, 3, 1, rep)
        if ident:
            ids.append((ident, er7.value(pid, 3, 5, rep).upper(), er7.value(pid, 3, 4, rep)))
    if not ids:
        return "", {}
    mrn = next((i for i, kind, _ in ids if kind == "MR"), ids[0][0])
    others = {f"hl7:{authority or 'unknown'}:{kind or 'id'}"[:100]: ident[:200]
              for ident, kind, authority in ids if ident != mrn and kind not in _NOT_KEPT}
    return mrn, dict(list(others.items())[:_MAX_EXTERNAL_IDS])


def _name(pid) -> tuple[str | None, str | None]:
    count = er7.repetitions(pid, 5)
    reps = range(1, count + 1)
    rep = next((r for r in reps if er7.value(pid, 5, 7, r).upper() == "L"), 1)
    return er7.value(pid, 5, 1, rep) or None, er7.value(pid, 5, 2, rep) or None


def _phone_and_email(pid) -> tuple[str | None, str | None]:
    numbers, email = [], None
    for rep in range(1, er7.repetitions(pid, 13) + 1):
        use, kind = er7.value(pid, 13, 2, rep).upper(), er7.value(pid, 13, 3, rep).upper()
        if kind in ("INTERNET", "X.400") or use == "NET":
            email = email or er7.value(pid, 13, 4, rep) or None
            continue
        number = _number(pid, rep)
        if number:
            rank = 0 if kind == "CP" else 1 if use == "PRN" else 2
            numbers.append((rank, rep, number))
    return (min(numbers)[2] if numbers else None), email


def _number(pid, rep: int) -> str:
    """XTN: v2.3 puts the number in component 1; v2.5 may split it into 5 (country), 6 (area), 7 (local)."""
    formatted = er7.value(pid, 13, 1, rep)
    if any(c.isdigit() for c in formatted):
        return formatted
    country, area, local = (er7.value(pid, 13, c, rep) for c in (5, 6, 7))
    if local:
        return (f"+{country.lstrip('+')} " if country else "") + f"({area}) {local}" if area else local
    return er7.value(pid, 13, 12, rep)


def _language(pid) -> str | None:
    for code in (er7.value(pid, 15, 1), er7.value(pid, 15, 2)):
        base = code.lower().replace("-", "_").split("_")[0]
        if base in _SPANISH:
            return "es"
        if base in _ENGLISH:
            return "en"
    return None


def pid_values(pid) -> PidValues:
    mrn, external_ids = _mrn_and_ids(pid)
    if not mrn:
        raise Hl7Error("Required: a patient identifier (PID-3).", location=MRN, code=REQUIRED_FIELD_MISSING)
    family, given = _name(pid)
    raw_dob = er7.value(pid, 7)
    birth_date = None
    if raw_dob:
        try:
            birth_date = er7.parse_date(raw_dob)
        except ValueError:
            raise Hl7Error("The birth date is not an HL7 date (YYYYMMDD).", location=Location("PID", 7),
                           code=DATA_TYPE_ERROR) from None
    phone, email = _phone_and_email(pid)
    return PidValues(mrn=mrn, external_ids=external_ids, family_name=family, given_name=given,
                     birth_date=birth_date, phone=phone, email=email, preferred_language=_language(pid))


def _require_for_new(values: PidValues) -> None:
    """A new patient needs a name and a birth date (a mobile number is optional: without one the
    patient is imported and never texted, and the ACK warns); one ERR per missing field."""
    missing = [
        Hl7Error(f"Required for a new patient: the {label} ({FIELD_LOCATIONS[name].label}).",
                 location=FIELD_LOCATIONS[name], code=REQUIRED_FIELD_MISSING)
        for name, label in (("family_name", "family name"), ("given_name", "given name"),
                            ("birth_date", "birth date"))
        if getattr(values, name) in (None, "")
    ]
    if missing:
        first, *rest = missing
        raise Hl7Error(first.message, location=first.location, code=first.code, also=tuple(rest))


def patient_upsert_from_pid(*, tenant, actor, pid) -> ehr.PatientImport:
    """Create or update the patient PID describes."""
    values = pid_values(pid)
    if ehr.ehr_patient_find(tenant=tenant, mrn=values.mrn) is None:
        _require_for_new(values)
    return ehr.ehr_patient_upsert(
        tenant=tenant, actor=actor, source="hl7", mrn=values.mrn, given_name=values.given_name,
        family_name=values.family_name, birth_date=values.birth_date, phone=values.phone, email=values.email,
        preferred_language=values.preferred_language, external_ids=values.external_ids or None)


def phone_warnings(result: ehr.PatientImport) -> tuple[Hl7Error, ...]:
    """The ACK's warning when the import left the patient untextable."""
    return (er7.warning(result.warning, FIELD_LOCATIONS["phone"]),) if result.warning else ()


def patient_for_pid(*, tenant, actor, pid, create: bool) -> ehr.PatientImport:
    """The patient PID names: found by MRN; created from PID when ``create`` and unknown."""
    values = pid_values(pid)
    patient = ehr.ehr_patient_find(tenant=tenant, mrn=values.mrn)
    if patient is not None:
        return ehr.PatientImport(patient, False)
    if not create:
        raise Hl7Error("No patient with this identifier: send the patient (ADT^A04/A28) first.",
                       location=MRN, code=UNKNOWN_KEY)
    return patient_upsert_from_pid(tenant=tenant, actor=actor, pid=pid)
