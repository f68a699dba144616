"""The public REST API (included at /api/ by config/urls.py).

``/api/v1/patients/<id>/messages`` (sending) lives in messaging/api_urls.py, included first.
"""

from django.urls import path

from api.apis import appointments, consent, docs, messaging, patients, reminders

urlpatterns = [
    path("schema/", docs.SchemaApi.as_view(), name="api-schema"),
    path("docs/", docs.SwaggerDocsApi.as_view(), name="api-docs"),
    path("v1/patients", patients.PatientCollectionApi.as_view(), name="api-patients"),
    path("v1/patients/search", patients.PatientSearchApi.as_view(), name="api-patients-search"),
    path("v1/patients/<uuid:patient_id>", patients.PatientDetailApi.as_view(), name="api-patient"),
    path("v1/patients/<uuid:patient_id>/consent", consent.PatientConsentApi.as_view(), name="api-patient-consent"),
    path("v1/appointments", appointments.AppointmentCollectionApi.as_view(), name="api-appointments"),
    path("v1/appointments/<uuid:appointment_id>", appointments.AppointmentDetailApi.as_view(),
         name="api-appointment"),
    path("v1/threads", messaging.ThreadListApi.as_view(), name="api-threads"),
    path("v1/threads/<uuid:thread_id>", messaging.ThreadDetailApi.as_view(), name="api-thread"),
    path("v1/reminders", reminders.ReminderListApi.as_view(), name="api-reminders"),
]
