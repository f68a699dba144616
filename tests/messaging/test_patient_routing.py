"""``routing.patient_session``: the patient's session found by its cookie, its clinic's scope
entered and everything a page reads loaded in one statement (``caretext_patient_session_open``);
and the patient page's written-out queries (messages, access log) against the ORM.

What must hold: the clinic's scope is on the connection only inside the block (never after it,
never after a miss or an error: a pooled connection must not carry a tenant into the next
request), an inactive clinic's session is not found, and the objects loaded are the rows the ORM
loads."""

from __future__ import annotations

import datetime
import itertools

import pytest
from django.db import DataError, ProgrammingError, connection, transaction
from django.db.models import Q
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts import dbprepared
from accounts.tenancy import clear_database_tenant, current_tenant, tenant_scope
from audit.events import AuditEventType
from audit.services import audit_record
from messaging import links, routing, selectors, services
from messaging.models import Direction, Message, PatientSession, Thread
from messaging.selectors import _PATIENT_MESSAGE_FIELDS
from tests.factories import make_appointment, make_conversation, make_textable_patient
from tests.messaging.conftest import BIRTH_DATE

_phones = itertools.count(3000)


def _db_tenant() -> str | None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('app.tenant_id', true), current_setting('app.session_hash', true)")
        tenant, session_hash = cursor.fetchone()
    assert session_hash in ("", None)  # the hash lookup never outlives its statement
    return tenant or None


def _conversation(tenant, owner, *, messages: int = 4):
    patient = make_textable_patient(tenant=tenant, owner=owner, birth_date=BIRTH_DATE,
                                    phone=f"+1202555{next(_phones):04d}")
    return make_conversation(tenant=tenant, owner=owner, patient=patient, count=messages, out_body="See you soon.")


def _key(tenant, link) -> tuple[PatientSession, str]:
    with tenant_scope(tenant):
        return links.patient_session_start(tenant=tenant, link=link)


def test_the_session_comes_with_its_clinic_scope_and_everything_a_page_reads(tenant_a, alice):
    thread, link = _conversation(tenant_a, alice)
    with tenant_scope(tenant_a):
        appointment = make_appointment(tenant=tenant_a, patient=thread.patient, actor=alice)
        Thread.objects.filter(pk=thread.pk).update(appointment=appointment)
    session, key = _key(tenant_a, link)
    assert _db_tenant() is None
    with CaptureQueriesContext(connection) as queries, routing.patient_session(key) as found:
        assert len(queries) == 1  # the session, its scope and the rows a page reads
        assert found.pk == session.pk and found.tenant == tenant_a and found.tenant.name == "Clinic A"
        assert found.link.pk == link.pk and found.thread.pk == thread.pk and found.link.thread is found.thread
        assert found.patient is found.thread.patient and found.patient.birth_date == BIRTH_DATE  # decrypted
        assert found.thread.appointment.pk == appointment.pk
        assert found.link.expires_at == link.expires_at and found.last_seen_at == session.last_seen_at
        assert len(queries) == 1  # nothing above loaded lazily
        assert current_tenant() == tenant_a and _db_tenant() == str(tenant_a.pk)
        with tenant_scope(tenant_a):  # the same rows as the ORM's select_related
            expected = PatientSession.objects.select_related("link__thread__patient").get(pk=session.pk)
        for field in PatientSession._meta.concrete_fields:
            assert getattr(found, field.attname) == getattr(expected, field.attname), field.name
        assert found.thread.kind == expected.link.thread.kind and found.link.token_hash == expected.link.token_hash
    assert current_tenant() is None and _db_tenant() is None


def test_a_thread_without_an_appointment_loads_none(tenant_a, alice):
    _, link = _conversation(tenant_a, alice)
    _, key = _key(tenant_a, link)
    with routing.patient_session(key) as found, CaptureQueriesContext(connection) as queries:
        assert found.thread.appointment_id is None and found.thread.appointment is None
        assert len(queries) == 0


