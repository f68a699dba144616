"""Included at /api/v1/fhir/ by config/urls.py. ``Appointment`` is routed before the generic
``<resource_type>`` pattern: its one view exports (GET) and upserts (POST/PUT)."""

from django.urls import path

from integrations.fhir import apis

urlpatterns = [
    path("", apis.FhirBundleApi.as_view(), name="fhir-bundle"),
    path("Communication", apis.FhirCommunicationExportApi.as_view(), name="fhir-communication"),
    path("Appointment", apis.FhirAppointmentApi.as_view(), name="fhir-appointment-export"),
    path("<str:resource_type>", apis.FhirResourceApi.as_view(), name="fhir-resource"),
]
