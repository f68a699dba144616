"""Django's database session store (the same table and encoding) with fewer round trips.

- The per-request read is one written-out statement on PostgreSQL (the ORM built the same
  SELECT at several times the cost of running it).
- A new session key is not looked up first: the row is inserted with ``must_create`` and the
  primary key refuses a duplicate (Django then draws another key), so the lookup only repeated
  what the insert checks anyway.
- ``cycle_key`` (sign-in, MFA completion) gives the session its new key at once, so the request
  can register it, but writes the row once, when the response saves the session, instead of
  inserting it empty and updating it a moment later.
"""

from __future__ import annotations

from django.contrib.sessions.backends.base import VALID_KEY_CHARS, CreateError
from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore
from django.db import connections, router
from django.utils import timezone
from django.utils.crypto import get_random_string


class _Row:
    __slots__ = ("session_data",)

    def __init__(self, session_data: str):
        self.session_data = session_data


class SessionReadMixin:
    """A database session store's per-request read as one written-out statement (the ORM built
    the same SELECT at several times the cost of running it). Mix in before
    ``django.contrib.sessions.backends.db.SessionStore`` or a subclass of it."""

    def _get_session_from_db(self):
        conn = connections[router.db_for_read(self.model)]
        if conn.vendor != "postgresql":
            return super()._get_session_from_db()
        with conn.cursor() as cursor:
            cursor.execute(f"SELECT session_data FROM {self.model._meta.db_table} "  # noqa: S608  # nosec B608
                           "WHERE session_key = %s AND expire_date > %s",  # table from _meta; values bound
                           [self.session_key, timezone.now()])
            row = cursor.fetchone()
        if row is None:
            self._session_key = None
            return None
        return _Row(row[0])


class SessionStore(SessionReadMixin, DatabaseSessionStore):
    _insert_pending = False

    def _get_new_session_key(self) -> str:
        return get_random_string(32, VALID_KEY_CHARS)

    def cycle_key(self) -> None:
        data = self._session
        old_key = self.session_key
        self._session_key = self._get_new_session_key()
        self._session_cache = data
        self._insert_pending = True
        self.modified = True
        if old_key:
            self.delete(old_key)

    def save(self, must_create: bool = False) -> None:
        if not self._insert_pending:
            return super().save(must_create=must_create)
        while True:
            try:
                super().save(must_create=True)
            except CreateError:  # the key drawn is taken (never seen in practice): draw another
                self._session_key = self._get_new_session_key()
                continue
            self._insert_pending = False
            return
