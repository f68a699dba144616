"""Staff pages for patients and appointments. Thin: one selector or service per action.

PHI never goes into URLs (search is a POST) or flash messages (the message store is the
session). Times are read and shown in the clinic's time zone. Every page that shows one
patient's details loads them through ``selectors.patient_view`` (PATIENT_VIEWED); list pages
through selectors that write PATIENT_SEARCHED.
"""

from __future__ import annotations

import datetime

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone

from accounts import permissions as perms
from accounts.decorators import permission_denied, safe_next, staff_view
from accounts.errors import ApplicationError
from accounts.forms import apply_service_errors
from patients import selectors, services
from patients.forms import (
    AppointmentForm,
    AppointmentStatusForm,
    DayForm,
    PatientForm,
    PatientSearchForm,
)
from patients.models import Appointment, AppointmentStatus, Patient
from patients.validation import phone_display

_PATIENT_FORM_FIELDS = ("mrn", "given_name", "family_name", "birth_date", "phone", "email", "preferred_language",
                        "timezone")
_APPOINTMENT_FORM_FIELDS = ("starts_at", "ends_at", "appointment_type", "provider_name", "location_name", "reason",
                            "instructions")


def _can(request: HttpRequest) -> dict[str, bool]:
    return {
        "view_phi": perms.PATIENTS_VIEW_PHI in request.permissions,
        "change_patients": perms.PATIENTS_CHANGE in request.permissions,
        "change_appointments": perms.APPOINTMENTS_CHANGE in request.permissions,
    }


def _render(request: HttpRequest, template: str, context: dict, status: int = 200) -> HttpResponse:
    """Render in the clinic's time zone, with what the user may do on the page."""
    with timezone.override(services.clinic_zone(request.tenant)):
        return render(request, template, {**context, "can_patients": _can(request)}, status=status)


def _phi_denied(request: HttpRequest) -> HttpResponse | None:
    """Pages that show demographics or clinical notes need patients.view_phi as well as the
    change permission they are declared with. Every role that may change patients or
    appointments has it today; this keeps it so if roles or scopes change."""
    if perms.PATIENTS_VIEW_PHI not in request.permissions:
        return permission_denied(request, perms.PATIENTS_VIEW_PHI)
    return None


def _day_url(day: datetime.date) -> str:
    return f"{reverse('patients-appointment-list')}?day={day.isoformat()}"


def _local_day(request: HttpRequest, moment: datetime.datetime) -> datetime.date:
    return timezone.localtime(moment, services.clinic_zone(request.tenant)).date()


# --- patient list and search ----------------------------------------------------------------------


def _list_page(request: HttpRequest, *, form, page=None, results=None, status: int = 200) -> HttpResponse:
    return _render(request, "patients/list.html", {"form": form, "page": page, "results": results}, status)


@staff_view(perms.PATIENTS_VIEW)
def patient_list_view(request: HttpRequest) -> HttpResponse:
    page = selectors.patient_list(tenant=request.tenant, actor=request.user, page=request.GET.get("page"))
    return _list_page(request, form=PatientSearchForm(), page=page)


@staff_view(perms.PATIENTS_VIEW, methods=("POST",))
def patient_search_view(request: HttpRequest) -> HttpResponse:
    form = PatientSearchForm(request.POST)
    if form.is_valid():
        try:
            _, results = selectors.patient_search(tenant=request.tenant, actor=request.user, **form.cleaned_data)
        except ApplicationError as exc:
            apply_service_errors(form, exc)
        else:
            return _list_page(request, form=form, results=results)
    return _list_page(request, form=form, status=400)


# --- one patient ----------------------------------------------------------------------------------


