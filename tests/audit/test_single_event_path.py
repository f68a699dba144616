"""The single-event write on PostgreSQL: one statement, with no transaction of its own when none is
open; ``audit_record_in_statement`` for an action and its event in one statement."""

import datetime
import uuid

import pytest
from django.db import DataError, connection, transaction
from django.test.utils import CaptureQueriesContext

from accounts.tenancy import tenant_scope
from audit.events import AuditEventType
from audit.models import AuditEvent
from audit.services import (
    PATIENT_ACTOR,
    audit_record,
    audit_record_in_statement,
    audit_record_with_reads,
)
from messaging.models import PatientSession
from tests.audit.support import verify
from tests.factories import make_tenant

_ANSWERED = ("UPDATE messaging_patientsession SET dob_verified_at = %s, updated_at = %s WHERE id = %s AND tenant_id = %s",)


def _sql(queries) -> list[str]:
    return [q["sql"] for q in queries.captured_queries]


def _clinic_with_a_patient_session(slug: str):
    """A committed clinic and a patient session on a link to one of its threads."""
    from accounts.permissions import Role
    from messaging import links
    from tests.factories import make_conversation, make_member, make_textable_patient

    tenant = make_tenant(slug=slug)
    owner = make_member(tenant=tenant, role=Role.OWNER)
    patient = make_textable_patient(tenant=tenant, owner=owner, phone="+12025550177")
    _, link = make_conversation(tenant=tenant, owner=owner, patient=patient, count=1, out_body="Your results are in.")
    with tenant_scope(tenant):
        session, _ = links.patient_session_start(tenant=tenant, link=link)
    return tenant, session


def test_an_event_outside_a_transaction_is_one_insert_that_commits_and_is_sealed(committed_db):
    tenant = make_tenant(slug="single-event")
    with tenant_scope(tenant), CaptureQueriesContext(connection) as queries:
        event = audit_record(tenant=tenant, actor=None, event_type=AuditEventType.MESSAGE_SENT, details={"count": 1})
    statements = _sql(queries)
    assert not [s for s in statements if s in ("BEGIN", "COMMIT")]  # no transaction around one statement
    assert len([s for s in statements if s.startswith("EXECUTE caretext_audit_insert_one(")]) == 1
    with tenant_scope(tenant):
        stored = AuditEvent.objects.get(pk=event.pk)
    assert stored.seq is not None and stored.details == {"count": 1}  # committed, then linked (tests: at once)
    assert verify("--tenant", "single-event")[0]


def test_an_event_inside_a_transaction_rolls_back_with_it(tenant_a):
    with tenant_scope(tenant_a):
        before = AuditEvent.objects.count()
        with pytest.raises(RuntimeError), transaction.atomic():
            audit_record(tenant=tenant_a, actor=None, event_type=AuditEventType.MESSAGE_SENT, details={"count": 1})
            raise RuntimeError("the action failed after its event")
        assert AuditEvent.objects.count() == before


def test_the_prepared_insert_stores_every_column_as_given(tenant_a, alice):
    patient_id = uuid.uuid4()
    with tenant_scope(tenant_a):
        event = audit_record(tenant=tenant_a, actor=alice, event_type=AuditEventType.PATIENT_VIEWED, target=alice,
                             patient_id=patient_id, actor_label="front desk", details={"count": 2, "kind": "x"})
        stored = AuditEvent.objects.get(pk=event.pk)
    assert (stored.actor_type, stored.actor_user_id, stored.actor_label) == ("user", alice.pk, "front desk")
    assert (stored.object_type, stored.object_id, stored.patient_id) == ("accounts.User", str(alice.pk), patient_id)
    assert stored.occurred_at == event.occurred_at and stored.details == {"count": 2, "kind": "x"}
    assert stored.event_type == int(AuditEventType.PATIENT_VIEWED)
    assert verify("--tenant", tenant_a.slug)[0]


def test_the_action_and_its_event_are_one_statement(committed_db):
    tenant, session = _clinic_with_a_patient_session("one-statement")
    with tenant_scope(tenant):
        now = datetime.datetime.now(datetime.UTC)
        with CaptureQueriesContext(connection) as queries:
            event = audit_record_in_statement(name="caretext_test_answered", sql=_ANSWERED,
                                              params=[now, now, session.pk, tenant.pk], tenant=tenant,
                                              actor=PATIENT_ACTOR, event_type=AuditEventType.LINK_VERIFIED,
                                              target=session.link, patient_id=session.patient_id,
                                              details={"step": "birth_date"})
        assert PatientSession.objects.get(pk=session.pk).dob_verified_at == now
        stored = AuditEvent.objects.get(pk=event.pk)
    writes = [s for s in _sql(queries) if not s.startswith("SELECT")]  # the rest is the sealing's
    assert len(writes) == 1 and writes[0].startswith("EXECUTE caretext_test_answered(")
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements WHERE name = 'caretext_test_answered'")
        prepared = cursor.fetchone()[0]
    assert prepared.startswith("PREPARE caretext_test_answered AS WITH action_0 AS (UPDATE messaging_patientsession")
    assert "INSERT INTO audit_auditevent" in prepared
    assert (stored.actor_type, stored.patient_id, stored.details) == ("patient", session.patient_id,
                                                                     {"step": "birth_date"})
    assert stored.seq is not None
    assert verify("--tenant", tenant.slug)[0]