@pytest.mark.parametrize("key", ["", "A" * 43, "short", "A" * 42 + "!", None, 42])
def test_an_unknown_or_malformed_key_finds_nothing_and_leaves_no_scope(db, key):
    with routing.patient_session(key) as found:
        assert found is None
        assert current_tenant() is None and _db_tenant() is None
    assert _db_tenant() is None


def test_an_inactive_clinic_s_session_is_not_found(tenant_a, alice):
    _, link = _conversation(tenant_a, alice)
    _, key = _key(tenant_a, link)
    tenant_a.is_active = False
    tenant_a.save(update_fields=["is_active"])
    with routing.patient_session(key) as found:
        assert found is None and _db_tenant() is None


def test_an_error_inside_the_block_or_while_loading_clears_the_scope(tenant_a, alice, monkeypatch):
    _, link = _conversation(tenant_a, alice)
    _, key = _key(tenant_a, link)
    with pytest.raises(RuntimeError), routing.patient_session(key):
        raise RuntimeError("boom")
    assert current_tenant() is None and _db_tenant() is None

    def broken(row):
        assert _db_tenant() == str(tenant_a.pk)  # the statement before it entered the scope
        raise RuntimeError("lost connection")

    monkeypatch.setattr(routing, "_objects", broken)
    with pytest.raises(RuntimeError), routing.patient_session(key):
        pass
    assert current_tenant() is None and _db_tenant() is None


def test_among_many_sessions_of_one_link_and_many_links_each_key_finds_its_own(tenant_a, alice):
    # 0004 reads the session by its key and the link, thread, patient by their primary keys (0003's
    # join scanned every session of the thread's links); the rows must be each key's own.
    threads = [_conversation(tenant_a, alice, messages=1) for _ in range(3)]
    keyed = [(thread, link, *_key(tenant_a, link)) for thread, link in threads for _ in range(4)]
    for thread, link, session, key in keyed:
        with CaptureQueriesContext(connection) as queries, routing.patient_session(key) as found:
            assert found.pk == session.pk and found.key_hash == session.key_hash
            assert found.link.pk == link.pk and found.thread.pk == thread.pk and found.patient.pk == thread.patient_id
            assert len(queries) == 1
        assert _db_tenant() is None


def test_each_key_reaches_only_its_own_clinic(tenant_a, tenant_b, alice, charlie):
    _, link_a = _conversation(tenant_a, alice)
    thread_b, link_b = _conversation(tenant_b, charlie)
    _, key_b = _key(tenant_b, link_b)
    with routing.patient_session(key_b) as found:
        assert found.tenant == tenant_b and found.thread.pk == thread_b.pk
        assert _db_tenant() == str(tenant_b.pk)
        assert not Thread.objects.filter(tenant_id=tenant_a.pk).exists()  # RLS and the ORM scope: B only
    assert _db_tenant() is None


def test_inside_another_scope_it_takes_the_plain_path_and_restores_the_outer_scope(tenant_a, tenant_b, alice,
                                                                                   charlie):
    _, link_b = _conversation(tenant_b, charlie)
    _, key_b = _key(tenant_b, link_b)
    with tenant_scope(tenant_a):
        with routing.patient_session(key_b) as found:
            assert found.tenant == tenant_b and current_tenant() == tenant_b
            assert _db_tenant() == str(tenant_b.pk)
        assert current_tenant() == tenant_a and _db_tenant() == str(tenant_a.pk)
    assert _db_tenant() is None


# --- the page's written-out queries ------------------------------------------------------------------


