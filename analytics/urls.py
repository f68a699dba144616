"""/analytics/: the owners' reminder and no-show dashboard and its CSV."""

from django.urls import path

from analytics import views

urlpatterns = [
    path("", views.dashboard_view, name="analytics-dashboard"),
    path("export.csv", views.export_csv_view, name="analytics-export-csv"),
]
