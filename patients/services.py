"""Writes for patients and appointments (R2): keyword-only, atomic, validated, audited in the
same transaction. Every function must be called inside ``tenant_scope(tenant)``.

Validation errors are one ``ApplicationError`` whose ``fields`` name each bad field (the
names are the keyword arguments'); messages never repeat the submitted value.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone as tz

from accounts.errors import ApplicationError, NotFound, validation_fields
from accounts.models import Tenant, User
from audit.events import AuditEventType
from audit.services import audit_record
from patients import validation as v
from patients.models import Appointment, AppointmentSource, AppointmentStatus, Language, Patient
from phi.blind import blind_index
from phi.fields import EncryptedField

INVALID = "Please correct the highlighted fields."
DUPLICATE_MRN = "Another patient of this clinic has this medical record number."

# Which status may follow which. Cancelled and completed are final (book a new appointment);
# a no-show can still be corrected to completed when the patient turns up late.
STATUS_TRANSITIONS: dict[str, frozenset[str]] = {
    AppointmentStatus.BOOKED: frozenset({
        AppointmentStatus.CONFIRMED, AppointmentStatus.CANCELLED, AppointmentStatus.NO_SHOW,
        AppointmentStatus.COMPLETED, AppointmentStatus.RESCHEDULE_REQUESTED}),
    AppointmentStatus.CONFIRMED: frozenset({
        AppointmentStatus.CANCELLED, AppointmentStatus.NO_SHOW, AppointmentStatus.COMPLETED,
        AppointmentStatus.RESCHEDULE_REQUESTED}),
    AppointmentStatus.RESCHEDULE_REQUESTED: frozenset({
        AppointmentStatus.BOOKED, AppointmentStatus.CONFIRMED, AppointmentStatus.CANCELLED}),
    AppointmentStatus.NO_SHOW: frozenset({AppointmentStatus.COMPLETED}),
    AppointmentStatus.COMPLETED: frozenset(),
    AppointmentStatus.CANCELLED: frozenset(),
}
CLOSED_STATUSES = frozenset({AppointmentStatus.CANCELLED, AppointmentStatus.COMPLETED, AppointmentStatus.NO_SHOW})


def clinic_zone(tenant: Tenant) -> ZoneInfo:
    return ZoneInfo(tenant.timezone)


def clinic_today(tenant: Tenant) -> datetime.date:
    return tz.localdate(timezone=clinic_zone(tenant))


def _clean(values: dict[str, Any], validators: dict[str, Callable]) -> dict[str, Any]:
    unknown = sorted(set(values) - set(validators))
    errors: dict[str, list[str]] = {name: ["Not a field that can be set here."] for name in unknown}
    cleaned = {}
    for name, value in values.items():
        if name in unknown:
            continue
        try:
            cleaned[name] = validators[name](value)
        except v.FieldError as exc:
            errors[name] = [str(exc)]
    if errors:
        raise ApplicationError(INVALID, fields=errors)
    return cleaned


def _encrypted_names(model) -> list[str]:
    return [f.name for f in model._meta.concrete_fields if isinstance(f, EncryptedField)]


def _full_clean(obj) -> None:
    """Model-level checks (choices, lengths, constraints). Encrypted values were checked by
    ``patients.validation``; Django's BinaryField checks don't apply to them."""
    try:
        obj.full_clean(exclude=[*_encrypted_names(type(obj)), "tenant", "patient"])
    except ValidationError as exc:
        raise ApplicationError(INVALID, fields=validation_fields(exc)) from None


def _insert_or_update(obj, *, unique_errors: dict[str, dict], update_fields=None) -> None:
    """Save in a savepoint so a concurrent duplicate is a field error, not a 500."""
    try:
        with transaction.atomic():
            if update_fields is None:
                obj.save(force_insert=True)
            else:
                obj.save(update_fields=update_fields)
    except IntegrityError as exc:
        diag = getattr(exc.__cause__, "diag", None)  # psycopg names the violated constraint
        fields = unique_errors.get(getattr(diag, "constraint_name", None) or "")
        if fields is None:
            raise
        raise ApplicationError(INVALID, fields=fields) from None


# --- patients -----------------------------------------------------------------------------------


def _patient_validators(tenant: Tenant) -> dict[str, Callable]:
    return {
        "mrn": v.mrn,
        "given_name": v.person_name,
        "family_name": v.person_name,
        "birth_date": functools.partial(v.birth_date, today=clinic_today(tenant)),
        "phone": v.phone_optional,
        "email": v.email,
        "preferred_language": v.language,
        "timezone": v.timezone_name,
        "external_ids": v.external_ids,
    }


def _set_indexes(tenant: Tenant, patient: Patient) -> list[str]:
    """Recompute the three blind indexes from the plaintext; returns the ones that changed."""
    wanted = {
        "mrn_index": blind_index(tenant, "mrn", patient.mrn),
        "phone_index": blind_index(tenant, "phone", patient.phone) if patient.phone else "",
        "name_dob_index": blind_index(tenant, "name_dob", (patient.family_name, patient.birth_date)),
    }
    changed = [name for name, value in wanted.items() if getattr(patient, name) != value]
    for name in changed:
        setattr(patient, name, wanted[name])
    return changed


def _check_mrn_free(patient: Patient) -> None:
    if Patient.objects.filter(mrn_index=patient.mrn_index).exclude(pk=patient.pk).exists():
        raise ApplicationError(INVALID, fields={"mrn": [DUPLICATE_MRN]}, code="duplicate")


_PATIENT_UNIQUE = {"patient_unique_mrn": {"mrn": [DUPLICATE_MRN]}}


@transaction.atomic
def patient_create(*, tenant: Tenant, actor: User | None, mrn: str, given_name: str, family_name: str,
                   birth_date: datetime.date | str, phone: str = "", email: str | None = None,
                   preferred_language: str = Language.ENGLISH, timezone: str = "",
                   external_ids: dict | None = None) -> Patient:
    values = _clean({"mrn": mrn, "given_name": given_name, "family_name": family_name, "birth_date": birth_date,
                     "phone": phone, "email": email, "preferred_language": preferred_language,
                     "timezone": timezone, "external_ids": external_ids}, _patient_validators(tenant))
    patient = Patient(tenant=tenant, **values)
    _set_indexes(tenant, patient)
    _check_mrn_free(patient)
    _full_clean(patient)
    _insert_or_update(patient, unique_errors=_PATIENT_UNIQUE)
    audit_record(tenant=tenant, actor=actor, event_type=AuditEventType.PATIENT_CREATED, target=patient,
                 patient_id=patient.pk, details={"fields": sorted(k for k, val in values.items() if val)})
    return patient


@transaction.atomic
def patient_update(*, tenant: Tenant, actor: User | None, patient: Patient, **changes) -> Patient:
    """Apply ``changes`` (keyword names as in ``patient_create``); returns the saved row.

    A new phone number sets ``phone_changed_at``: SMS to it waits until consent is captured
    for it (numbers get reassigned). If this changes, update ``consent/`` which reads it.
    No change at all writes nothing and no audit event.
    """
    values = _clean(changes, _patient_validators(tenant))
    patient = _patient_locked(patient)
    changed = sorted(name for name, value in values.items() if getattr(patient, name) != value)
    if not changed:
        return patient
    for name in changed:
        setattr(patient, name, values[name])
    update_fields = [*changed, *_set_indexes(tenant, patient), "updated_at"]
    if "phone" in changed:
        patient.phone_changed_at = tz.now()
        patient.phone_undeliverable_at, patient.phone_undeliverable_code = None, ""
        update_fields += ["phone_changed_at", "phone_undeliverable_at", "phone_undeliverable_code"]
    if "mrn" in changed:
        _check_mrn_free(patient)
    _full_clean(patient)
    _insert_or_update(patient, unique_errors=_PATIENT_UNIQUE, update_fields=update_fields)
    audit_record(tenant=tenant, actor=actor, event_type=AuditEventType.PATIENT_CHANGED, target=patient,
                 patient_id=patient.pk, details={"fields": changed})
    return patient


def _patient_locked(patient: Patient) -> Patient:
    locked = Patient.objects.select_for_update().filter(pk=patient.pk).first()
    if locked is None:  # another clinic's row never gets here through a selector; be sure
        raise NotFound()
    return locked


# --- appointments -------------------------------------------------------------------------------


_APPOINTMENT_VALIDATORS: dict[str, Callable] = {
    "starts_at": v.aware_datetime,
    "ends_at": v.aware_datetime,
    "provider_name": functools.partial(v.short_text, max_length=200),
    "location_name": functools.partial(v.short_text, max_length=200),
    "appointment_type": functools.partial(v.short_text, max_length=100),
    "external_id": functools.partial(v.short_text, max_length=200),
    "reason": v.long_text,
    "instructions": v.long_text,
    "status": v.appointment_status,
    "source": v.appointment_source,
}
APPOINTMENT_EDITABLE = frozenset(_APPOINTMENT_VALIDATORS) - {"status", "source"}
_APPOINTMENT_UNIQUE = {"appointment_unique_external_id": {"external_id": ["Another appointment has this external id."]},
                       "appointment_ends_after_start": {"ends_at": ["The end must be after the start."]}}


def _check_times(starts_at, ends_at) -> None:
    errors = v.appointment_times(starts_at, ends_at)
    if errors:
        raise ApplicationError(INVALID, fields=errors)


# Encrypted descriptors looked up by equality, their blind-index column and normaliser.
DESCRIPTOR_INDEXES = {"location_name": ("location_index", "text"), "appointment_type": ("type_index", "text"),
                      "external_id": ("external_id_index", "exact")}


def descriptor_index(tenant: Tenant, name: str, value: str) -> str:
    """The blind index of an appointment's ``location_name``, ``appointment_type`` or
    ``external_id`` (case-insensitive for the first two); "" for a blank value, which matches
    only blank ones. Filter on it instead of the encrypted column."""
    kind = DESCRIPTOR_INDEXES[name][1]
    return blind_index(tenant, kind, value) if (value or "").strip() else ""


def _set_descriptor_indexes(tenant: Tenant, appointment: Appointment) -> list[str]:
    """Recompute the blind indexes from the plaintext; returns the columns that changed."""
    changed = []
    for name, (column, _) in DESCRIPTOR_INDEXES.items():
        value = descriptor_index(tenant, name, getattr(appointment, name))
        if getattr(appointment, column) != value:
            setattr(appointment, column, value)
            changed.append(column)
    return changed


def _check_external_id_free(appointment: Appointment) -> None:
    if appointment.external_id_index and Appointment.objects.filter(
            source=appointment.source, external_id_index=appointment.external_id_index).exclude(
            pk=appointment.pk).exists():
        raise ApplicationError(INVALID, fields={"external_id": ["Another appointment has this external id."]},
                               code="duplicate")


def _audit_appointment(*, tenant, actor, appointment: Appointment, fields: list[str]) -> None:
    audit_record(tenant=tenant, actor=actor, event_type=AuditEventType.APPOINTMENT_CHANGED, target=appointment,
                 patient_id=appointment.patient_id, details={"fields": fields, "status": appointment.status})


@transaction.atomic
def appointment_create(*, tenant: Tenant, actor: User | None, patient: Patient, starts_at, ends_at,
                       provider_name: str = "", location_name: str = "", appointment_type: str = "",
                       status: str = AppointmentStatus.BOOKED, source: str = AppointmentSource.MANUAL,
                       external_id: str = "", reason: str | None = None,
                       instructions: str | None = None) -> Appointment:
    if patient.tenant_id != tenant.pk:
        raise NotFound()
    values = _clean({"starts_at": starts_at, "ends_at": ends_at, "provider_name": provider_name,
                     "location_name": location_name, "appointment_type": appointment_type, "status": status,
                     "source": source, "external_id": external_id, "reason": reason,
                     "instructions": instructions}, _APPOINTMENT_VALIDATORS)
    _check_times(values["starts_at"], values["ends_at"])
    appointment = Appointment(tenant=tenant, patient=patient, **values)
    _set_descriptor_indexes(tenant, appointment)
    _check_external_id_free(appointment)
    _full_clean(appointment)
    _insert_or_update(appointment, unique_errors=_APPOINTMENT_UNIQUE)
    _audit_appointment(tenant=tenant, actor=actor, appointment=appointment,
                       fields=sorted(k for k, val in values.items() if val))
    _schedule_reminders(tenant, appointment)
    return appointment


@transaction.atomic
def appointment_update(*, tenant: Tenant, actor: User | None, appointment: Appointment, **changes) -> Appointment:
    """Change times, names, type and notes (status has ``appointment_set_status``).

    Moving a confirmed or reschedule-requested appointment puts it back to booked: what the
    patient confirmed or asked about was the old time. Closed appointments (cancelled,
    completed, no-show) cannot be moved.
    """
    forbidden = sorted(set(changes) - APPOINTMENT_EDITABLE)
    if forbidden:
        raise ApplicationError(INVALID, fields={k: ["Not a field that can be set here."] for k in forbidden})
    values = _clean(changes, _APPOINTMENT_VALIDATORS)
    appointment = _appointment_locked(appointment)
    changed = sorted(name for name, value in values.items() if getattr(appointment, name) != value)
    if not changed:
        return appointment
    moved = {"starts_at", "ends_at"} & set(changed)
    if moved and appointment.status in CLOSED_STATUSES:
        raise ApplicationError("This appointment is closed; book a new one.", code="closed",
                               fields={name: ["A closed appointment cannot be moved."] for name in sorted(moved)})
    for name in changed:
        setattr(appointment, name, values[name])
    _check_times(appointment.starts_at, appointment.ends_at)
    if moved and appointment.status in (AppointmentStatus.CONFIRMED, AppointmentStatus.RESCHEDULE_REQUESTED):
        appointment.status = AppointmentStatus.BOOKED
        changed.append("status")
    indexes = _set_descriptor_indexes(tenant, appointment)
    if "external_id" in changed:
        _check_external_id_free(appointment)
    _full_clean(appointment)
    _insert_or_update(appointment, unique_errors=_APPOINTMENT_UNIQUE,
                      update_fields=[*changed, *indexes, "updated_at"])
    _audit_appointment(tenant=tenant, actor=actor, appointment=appointment, fields=sorted(changed))
    if {"starts_at", "status", "appointment_type"} & set(changed):
        _schedule_reminders(tenant, appointment)
    return appointment


@transaction.atomic
def appointment_set_status(*, tenant: Tenant, actor: User | None, appointment: Appointment,
                           status: str) -> Appointment:
    values = _clean({"status": status}, _APPOINTMENT_VALIDATORS)
    appointment = _appointment_locked(appointment)
    if values["status"] == appointment.status:
        return appointment
    allowed = STATUS_TRANSITIONS[appointment.status]
    if values["status"] not in allowed:
        names = ", ".join(AppointmentStatus(s).label.lower() for s in sorted(allowed)) or "nothing (it is closed)"
        raise ApplicationError(INVALID, code="invalid_transition", fields={
            "status": [f"A {appointment.get_status_display().lower()} appointment can only become: {names}."]})
    appointment.status = values["status"]
    appointment.save(update_fields=["status", "updated_at"])
    _audit_appointment(tenant=tenant, actor=actor, appointment=appointment, fields=["status"])
    _schedule_reminders(tenant, appointment)
    return appointment


def _schedule_reminders(tenant: Tenant, appointment: Appointment) -> None:
    """Create, move or cancel the appointment's reminders in the same transaction."""
    from reminders.services import reminders_schedule_for

    reminders_schedule_for(tenant=tenant, appointment=appointment)


def _appointment_locked(appointment: Appointment) -> Appointment:
    # NO KEY UPDATE, as PostgreSQL's own UPDATE takes: it serialises writers of the appointment but
    # lets rows that merely reference it (a reminder's thread, inserted by a fan-out that holds
    # that reminder) take their foreign-key lock, which would otherwise deadlock with us.
    locked = Appointment.objects.select_for_update(no_key=True).filter(pk=appointment.pk).first()
    if locked is None:
        raise NotFound()
    return locked
