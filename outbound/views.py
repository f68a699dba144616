"""The owner's page for webhooks to the clinic's systems (Settings → Webhooks).

The signing secret is shown once, in the response to the POST that created the endpoint (as
the API-key page does) and never stored in the session: the session store would keep the
secret at rest, in plaintext, for the session's life. The response is ``no-store``.
"""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from accounts import permissions as perms
from accounts.decorators import staff_view
from accounts.errors import ApplicationError
from accounts.forms import apply_service_errors
from outbound import selectors, services
from outbound.forms import EndpointForm
from outbound.models import EventKind


@staff_view(perms.TENANT_MANAGE_SETTINGS, methods=("GET", "POST"))
def endpoints_view(request: HttpRequest) -> HttpResponse:
    form = EndpointForm(request.POST or None)
    created, status = None, 200
    if request.method == "POST":
        if form.is_valid():
            try:
                endpoint, secret = services.endpoint_create(tenant=request.tenant, actor=request.user,
                                                            url=form.cleaned_data["url"],
                                                            events=form.cleaned_data["events"])
                created = {"endpoint": endpoint, "secret": secret}
                form = EndpointForm()
            except ApplicationError as exc:
                apply_service_errors(form, exc)
                status = 400
        else:
            status = 400
    context = {"form": form, "created": created, "endpoints": selectors.endpoint_list(tenant=request.tenant),
               "event_labels": dict(EventKind.choices)}
    response = render(request, "outbound/endpoints.html", context, status=status)
    response["Cache-Control"] = "no-store"  # the new secret is on this page, once
    return response


@staff_view(perms.TENANT_MANAGE_SETTINGS, methods=("POST",))
def endpoint_deactivate_view(request: HttpRequest, endpoint_id) -> HttpResponse:
    endpoint = selectors.endpoint_get(tenant=request.tenant, endpoint_id=endpoint_id)
    services.endpoint_deactivate(tenant=request.tenant, actor=request.user, endpoint=endpoint)
    messages.success(request, "Webhook endpoint deactivated. Nothing more is sent to it.")
    return redirect("outbound-endpoints")
