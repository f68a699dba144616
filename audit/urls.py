"""/reports/…: one page, one CSV and one PDF URL per report in the registry.

URL names are ``audit-report-<slug>`` (+ ``-csv`` / ``-pdf``); each needs a row in
tests/security/test_permission_matrix.py, so adding a report means adding its three rows there.
"""

from django.urls import path

from audit import views
from audit.reports.definitions import REPORTS

urlpatterns = [path("", views.report_list_view, name="audit-report-list")]

for _slug in REPORTS:
    urlpatterns += [
        path(f"{_slug}/", views.report_view, {"slug": _slug}, name=f"audit-report-{_slug}"),
        path(f"{_slug}/csv/", views.report_download_view, {"slug": _slug, "fmt": "csv"},
             name=f"audit-report-{_slug}-csv"),
        path(f"{_slug}/pdf/", views.report_download_view, {"slug": _slug, "fmt": "pdf"},
             name=f"audit-report-{_slug}-pdf"),
    ]
