"""Staff pages for consent: one patient's consent (state, history, record form, CSV export)
and the clinic's Business Associate Agreement. Each view calls one service or selector."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse

from accounts import permissions as perms
from accounts.decorators import permission_denied, safe_next, staff_view
from accounts.errors import ApplicationError
from accounts.forms import apply_service_errors
from accounts.requestmeta import current_request_meta
from consent import exports, selectors, services
from consent.documents import CURRENT_DISCLOSURE_VERSION, DISCLOSURES, baa_document
from consent.forms import BaaSignForm, ConsentRecordForm
from patients.models import Patient

_EXPLANATIONS = {
    selectors.REASON_GRANTED: "The patient agreed to texts at this number.",
    selectors.REASON_REVOKED: "The patient opted out. Nothing is texted until they opt in again.",
    selectors.REASON_NEVER_GRANTED: "No consent is recorded for this number. Nothing is texted until it is.",
    selectors.REASON_NUMBER_CHANGED: "The mobile number changed since consent was given. Record consent for "
                                     "the new number before anything is texted to it.",
    selectors.REASON_NO_PHONE: "There is no mobile number on file.",
}


def consent_panel_context(tenant, patient: Patient, *, permissions=frozenset(), form=None,
                          next_url: str = "") -> dict:
    """Context for ``{% include "consent/patient_panel.html" %}`` on a patient page.

    The panel shows the ledger with its evidence notes (PHI), so the page that includes it
    audits its own view (PATIENT_VIEWED), as the patient detail page does. ``permissions``
    is ``request.permissions`` (the record form needs consent.change, the CSV link
    patients.view_phi); ``next_url`` is where to return after recording (default: the
    consent page).
    """
    summary = selectors.consent_summary(tenant, patient)
    can_change = perms.CONSENT_CHANGE in permissions
    return {"consent": {
        "patient": patient,
        "summary": summary,
        "status_label": selectors.ConsentStatus(summary.status).label,
        "explanation": _EXPLANATIONS[summary.reason],
        "history": selectors.consent_history_rows(tenant=tenant, patient=patient),
        "can_change": can_change,
        "can_export": perms.PATIENTS_VIEW_PHI in permissions,
        "can_sign_baa": perms.TENANT_MANAGE_SETTINGS in permissions,
        "form": (form or ConsentRecordForm()) if can_change else None,
        "next": next_url,
        "baa_missing": not selectors.tenant_has_baa(tenant),
        "disclosure_version": CURRENT_DISCLOSURE_VERSION,
        "disclosure": DISCLOSURES[CURRENT_DISCLOSURE_VERSION],
    }}


def _patient_page(request: HttpRequest, patient: Patient, *, form=None, status: int = 200) -> HttpResponse:
    context = consent_panel_context(request.tenant, patient, permissions=request.permissions, form=form)
    return render(request, "consent/patient.html", {"patient": patient, **context}, status=status)


@staff_view(perms.PATIENTS_VIEW_PHI)
def consent_patient_view(request: HttpRequest, patient_id) -> HttpResponse:
    patient = selectors.consent_patient_open(tenant=request.tenant, actor=request.user, patient_id=patient_id)
    return _patient_page(request, patient)


@staff_view(perms.CONSENT_CHANGE, methods=("POST",))
def consent_record_view(request: HttpRequest, patient_id) -> HttpResponse:
    if perms.PATIENTS_VIEW_PHI not in request.permissions:
        # The 400 page shows the ledger's notes; every role with consent.change has view_phi
        # today, and this keeps it so if roles change (as patients/views.py does).
        return permission_denied(request, perms.PATIENTS_VIEW_PHI)
    patient = selectors.consent_patient_get(tenant=request.tenant, patient_id=patient_id)
    form = ConsentRecordForm(request.POST)
    if form.is_valid():
        try:
            services.consent_record(tenant=request.tenant, actor=request.user, patient=patient, **form.cleaned_data)
        except ApplicationError as exc:
            apply_service_errors(form, exc)
        else:
            messages.success(request, "Consent recorded.")
            return redirect(safe_next(request, default=reverse("consent-patient", args=[patient.pk])))
    selectors.consent_page_viewed(tenant=request.tenant, actor=request.user, patient=patient)
    return _patient_page(request, patient, form=form, status=400)


@staff_view(perms.PATIENTS_VIEW_PHI)
def consent_history_csv_view(request: HttpRequest, patient_id) -> HttpResponse:
    patient = selectors.consent_patient_get(tenant=request.tenant, patient_id=patient_id)
    body, _ = exports.consent_history_csv(tenant=request.tenant, actor=request.user, patient=patient)
    response = HttpResponse(body, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="consent-{patient.pk}.csv"'
    response["Cache-Control"] = "no-store"
    return response


# --- the Business Associate Agreement ---------------------------------------------------------


def _baa_page(request: HttpRequest, *, form=None, error: str = "", status: int = 200) -> HttpResponse:
    document = baa_document()
    records = list(selectors.baa_list(tenant=request.tenant))
    signed = any(record.version == document.version for record in records)
    if form is None and not signed:
        form = BaaSignForm(initial={"document_sha256": document.sha256, "signer_name": request.user.full_name})
    context = {"document": document, "records": records, "signed": signed, "form": None if signed else form,
               "error": error}
    return render(request, "consent/baa.html", context, status=status)


def _fresh_baa_form(request: HttpRequest, message: str) -> BaaSignForm:
    """The text changed under the signer: show the new text, keep the typed name, untick."""
    data = request.POST.copy()
    data["document_sha256"] = baa_document().sha256
    data.pop("agree", None)
    form = BaaSignForm(data)
    form.is_valid()
    form.add_error(None, message)
    return form


@staff_view(perms.TENANT_MANAGE_SETTINGS)
def baa_view(request: HttpRequest) -> HttpResponse:
    return _baa_page(request)


@staff_view(perms.TENANT_MANAGE_SETTINGS, methods=("POST",))
def baa_sign_view(request: HttpRequest) -> HttpResponse:
    form = BaaSignForm(request.POST)
    if not form.is_valid():
        return _baa_page(request, form=form, status=400)
    data = form.cleaned_data
    try:
        services.baa_sign(tenant=request.tenant, actor=request.user, signer_name=data["signer_name"],
                          signer_title=data["signer_title"], agreed=data["agree"],
                          document_sha256=data["document_sha256"], ip=current_request_meta().get("ip"))
    except ApplicationError as exc:
        if exc.code == "document_changed":
            return _baa_page(request, form=_fresh_baa_form(request, exc.message), status=exc.status_code)
        apply_service_errors(form, exc)
        return _baa_page(request, form=form, error="" if exc.fields else exc.message, status=exc.status_code)
    messages.success(request, "Agreement signed. Your clinic may now send SMS to patients who agreed to them.")
    return redirect("consent-baa")
