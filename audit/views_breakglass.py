"""Emergency (break-glass) access: clinicians start it with a reason; owners review it."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from accounts import permissions as perms
from accounts.decorators import staff_view
from accounts.errors import ApplicationError
from accounts.forms import apply_service_errors
from audit import selectors, services
from audit.models import BreakGlassReason


class BreakGlassForm(forms.Form):
    patient = forms.UUIDField(widget=forms.HiddenInput)
    reason = forms.ChoiceField(choices=BreakGlassReason.choices)
    note = forms.CharField(min_length=services.BREAK_GLASS_NOTE_MIN, max_length=1000, widget=forms.Textarea(attrs={"rows": 3}),
                           help_text="Why you need this record now. Your clinic's owners will review it.")
    minutes = forms.TypedChoiceField(choices=[(15, "15 minutes"), (60, "1 hour"), (240, "4 hours")], coerce=int,
                                     initial=60)


@staff_view(perms.BREAK_GLASS_START, methods=("GET", "POST"))
def break_glass_start_view(request: HttpRequest) -> HttpResponse:
    data = request.POST if request.method == "POST" else None
    form = BreakGlassForm(data, initial={"patient": request.GET.get("patient")})
    if request.method == "POST" and form.is_valid():
        try:
            grant = services.break_glass_start(
                tenant=request.tenant, actor=request.user, patient_id=form.cleaned_data["patient"],
                reason=form.cleaned_data["reason"], note=form.cleaned_data["note"],
                minutes=form.cleaned_data["minutes"])
        except ApplicationError as exc:
            apply_service_errors(form, exc)
        else:
            messages.warning(request, f"Emergency access granted until {grant.expires_at:%H:%M} UTC. It is logged "
                                      f"and your clinic's owners are notified.")
            return redirect("dashboard")
    status = 400 if request.method == "POST" else 200
    return render(request, "audit/break_glass.html", {"form": form}, status=status)


@staff_view(perms.BREAK_GLASS_REVIEW, methods=("POST",))
def break_glass_acknowledge_view(request: HttpRequest, grant_id) -> HttpResponse:
    grant = selectors.break_glass_get(tenant=request.tenant, grant_id=grant_id)
    services.break_glass_acknowledge(tenant=request.tenant, actor=request.user, grant=grant)
    messages.success(request, "Marked as reviewed.")
    return redirect("dashboard")