def test_the_patient_s_messages_are_the_orm_s_notes_and_held_results_left_out(tenant_a, alice):
    thread, link = _conversation(tenant_a, alice, messages=5)
    other, _ = _conversation(tenant_a, alice, messages=2)
    session, _ = _key(tenant_a, link)
    with tenant_scope(tenant_a):
        services.note_add(tenant=tenant_a, actor=alice, thread=thread, body="internal only")
        held = services.message_send(tenant=tenant_a, actor=alice, thread=thread, body="held result")
        Message.objects.filter(pk=held.pk).update(release_at=timezone.now() + datetime.timedelta(days=1))
        released = services.message_send(tenant=tenant_a, actor=alice, thread=thread, body="released result")
        Message.objects.filter(pk=released.pk).update(release_at=timezone.now() - datetime.timedelta(minutes=1))
        now = timezone.now()
        expected = list(Message.objects.filter(thread_id=thread.pk).exclude(direction=Direction.NOTE)
                        .filter(Q(release_at__isnull=True) | Q(release_at__lte=now))
                        .only(*_PATIENT_MESSAGE_FIELDS).order_by("created_at", "id"))
        session = PatientSession.objects.select_related("thread__patient").get(pk=session.pk)
        shown = selectors.patient_thread_open(tenant=tenant_a, session=session).messages
        assert all(isinstance(m.__dict__["body"], str) for m in shown)  # opened together (open_many)
        assert [m.body for m in shown] == [m.body for m in expected]  # decrypted as the ORM's
        bodies = [m.body for m in shown]
    assert [m.pk for m in shown] == [m.pk for m in expected]
    assert "held result" not in bodies and "internal only" not in bodies and "released result" in bodies
    assert all(m.thread_id == thread.pk for m in shown) and other.pk != thread.pk
    assert [m.direction for m in shown] == [m.direction for m in expected]


def test_the_access_log_lists_staff_opens_newest_first_and_nothing_else(tenant_a, alice, bob):
    thread, link = _conversation(tenant_a, alice)
    other, _ = _conversation(tenant_a, alice)
    session, _ = _key(tenant_a, link)
    alice.full_name = "Alice Owner"
    alice.save(update_fields=["full_name"])
    with tenant_scope(tenant_a):
        selectors.thread_open(tenant=tenant_a, actor=alice, thread_id=thread.pk)
        selectors.thread_open(tenant=tenant_a, actor=bob, thread_id=thread.pk)
        selectors.thread_open(tenant=tenant_a, actor=alice, thread_id=other.pk)  # another thread
        audit_record(tenant=tenant_a, actor=alice, event_type=AuditEventType.PATIENT_VIEWED, target=thread.patient,
                     patient_id=thread.patient_id)  # another event type
        session = PatientSession.objects.select_related("thread__patient").get(pk=session.pk)
        selectors.patient_thread_open(tenant=tenant_a, session=session)  # the patient's own opening: not listed
        entries = selectors.patient_thread_open(tenant=tenant_a, session=session).access
        assert [e.who for e in entries] == [bob.full_name.strip() or "A member of the clinic's staff", "Alice Owner"]
        assert entries[0].at >= entries[1].at
        assert len(selectors.patient_thread_open(tenant=tenant_a, session=session, access_limit=1).access) == 1


# --- the function itself -----------------------------------------------------------------------------


def test_the_function_runs_with_the_caller_s_rights_and_a_pinned_search_path(db):
    with connection.cursor() as cursor:
        cursor.execute("SELECT prosecdef, proconfig FROM pg_proc WHERE proname = 'caretext_patient_session_open'")
        [(security_definer, config)] = cursor.fetchall()
    assert security_definer is False  # row-level security applies to it as to the app role
    assert "search_path=public, pg_temp" in config


def test_a_failed_statement_leaves_no_setting_on_the_connection(tenant_a, alice):
    _, link = _conversation(tenant_a, alice)
    session, key = _key(tenant_a, link)
    with pytest.raises(DataError), transaction.atomic(), connection.cursor() as cursor:
        # Fails after the function has set the settings (the division needs its result).
        cursor.execute("SELECT 1 / ((r.tenant_row).id - (r.tenant_row).id) FROM caretext_patient_session_open(%s) r",
                       [session.key_hash])
    assert _db_tenant() is None
    with connection.cursor() as cursor:  # and the same statement, succeeding, does set it
        cursor.execute("SELECT (r.tenant_row).id FROM caretext_patient_session_open(%s) r", [session.key_hash])
        assert cursor.fetchone()[0] == tenant_a.pk
    assert _db_tenant() == str(tenant_a.pk)
    clear_database_tenant()
    assert _db_tenant() is None


