"""Writes from EHRs (FHIR R4 and HL7 v2 share them): upsert patients and appointments by their
identifiers, and turn results into result notices.

Re-sending the same data is harmless: a patient is found by MRN (a blind index), an appointment
by (source, external id), a result by its external id (the message's idempotency key). The EHR
is the source of truth for an appointment's status, so an import may make any status change
the staff screens would refuse (a cancelled visit re-booked in the EHR is booked again).

Every function is atomic, audited (through the patients and messaging services it calls) and
raises ApplicationError whose ``fields`` name what is wrong. Call inside ``tenant_scope``.
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass

from django.db import transaction

from accounts.errors import ApplicationError
from audit.events import AuditEventType
from audit.services import audit_record
from patients import services as patient_services
from patients import validation
from patients.models import Appointment, AppointmentStatus, Patient
from phi.blind import blind_index

SOURCES = ("fhir", "hl7")
_PATIENT_FIELDS = ("given_name", "family_name", "birth_date", "phone", "email", "preferred_language",
                   "external_ids")


def ehr_import_rejected(*, tenant, actor, source: str, status: str, count: int = 1, reason: str = "") -> None:
    """Audit an import the clinic's EHR sent that was refused (a 4xx, an OperationOutcome, an
    AE/AR ACK): who tried, how, how many items. Written on its own, after the refused work rolled
    back. Never the content: it is PHI and may be malformed."""
    details = {"source": source, "status": str(status)[:20], "count": int(count)}
    if reason:
        details["reason"] = str(reason)[:60]
    audit_record(tenant=tenant, actor=actor, event_type=AuditEventType.EHR_IMPORT_REJECTED, details=details)


def _check_source(source: str) -> None:
    if source not in SOURCES:
        raise ValueError(f"unknown EHR source {source!r}")


def ehr_patient_find(*, tenant, mrn: str | None = None) -> Patient | None:
    """The clinic's patient with this MRN (exact, through the blind index), or None."""
    mrn = (mrn or "").strip()
    if not mrn:
        return None
    return Patient.objects.filter(mrn_index=blind_index(tenant, "mrn", mrn)).first()


# Why an imported patient will not be texted (no PHI: these go into FHIR outcomes and ACKs).
NO_MOBILE = "No mobile number: the patient was saved and will not be texted until one is added."
NOT_TEXTABLE_NEW = ("The phone number cannot receive text messages (a landline, or not a valid number with its "
                    "country code): the patient was saved without it and will not be texted.")
NOT_TEXTABLE_KEPT = ("The phone number cannot receive text messages (a landline, or not a valid number with its "
                     "country code): the number on file was kept.")


@dataclass(frozen=True)
class PatientImport:
    patient: Patient
    created: bool
    warning: str = ""  # why the patient will not be texted, when the import left them without a number


def _textable(phone: str | None) -> str | None:
    """The number as E.164, or None when it cannot receive SMS."""
    try:
        return validation.phone_e164(phone)
    except validation.FieldError:
        return None


@transaction.atomic
def ehr_patient_upsert(*, tenant, actor, source: str, mrn: str, given_name: str, family_name: str,
                       birth_date: datetime.date | str, phone: str | None = None, email: str | None = None,
                       preferred_language: str | None = None,
                       external_ids: dict | None = None) -> PatientImport:
    """Create the patient, or update the one with this MRN.

    ``None`` values leave the stored value alone on update (an ADT^A08 without a phone must not
    erase the number). The EHR registers everyone, so a patient without a number that can receive
    SMS is imported anyway, without one (never texted), and the result carries a warning saying so;
    an untextable number sent for a known patient keeps the number on file.
    """
    _check_source(source)
    if not (mrn or "").strip():
        raise ApplicationError("The patient has no medical record number.",
                               fields={"mrn": ["Required: the patient's MRN identifier."]})
    existing = ehr_patient_find(tenant=tenant, mrn=mrn)
    warning = ""
    if phone is not None and str(phone).strip():
        cleaned = _textable(phone)
        if cleaned is None:
            warning = NOT_TEXTABLE_NEW if existing is None else NOT_TEXTABLE_KEPT
        phone = cleaned if cleaned is not None else ("" if existing is None else None)
    elif existing is None:
        phone, warning = "", NO_MOBILE
    else:
        phone = None
    values = {"given_name": given_name, "family_name": family_name, "birth_date": birth_date, "phone": phone,
              "email": email, "preferred_language": preferred_language, "external_ids": external_ids}
    if existing is None:
        fields = {k: v for k, v in values.items() if v is not None}
        patient = patient_services.patient_create(tenant=tenant, actor=actor, mrn=mrn.strip(), **fields)
        return PatientImport(patient, True, warning)
    changes = {k: v for k, v in values.items() if v is not None}
    if "external_ids" in changes:
        changes["external_ids"] = {**(existing.external_ids or {}), **changes["external_ids"]}
    patient = patient_services.patient_update(tenant=tenant, actor=actor, patient=existing, **changes)
    return PatientImport(patient, False, warning)


