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


def test_a_slice_checks_foreign_keys_at_each_statement(committed_db, tenant_a, patient, monkeypatch):
    """Immediate, not at the commit: so the checks run inside the pipelined inserts, while
    Python builds the next rows (``reminders.services._slice_start``)."""
    import uuid

    from django.db import IntegrityError, transaction

    real_send_many, seen = bulk.messages_send_many, {}

    def send_many(**kwargs):
        result = real_send_many(**kwargs)
        try:
            with transaction.atomic(), connection.cursor() as cursor:  # a savepoint: the slice goes on
                cursor.execute("UPDATE reminders_reminder SET message_id = %s WHERE tenant_id = %s",
                               [uuid.uuid4(), tenant_a.pk])
        except IntegrityError:
            seen["raised"] = "at the statement"
        return result

    monkeypatch.setattr(bulk, "messages_send_many", send_many)
    with tenant_scope(tenant_a):
        book(tenant_a, patient, hours=30)
        assert services.reminders_send_due(tenant=tenant_a) == {"sent": 1}
    assert seen == {"raised": "at the statement"}


def test_a_slice_reads_first_then_pipelines_its_writes(committed_db, tenant_a, patient, monkeypatch):
    """A read inside the pipeline would wait for every write before it: all of a slice's reads
    come first, and every write of messages_send_many (and the reminders' marking) is sent
    pipelined."""
    from accounts import dbpipeline

    calls = []
    real_select, real_execute = bulk.select_bound, bulk.execute_bound
    monkeypatch.setattr(bulk, "select_bound", lambda sql, params: (
        calls.append(("read", sql.split()[0], dbpipeline.in_pipeline())), real_select(sql, params))[1])
    monkeypatch.setattr(bulk, "execute_bound", lambda sql, params: (
        calls.append(("write", sql.split()[0], dbpipeline.in_pipeline())), real_execute(sql, params))[1])
    with tenant_scope(tenant_a):
        book(tenant_a, patient, hours=30)
        assert services.reminders_send_due(tenant=tenant_a) == {"sent": 1}
    writes = [c for c in calls if c[0] == "write"]
    # threads, messages, links, outbox rows, the reminders marked sent (the audit events go
    # through audit's own binary insert, pipelined the same way)
    assert [w[1] for w in writes] == ["INSERT", "INSERT", "INSERT", "INSERT", "UPDATE"]
    assert all(w[2] for w in writes)
    assert not any(c[2] for c in calls if c[0] == "read")
    first = calls.index(writes[0])
    assert first > 0 and all(c[0] == "write" for c in calls[first:first + len(writes)])  # no read between


def test_a_statement_failing_in_the_pipeline_rolls_the_whole_slice_back(committed_db, tenant_a, patient, monkeypatch):
    """The error surfaces when the pipeline ends, after later statements were sent: the slice's
    transaction is aborted and nothing of it stays (the reminder stays due for the next run)."""
    from audit.events import AuditEventType
    from audit.models import AuditEvent
    from messaging.models import Message, OutboundSms, SecureLink, Thread

    real_outbox = bulk._outbox

    def outbox_then_fail(*args):
        queued = real_outbox(*args)
        bulk.execute_bound("SELECT 1 / (%s - 1)", [1])  # division by zero, raised at the end of the block
        return queued

    monkeypatch.setattr(bulk, "_outbox", outbox_then_fail)
    with tenant_scope(tenant_a):
        appointment = book(tenant_a, patient, hours=30)
        assert services.reminders_send_due(tenant=tenant_a) == {"error": 1}
        assert Reminder.objects.get(appointment=appointment).status == ReminderStatus.SCHEDULED
        assert not Thread.objects.exists() and not Message.objects.exists() and not SecureLink.objects.exists()
        assert not OutboundSms.objects.exists()
        assert not AuditEvent.objects.filter(event_type__in=[AuditEventType.MESSAGE_SENT,
                                                             AuditEventType.LINK_CREATED]).exists()
        monkeypatch.setattr(bulk, "_outbox", real_outbox)
        assert services.reminders_send_due(tenant=tenant_a) == {"sent": 1}  # the next run sends it
    assert len(sent_sms()) == 1
