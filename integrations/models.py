from django.db import models


class LocalSms(models.Model):
    """An SMS the local gateway "sent" (demo and tests only; SMS_GATEWAY=local is refused in
    production). Global on purpose: it holds only a NotificationSms (recipient, a PHI-free body,
    kind) and the send bookkeeping, nothing tenant-scoped."""

    KINDS = [(k, k) for k in ("link_notice", "one_time_code", "keyword_reply", "urgent_notice")]

    to = models.CharField(max_length=16)
    body = models.CharField(max_length=320)
    kind = models.CharField(max_length=20, choices=KINDS)
    provider_id = models.CharField(max_length=40, unique=True)
    idempotency_key = models.CharField(max_length=100, unique=True)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["created_at", "id"]