def _set_status_as_ehr(*, tenant, actor, appointment: Appointment, status: str) -> Appointment:
    """The EHR's status, whatever the staff transition rules say (it is the source of truth)."""
    if status == appointment.status:
        return appointment
    if status not in AppointmentStatus.values:
        raise ApplicationError("Unknown appointment status.", fields={"status": ["Not an appointment status."]})
    allowed = patient_services.STATUS_TRANSITIONS.get(appointment.status, frozenset())
    if status in allowed:
        return patient_services.appointment_set_status(tenant=tenant, actor=actor, appointment=appointment,
                                                       status=status)
    appointment = Appointment.objects.select_for_update().get(pk=appointment.pk)
    appointment.status = status
    appointment.save(update_fields=["status", "updated_at"])
    audit_record(tenant=tenant, actor=actor, event_type=AuditEventType.APPOINTMENT_CHANGED, target=appointment,
                 patient_id=appointment.patient_id, details={"fields": ["status"], "status": status})
    _reschedule_reminders(tenant, appointment)
    return appointment


def _reschedule_reminders(tenant, appointment: Appointment) -> None:
    try:
        from reminders.services import reminders_schedule_for
    except ImportError:  # pragma: no cover - the reminders app is part of the product
        return
    reminders_schedule_for(tenant=tenant, appointment=appointment)


@transaction.atomic
def ehr_appointment_upsert(*, tenant, actor, source: str, external_id: str, patient: Patient, starts_at, ends_at,
                           status: str | None = None, provider_name: str = "", location_name: str = "",
                           appointment_type: str = "", reason: str | None = None) -> tuple[Appointment, bool]:
    """Create the appointment with this (source, external id), or update it; (appointment, created).

    An appointment never moves to another patient: a different patient for a known id is refused.
    """
    _check_source(source)
    external_id = (external_id or "").strip()
    if not external_id:
        raise ApplicationError("The appointment has no identifier.",
                               fields={"external_id": ["Required: the EHR's appointment id."]})
    if patient.tenant_id != tenant.pk:
        raise ApplicationError("Unknown patient.", fields={"patient": ["No such patient in this clinic."]})
    existing = Appointment.objects.filter(
        source=source, external_id_index=patient_services.descriptor_index(tenant, "external_id", external_id)).first()
    if existing is None:
        appointment = patient_services.appointment_create(
            tenant=tenant, actor=actor, patient=patient, starts_at=starts_at, ends_at=ends_at,
            provider_name=provider_name, location_name=location_name, appointment_type=appointment_type,
            status=status or AppointmentStatus.BOOKED, source=source, external_id=external_id, reason=reason)
        return appointment, True
    if existing.patient_id != patient.pk:
        raise ApplicationError("This appointment id belongs to another patient.",
                               fields={"patient": ["The appointment id is already used for another patient."]})
    changes = {"starts_at": starts_at, "ends_at": ends_at, "provider_name": provider_name,
               "location_name": location_name, "appointment_type": appointment_type}
    if reason is not None:
        changes["reason"] = reason
    appointment = existing
    closed = existing.status in patient_services.CLOSED_STATUSES
    if status and status not in patient_services.CLOSED_STATUSES and closed:
        appointment = _set_status_as_ehr(tenant=tenant, actor=actor, appointment=appointment, status=status)
    if appointment.status not in patient_services.CLOSED_STATUSES:
        appointment = patient_services.appointment_update(tenant=tenant, actor=actor, appointment=appointment,
                                                          **changes)
    if status:
        appointment = _set_status_as_ehr(tenant=tenant, actor=actor, appointment=appointment, status=status)
    return appointment, False


def _result_key(source: str, external_id: str) -> str:
    digest = hashlib.sha256(external_id.encode()).hexdigest()[:40]
    return f"{source}:result:{digest}"


@transaction.atomic
def ehr_result_notice(*, tenant, actor, source: str, patient: Patient, external_id: str, body: str):
    """A result notice for ``patient`` (held per the clinic's result release setting; the
    patient reads it only after the texted code). Returns (message, outcome): outcome is
    "created", "duplicate" (this result was imported before: nothing new), or a reason code
    why the patient cannot be texted ("revoked", "never_granted", "no_baa" …) with message None
    and nothing written — the EHR keeps the result; staff see the patient's consent state.
    """
    from consent.selectors import can_sms
    from messaging.models import Message, MessageKind
    from messaging.services import message_send

    _check_source(source)
    external_id = (external_id or "").strip()
    if not external_id:
        raise ApplicationError("The result has no identifier.",
                               fields={"external_id": ["Required: the EHR's report id."]})
    key = _result_key(source, external_id)
    existing = Message.objects.filter(idempotency_key=key).first()
    if existing is not None:
        return existing, "duplicate"
    allowed, reason = can_sms(tenant, patient, kind="result_notice")
    if not allowed:
        return None, reason
    message = message_send(tenant=tenant, actor=actor, patient=patient, body=body, kind=MessageKind.RESULT_NOTICE,
                           idempotency_key=key, source="api")
    return message, "created"