@pytest.mark.parametrize("digest", ["0" * 64, "not a digest", None])
def test_the_function_returns_nothing_and_sets_nothing_for_an_unknown_hash(tenant_a, alice, digest):
    _conversation(tenant_a, alice)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM caretext_patient_session_open(%s) r", [digest])
        assert cursor.fetchone()[0] == 0
    assert _db_tenant() is None


# --- the prepared statements -------------------------------------------------------------------------


def test_the_session_statement_is_prepared_once_and_only_executed_after(tenant_a, alice):
    _, link = _conversation(tenant_a, alice)
    session, key = _key(tenant_a, link)
    with routing.patient_session(key) as found:
        assert found.pk == session.pk
    with CaptureQueriesContext(connection) as queries, routing.patient_session(key) as found:
        assert found.pk == session.pk
    assert queries.captured_queries[0]["sql"].startswith("EXECUTE caretext_session_open(")
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements WHERE name = 'caretext_session_open'")
        assert cursor.fetchone()[0] == 1


def test_a_statement_dropped_by_the_server_is_prepared_again(db):
    sql = "SELECT %s::int + %s::int"
    with connection.cursor() as cursor:
        dbprepared.execute_prepared(cursor, "caretext_test_sum", sql, [1, 1])
        assert cursor.fetchone()[0] == 2
        with CaptureQueriesContext(connection) as queries, connection.cursor() as logged:
            dbprepared.execute_prepared(logged, "caretext_test_sum", sql, [40, 2])
            assert logged.fetchone()[0] == 42
        assert [q["sql"] for q in queries.captured_queries] == ["EXECUTE caretext_test_sum(40, 2)"]
        cursor.execute("DEALLOCATE caretext_test_sum")  # as a pooler's reset would
        # Inside a transaction the failed statement has aborted it: the error is the caller's ...
        with pytest.raises(ProgrammingError), transaction.atomic():
            dbprepared.execute_prepared(cursor, "caretext_test_sum", sql, [1, 2])
        # ... and the next use prepares it again.
        dbprepared.execute_prepared(cursor, "caretext_test_sum", sql, [2, 3])
        assert cursor.fetchone()[0] == 5
        cursor.execute("DEALLOCATE caretext_test_sum")
    connection.connection._caretext_prepared.discard("caretext_test_sum")


def test_several_prepared_statements_go_as_one_query_and_are_prepared_again_if_dropped(db):
    statements = [("caretext_test_a", "SELECT %s::int * 2", [21]), ("caretext_test_b", "SELECT %s::text", ["b"])]
    with connection.cursor() as cursor:
        with CaptureQueriesContext(connection) as queries, connection.cursor() as logged:
            dbprepared.execute_prepared_many(logged, statements)
            assert logged.fetchall() == [(42,)]
            logged.nextset()
            assert logged.fetchall() == [("b",)]
        assert [q["sql"] for q in queries.captured_queries] == ["EXECUTE caretext_test_a(21); EXECUTE caretext_test_b('b')"]
        cursor.execute("DEALLOCATE caretext_test_b")  # as a pooler's reset would
        with pytest.raises(ProgrammingError), transaction.atomic():  # inside a transaction: the caller's
            dbprepared.execute_prepared_many(cursor, statements)
        dbprepared.execute_prepared_many(cursor, statements)  # outside: prepared again
        assert cursor.fetchall() == [(42,)]
        cursor.nextset()
        assert cursor.fetchall() == [("b",)]
        cursor.execute("DEALLOCATE caretext_test_a; DEALLOCATE caretext_test_b")
    connection.connection._caretext_prepared.difference_update({"caretext_test_a", "caretext_test_b"})
