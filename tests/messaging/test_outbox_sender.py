"""The outbox sends from the clinic's own number or Messaging Service when it has one."""

from __future__ import annotations

import pytest

from accounts.models import Tenant
from accounts.tenancy import tenant_scope
from integrations.sms.faulty import FaultyGateway
from messaging import services
from messaging.models import OutboundSms
from messaging.outbox import sms_send_one


class RecordingGateway(FaultyGateway):
    def __init__(self):
        super().__init__()
        self.senders = []

    def send(self, sms, *, status_callback, idempotency_key, sender=None):
        self.senders.append(sender)
        return super().send(sms, status_callback=status_callback, idempotency_key=idempotency_key)


@pytest.mark.parametrize("fields,expected", [
    ({}, None),
    ({"sms_number": "+12025550100"}, "+12025550100"),
    ({"sms_number": "+12025550100", "twilio_messaging_service_sid": "MG" + "3" * 32}, "MG" + "3" * 32),
])
def test_sender_is_the_clinics_own(tenant_a, alice, patient, fields, expected):
    Tenant.objects.filter(pk=tenant_a.pk).update(**fields)
    tenant_a.refresh_from_db()
    gateway = RecordingGateway()
    with tenant_scope(tenant_a):
        services.message_send(tenant=tenant_a, actor=alice, patient=patient, body="Hello")
        row = OutboundSms.objects.get()
        assert sms_send_one(tenant=tenant_a, sms_id=row.pk, gateway=gateway) == "sent"
    assert gateway.senders == [expected]
