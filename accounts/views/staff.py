"""Clinic administration pages (owners): people, invitations, API keys, clinic settings."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse

from accounts import permissions as perms
from accounts import selectors, services
from accounts.decorators import staff_view
from accounts.errors import ApplicationError
from accounts.forms import (
    ApiKeyForm,
    ClinicSettingsForm,
    ClinicSmsSettingsForm,
    InviteForm,
    RoleForm,
    apply_service_errors,
)
from accounts.permissions import Role


@staff_view(perms.DASHBOARD_VIEW)
def dashboard_view(request: HttpRequest) -> HttpResponse:
    from audit.selectors import break_glass_unacknowledged

    emergency = None
    if perms.BREAK_GLASS_REVIEW in request.permissions:
        emergency = list(break_glass_unacknowledged(tenant=request.tenant)[:20])
    return render(request, "accounts/dashboard.html", {"emergency_access": emergency})


def _settings_links(request: HttpRequest) -> list[dict]:
    """The settings this person may open, in the order the landing page shows them."""
    granted = request.permissions
    candidates = [
        (perms.TENANT_MANAGE_SETTINGS, "accounts-clinic", "Clinic",
         "Name, time zone, sign-in timeouts and the sender name on texts."),
        (perms.TENANT_MANAGE_SETTINGS, "accounts-clinic", "SMS",
         "The HELP-reply number, daily and weekly text limits and broadcast speed.", "#sms-title"),
        (perms.TENANT_MANAGE_USERS, "accounts-users", "People", "Invite colleagues, change roles, deactivate."),
        (perms.TENANT_MANAGE_API_KEYS, "accounts-api-keys", "API keys", "Keys for your EHR and other systems."),
        (perms.TENANT_MANAGE_SETTINGS, "outbound-endpoints", "Webhooks",
         "Signed FHIR notifications to your own endpoints."),
        (perms.MESSAGES_SEND, "messaging-templates", "Saved replies", "Reusable message texts for the inbox."),
        (perms.REMINDERS_MANAGE, "reminders-policy", "Reminder policy", "When appointment reminders are texted."),
        (perms.TENANT_MANAGE_SETTINGS, "consent-baa", "Business associate agreement", "Who signed it and when."),
    ]
    links = []
    for permission, name, label, help_text, *anchor in candidates:
        if permission in granted:
            links.append({"url": reverse(name) + (anchor[0] if anchor else ""), "label": label, "help": help_text})
    return links


@staff_view(perms.DASHBOARD_VIEW)
def settings_view(request: HttpRequest) -> HttpResponse:
    """The Settings section's landing page: only what the role may use, plus the person's own
    sessions (anyone may see and end those)."""
    return render(request, "accounts/settings.html", {"settings_links": _settings_links(request)})


def _users_page(request: HttpRequest, *, form=None, error: str = "", status: int = 200) -> HttpResponse:
    context = {
        "form": form or InviteForm(),
        "error": error,
        "memberships": selectors.membership_list(tenant=request.tenant),
        "invitations": selectors.invitation_list_open(tenant=request.tenant),
        "role_form": RoleForm(),
    }
    return render(request, "accounts/users.html", context, status=status)


@staff_view(perms.TENANT_MANAGE_USERS, methods=("GET", "POST"))
def users_view(request: HttpRequest) -> HttpResponse:
    form = InviteForm(request.POST or None)
    if request.method == "GET":
        return _users_page(request, form=form)
    if form.is_valid():
        try:
            services.invitation_create(tenant=request.tenant, actor=request.user, **form.cleaned_data)
            messages.success(request, f"Invitation sent to {form.cleaned_data['email']}.")
            return redirect("accounts-users")
        except ApplicationError as exc:
            apply_service_errors(form, exc)
    return _users_page(request, form=form, status=400)


def _membership_action(request: HttpRequest, membership_id, action) -> HttpResponse:
    membership = selectors.membership_get(tenant=request.tenant, membership_id=membership_id)
    try:
        action(membership)
    except ApplicationError as exc:
        return _users_page(request, error=exc.message, status=exc.status_code)
    return redirect("accounts-users")


@staff_view(perms.TENANT_MANAGE_USERS, methods=("POST",))
def membership_role_view(request: HttpRequest, membership_id) -> HttpResponse:
    form = RoleForm(request.POST)
    if not form.is_valid():
        return _users_page(request, error=f"Role: choose one of {', '.join(Role.values)}.", status=400)
    return _membership_action(request, membership_id, lambda m: services.membership_change_role(
        tenant=request.tenant, actor=request.user, membership=m, role=form.cleaned_data["role"]))


@staff_view(perms.TENANT_MANAGE_USERS, methods=("POST",))
def membership_deactivate_view(request: HttpRequest, membership_id) -> HttpResponse:
    return _membership_action(request, membership_id, lambda m: services.membership_deactivate(
        tenant=request.tenant, actor=request.user, membership=m))


@staff_view(perms.TENANT_MANAGE_USERS, methods=("POST",))
def membership_reactivate_view(request: HttpRequest, membership_id) -> HttpResponse:
    return _membership_action(request, membership_id, lambda m: services.membership_reactivate(
        tenant=request.tenant, actor=request.user, membership=m))


@staff_view(perms.TENANT_MANAGE_USERS, methods=("POST",))
def invitation_revoke_view(request: HttpRequest, invitation_id) -> HttpResponse:
    invitation = selectors.invitation_get(tenant=request.tenant, invitation_id=invitation_id)
    services.invitation_revoke(tenant=request.tenant, actor=request.user, invitation=invitation)
    messages.success(request, "Invitation revoked.")
    return redirect("accounts-users")


@staff_view(perms.TENANT_MANAGE_API_KEYS, methods=("GET", "POST"))
def api_keys_view(request: HttpRequest) -> HttpResponse:
    form = ApiKeyForm(request.POST or None)
    created = None
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                key, raw = services.api_key_create(tenant=request.tenant, actor=request.user,
                                                   name=form.cleaned_data["name"], scopes=form.cleaned_data["scopes"])
                created = {"key": key, "raw": raw}
                form = ApiKeyForm()
            except ApplicationError as exc:
                apply_service_errors(form, exc)
                status = 400
        else:
            status = 400
    context = {"form": form, "created": created, "keys": selectors.api_key_list(tenant=request.tenant)}
    response = render(request, "accounts/api_keys.html", context, status=status)
    response["Cache-Control"] = "no-store"  # the new key is on this page, once
    return response


@staff_view(perms.TENANT_MANAGE_API_KEYS, methods=("POST",))
def api_key_revoke_view(request: HttpRequest, api_key_id) -> HttpResponse:
    key = selectors.api_key_get(tenant=request.tenant, api_key_id=api_key_id)
    services.api_key_revoke(tenant=request.tenant, actor=request.user, api_key=key)
    messages.success(request, f"API key {key.prefix}… revoked.")
    return redirect("accounts-api-keys")


def _clinic_page(request: HttpRequest, *, form=None, sms_form=None, status: int = 200) -> HttpResponse:
    tenant = request.tenant
    return render(request, "accounts/clinic_settings.html", {
        "form": form or ClinicSettingsForm(instance=tenant),
        "sms_form": sms_form or ClinicSmsSettingsForm.for_tenant(tenant),
    }, status=status)


@staff_view(perms.TENANT_MANAGE_SETTINGS, methods=("GET", "POST"))
def clinic_settings_view(request: HttpRequest) -> HttpResponse:
    tenant = request.tenant
    form = ClinicSettingsForm(request.POST or None, instance=tenant)
    if request.method == "POST":
        # Validate on a copy so a rejected form never leaves half-applied values around.
        if form.is_valid():
            changes = {f: form.cleaned_data[f] for f in form.changed_data}
            if changes:
                tenant.refresh_from_db()
                try:
                    services.tenant_update_settings(tenant=tenant, actor=request.user, **changes)
                except ApplicationError as exc:
                    apply_service_errors(form, exc)
                    return _clinic_page(request, form=form, status=400)
            messages.success(request, "Clinic settings saved.")
            return redirect("accounts-clinic")
        tenant.refresh_from_db()
        return _clinic_page(request, form=form, status=400)
    return _clinic_page(request, form=form)


@staff_view(perms.TENANT_MANAGE_SETTINGS, methods=("POST",))
def clinic_sms_settings_view(request: HttpRequest) -> HttpResponse:
    """The SMS settings kept in Tenant.settings; all saved together or none (one transaction)."""
    from django.db import transaction

    from broadcasts.services import broadcast_rate_set
    from consent.services import contact_phone_set, notice_cap_set
    from messaging.pacing import sender_rate_set

    tenant = request.tenant
    form = ClinicSmsSettingsForm.for_tenant(tenant, request.POST)
    if form.is_valid():
        data = form.cleaned_data
        try:
            with transaction.atomic():
                contact_phone_set(tenant=tenant, actor=request.user, contact_phone=data["contact_phone"])
                notice_cap_set(tenant=tenant, actor=request.user, per_day=data["notice_per_day"],
                               per_week=data["notice_per_week"])
                broadcast_rate_set(tenant=tenant, actor=request.user,
                                   rate_per_minute=data["broadcast_rate_per_minute"])
                sender_rate_set(tenant=tenant, actor=request.user, rate_per_second=data["sms_rate_per_second"])
        except ApplicationError as exc:
            tenant.refresh_from_db()
            apply_service_errors(form, exc)
        else:
            messages.success(request, "SMS settings saved.")
            return redirect("accounts-clinic")
    return _clinic_page(request, sms_form=form, status=400)
