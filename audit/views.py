"""Audit report pages and downloads (owners and auditors: ``reports.view``).

Every report is one of ``audit.reports.definitions.REPORTS``; these views only validate the
filter form, call the report service and render. The tenant is always the request's.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode

from accounts import permissions as perms
from accounts.decorators import staff_view
from accounts.selectors import membership_list
from audit.forms import ReportFilterForm
from audit.reports import services
from audit.reports.columns import columns_for, row_cells
from audit.reports.definitions import REPORTS, Report, report_get
from audit.reports.hours import clinic_zone, working_hours_for


def _form(request: HttpRequest, report: Report) -> ReportFilterForm:
    # Deactivated members stay choosable: their past activity is what an audit often asks about.
    users = [(m.user_id, m.user.email if m.is_active else f"{m.user.email} (deactivated)")
             for m in membership_list(tenant=request.tenant)]
    today = timezone.localdate(timezone=clinic_zone(request.tenant))
    return ReportFilterForm(request.GET, report=report, users=users, today=today)


def _link(name: str, query: dict, **extra) -> str:
    return f"{reverse(name)}?{urlencode({**query, **extra})}"


def _page(request: HttpRequest, report: Report, form: ReportFilterForm, *, result=None, status: int = 200):
    context = {"report": report, "reports": REPORTS.values(), "form": form, "result": result,
               "working_hours": working_hours_for(request.tenant) if report.after_hours else None}
    if result is not None:
        zone, columns = clinic_zone(request.tenant), columns_for(report)
        query = form.filter_query()
        page = result.page
        context.update(
            columns=columns,
            rows=[row_cells(columns, event, zone) for event in page.rows],
            chart=result.chart.as_json() if result.chart else None,
            csv_url=_link(f"audit-report-{report.slug}-csv", query),
            pdf_url=_link(f"audit-report-{report.slug}-pdf", query),
            first_url=_link(f"audit-report-{report.slug}", query) if page.previous else None,
            previous_url=_link(f"audit-report-{report.slug}", query, before=page.previous.encode())
            if page.previous else None,
            next_url=_link(f"audit-report-{report.slug}", query, after=page.next.encode()) if page.next else None,
        )
    return render(request, "audit/reports/report.html", context, status=status)


@staff_view(perms.REPORTS_VIEW)
def report_list_view(request: HttpRequest) -> HttpResponse:
    return render(request, "audit/reports/index.html", {"reports": REPORTS.values()})


@staff_view(perms.REPORTS_VIEW)
def report_view(request: HttpRequest, *, slug: str) -> HttpResponse:
    report = report_get(slug)
    form = _form(request, report)
    if not form.is_valid():
        return _page(request, report, form, status=400)
    result = services.report_view(tenant=request.tenant, actor=request.user, report=report,
                                  filters=form.filters(), cursor=form.cursor())
    return _page(request, report, form, result=result)


@staff_view(perms.REPORTS_VIEW)
def report_download_view(request: HttpRequest, *, slug: str, fmt: str) -> HttpResponse:
    report = report_get(slug)
    form = _form(request, report)
    if form.is_valid():
        try:
            download = services.report_export(tenant=request.tenant, actor=request.user, report=report,
                                              filters=form.filters(), fmt=fmt, user_email=form.user_email)
        except services.ReportTooLarge as exc:
            form.add_error(None, exc.message)
        else:
            response = HttpResponse(download.body, content_type=download.content_type)
            response["Content-Disposition"] = f'attachment; filename="{download.filename}"'
            return response
    return _page(request, report, form, status=400)
