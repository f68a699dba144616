"""Webhooks to the clinic's own systems: the endpoints an owner registered and one outbox row
per (event, endpoint).

The endpoint's secret and every payload (a FHIR resource about a patient) are encrypted (phi/).
A payload is erased once its delivery is final: nothing left to resend, nothing left to leak.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from accounts.tenancy import TenantModel
from audit.registry import register_field_history
from phi.fields import EncryptedTextField


class EventKind(models.TextChoices):
    APPOINTMENT_RESPONSE = "appointment.response", "Appointment answers (confirm, cancel, reschedule)"
    MESSAGE_RECEIVED = "message.received", "Messages from patients"


class WebhookEndpoint(TenantModel):
    url = models.CharField(max_length=500)  # https (http only to loopback in dev and tests)
    secret = EncryptedTextField()  # HMAC key; shown once, on creation
    events = models.JSONField(default=list)  # EventKind values
    is_active = models.BooleanField(default=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    deactivated_at = models.DateTimeField(null=True, blank=True)

    class Meta(TenantModel.Meta):
        indexes = [models.Index(fields=["tenant", "is_active"], name="webhook_endpoint_active")]


class DeliveryStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    SENDING = "sending", "Sending"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


FINAL_DELIVERY_STATUSES = frozenset({DeliveryStatus.DELIVERED, DeliveryStatus.FAILED, DeliveryStatus.CANCELLED})


class WebhookDelivery(TenantModel):
    """One event for one endpoint. ``event_id`` is the same on every attempt (and for every
    endpoint of one event): receivers dedupe on it."""

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.PROTECT, related_name="deliveries")
    event_id = models.UUIDField()
    kind = models.CharField(max_length=40, choices=EventKind.choices)
    # Whose data the payload carries: delivery outcomes are audited against the patient (a
    # disclosure to the clinic's system belongs in that patient's accounting of disclosures).
    patient_id = models.UUIDField(null=True, blank=True)
    payload = EncryptedTextField(null=True, blank=True)  # the JSON body (PHI); erased when final
    status = models.CharField(max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.QUEUED)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    lease_until = models.DateTimeField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.CharField(max_length=200, blank=True)  # "HTTP 503", "timeout" …; never PHI
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta(TenantModel.Meta):
        constraints = [
            models.UniqueConstraint(fields=["tenant", "endpoint", "event_id"], name="webhook_delivery_unique_event"),
        ]
        indexes = [
            models.Index(fields=["tenant", "status", "next_attempt_at"], name="webhook_delivery_due"),
            models.Index(fields=["tenant", "endpoint", "created_at"], name="webhook_delivery_endpoint"),
        ]


register_field_history(WebhookEndpoint)
