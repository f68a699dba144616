from django.urls import path

from messaging import apis

urlpatterns = [
    path("patients/<uuid:patient_id>/messages", apis.MessageSendApi.as_view(), name="api-messaging-send"),
]
