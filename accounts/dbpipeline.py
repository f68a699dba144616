"""Pipelined writes (PostgreSQL): a bulk writer's statements run while Python builds the next.

Normally each statement is a round trip: Python sends it, then waits while PostgreSQL runs it,
and PostgreSQL waits while Python builds the next one. Inside ``pipelined()`` the driver
(psycopg's pipeline mode) sends a statement and returns at once, so the database works on one
batch of rows while Python prepares the next, on the machine's other core. A fan-out slice's
inserts, with their foreign-key checks made immediate, are most of its database time; this is
where they overlap with Python's (``messaging.bulk``).

Rules for code inside the block:

* only the driver's own cursors (``messaging.bulk.execute_bound``, ``select_bound``,
  ``audit.services._execute_binary``): never the ORM. In pipeline mode a statement's row count
  is unknown until the next synchronisation, so Django's ``save()`` of an existing row would
  take "0 rows updated" for "not there";
* a read (a fetch) works but first waits for everything sent before it: do reads before the
  block;
* a check on what a statement did (its row count) is registered with ``after_sync`` and runs
  when the block ends, after every result has arrived;
* a failing statement raises when the block ends (or at the next read), and the transaction is
  then aborted as with any failed statement: the caller's ``atomic`` rolls it all back.

On another database (the demo's SQLite) the block does nothing and ``after_sync`` runs at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from django.db import connection
from psycopg.generators import send  # the driver's own "flush until all is sent" loop

_CHECKS = "_caretext_after_sync"  # on the connection wrapper while a block is open: the checks


@contextmanager
def pipelined() -> Iterator[None]:
    """Statements sent inside run without waiting for each other (module docstring). Nested
    blocks join the outermost."""
    if connection.vendor != "postgresql" or in_pipeline():
        yield
        return
    connection.ensure_connection()
    checks: list[Callable[[], None]] = []
    setattr(connection, _CHECKS, checks)
    try:
        with connection.connection.pipeline():
            yield
    finally:
        setattr(connection, _CHECKS, None)
    for check in checks:
        check()


def after_sync(check: Callable[[], None]) -> None:
    """Run ``check`` once every statement sent so far has its result: at the end of the open
    ``pipelined()`` block, or now when none is open."""
    checks = getattr(connection, _CHECKS, None)
    if checks is None:
        check()
    else:
        checks.append(check)


def in_pipeline() -> bool:
    return getattr(connection, _CHECKS, None) is not None


def flush() -> None:
    """Inside ``pipelined()``: push the statement just sent all the way to the server. psycopg
    hands a pipelined statement to the socket once, and what does not fit the socket's buffer
    (a thousand rows of arrays do not) waits in the driver until the next statement or the end
    of the block: the server, which only starts a statement once it has all of it, would sit
    idle while Python builds the next rows. Waiting for the socket here is short (the server
    reads as fast as the loopback carries); any results arriving meanwhile are kept for the
    pipeline. Outside a block: nothing (a plain execute has flushed already)."""
    if not in_pipeline():
        return
    raw = connection.connection
    raw.wait(send(raw.pgconn))
