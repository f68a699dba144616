"""Reads for patients and appointments (R3). Must be called inside ``tenant_scope(tenant)``.

Selectors that return PHI for display take the ``actor`` and record the access in the same
transaction (R12): ``patient_view`` (PATIENT_VIEWED, one patient), ``patient_list``,
``patient_search`` and ``appointments_for_day`` (PATIENT_SEARCHED with a method and a count:
one event per page shown, not one per row). ``patient_get`` and ``appointment_get`` are for
writes, which their services audit.
"""

from __future__ import annotations

import datetime
import uuid

from django.core.paginator import Page, Paginator
from django.db import connection, transaction

from accounts.errors import ApplicationError, NotFound
from accounts.models import Tenant, User
from audit.events import AuditEventType
from audit.services import audit_record
from patients import validation as v
from patients.models import Appointment, Patient
from patients.services import DESCRIPTOR_INDEXES, clinic_today, clinic_zone, descriptor_index
from phi.blind import blind_index

PAGE_SIZE = 50  # names decrypt per row and sort in Python: keep pages small

SEARCH_MRN, SEARCH_PHONE, SEARCH_NAME_DOB = "mrn", "phone", "name_dob"
LIST_METHOD, DAY_METHOD = "list", "appointments_day"


def _uuid_or_404(value) -> uuid.UUID:
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    except (TypeError, ValueError):
        raise NotFound() from None


def _by_name(patients) -> list[Patient]:
    return sorted(patients, key=lambda p: (p.family_name.casefold(), p.given_name.casefold(), str(p.pk)))


def _audit_listing(*, tenant: Tenant, actor, method: str, count: int) -> None:
    audit_record(tenant=tenant, actor=actor, event_type=AuditEventType.PATIENT_SEARCHED,
                 details={"method": method, "count": count})


# --- one patient --------------------------------------------------------------------------------


def patient_get(*, tenant: Tenant, patient_id) -> Patient:
    """The patient, or NotFound for unknown ids and other clinics' ids alike."""
    patient = Patient.objects.filter(pk=_uuid_or_404(patient_id)).first()
    if patient is None:
        raise NotFound()
    return patient


@transaction.atomic
def patient_view(*, tenant: Tenant, actor: User | None, patient_id) -> Patient:
    """``patient_get`` for showing the record: writes PATIENT_VIEWED (audit of the look itself,
    so it is written before anything is rendered)."""
    patient = patient_get(tenant=tenant, patient_id=patient_id)
    audit_record(tenant=tenant, actor=actor, event_type=AuditEventType.PATIENT_VIEWED, target=patient,
                 patient_id=patient.pk)
    return patient


# --- lists and search ---------------------------------------------------------------------------


@transaction.atomic
def patient_list(*, tenant: Tenant, actor: User | None, page: int | str | None = 1) -> Page:
    """One page of patients, newest first, then sorted by name within the page (names are
    encrypted, so the database cannot sort them)."""
    paginator = Paginator(Patient.objects.order_by("-created_at", "-id"), PAGE_SIZE)
    result = paginator.get_page(page)
    result.object_list = _by_name(result.object_list)
    _audit_listing(tenant=tenant, actor=actor, method=LIST_METHOD, count=len(result.object_list))
    return result


def _search_criteria(tenant: Tenant, *, mrn, phone, family_name, birth_date) -> tuple[str, dict]:
    given = [name for name, value in (("mrn", mrn), ("phone", phone), ("family_name", family_name),
                                      ("birth_date", birth_date)) if value not in (None, "")]
    if given == ["mrn"]:
        return SEARCH_MRN, {"mrn_index": blind_index(tenant, "mrn", _cleaned(v.mrn, "mrn", mrn))}
    if given == ["phone"]:
        return SEARCH_PHONE, {"phone_index": blind_index(tenant, "phone", _cleaned(v.phone_e164, "phone", phone))}
    if sorted(given) == ["birth_date", "family_name"]:
        today = clinic_today(tenant)
        value = (_cleaned(v.person_name, "family_name", family_name),
                 _cleaned(lambda d: v.birth_date(d, today=today), "birth_date", birth_date))
        return SEARCH_NAME_DOB, {"name_dob_index": blind_index(tenant, "name_dob", value)}
    if given in (["family_name"], ["birth_date"]):
        missing = "birth_date" if given == ["family_name"] else "family_name"
        raise ApplicationError("Search by last name and date of birth together.",
                               fields={missing: ["Needed with the " + ("last name." if missing == "birth_date"
                                                                       else "date of birth.")]})
    raise ApplicationError("Search by one of: MRN, phone number, or last name and date of birth.")


