"""Appointment reminders: one policy per clinic and one row per appointment and offset.

A reminder row holds no PHI: ids, times, a status and a staff-readable reason. The text the
patient reads is rendered from the policy's template when it is sent and stored only as the
(encrypted) message body, shown on the secure page after verification.
"""

from django.db import models

from accounts.tenancy import TenantModel
from phi.fields import EncryptedTextField

PLACEHOLDERS = ("first_name", "appointment_date", "appointment_time", "provider", "location", "instructions")

DEFAULT_TEMPLATE_EN = (
    "Hi {first_name}, this is a reminder of your appointment on {appointment_date} at {appointment_time} "
    "with {provider} at {location}.\n\n{instructions}\n\n"
    "Please confirm below, or cancel or ask to reschedule if you cannot come."
)
DEFAULT_TEMPLATE_ES = (
    "Hola {first_name}, le recordamos su cita el {appointment_date} a las {appointment_time} "
    "con {provider} en {location}.\n\n{instructions}\n\n"
    "Por favor confirme abajo, o cancele o pida otra fecha si no puede venir."
)


class ReminderPolicy(TenantModel):
    """The clinic's reminder settings (one row, created with these defaults on first use)."""

    enabled = models.BooleanField(default=True)
    appointment_types = models.JSONField(default=list, blank=True)  # empty: every type
    first_offset_minutes = models.PositiveIntegerField(default=48 * 60)
    second_offset_minutes = models.PositiveIntegerField(null=True, blank=True)
    template_en = EncryptedTextField()
    template_es = EncryptedTextField()
    follow_up_enabled = models.BooleanField(default=True)

    class Meta(TenantModel.Meta):
        constraints = [models.UniqueConstraint(fields=["tenant"], name="reminder_policy_one_per_tenant")]

    @property
    def offsets(self) -> list[int]:
        return [m for m in (self.first_offset_minutes, self.second_offset_minutes) if m]


class ReminderStatus(models.TextChoices):
    SCHEDULED = "scheduled", "Scheduled"
    SENT = "sent", "Sent"
    SKIPPED = "skipped", "Skipped"
    CANCELLED = "cancelled", "Cancelled"


class Reminder(TenantModel):
    appointment = models.ForeignKey("patients.Appointment", on_delete=models.CASCADE, related_name="reminders")
    offset_minutes = models.PositiveIntegerField()
    due_at = models.DateTimeField()
    # The appointment time this reminder is for: a sent reminder is sent again only when the
    # appointment moves by more than an hour from it (services.RESEND_AFTER_MOVE).
    starts_at = models.DateTimeField()
    status = models.CharField(max_length=10, choices=ReminderStatus.choices, default=ReminderStatus.SCHEDULED)
    reason = models.CharField(max_length=300, blank=True)  # staff-readable, never PHI
    message = models.ForeignKey("messaging.Message", null=True, blank=True, on_delete=models.SET_NULL,
                                related_name="+")
    sent_at = models.DateTimeField(null=True, blank=True)
    follow_up_sent_at = models.DateTimeField(null=True, blank=True)
    generation = models.PositiveSmallIntegerField(default=0)  # bumped when re-sent for a moved appointment

    class Meta(TenantModel.Meta):
        constraints = [models.UniqueConstraint(fields=["tenant", "appointment", "offset_minutes"],
                                               name="reminder_unique_appointment_offset")]
        indexes = [models.Index(fields=["tenant", "status", "due_at"], name="reminder_due")]

    @property
    def idempotency_key(self) -> str:
        return f"reminder:{self.pk}" if not self.generation else f"reminder:{self.pk}:{self.generation}"
