"""A fan-out slice commits without waiting for its WAL flush (``synchronous_commit = off`` for
that transaction only); the outbox's send claim, which every SMS passes before the gateway,
still commits synchronously, so it makes the slice durable before anything leaves."""

from __future__ import annotations

from django.db import connection

from accounts.tenancy import tenant_scope
from messaging import bulk, outbox
from reminders import services
from reminders.models import Reminder, ReminderStatus
from tests.messaging.conftest import sent_sms
from tests.reminders.conftest import book


def _setting() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        return cursor.fetchone()[0]


def test_slice_commits_without_flush_and_the_send_claim_with_it(committed_db, tenant_a, patient, monkeypatch):
    seen = {}
    real_send_many, real_claim = bulk.messages_send_many, outbox._claim

    def send_many(**kwargs):
        seen["slice"] = _setting()
        return real_send_many(**kwargs)

    def claim(tenant, sms_id):
        seen["claim"] = _setting()
        return real_claim(tenant, sms_id)

    monkeypatch.setattr(bulk, "messages_send_many", send_many)
    monkeypatch.setattr(outbox, "_claim", claim)
    with tenant_scope(tenant_a):
        appointment = book(tenant_a, patient, hours=30)  # due at once
        assert services.reminders_send_due(tenant=tenant_a) == {"sent": 1}  # eager Celery: sent on commit
        assert _setting() == "on"  # for that transaction only: the session is back to synchronous
        assert Reminder.objects.get(appointment=appointment).status == ReminderStatus.SENT
        assert len(sent_sms()) == 1
    assert seen == {"slice": "off", "claim": "on"}


def test_each_slice_plans_its_foreign_key_checks_afresh(committed_db, tenant_a, patient):
    """A connection keeps its foreign-key checks' plans until statistics change; each slice
    discards them first, so plans made while a table was small don't outlive its growth."""
    from django.test.utils import CaptureQueriesContext

    with tenant_scope(tenant_a):
        book(tenant_a, patient, hours=30)
        with CaptureQueriesContext(connection) as queries:
            assert services.reminders_send_due(tenant=tenant_a) == {"sent": 1}
    discards = [q["sql"] for q in queries.captured_queries if "DISCARD PLANS" in q["sql"]]
    assert len(discards) == 2  # the slice that sent, and the one that found nothing left
