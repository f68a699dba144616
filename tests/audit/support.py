"""What the chain tests share: running ``audit_verify`` and a superuser connection."""

from __future__ import annotations

from io import StringIO

import psycopg
from django.core.management import CommandError, call_command
from django.db import connection


def verify(*args) -> tuple[bool, str]:
    """(passed, what audit_verify printed)."""
    out, err = StringIO(), StringIO()
    try:
        call_command("audit_verify", *args, stdout=out, stderr=err)
        return True, out.getvalue()
    except CommandError:
        return False, err.getvalue()


def superuser(*, bypass_triggers: bool = False):
    """A superuser connection to the test database: what an attacker with DB access has
    (``bypass_triggers``: as one who also switches triggers off)."""
    name = connection.settings_dict["NAME"]
    conn = psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{name}", autocommit=True)
    if bypass_triggers:
        conn.execute("SET session_replication_role = replica")
    return conn
