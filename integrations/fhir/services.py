"""FHIR R4 writes: a Bundle (transaction, batch or collection) or one resource, upserted
through the shared EHR services (integrations/ehr.py) and the consent ledger.

Entries are processed in dependency order (Patient, Consent, Appointment, DiagnosticReport),
each in its own savepoint: in a batch or collection a rejected entry leaves the others
written; a transaction is one ``transaction.atomic`` and any rejection rolls everything back.
Must be called inside ``tenant_scope(tenant)``. Writes are audited by the services called.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from django.core.exceptions import ValidationError
from django.db import transaction

from accounts.errors import ApplicationError, validation_fields
from consent.models import ConsentEvent, ConsentMethod
from consent.services import consent_record
from integrations import ehr
from integrations.fhir import mapping
from integrations.fhir.outcome import FhirError, issue, reject
from patients.models import Patient
from patients.services import clinic_zone

SOURCE = "fhir"
BUNDLE_TYPES = ("transaction", "batch", "collection")
CONSENT_DISCLOSURE_VERSION = "ehr"
MAX_ENTRIES = 1000
_ORDER = {"Patient": 0, "Consent": 1, "Appointment": 2, "DiagnosticReport": 3}
_STATUS_TEXT = {200: "200 OK", 201: "201 Created"}


@dataclass
class EntryResult:
    status: int
    location: str = ""
    issues: list[dict] = field(default_factory=list)

    def response(self) -> dict:
        text = _STATUS_TEXT.get(self.status, str(self.status))
        body: dict = {"status": text}
        if self.location:
            body["location"] = self.location
        if self.issues:
            body["outcome"] = {"resourceType": "OperationOutcome", "issue": self.issues}
        return body


class _Abort(Exception):
    """Rolls a failed transaction Bundle back out of its ``transaction.atomic``."""


@dataclass
class _Context:
    tenant: object
    actor: object
    refs: dict = field(default_factory=dict)  # bundle reference → Patient, or None when rejected


# --- errors ---------------------------------------------------------------------------------------


def _service_error(resource_type: str, exc: ApplicationError | ValidationError) -> FhirError:
    fields = exc.fields if isinstance(exc, ApplicationError) else validation_fields(exc)
    names = mapping.FIELD_EXPRESSIONS.get(resource_type, {})
    issues = [issue("invalid" if name != "patient" else "not-found", " ".join(str(m) for m in messages),
                    names.get(name, resource_type))
              for name, messages in (fields or {}).items()]
    status = getattr(exc, "status_code", 422)
    return FhirError(status if status in (404, 409) else 422,
                     issues or [issue("processing", getattr(exc, "message", "Rejected."), resource_type)])


# --- patients and references ----------------------------------------------------------------------


def _own_patient(reference: str) -> Patient | None:
    """``Patient/<uuid>`` of this clinic's own patient (other clinics' ids resolve to nothing)."""
    head, _, tail = reference.rpartition("/")
    if not head.endswith("Patient"):
        return None
    try:
        return Patient.objects.filter(pk=uuid.UUID(tail)).first()
    except ValueError:
        return None


def _resolve_patient(ctx: _Context, ref, expression: str) -> Patient:
    literal = (ref.reference or "").strip() if ref is not None else ""
    tail = "/".join(literal.split("/")[-2:])
    for key in (literal, tail):
        if key and key in ctx.refs:
            if ctx.refs[key] is None:
                raise reject(422, "not-found", f"The referenced Patient entry ({key}) was rejected.", expression)
            return ctx.refs[key]
    patient = _own_patient(literal) if literal else None
    if patient is None and ref is not None and ref.identifier is not None:
        patient = ehr.ehr_patient_find(tenant=ctx.tenant, mrn=ref.identifier.value)
    if patient is None:
        named = f" ({literal})" if literal and not literal.startswith("urn:") else ""
        raise reject(422, "not-found", f"Unknown patient{named}: send the Patient in the bundle or use an "
                     "identifier reference with the MRN.", expression)
    return patient


def _patient_keys(entry: dict, logical_id) -> list[str]:
    keys = [entry.get("fullUrl") or ""]
    if logical_id and isinstance(logical_id, str):
        keys.append(f"Patient/{logical_id}")
    return [k for k in keys if k]


# --- one resource of each type --------------------------------------------------------------------


_Handled = tuple[EntryResult, Patient | None]


def _patient(ctx: _Context, model) -> _Handled:
    values = mapping.patient_values(model)
    result = ehr.ehr_patient_upsert(tenant=ctx.tenant, actor=ctx.actor, source=SOURCE, **values)
    issues = [issue("value", result.warning, "Patient.telecom", severity="warning")] if result.warning else []
    return EntryResult(201 if result.created else 200, f"Patient/{result.patient.pk}", issues), result.patient


def _appointment(ctx: _Context, model) -> _Handled:
    ref, expression = mapping.appointment_patient_ref(model)
    values = mapping.appointment_values(model)
    patient = _resolve_patient(ctx, ref, expression)
    appointment, created = ehr.ehr_appointment_upsert(tenant=ctx.tenant, actor=ctx.actor, source=SOURCE,
                                                      patient=patient, **values)
    return EntryResult(201 if created else 200, f"Appointment/{appointment.pk}"), None


def _report(ctx: _Context, model) -> _Handled:
    values = mapping.report_values(model)
    patient = _resolve_patient(ctx, model.subject, "DiagnosticReport.subject")
    message, outcome = ehr.ehr_result_notice(tenant=ctx.tenant, actor=ctx.actor, source=SOURCE, patient=patient,
                                             **values)
    if message is None:
        # Nothing written: the patient cannot be texted (a reason code, never PHI).
        raise reject(422, "business-rule", f"No result notice: the patient cannot be texted ({outcome}).",
                     "DiagnosticReport.subject")
    return EntryResult(200 if outcome == "duplicate" else 201, f"Communication/{message.pk}"), None


def _consent(ctx: _Context, model) -> _Handled:
    values = mapping.consent_values(model, zone=clinic_zone(ctx.tenant))
    patient = _resolve_patient(ctx, model.patient, "Consent.patient")
    existing = ConsentEvent.objects.filter(patient=patient, method=ConsentMethod.EHR_IMPORT, action=values["action"],
                                           occurred_at=values["occurred_at"]).first()
    if existing is not None:
        return EntryResult(200, f"Consent/{existing.pk}"), None
    event = consent_record(tenant=ctx.tenant, actor=ctx.actor, patient=patient, method=ConsentMethod.EHR_IMPORT,
                           disclosure_version=CONSENT_DISCLOSURE_VERSION, **values)
    return EntryResult(201, f"Consent/{event.pk}"), None


_HANDLERS = {"Patient": _patient, "Appointment": _appointment, "DiagnosticReport": _report, "Consent": _consent}


def _apply(ctx: _Context, resource_type: str, model) -> _Handled:
    """One resource in its own savepoint; FhirError when rejected (that savepoint rolled back)."""
    try:
        with transaction.atomic():
            return _HANDLERS[resource_type](ctx, model)
    except (ApplicationError, ValidationError) as exc:
        raise _service_error(resource_type, exc) from None


# --- entry points ---------------------------------------------------------------------------------


def fhir_resource_upsert(*, tenant, actor, data, resource_type: str) -> EntryResult:
    """One resource (POST/PUT /<type>): created 201 / updated 200, or FhirError."""
    model = mapping.validate(data, expected=resource_type)
    result, _ = _apply(_Context(tenant, actor), resource_type, model)
    return result


def _bundle_entries(bundle) -> tuple[str, list]:
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise reject(400, "invalid", "Expected a Bundle resource.", "resourceType")
    kind = bundle.get("type")
    if kind not in BUNDLE_TYPES:
        raise reject(400, "not-supported", f"Bundle.type must be one of: {', '.join(BUNDLE_TYPES)}.", "Bundle.type")
    entries = bundle.get("entry") or []
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise reject(400, "structure", "Bundle.entry must be a list of objects.", "Bundle.entry")
    if len(entries) > MAX_ENTRIES:
        raise reject(413, "too-costly", f"At most {MAX_ENTRIES} entries per Bundle.", "Bundle.entry")
    return kind, entries


def _prefixed(issues: list[dict], index: int) -> list[dict]:
    return [{**item, "diagnostics": f"entry[{index}]: {item['diagnostics']}"} for item in issues]


def _process(ctx: _Context, entries: list) -> list[EntryResult]:
    results: list[EntryResult | None] = [None] * len(entries)
    parsed = []
    for index, entry in enumerate(entries):
        try:
            parsed.append((index, mapping.validate(entry.get("resource"), where=f"Bundle.entry[{index}].resource.")))
        except FhirError as exc:
            results[index] = EntryResult(exc.status, issues=exc.issues)
            if isinstance(entry.get("resource"), dict) and entry["resource"].get("resourceType") == "Patient":
                ctx.refs.update(dict.fromkeys(_patient_keys(entry, entry["resource"].get("id")), None))
    parsed.sort(key=lambda item: _ORDER[item[1].get_resource_type()])
    for index, model in parsed:
        resource_type = model.get_resource_type()
        try:
            results[index], patient = _apply(ctx, resource_type, model)
        except FhirError as exc:
            results[index], patient = EntryResult(exc.status, issues=exc.issues), None
        if resource_type == "Patient":
            ctx.refs.update(dict.fromkeys(_patient_keys(entries[index], model.id), patient))
    return results


def fhir_bundle_import(*, tenant, actor, bundle) -> tuple[str, list[EntryResult]]:
    """Process a Bundle; returns (response Bundle type, one result per entry, in entry order).

    A transaction with any rejected entry raises FhirError(400) listing every problem, and
    nothing is written.
    """
    kind, entries = _bundle_entries(bundle)
    ctx = _Context(tenant, actor)
    if kind != "transaction":
        return "batch-response", _process(ctx, entries)
    problems: list[dict] = []
    try:
        with transaction.atomic():
            results = _process(ctx, entries)
            for index, result in enumerate(results):
                if result.status >= 400:
                    problems += _prefixed(result.issues, index)
            if problems:
                raise _Abort()
    except _Abort:
        raise FhirError(400, problems) from None
    return "transaction-response", results