def test_an_event_that_cannot_be_written_leaves_the_action_undone(committed_db):
    tenant, session = _clinic_with_a_patient_session("statement-fails")
    with tenant_scope(tenant):
        now = datetime.datetime.now(datetime.UTC)
        before = AuditEvent.objects.count()
        with pytest.raises(DataError):  # a patient id the database refuses: the whole statement fails
            audit_record_in_statement(name="caretext_test_answered", sql=_ANSWERED,
                                      params=[now, now, session.pk, tenant.pk], tenant=tenant, actor=PATIENT_ACTOR,
                                      event_type=AuditEventType.LINK_VERIFIED, patient_id="not-a-uuid")
        assert PatientSession.objects.get(pk=session.pk).dob_verified_at is None
        assert AuditEvent.objects.count() == before


def test_audit_record_in_statement_is_for_a_clinics_chain_only():
    with pytest.raises(ValueError):
        audit_record_in_statement(name="caretext_test_none", sql=("UPDATE accounts_tenant SET name = name WHERE id = %s",),
                                  params=[0], tenant=None, actor=None, event_type=AuditEventType.MESSAGE_SENT)


# --- audit_record_with_reads: a PHI read and its event in one query ------------------------------------------

_READ_SESSION = ("caretext_test_read_session", "SELECT id, patient_id FROM messaging_patientsession WHERE id = %s", )
_READ_TWO = ("caretext_test_read_two", "SELECT %s::int UNION ALL SELECT %s::int ORDER BY 1")


def test_the_reads_and_their_event_are_one_query(committed_db):
    tenant, session = _clinic_with_a_patient_session("reads-one-query")
    with tenant_scope(tenant):
        with CaptureQueriesContext(connection) as queries:
            event, (first, second) = audit_record_with_reads(
                reads=[(*_READ_SESSION, [session.pk]), (*_READ_TWO, [7, 3])], tenant=tenant, actor=PATIENT_ACTOR,
                event_type=AuditEventType.THREAD_OPENED, target=session.thread, patient_id=session.patient_id,
                details={"thread_id": str(session.thread_id), "source": "patient"})
        stored = AuditEvent.objects.get(pk=event.pk)
    assert first == [(session.pk, session.patient_id)] and second == [(3,), (7,)]  # each read's rows, in order
    reads = [s for s in _sql(queries) if "caretext_test_read" in s]
    assert len(reads) == 1 and reads[0].startswith("EXECUTE caretext_test_read_session(")  # one query ...
    assert reads[0].endswith("; EXECUTE caretext_test_read_two(7, 3)")  # ... of both statements
    assert not [s for s in _sql(queries) if s in ("BEGIN", "COMMIT")]
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements WHERE name = 'caretext_test_read_session'")
        prepared = cursor.fetchone()[0]
    assert prepared.startswith("PREPARE caretext_test_read_session AS WITH audit_event AS (INSERT INTO audit_auditevent")
    assert (stored.actor_type, stored.patient_id, stored.object_id) == ("patient", session.patient_id,
                                                                       str(session.thread_id))
    assert stored.seq is not None  # committed on its own, then linked
    assert verify("--tenant", tenant.slug)[0]


def test_a_read_that_fails_leaves_no_event_and_an_event_that_fails_returns_no_rows(committed_db):
    tenant, session = _clinic_with_a_patient_session("reads-fail")
    with tenant_scope(tenant):
        before = AuditEvent.objects.count()
        with pytest.raises(DataError):  # the second read fails: the event with it (one implicit transaction)
            audit_record_with_reads(reads=[(*_READ_SESSION, [session.pk]),
                                           ("caretext_test_read_fails", "SELECT 1 / (%s::int - 1)", [1])],
                                    tenant=tenant, actor=PATIENT_ACTOR, event_type=AuditEventType.THREAD_OPENED,
                                    patient_id=session.patient_id)
        assert AuditEvent.objects.count() == before
        with pytest.raises(DataError):  # the event cannot be written: nothing is read
            audit_record_with_reads(reads=[(*_READ_SESSION, [session.pk])], tenant=tenant, actor=PATIENT_ACTOR,
                                    event_type=AuditEventType.THREAD_OPENED, patient_id="not-a-uuid")
        assert AuditEvent.objects.count() == before


def test_audit_record_with_reads_is_for_a_clinics_chain_only():
    with pytest.raises(ValueError):
        audit_record_with_reads(reads=[(*_READ_TWO, [1, 2])], tenant=None, actor=None,
                                event_type=AuditEventType.THREAD_OPENED)