@staff_view(perms.PATIENTS_VIEW_PHI)
def patient_detail_view(request: HttpRequest, patient_id) -> HttpResponse:
    patient = selectors.patient_view(tenant=request.tenant, actor=request.user, patient_id=patient_id)
    appointments = selectors.appointments_for_patient(tenant=request.tenant, patient=patient)
    from consent.views import consent_panel_context
    from messaging.views_staff import patient_messages_panel_context

    return _render(request, "patients/detail.html", {
        "patient": patient, "phone": phone_display(patient.phone), "appointments": appointments,
        "appointments_limit": selectors.PATIENT_APPOINTMENTS_SHOWN,
        **consent_panel_context(request.tenant, patient, permissions=request.permissions, next_url=request.path),
        **patient_messages_panel_context(request.tenant, patient, permissions=request.permissions),
    })


def _patient_form_page(request: HttpRequest, form, *, patient: Patient | None, status: int) -> HttpResponse:
    return _render(request, "patients/form.html", {"form": form, "patient": patient}, status)


@staff_view(perms.PATIENTS_CHANGE, methods=("GET", "POST"))
def patient_create_view(request: HttpRequest) -> HttpResponse:
    form = PatientForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            patient = services.patient_create(tenant=request.tenant, actor=request.user, **form.cleaned_data)
        except ApplicationError as exc:
            apply_service_errors(form, exc)
        else:
            messages.success(request, "Patient added.")
            return redirect("patients-patient-detail", patient_id=patient.pk)
    return _patient_form_page(request, form, patient=None, status=400 if request.method == "POST" else 200)


@staff_view(perms.PATIENTS_CHANGE, methods=("GET", "POST"))
def patient_edit_view(request: HttpRequest, patient_id) -> HttpResponse:
    if denied := _phi_denied(request):
        return denied
    if request.method == "GET":  # the form shows the record: audited as a view
        patient = selectors.patient_view(tenant=request.tenant, actor=request.user, patient_id=patient_id)
        initial = {name: getattr(patient, name) for name in _PATIENT_FORM_FIELDS}
        return _patient_form_page(request, PatientForm(initial=initial), patient=patient, status=200)
    patient = selectors.patient_get(tenant=request.tenant, patient_id=patient_id)
    form = PatientForm(request.POST)
    if form.is_valid():
        try:
            updated = services.patient_update(tenant=request.tenant, actor=request.user, patient=patient,
                                              **form.cleaned_data)
        except ApplicationError as exc:
            apply_service_errors(form, exc)
        else:
            if updated.phone_changed_at != patient.phone_changed_at:
                messages.warning(request, "Changes saved. Texts to the new number wait until consent is recorded for it.")
            else:
                messages.success(request, "Changes saved." if updated.updated_at != patient.updated_at else "No changes.")
            return redirect("patients-patient-detail", patient_id=patient.pk)
    # Only what was typed is shown back, so the failed POST discloses nothing new.
    return _patient_form_page(request, form, patient=patient, status=400)


# --- appointments ---------------------------------------------------------------------------------


def _status_choices(appointment: Appointment) -> list[tuple[str, str]]:
    allowed = services.STATUS_TRANSITIONS[appointment.status] | {appointment.status}
    return [(value, label) for value, label in AppointmentStatus.choices if value in allowed]


@staff_view(perms.PATIENTS_VIEW)
def appointment_list_view(request: HttpRequest) -> HttpResponse:
    form = DayForm(request.GET or None)
    day = services.clinic_today(request.tenant)
    if request.GET and not form.is_valid():
        return _render(request, "patients/appointments_day.html", {"form": form, "day": None}, status=400)
    if request.GET and form.cleaned_data["day"]:
        day = form.cleaned_data["day"]
    appointments = selectors.appointments_for_day(tenant=request.tenant, actor=request.user, day=day)
    rows = [{"appointment": a, "choices": _status_choices(a)} for a in appointments]
    return _render(request, "patients/appointments_day.html", {
        "form": DayForm(initial={"day": day}), "day": day, "rows": rows, "here": _day_url(day),
        "previous": _day_url(day - datetime.timedelta(days=1)), "next": _day_url(day + datetime.timedelta(days=1)),
        "today": _day_url(services.clinic_today(request.tenant)),
    })


