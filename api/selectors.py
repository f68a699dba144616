"""Reads behind the public API (R3): filtered, ordered, paginated querysets of the clinic,
each list audited as one PATIENT_SEARCHED event per page (ids, dates and statuses of
patients are PHI once linked), consent ledgers as PATIENT_VIEWED.

Must be called inside ``tenant_scope(tenant)``: the scoped managers and RLS keep other
clinics' rows out, so another clinic's patient id in a filter simply matches nothing.
"""

from __future__ import annotations

import datetime
import uuid

from django.db import transaction

from api.pagination import PageSlice, page_slice
from audit.events import AuditEventType
from audit.services import audit_record
from consent.selectors import consent_event_list, consent_patient_get
from messaging.models import Thread
from patients.models import Appointment, Patient
from patients.selectors import LIST_METHOD, appointment_get, day_bounds
from reminders.models import Reminder


def _audit_page(*, tenant, actor, path_name: str, result: PageSlice, method: str | None = None) -> None:
    details = {"path_name": path_name, "count": len(result.items)}
    if method:
        details["method"] = method
    audit_record(tenant=tenant, actor=actor, event_type=AuditEventType.PATIENT_SEARCHED, details=details)


@transaction.atomic
def api_patient_page(*, tenant, actor, page: int, page_size: int) -> PageSlice:
    """Patients, newest first (names are encrypted: the database cannot sort by them)."""
    result = page_slice(Patient.objects.order_by("-created_at", "-id"), page=page, page_size=page_size)
    _audit_page(tenant=tenant, actor=actor, path_name="api-patients", result=result, method=LIST_METHOD)
    return result


@transaction.atomic
def api_appointment_page(*, tenant, actor, page: int, page_size: int, day: datetime.date | None = None,
                         status: str | None = None, patient_id: uuid.UUID | None = None) -> PageSlice:
    """Appointments by start time; ``day`` is a day in the clinic's time zone."""
    rows = Appointment.objects.all()
    if day is not None:
        start, end = day_bounds(tenant, day)
        rows = rows.filter(starts_at__gte=start, starts_at__lt=end)
    if status:
        rows = rows.filter(status=status)
    if patient_id is not None:
        rows = rows.filter(patient_id=patient_id)
    result = page_slice(rows.order_by("starts_at", "id"), page=page, page_size=page_size)
    _audit_page(tenant=tenant, actor=actor, path_name="api-appointments", result=result)
    return result


@transaction.atomic
def api_thread_page(*, tenant, actor, page: int, page_size: int, status: str | None = None,
                    patient_id: uuid.UUID | None = None) -> PageSlice:
    """Threads, latest activity first; no bodies (opening one is ``messaging.selectors.thread_open``)."""
    rows = Thread.objects.all()
    if status:
        rows = rows.filter(status=status)
    if patient_id is not None:
        rows = rows.filter(patient_id=patient_id)
    result = page_slice(rows.order_by("-last_activity_at", "-id"), page=page, page_size=page_size)
    _audit_page(tenant=tenant, actor=actor, path_name="api-threads", result=result)
    return result


@transaction.atomic
def api_reminder_page(*, tenant, actor, page: int, page_size: int, status: str | None = None,
                      appointment_id: uuid.UUID | None = None) -> PageSlice:
    rows = Reminder.objects.all()
    if status:
        rows = rows.filter(status=status)
    if appointment_id is not None:
        rows = rows.filter(appointment_id=appointment_id)
    result = page_slice(rows.order_by("due_at", "id"), page=page, page_size=page_size)
    _audit_page(tenant=tenant, actor=actor, path_name="api-reminders", result=result)
    return result


@transaction.atomic
def api_consent_page(*, tenant, actor, patient_id, page: int, page_size: int) -> tuple[Patient, PageSlice]:
    """The patient's consent ledger, newest first (evidence notes may hold PHI): PATIENT_VIEWED.
    NotFound for unknown ids and other clinics' alike."""
    patient = consent_patient_get(tenant=tenant, patient_id=patient_id)
    result = page_slice(consent_event_list(tenant=tenant, patient=patient), page=page, page_size=page_size)
    audit_record(tenant=tenant, actor=actor, event_type=AuditEventType.PATIENT_VIEWED, target=patient,
                 patient_id=patient.pk, details={"path_name": "api-patient-consent", "count": len(result.items)})
    return patient, result


@transaction.atomic
def api_appointment_view(*, tenant, actor, appointment_id) -> Appointment:
    """One appointment (its patient's id and times): PATIENT_VIEWED for its patient."""
    appointment = appointment_get(tenant=tenant, appointment_id=appointment_id)
    audit_record(tenant=tenant, actor=actor, event_type=AuditEventType.PATIENT_VIEWED, target=appointment,
                 patient_id=appointment.patient_id, details={"path_name": "api-appointment"})
    return appointment
