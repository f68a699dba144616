"""Staff pages for reminders: the clinic's reminder settings and the upcoming reminders."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone

from accounts import permissions as perms
from accounts.decorators import staff_view
from accounts.errors import ApplicationError
from accounts.forms import apply_service_errors
from patients.services import clinic_zone
from reminders import selectors, services
from reminders.forms import ReminderPolicyForm, policy_initial
from reminders.models import PLACEHOLDERS


@staff_view(perms.REMINDERS_MANAGE, methods=("GET", "POST"))
def policy_view(request: HttpRequest) -> HttpResponse:
    policy = services.reminder_policy_get(tenant=request.tenant)
    form = ReminderPolicyForm(request.POST if request.method == "POST" else None, initial=policy_initial(policy))
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                services.reminder_policy_update(tenant=request.tenant, actor=request.user, **form.cleaned_data)
            except ApplicationError as exc:
                apply_service_errors(form, exc)
            else:
                messages.success(request, "Reminder settings saved.")
                return redirect("reminders-policy")
        status = 400
    return render(request, "reminders/policy.html", {"form": form, "placeholders": PLACEHOLDERS}, status=status)


@staff_view(perms.MESSAGES_VIEW)
def upcoming_view(request: HttpRequest) -> HttpResponse:
    rows = selectors.upcoming_reminders(tenant=request.tenant, actor=request.user)
    with timezone.override(clinic_zone(request.tenant)):
        return render(request, "reminders/upcoming.html",
                      {"reminders": rows, "can_manage": perms.REMINDERS_MANAGE in request.permissions})
