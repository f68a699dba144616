"""The local gateway: records each SMS in ``LocalSms`` instead of sending it (demo and tests).

Idempotent on the idempotency key: the same key returns the first send's provider id and
writes one row. Reusing a key for a different SMS is a bug and raises ValueError.
"""

from __future__ import annotations

import secrets
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from integrations.sms.gateway import SendResult, require_idempotency_key, require_notification
from integrations.sms.notification import NotificationSms

STATUS = "delivered"  # nothing leaves the machine, so a recorded SMS has arrived


class LocalGateway:
    def send(self, sms: NotificationSms, *, status_callback: str | None,
             idempotency_key: str, sender: str | None = None) -> SendResult:
        from integrations.models import LocalSms

        require_notification(sms)
        require_idempotency_key(idempotency_key)
        with transaction.atomic():
            row, _ = LocalSms.objects.get_or_create(
                idempotency_key=idempotency_key,
                defaults={"to": sms.to, "body": sms.body, "kind": sms.kind,
                          "provider_id": "LS" + secrets.token_hex(16), "created_at": timezone.now()},
            )
        if (row.to, row.body, row.kind) != (sms.to, sms.body, sms.kind):
            raise ValueError("idempotency_key was already used for a different SMS")
        return SendResult(provider_id=row.provider_id, status=STATUS)

    def lookup(self, provider_id: str) -> SendResult | None:
        from integrations.models import LocalSms

        row = LocalSms.objects.filter(provider_id=provider_id).first()
        return SendResult(provider_id=row.provider_id, status=STATUS) if row else None

    def reconcile(self, sms: NotificationSms, *, idempotency_key: str,
                  since: datetime) -> SendResult | None:
        from integrations.models import LocalSms

        row = LocalSms.objects.filter(idempotency_key=idempotency_key).first()
        return SendResult(provider_id=row.provider_id, status=STATUS) if row else None