def _appointment_page(request: HttpRequest, *, patient_id, form, appointment: Appointment | None = None,
                      status_form=None, status: int = 200) -> HttpResponse:
    """The add/edit page. It shows the patient's name: loaded through patient_view (audited);
    an existing appointment's clinical notes need patients.view_phi."""
    if appointment is not None and (denied := _phi_denied(request)):
        return denied
    patient = selectors.patient_view(tenant=request.tenant, actor=request.user, patient_id=patient_id)
    context = {"form": form, "patient": patient, "appointment": appointment}
    if appointment is not None:
        context["status_form"] = status_form or AppointmentStatusForm(initial={"status": appointment.status})
        context["status_choices"] = _status_choices(appointment)
    return _render(request, "patients/appointment_form.html", context, status)


@staff_view(perms.APPOINTMENTS_CHANGE, methods=("GET", "POST"))
def appointment_create_view(request: HttpRequest, patient_id) -> HttpResponse:
    patient = selectors.patient_get(tenant=request.tenant, patient_id=patient_id)
    with timezone.override(services.clinic_zone(request.tenant)):  # the form's times are the clinic's
        form = AppointmentForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            try:
                appointment = services.appointment_create(tenant=request.tenant, actor=request.user,
                                                          patient=patient, **form.cleaned_data)
            except ApplicationError as exc:
                apply_service_errors(form, exc)
            else:
                messages.success(request, "Appointment booked.")
                return redirect(_day_url(_local_day(request, appointment.starts_at)))
    status = 400 if request.method == "POST" else 200
    return _appointment_page(request, patient_id=patient.pk, form=form, status=status)


@staff_view(perms.APPOINTMENTS_CHANGE, methods=("GET", "POST"))
def appointment_edit_view(request: HttpRequest, appointment_id) -> HttpResponse:
    appointment = selectors.appointment_get(tenant=request.tenant, appointment_id=appointment_id)
    with timezone.override(services.clinic_zone(request.tenant)):
        if request.method == "GET":
            initial = {name: getattr(appointment, name) for name in _APPOINTMENT_FORM_FIELDS}
            form = AppointmentForm(initial=initial)
        else:
            form = AppointmentForm(request.POST)
            if form.is_valid():
                try:
                    appointment = services.appointment_update(tenant=request.tenant, actor=request.user,
                                                              appointment=appointment, **form.cleaned_data)
                except ApplicationError as exc:
                    apply_service_errors(form, exc)
                else:
                    messages.success(request, "Appointment saved.")
                    return redirect(_day_url(_local_day(request, appointment.starts_at)))
    status = 400 if request.method == "POST" else 200
    return _appointment_page(request, patient_id=appointment.patient_id, form=form, appointment=appointment,
                             status=status)


@staff_view(perms.APPOINTMENTS_CHANGE, methods=("POST",))
def appointment_status_view(request: HttpRequest, appointment_id) -> HttpResponse:
    appointment = selectors.appointment_get(tenant=request.tenant, appointment_id=appointment_id)
    form = AppointmentStatusForm(request.POST)
    if form.is_valid():
        try:
            appointment = services.appointment_set_status(tenant=request.tenant, actor=request.user,
                                                          appointment=appointment, status=form.cleaned_data["status"])
        except ApplicationError as exc:
            apply_service_errors(form, exc)
        else:
            messages.success(request, f"Status: {appointment.get_status_display()}.")
            return redirect(safe_next(request, default=_day_url(_local_day(request, appointment.starts_at))))
    with timezone.override(services.clinic_zone(request.tenant)):
        initial = {name: getattr(appointment, name) for name in _APPOINTMENT_FORM_FIELDS}
        edit_form = AppointmentForm(initial=initial)
    return _appointment_page(request, patient_id=appointment.patient_id, form=edit_form, appointment=appointment,
                             status_form=form, status=400)