def _cleaned(check, field: str, value):
    try:
        return check(value)
    except v.FieldError as exc:
        raise ApplicationError("Please correct the search.", fields={field: [str(exc)]}) from None


@transaction.atomic
def patient_search(*, tenant: Tenant, actor: User | None, mrn: str | None = None, phone: str | None = None,
                   family_name: str | None = None, birth_date: datetime.date | str | None = None
                   ) -> tuple[str, list[Patient]]:
    """Exact match through one blind index: by MRN, by phone, or by last name + birth date.

    Returns ``(method, patients)``; writes PATIENT_SEARCHED with the method and the number of
    matches (never the criteria: they are PHI).
    """
    method, lookup = _search_criteria(tenant, mrn=mrn, phone=phone, family_name=family_name,
                                      birth_date=birth_date)
    found = _by_name(Patient.objects.filter(**lookup)[:PAGE_SIZE])
    _audit_listing(tenant=tenant, actor=actor, method=method, count=len(found))
    return method, found


# --- appointments -------------------------------------------------------------------------------


def appointment_get(*, tenant: Tenant, appointment_id) -> Appointment:
    appointment = Appointment.objects.select_related("patient").filter(pk=_uuid_or_404(appointment_id)).first()
    if appointment is None:
        raise NotFound()
    return appointment


def day_bounds(tenant: Tenant, day: datetime.date) -> tuple[datetime.datetime, datetime.datetime]:
    """Local midnight to the next local midnight in the clinic's zone (23 or 25 hours on DST days)."""
    zone = clinic_zone(tenant)
    start = datetime.datetime.combine(day, datetime.time.min, tzinfo=zone)
    end = datetime.datetime.combine(day + datetime.timedelta(days=1), datetime.time.min, tzinfo=zone)
    return start, end


@transaction.atomic
def appointments_for_day(*, tenant: Tenant, actor: User | None, day: datetime.date) -> list[Appointment]:
    """The clinic's appointments starting on ``day`` in the clinic's time zone, by start time,
    with their patients (one query). Writes PATIENT_SEARCHED: the list shows names."""
    start, end = day_bounds(tenant, day)
    appointments = list(Appointment.objects.select_related("patient")
                        .filter(starts_at__gte=start, starts_at__lt=end).order_by("starts_at", "id"))
    _audit_listing(tenant=tenant, actor=actor, method=DAY_METHOD, count=len(appointments))
    return appointments


PATIENT_APPOINTMENTS_SHOWN = 100
DESCRIPTOR_CHOICES_MAX = 200


def descriptor_names(*, name: str, limit: int = DESCRIPTOR_CHOICES_MAX) -> dict[str, str]:
    """{blind index: a name} of the clinic's distinct non-blank ``location_name`` or
    ``appointment_type`` values (case variants share an index and show one spelling). The
    values are encrypted, so SQL picks one row per distinct index and only those are decrypted."""
    column = DESCRIPTOR_INDEXES[name][0]
    named = Appointment.objects.exclude(**{column: ""}).only("id", "tenant_id", column, name)
    if connection.features.can_distinct_on_fields:  # PostgreSQL: one query, the newest row of each
        rows = named.order_by(column, "-starts_at").distinct(column)[:limit]
    else:  # SQLite (the demo): distinct indexes, then one row of each
        indexes = list(named.order_by(column).values_list(column, flat=True).distinct()[:limit])
        rows = [named.filter(**{column: index}).order_by("-starts_at").first() for index in indexes]
    return {getattr(row, column): getattr(row, name) for row in rows if row is not None}


def descriptor_choices(*, name: str, limit: int = DESCRIPTOR_CHOICES_MAX) -> list[str]:
    """The clinic's distinct locations or appointment types, sorted case-insensitively."""
    return sorted(descriptor_names(name=name, limit=limit).values(), key=str.casefold)


def descriptor_filter(*, tenant: Tenant, name: str, value: str, prefix: str = "") -> dict:
    """Keyword arguments for ``.filter()`` matching appointments (or, with ``prefix``, rows
    related to them) whose ``location_name``/``appointment_type`` equals ``value``, ignoring case."""
    return {f"{prefix}{DESCRIPTOR_INDEXES[name][0]}": descriptor_index(tenant, name, value)}


def appointments_for_patient(*, tenant: Tenant, patient: Patient) -> list[Appointment]:
    """For the patient's own page (its PATIENT_VIEWED covers them): the latest 100."""
    return list(Appointment.objects.filter(patient=patient).order_by("-starts_at", "-id")[:PATIENT_APPOINTMENTS_SHOWN])
