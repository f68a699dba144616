"""Analytics fixtures: a clock under the test's control and helpers that build reminders,
outcomes and conversations through the real services."""

from __future__ import annotations

import datetime

import pytest

from accounts.tenancy import tenant_scope
from messaging.inbound import inbound_sms_receive
from messaging.models import MessageKind, OutboundSms, SecureLink
from messaging.services import message_send
from patients.services import appointment_set_status
from tests.factories import make_appointment, make_textable_patient

UTC = datetime.UTC
# "Now" for every test: Wednesday 17 March 2027, 14:00 UTC. The two-week window is then the
# weeks starting Monday 8 and Monday 15 March 2027.
NOW = datetime.datetime(2027, 3, 17, 14, 0, tzinfo=UTC)
WEEK_1 = datetime.date(2027, 3, 8)
WEEK_2 = datetime.date(2027, 3, 15)


def at(day: int, hour: int = 14, minute: int = 0, month: int = 3) -> datetime.datetime:
    return datetime.datetime(2027, month, day, hour, minute, tzinfo=UTC)


class World:
    """Builds clinic data at chosen moments (``clock.move_to``) through the services."""

    def __init__(self, tenant, owner, clock, capture):
        self.tenant, self.owner, self.clock, self.capture = tenant, owner, clock, capture
        self._provider = 0

    def travel(self, when: datetime.datetime) -> None:
        self.clock.move_to(when, tick=False)

    def patient(self, **overrides):
        overrides.setdefault("timezone", "UTC")
        return make_textable_patient(tenant=self.tenant, owner=self.owner, **overrides)

    def appointment(self, patient, starts_at: datetime.datetime, *, location: str = "Room 1"):
        return make_appointment(tenant=self.tenant, patient=patient, actor=self.owner, starts_at=starts_at,
                                location_name=location)

    def remind(self, appointment, when: datetime.datetime):
        """A reminder for ``appointment`` sent at ``when``; its SMS is delivered (local gateway)."""
        self.travel(when)
        with tenant_scope(self.tenant), self.capture(execute=True):
            return message_send(tenant=self.tenant, actor=self.owner, patient=appointment.patient,
                                body="See you soon.", kind=MessageKind.REMINDER, appointment=appointment)

    def send(self, *, when: datetime.datetime, patient=None, thread=None, system: bool = False):
        """A staff message (or, with ``system``, one sent by a job: no sender)."""
        self.travel(when)
        with tenant_scope(self.tenant), self.capture(execute=True):
            return message_send(tenant=self.tenant, actor=None if system else self.owner, patient=patient,
                                thread=thread, body="Hello", source="system" if system else "web")

    def patient_texts(self, patient, when: datetime.datetime) -> None:
        self.travel(when)
        self._provider += 1
        with tenant_scope(self.tenant), self.capture(execute=True):
            inbound_sms_receive(tenant=self.tenant, provider_id=f"SM{self.tenant.slug}{self._provider:030d}",
                                from_number=patient.phone, body="A question about my visit")

    def mark(self, appointment, status: str) -> None:
        self.travel(NOW)
        with tenant_scope(self.tenant):
            appointment_set_status(tenant=self.tenant, actor=self.owner, appointment=appointment, status=status)

    def undelivered(self, message) -> None:
        with tenant_scope(self.tenant):
            OutboundSms.objects.filter(message=message).update(status="undelivered")

    def opened(self, message) -> None:
        with tenant_scope(self.tenant):
            SecureLink.objects.filter(thread_id=message.thread_id).update(first_opened_at=message.created_at)


@pytest.fixture
def builder(tenant_a, alice, time_machine, django_capture_on_commit_callbacks):
    time_machine.move_to(at(1, 9), tick=False)
    return World(tenant_a, alice, time_machine, django_capture_on_commit_callbacks)


@pytest.fixture
def builder_b(tenant_b, charlie, time_machine, django_capture_on_commit_callbacks):
    return World(tenant_b, charlie, time_machine, django_capture_on_commit_callbacks)
