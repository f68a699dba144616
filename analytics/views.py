"""The owners' no-show dashboard and its CSV (``analytics.view``). Aggregates only: no PHI is
read or shown, so nothing is written to the audit trail (see analytics/selectors.py)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode

from accounts import permissions as perms
from accounts.decorators import staff_view
from analytics import presentation
from analytics.forms import DashboardFilterForm
from analytics.selectors import (
    FUNNEL_LABELS,
    FUNNEL_STEPS,
    RESPONSE_SAMPLE,
    dashboard_get,
    location_names,
)


def _form(request: HttpRequest) -> DashboardFilterForm:
    return DashboardFilterForm(request.GET, locations=location_names())


def _page(request: HttpRequest, form: DashboardFilterForm, *, board=None, status: int = 200) -> HttpResponse:
    context = {"form": form, "board": board, "steps": [(step, FUNNEL_LABELS[step]) for step in FUNNEL_STEPS],
               "sample": RESPONSE_SAMPLE}
    if board is not None:
        context.update(chart=presentation.chart_data(board),
                       csv_url=f"{reverse('analytics-export-csv')}?{urlencode(form.query())}")
    return render(request, "analytics/dashboard.html", context, status=status)


@staff_view(perms.ANALYTICS_VIEW)
def dashboard_view(request: HttpRequest) -> HttpResponse:
    form = _form(request)
    if not form.is_valid():
        return _page(request, form, status=400)
    board = dashboard_get(tenant=request.tenant, weeks=form.cleaned_data["weeks"],
                          location=form.cleaned_data["location"])
    return _page(request, form, board=board)


@staff_view(perms.ANALYTICS_VIEW)
def export_csv_view(request: HttpRequest) -> HttpResponse:
    form = _form(request)
    if not form.is_valid():
        return _page(request, form, status=400)
    board = dashboard_get(tenant=request.tenant, weeks=form.cleaned_data["weeks"],
                          location=form.cleaned_data["location"])
    response = HttpResponse(presentation.render_csv(board), content_type="text/csv; charset=utf-8")
    day = timezone.localdate(timezone=board.window.zone).isoformat()
    response["Content-Disposition"] = f'attachment; filename="no-show-dashboard-{day}.csv"'
    return response
