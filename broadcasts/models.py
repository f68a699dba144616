"""Broadcasts: one message from the clinic to a filtered list of patients.

A ``Broadcast`` is resolved into ``BroadcastRecipient`` rows when it is created (the audience is
fixed then); the beat task sends them a slice at a time (``services.broadcast_send_slice``),
each through ``messaging.services.message_send``, so consent, quiet hours and the frequency
cap apply exactly as for any other message.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from accounts.tenancy import TenantModel
from phi.fields import EncryptedTextField


class AudienceKind(models.TextChoices):
    ALL_CONSENTED = "all_consented", "Everyone who agreed to SMS"
    APPOINTMENTS_ON_DAY = "appointments_on_day", "Patients with an appointment on a day"


class BroadcastStatus(models.TextChoices):
    SENDING = "sending", "Sending"
    CANCELLED = "cancelled", "Cancelled"
    DONE = "done", "Done"


class RecipientStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SENT = "sent", "Sent"
    SKIPPED = "skipped", "Skipped"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class Broadcast(TenantModel):
    body = EncryptedTextField()  # the clinic's own words, shown only on the secure page: treated as PHI
    # {"kind": AudienceKind, "day": "YYYY-MM-DD", "location": "...", "appointment_type": "..."}: no PHI.
    audience = models.JSONField(default=dict)
    status = models.CharField(max_length=10, choices=BroadcastStatus.choices, default=BroadcastStatus.SENDING)
    rate_per_minute = models.PositiveSmallIntegerField(default=60)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    started_at = models.DateTimeField()
    last_slice_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    cancelled_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="+")
    total = models.PositiveIntegerField(default=0)
    sent = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    idempotency_key = models.CharField(max_length=100, blank=True)  # one per rendering of the form

    class Meta(TenantModel.Meta):
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=models.Q(rate_per_minute__gte=1, rate_per_minute__lte=600),
                                   name="broadcast_rate_bounds"),
            models.UniqueConstraint(fields=["tenant", "idempotency_key"], condition=~models.Q(idempotency_key=""),
                                    name="broadcast_unique_idempotency_key"),
        ]
        indexes = [models.Index(fields=["tenant", "status"], name="broadcast_status")]


class BroadcastRecipient(TenantModel):
    broadcast = models.ForeignKey(Broadcast, on_delete=models.PROTECT, related_name="recipients")
    patient = models.ForeignKey("patients.Patient", on_delete=models.PROTECT, related_name="+")
    status = models.CharField(max_length=10, choices=RecipientStatus.choices, default=RecipientStatus.PENDING)
    # A reason code (consent.selectors: "revoked", "never_granted", …) or a short staff-readable
    # sentence for failures; never PHI.
    reason = models.CharField(max_length=200, blank=True)
    message = models.ForeignKey("messaging.Message", null=True, blank=True, on_delete=models.PROTECT,
                                related_name="+")
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta(TenantModel.Meta):
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "broadcast", "patient"], name="broadcast_recipient_unique"),
        ]
        indexes = [models.Index(fields=["tenant", "broadcast", "status"], name="broadcast_recipient_status")]
