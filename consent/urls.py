"""/consent/…: a patient's consent page, recording and CSV; the clinic's BAA.

Each URL name needs a row in tests/security/test_permission_matrix.py and
tests/audit/test_coverage.py.
"""

from django.urls import path

from consent import views

urlpatterns = [
    path("patients/<uuid:patient_id>/", views.consent_patient_view, name="consent-patient"),
    path("patients/<uuid:patient_id>/record/", views.consent_record_view, name="consent-patient-record"),
    path("patients/<uuid:patient_id>/history.csv", views.consent_history_csv_view,
         name="consent-patient-history-csv"),
    path("baa/", views.baa_view, name="consent-baa"),
    path("baa/sign/", views.baa_sign_view, name="consent-baa-sign"),
]
