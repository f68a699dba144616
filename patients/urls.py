from django.urls import path

from patients import views

urlpatterns = [
    path("", views.patient_list_view, name="patients-patient-list"),
    path("search/", views.patient_search_view, name="patients-patient-search"),
    path("new/", views.patient_create_view, name="patients-patient-create"),
    path("<uuid:patient_id>/", views.patient_detail_view, name="patients-patient-detail"),
    path("<uuid:patient_id>/edit/", views.patient_edit_view, name="patients-patient-edit"),
    path("<uuid:patient_id>/appointments/new/", views.appointment_create_view, name="patients-appointment-create"),
    path("appointments/", views.appointment_list_view, name="patients-appointment-list"),
    path("appointments/<uuid:appointment_id>/edit/", views.appointment_edit_view, name="patients-appointment-edit"),
    path("appointments/<uuid:appointment_id>/status/", views.appointment_status_view,
         name="patients-appointment-status"),
]
