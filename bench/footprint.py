"""Storage per row, read off the bench database after the other workloads wrote into it: the
figures docs/scaling.md does its arithmetic with. Not a ratio against a reference (no target):
each line's ``value`` is bytes per row of one table — heap, TOAST and indexes, as
``pg_total_relation_size`` counts them — over the rows the table holds at the end of the run.

Run it last (``--only fanout,footprint`` or the full run): the fan-out fills the reminder tables.
"""

from __future__ import annotations

from bench import env

TABLES = {
    "patients_patient": "patient",
    "patients_appointment": "appointment",
    "reminders_reminder": "reminder row",
    "messaging_thread": "conversation",
    "messaging_message": "message",
    "messaging_securelink": "secure link",
    "messaging_outboundsms": "outbox row (SMS)",
    "audit_auditevent": "audit event",
    "consent_consentevent": "consent ledger entry",
}


def run(*, rounds, quick, world, logdir, log) -> list[dict]:
    import psycopg

    out = []
    # As the admin (superuser): tenant tables force RLS even on their owner, and this counts all clinics.
    with psycopg.connect(env.ADMIN_URL.rsplit("/", 1)[0] + f"/{env.DATABASE}", autocommit=True) as conn:
        for table, what in TABLES.items():
            rows, size = conn.execute(f"SELECT count(*), pg_total_relation_size('{table}') FROM {table}").fetchone()  # nosec B608  # fixed table names
            if not rows:
                continue
            out.append({"name": f"bytes_per_row_{table}", "value": round(size / rows), "unit": "bytes",
                        "reference": "", "reference_value": None, "ratio": None, "target": None,
                        "higher_is_better": False, "rows": rows, "what": what})
            log(f"  {table}: {rows} rows, {size / rows:.0f} bytes per row")
    return out
