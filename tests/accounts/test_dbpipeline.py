"""``accounts.dbpipeline``: statements sent inside ``pipelined()`` run without waiting for each
other, a check registered with ``after_sync`` sees their results, a failing statement fails the
block and its transaction, and ``flush`` puts a large statement on the server at once."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from django.db import connection, transaction

from accounts.dbpipeline import after_sync, flush, in_pipeline, pipelined
from tests.audit.support import superuser

pytestmark = pytest.mark.django_db


def _send(sql: str, params=()):
    cursor = psycopg.Cursor(connection.connection)
    cursor.execute(sql, params)
    flush()
    return cursor


def test_checks_wait_for_the_results_and_run_at_the_end_of_the_block():
    seen = []
    with transaction.atomic(), pipelined():
        assert in_pipeline()
        cursor = _send("SELECT * FROM generate_series(1, 3)")
        after_sync(lambda: seen.append(("check", cursor.rowcount)))
        seen.append(("inside", cursor.rowcount))  # not known yet: nothing waited for it
        with pipelined():  # a nested block joins the outer one
            assert in_pipeline()
        after_sync(lambda: seen.append(("second", True)))
    assert not in_pipeline()
    assert seen == [("inside", -1), ("check", 3), ("second", True)]


def test_outside_a_block_a_check_runs_at_once():
    seen = []
    after_sync(lambda: seen.append(1))
    assert seen == [1]
    flush()  # nothing to do


def test_a_failing_statement_fails_the_block_and_nothing_before_it_stays():
    with connection.cursor() as c:
        c.execute("CREATE TEMPORARY TABLE pipe_probe (n int PRIMARY KEY)")
    ran = []
    with pytest.raises(psycopg.errors.UniqueViolation):
        with transaction.atomic(), pipelined():
            _send("INSERT INTO pipe_probe VALUES (1)")
            _send("INSERT INTO pipe_probe VALUES (1)")  # raises when the block ends, not here
            ran.append("after the failing statement")
            after_sync(lambda: ran.append("check"))  # never runs: the block failed
    assert ran == ["after the failing statement"]
    with connection.cursor() as c:
        c.execute("SELECT count(*) FROM pipe_probe")
        assert c.fetchone()[0] == 0


def test_flush_hands_a_large_statement_to_the_server_before_the_block_ends():
    """A statement sent while the server is busy with the previous one: the server is not
    reading, the socket's buffers fill, and psycopg keeps the rest (MBs of arrays) in its own
    buffer until the next statement or the end of the block. ``flush`` pushes it all out, so the
    server starts on it as soon as the previous one is done, while Python goes on."""
    connection.ensure_connection()
    pid = connection.connection.info.backend_pid
    blob = b"x" * (32 << 20)
    started = threading.Event()

    def watch():
        with superuser() as conn:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not started.is_set():
                # The lock is taken when the statement runs (not when its text arrives: the
                # server shows the text as active before it has the parameters).
                if conn.execute("SELECT 1 FROM pg_locks WHERE pid = %s AND locktype = 'advisory' AND objid = 4242",
                                [pid]).fetchone():
                    started.set()
                time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    with transaction.atomic(), pipelined():
        watcher.start()
        _send("SELECT pg_sleep(0.3)")  # keeps the server from reading for a while
        _send("SELECT pg_advisory_xact_lock(4242), length(%b::bytea)", [blob])
        watcher.join(5)  # while the block is still open
        running_inside = started.is_set()
    assert running_inside
