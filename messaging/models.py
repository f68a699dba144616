"""Threads, messages, secure links, patient sessions and the SMS outbox.

Every body and every phone number is encrypted (phi/). Tokens, session keys and one-time codes
are stored only as hashes. Rows a request must find before it knows the tenant (a link by its
token hash, a patient session by its key hash) are readable through a narrow RLS policy on the
hash column (see the migration and ``messaging.routing``).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from accounts.tenancy import TenantModel, append_heavy_tenant_fk
from phi.fields import EncryptedTextField


class ThreadStatus(models.TextChoices):
    OPEN = "open", "Open"
    CLOSED = "closed", "Closed"


class MessageKind(models.TextChoices):
    GENERAL = "general", "General"
    REMINDER = "reminder", "Appointment reminder"
    RESULT_NOTICE = "result_notice", "Result notice"
    BROADCAST = "broadcast", "Broadcast"


class Direction(models.TextChoices):
    INBOUND = "inbound", "From the patient"
    OUTBOUND = "outbound", "To the patient"
    NOTE = "note", "Internal note"


class Thread(TenantModel):
    tenant = append_heavy_tenant_fk()
    patient = models.ForeignKey("patients.Patient", on_delete=models.PROTECT, related_name="threads")
    kind = models.CharField(max_length=20, choices=MessageKind.choices, default=MessageKind.GENERAL)
    appointment = models.ForeignKey("patients.Appointment", null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="threads")
    status = models.CharField(max_length=10, choices=ThreadStatus.choices, default=ThreadStatus.OPEN)
    assigned_to = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+")
    last_activity_at = models.DateTimeField()
    last_inbound_at = models.DateTimeField(null=True, blank=True)
    # Inbound messages (and alerts) no staff member has opened yet: the shared inbox's unread count.
    staff_unread = models.PositiveIntegerField(default=0)
    urgent = models.BooleanField(default=False)  # an inbound message had urgent words
    link_locked_at = models.DateTimeField(null=True, blank=True)  # a link locked: staff are told
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta(TenantModel.Meta):
        indexes = [
            models.Index(fields=["tenant", "status", "-last_activity_at"], name="thread_inbox"),
            models.Index(fields=["tenant", "assigned_to", "-last_activity_at"], name="thread_assignee"),
        ]


class Message(TenantModel):
    tenant = append_heavy_tenant_fk()
    thread = models.ForeignKey(Thread, on_delete=models.PROTECT, related_name="messages")
    direction = models.CharField(max_length=10, choices=Direction.choices)
    kind = models.CharField(max_length=20, choices=MessageKind.choices, default=MessageKind.GENERAL)
    body = EncryptedTextField()
    sender = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                               related_name="+")
    source = models.CharField(max_length=10, default="web")  # web | api | sms | patient | system
    urgent = models.BooleanField(default=False)
    patient_read_at = models.DateTimeField(null=True, blank=True)  # outbound: the patient saw it
    # A held result notice: the patient sees it (and is texted) from this time on. None: at once.
    release_at = models.DateTimeField(null=True, blank=True)
    idempotency_key = models.CharField(max_length=100, blank=True)

    class Meta(TenantModel.Meta):
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "idempotency_key"], condition=~models.Q(idempotency_key=""),
                                    name="message_unique_idempotency_key"),
        ]
        indexes = [models.Index(fields=["tenant", "thread", "created_at"], name="message_thread_time")]


class ReplyTemplate(TenantModel):
    """A saved reply. Placeholders ({first_name}, {appointment_date}, …) are filled in the
    message body, which is shown only on the secure page (never in an SMS)."""

    name = models.CharField(max_length=80)
    body = EncryptedTextField()
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")

    class Meta(TenantModel.Meta):
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="reply_template_unique_name")]


class SecureLink(TenantModel):
    tenant = append_heavy_tenant_fk()
    thread = models.ForeignKey(Thread, on_delete=models.PROTECT, related_name="links")
    patient = models.ForeignKey("patients.Patient", on_delete=models.PROTECT, related_name="+")
    token_hash = models.CharField(max_length=64, unique=True)  # SHA-256 of the token, hex
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_reason = models.CharField(max_length=20, blank=True)  # superseded | staff | patient_opted_out
    failed_attempts = models.PositiveSmallIntegerField(default=0)
    locked_until = models.DateTimeField(null=True, blank=True)
    first_opened_at = models.DateTimeField(null=True, blank=True)
    verified_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")

    class Meta(TenantModel.Meta):
        indexes = [models.Index(fields=["tenant", "thread", "-created_at"], name="link_thread_time")]


class PatientSession(TenantModel):
    """A patient's short session on the secure page: bound to one link, thread and patient."""

    link = models.ForeignKey(SecureLink, on_delete=models.PROTECT, related_name="sessions")
    thread = models.ForeignKey(Thread, on_delete=models.PROTECT, related_name="+")
    patient = models.ForeignKey("patients.Patient", on_delete=models.PROTECT, related_name="+")
    key_hash = models.CharField(max_length=64, unique=True)
    language = models.CharField(max_length=5, default="en")
    dob_verified_at = models.DateTimeField(null=True, blank=True)
    code_verified_at = models.DateTimeField(null=True, blank=True)
    # The one-time code (step-up): an HMAC of the six digits, its expiry and its failed tries.
    code_hmac = models.CharField(max_length=64, blank=True)
    code_expires_at = models.DateTimeField(null=True, blank=True)
    code_sent_at = models.DateTimeField(null=True, blank=True)
    last_seen_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)


class SmsStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    WAITING = "waiting", "Waiting (quiet hours or frequency cap)"
    SENDING = "sending", "Sending"
    SENT = "sent", "Sent"
    DELIVERED = "delivered", "Delivered"
    UNDELIVERED = "undelivered", "Not delivered"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


OPEN_SMS_STATUSES = (SmsStatus.QUEUED, SmsStatus.WAITING, SmsStatus.SENDING)
# Forward order for provider callbacks: a status never moves to a lower rank.
SMS_STATUS_RANK = {
    SmsStatus.QUEUED: 0, SmsStatus.WAITING: 0, SmsStatus.SENDING: 1, SmsStatus.SENT: 2,
    SmsStatus.DELIVERED: 3, SmsStatus.UNDELIVERED: 3, SmsStatus.FAILED: 3, SmsStatus.CANCELLED: 3,
}


class OutboundSms(TenantModel):
    """The outbox: one row per SMS. Created in the transaction that decided to send it; a task
    claims it, records the attempt, calls the gateway and stores the result. The row is the
    truth; the broker only wakes workers."""

    tenant = append_heavy_tenant_fk()
    patient = models.ForeignKey("patients.Patient", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    message = models.ForeignKey(Message, null=True, blank=True, on_delete=models.PROTECT, related_name="sms")
    link = models.ForeignKey(SecureLink, null=True, blank=True, on_delete=models.PROTECT, related_name="sms")
    to = EncryptedTextField()  # E.164
    to_index = models.CharField(max_length=64, db_index=True)
    notification = models.CharField(max_length=20)  # link_notice | one_time_code | keyword_reply | urgent_notice
    sms_kind = models.CharField(max_length=20)  # consent.policy.SmsKind: consent, quiet hours, cap
    # What the body needs besides the tenant's label: the link token, the code, or the reply
    # kind. Encrypted, and erased when the row reaches a final state.
    payload = EncryptedTextField(null=True, blank=True)
    language = models.CharField(max_length=5, default="en")
    status = models.CharField(max_length=12, choices=SmsStatus.choices, default=SmsStatus.QUEUED)
    next_attempt_at = models.DateTimeField()
    lease_until = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    provider_id = models.CharField(max_length=64, blank=True)
    error_code = models.CharField(max_length=20, blank=True)
    error_reason = models.CharField(max_length=200, blank=True)  # staff-readable; never PHI
    sent_at = models.DateTimeField(null=True, blank=True)
    status_at = models.DateTimeField(null=True, blank=True)

    class Meta(TenantModel.Meta):
        indexes = [
            models.Index(fields=["tenant", "status", "next_attempt_at"], name="sms_due"),
            models.Index(fields=["tenant", "patient", "status"], name="sms_patient_status"),
            models.Index(fields=["tenant", "provider_id"], name="sms_provider_id"),
        ]


class InboundSms(TenantModel):
    """An SMS a patient (or an unknown number) sent to the clinic's number, once per MessageSid."""

    provider_id = models.CharField(max_length=64)
    from_number = EncryptedTextField()
    from_index = models.CharField(max_length=64)
    body = EncryptedTextField()
    patient = models.ForeignKey("patients.Patient", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    message = models.ForeignKey(Message, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    outcome = models.CharField(max_length=20)  # keyword | message | unknown_number | ignored
    urgent = models.BooleanField(default=False)
    triaged_at = models.DateTimeField(null=True, blank=True)

    class Meta(TenantModel.Meta):
        constraints = [models.UniqueConstraint(fields=["tenant", "provider_id"], name="inbound_unique_sid")]
