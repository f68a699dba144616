"""FHIR R4 resources → keyword arguments of the shared EHR services (integrations/ehr.py).

Pure functions: validation with the ``fhir.resources.R4B`` models, then mapping. Nothing here
touches the database; references to patients are returned for ``services`` to resolve.
If a mapping changes, update the expressions in ``FIELD_EXPRESSIONS`` (they name the FHIR
element an EHR service's field error points at).
"""

from __future__ import annotations

import datetime

from django.conf import settings
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from integrations.fhir.outcome import FhirError, issue, reject

SUPPORTED = ("Patient", "Appointment", "DiagnosticReport", "Consent")
MR_CODE = "MR"  # http://terminology.hl7.org/CodeSystem/v2-0203 "Medical record number"

# https://hl7.org/fhir/R4/valueset-appointmentstatus.html → patients.AppointmentStatus
APPOINTMENT_STATUS = {
    "proposed": "booked", "pending": "booked", "booked": "booked", "waitlist": "booked",
    "arrived": "completed", "fulfilled": "completed", "checked-in": "confirmed",
    "cancelled": "cancelled", "entered-in-error": "cancelled", "noshow": "no_show",
}
# Results a patient may be told about; preliminary ones wait for the final report.
RELEASABLE_REPORT_STATUS = frozenset({"final", "amended", "corrected", "appended"})
CONSENT_POLICY_ACTIONS = {"OPTIN": "grant", "OPTINR": "grant", "OPTOUT": "revoke", "OPTOUTE": "revoke"}
DISPLAY_MAX = 200

FIELD_EXPRESSIONS = {
    "Patient": {"mrn": "Patient.identifier", "given_name": "Patient.name.given", "family_name": "Patient.name.family",
                "birth_date": "Patient.birthDate", "phone": "Patient.telecom", "email": "Patient.telecom",
                "preferred_language": "Patient.communication", "external_ids": "Patient.identifier"},
    "Appointment": {"external_id": "Appointment.identifier", "patient": "Appointment.participant.actor",
                    "starts_at": "Appointment.start", "ends_at": "Appointment.end", "status": "Appointment.status",
                    "provider_name": "Appointment.participant", "location_name": "Appointment.participant",
                    "appointment_type": "Appointment.appointmentType", "reason": "Appointment.description"},
    "DiagnosticReport": {"external_id": "DiagnosticReport.identifier", "patient": "DiagnosticReport.subject",
                         "body": "DiagnosticReport.conclusion"},
    "Consent": {"patient": "Consent.patient", "occurred_at": "Consent.dateTime", "action": "Consent.provision.type",
                "disclosure_version": "Consent.policyRule", "method": "Consent", "evidence": "Consent"},
}


def _loc_expression(resource_type: str, loc: tuple) -> str:
    text = resource_type
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def validate(data, *, expected: str | None = None, where: str = ""):
    """The R4B model of ``data``, or FhirError naming each invalid element."""
    if not isinstance(data, dict):
        raise reject(400, "structure", "Expected a FHIR resource (a JSON object).", where or None)
    resource_type = data.get("resourceType")
    if resource_type not in SUPPORTED or (expected and resource_type != expected):
        wanted = expected or ", ".join(SUPPORTED)
        raise reject(400 if expected else 422, "not-supported",
                     f"Unsupported resourceType; expected {wanted}.", f"{where}resourceType" if where else "resourceType")
    try:
        return get_fhir_model_class(resource_type).model_validate(data)
    except ValidationError as exc:
        issues = [issue("structure", f"Invalid element: {err.get('type', 'invalid')}.",
                        _loc_expression(resource_type, tuple(err.get("loc", ()))))
                  for err in exc.errors()[:20]]
        raise FhirError(400, issues) from None
    except (KeyError, ValueError, TypeError):  # e.g. an unknown resource type inside ``contained``
        raise reject(400, "structure", "The resource could not be read as FHIR R4.", resource_type) from None


# --- small readers --------------------------------------------------------------------------------


def _codes(concept) -> list[str]:
    return [c.code for c in (getattr(concept, "coding", None) or []) if c.code]


def _concept_text(concept) -> str:
    if concept is None:
        return ""
    if concept.text:
        return concept.text
    for coding in concept.coding or []:
        if coding.display or coding.code:
            return coding.display or coding.code
    return ""


def _identifier_key(identifier) -> str:
    """The external id: ``system|value`` when the system is known (ids are only unique per system)."""
    value = (identifier.value or "").strip()
    return f"{identifier.system}|{value}" if identifier.system and value else value


def _first_identifier_key(resource, resource_type: str) -> str:
    for identifier in resource.identifier or []:
        if (identifier.value or "").strip():
            return _identifier_key(identifier)
    # The official examples carry only a logical id; it is stable on the sending server.
    if resource.id:
        return f"{resource_type}/{resource.id}"
    raise reject(422, "required", f"The {resource_type} has no identifier (and no id).", f"{resource_type}.identifier")


