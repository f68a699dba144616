from django.urls import path

from integrations import webhooks

urlpatterns = [
    path("twilio/inbound", webhooks.twilio_inbound_view, name="integrations-twilio-inbound"),
    path("twilio/status", webhooks.twilio_status_view, name="integrations-twilio-status"),
]
