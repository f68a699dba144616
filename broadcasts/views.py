"""Staff pages for broadcasts (owners: ``broadcasts.send``). Thin: one selector or service per
action; POSTs redirect (PRG) with a flash that carries no PHI; another clinic's broadcast is 404
(``selectors.broadcast_get`` raises NotFound). No page names a patient."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone

from accounts import permissions as perms
from accounts.decorators import staff_view
from accounts.errors import ApplicationError
from accounts.forms import apply_service_errors
from broadcasts import selectors, services
from broadcasts.forms import BroadcastForm
from broadcasts.models import BroadcastStatus
from broadcasts.queue import broadcast_queue
from patients.services import clinic_zone


def _render(request: HttpRequest, template: str, context: dict, status: int = 200) -> HttpResponse:
    with timezone.override(clinic_zone(request.tenant)):
        return render(request, template, context, status=status)


@staff_view(perms.BROADCASTS_SEND)
def broadcast_list_view(request: HttpRequest) -> HttpResponse:
    return _render(request, "broadcasts/list.html", {"broadcasts": selectors.broadcast_list(tenant=request.tenant)})


@staff_view(perms.BROADCASTS_SEND, methods=("GET", "POST"))
def broadcast_create_view(request: HttpRequest) -> HttpResponse:
    tenant = request.tenant
    form = BroadcastForm(request.POST if request.method == "POST" else None,
                         locations=selectors.location_choices(tenant=tenant),
                         appointment_types=selectors.appointment_type_choices(tenant=tenant),
                         default_rate=services.tenant_rate(tenant))
    if request.method == "POST" and form.is_valid():
        try:
            broadcast = services.broadcast_create(tenant=tenant, actor=request.user, **form.cleaned_data)
        except ApplicationError as exc:
            apply_service_errors(form, exc)
        else:
            messages.success(request, f"Broadcast started: {broadcast.total} recipients.")
            return redirect("broadcasts-detail", broadcast_id=broadcast.pk)
    return _render(request, "broadcasts/form.html", {"form": form}, status=400 if request.method == "POST" else 200)


@staff_view(perms.BROADCASTS_SEND)
def broadcast_detail_view(request: HttpRequest, broadcast_id) -> HttpResponse:
    broadcast = selectors.broadcast_get(tenant=request.tenant, broadcast_id=broadcast_id)
    progress = selectors.broadcast_progress(tenant=request.tenant, broadcast=broadcast)
    return _render(request, "broadcasts/detail.html", {
        "broadcast": broadcast, "progress": progress, "sending": broadcast.status == BroadcastStatus.SENDING,
        "per_tick": services.slice_size(broadcast),
        "queue": broadcast_queue(tenant=request.tenant, broadcast=broadcast, progress=progress),
        "can_cancel": broadcast.status == BroadcastStatus.SENDING
        or (broadcast.status == BroadcastStatus.DONE and progress.open_sms > 0)})


@staff_view(perms.BROADCASTS_SEND, methods=("POST",))
def broadcast_cancel_view(request: HttpRequest, broadcast_id) -> HttpResponse:
    broadcast = selectors.broadcast_get(tenant=request.tenant, broadcast_id=broadcast_id)
    try:
        services.broadcast_cancel(tenant=request.tenant, actor=request.user, broadcast=broadcast)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, "Broadcast cancelled. Texts not yet sent will not go.")
    return redirect("broadcasts-detail", broadcast_id=broadcast.pk)