def mrn_identifier(identifiers) -> str:
    """The configured MRN system's identifier; else the first typed MR; else the first with a value."""
    usable = [i for i in identifiers or [] if (i.value or "").strip()]
    system = getattr(settings, "FHIR_MRN_SYSTEM", "")
    for test in (lambda i: system and i.system == system, lambda i: MR_CODE in _codes(i.type), lambda i: True):
        for identifier in usable:
            if test(identifier):
                return identifier.value.strip()
    return ""


def _to_date_text(value) -> str | None:
    return value.isoformat() if isinstance(value, datetime.date) else (str(value) if value else None)


# --- resources ------------------------------------------------------------------------------------


def _official_name(names):
    names = names or []
    return next((n for n in names if n.use == "official"), None) or next(iter(names), None)


def _mobile(telecom) -> str | None:
    points = sorted((t for t in telecom or [] if t.value and t.use != "old"), key=lambda t: t.rank or 1000)
    for test in (lambda t: t.system in ("phone", "sms") and t.use == "mobile", lambda t: t.system == "sms"):
        for point in points:
            if test(point):
                return point.value.strip()
    return None


def _language(communication) -> str | None:
    for item in sorted(communication or [], key=lambda c: not c.preferred):
        for code in _codes(item.language):
            if code.lower()[:2] in ("en", "es"):
                return code.lower()[:2]
    return None


def patient_values(resource) -> dict:
    """``ehr_patient_upsert`` keyword arguments (without tenant/actor/source)."""
    name = _official_name(resource.name)
    email = next((t.value for t in resource.telecom or [] if t.system == "email" and t.value), None)
    external_ids = {i.system: i.value for i in resource.identifier or [] if i.system and i.value}
    return {"mrn": mrn_identifier(resource.identifier),
            "given_name": " ".join(name.given or []) if name else "",
            "family_name": (name.family or "") if name else "",
            "birth_date": _to_date_text(resource.birthDate) or "",
            "phone": _mobile(resource.telecom), "email": email,
            "preferred_language": _language(resource.communication), "external_ids": external_ids or None}


def _participant_display(resource, prefix: str) -> str:
    for participant in resource.participant or []:
        actor = participant.actor
        if actor is not None and (actor.reference or "").startswith(prefix) and actor.display:
            return actor.display[:DISPLAY_MAX]
    return ""


def appointment_patient_ref(resource):
    """(reference, expression) of the Patient participant, or FhirError when there is none."""
    for index, participant in enumerate(resource.participant or []):
        actor = participant.actor
        if actor is None:
            continue
        if (actor.reference or "").split("/")[-2:-1] == ["Patient"] or actor.type == "Patient" \
                or (actor.reference or "").startswith("urn:uuid:"):
            return actor, f"Appointment.participant[{index}].actor"
    raise reject(422, "required", "The appointment has no Patient participant.", "Appointment.participant")


def appointment_values(resource) -> dict:
    if resource.start is None or resource.end is None:
        missing = "Appointment.start" if resource.start is None else "Appointment.end"
        raise reject(422, "required", "The appointment needs a start and an end time.", missing)
    return {"external_id": _first_identifier_key(resource, "Appointment"), "starts_at": resource.start,
            "ends_at": resource.end, "status": APPOINTMENT_STATUS.get(resource.status, "booked"),
            "provider_name": _participant_display(resource, "Practitioner/"),
            "location_name": _participant_display(resource, "Location/"),
            "appointment_type": _concept_text(resource.appointmentType)[:100],
            "reason": resource.description or None}


def report_values(resource) -> dict:
    if resource.status not in RELEASABLE_REPORT_STATUS:
        raise reject(422, "business-rule", "Only final (or amended/corrected) reports are sent to patients.",
                     "DiagnosticReport.status")
    if resource.subject is None:
        raise reject(422, "required", "The report has no subject.", "DiagnosticReport.subject")
    title = _concept_text(resource.code) or "test"
    body = f"A new result is ready: {title}."
    if resource.conclusion:
        body += f"\n\n{resource.conclusion}"
    return {"external_id": _first_identifier_key(resource, "DiagnosticReport"), "body": body}


def consent_values(resource, *, zone) -> dict:
    """``consent_record`` arguments: action from provision.type (else policyRule OPTIN/OPTOUT)."""
    if resource.status != "active":
        raise reject(422, "business-rule", "Only active consents are imported.", "Consent.status")
    kind = resource.provision.type if resource.provision is not None else None
    action = {"permit": "grant", "deny": "revoke"}.get(kind or "")
    if action is None:
        action = next((CONSENT_POLICY_ACTIONS[c] for c in _codes(resource.policyRule) if c in CONSENT_POLICY_ACTIONS),
                      None)
    if action is None:
        raise reject(422, "required", "Say whether the consent permits or denies (provision.type).",
                     "Consent.provision.type")
    when = resource.dateTime
    if when is None:
        raise reject(422, "required", "The consent needs its dateTime.", "Consent.dateTime")
    if not isinstance(when, datetime.datetime):
        if not isinstance(when, datetime.date):
            raise reject(422, "value", "Give the consent date as a full date or date-time.", "Consent.dateTime")
        when = datetime.datetime.combine(when, datetime.time.min, tzinfo=zone)
    return {"action": action, "occurred_at": when}
