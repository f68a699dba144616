"""Items 1 and 2: reminder fan-out, as the beat task runs it (``reminders_send_due`` per clinic,
in one process), against a raw COPY of the same rows.

Each round seeds, through the product's services, K due reminders spread over 20 clinics (a
patient who may be texted, with consent, and a booked appointment tomorrow: its 48 h reminder is
due at once), then times the fan-out: reminder → message, thread, secure link, outbox row and
audit events, committed. Two variants per round: with the enqueue (each outbox row handed to
Celery on commit, to the real Redis broker; no worker runs) and without it (``enqueue_on_commit``
replaced by a no-op in this process).

Reference: the rows the fan-out wrote (every table that gained rows: messages, threads, links,
outbox, audit events, reminders' messages) copied with ``COPY FROM STDIN`` into empty tables of
the same definition (``LIKE … INCLUDING ALL``: same columns, defaults, indexes and constraints;
no RLS, no triggers, no FKs). Figure: reminders/s of the fan-out ÷ reminders/s of the COPY.

K is bounded (the row-by-row fan-out is slow: see the JSON line's "reminders_per_s"); the
issue's 100,000 (5,000 quick) is out of reach until the fan-out is a bulk path.
"""

from __future__ import annotations

import io
import statistics
import time

from bench import env, seed
from bench.figures import figure

TABLES = ("messaging_thread", "messaging_message", "messaging_securelink", "messaging_outboundsms",
          "audit_auditevent")
TENANTS = 20


def _tenants(log):
    from accounts.permissions import Role
    from tests.factories import make_member, make_tenant, sign_baa

    out = []
    for i in range(TENANTS):
        tenant = make_tenant(name=f"Fan-out Clinic {i}", slug=f"bench-fan-{i}")
        owner = make_member(tenant=tenant, role=Role.OWNER, email=f"owner@bench-fan-{i}.test")
        sign_baa(tenant=tenant, owner=owner)
        out.append((tenant, owner))
    log(f"  fan-out: {TENANTS} clinics")
    return out


def _seed(clinics, count: int) -> None:
    import datetime

    from django.utils import timezone

    from tests.factories import make_appointment, make_textable_patient

    starts = (timezone.now() + datetime.timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
    for i in range(count):
        tenant, owner = clinics[i % len(clinics)]
        patient = make_textable_patient(tenant=tenant, owner=owner, phone=seed._phone())
        make_appointment(tenant=tenant, patient=patient, actor=owner, starts_at=starts)


def _fan_out(clinics) -> tuple[int, float]:
    from accounts.tenancy import tenant_scope
    from reminders.services import reminders_send_due

    sent = 0
    start = time.perf_counter()
    for tenant, _ in clinics:
        with tenant_scope(tenant):
            while True:
                outcomes = reminders_send_due(tenant=tenant)
                sent += outcomes.get("sent", 0)
                if sum(outcomes.values()) == 0 or not outcomes.get("sent"):
                    break
    return sent, time.perf_counter() - start


def _copy_reference(clinics, since) -> tuple[int, float]:
    """COPY the rows written since ``since`` into empty LIKE-clones; returns (rows, seconds)."""
    buffers: dict[str, list[bytes]] = {t: [] for t in TABLES}
    with env.owner_connection() as conn:
        for tenant, _ in clinics:
            conn.execute("SELECT set_config('app.tenant_id', %s, false)", [str(tenant.pk)])
            for table in TABLES:
                column = "occurred_at" if table == "audit_auditevent" else "created_at"
                out = io.BytesIO()
                with conn.cursor().copy(f"COPY (SELECT * FROM {table} WHERE tenant_id = %s AND {column} >= %s) "
                                        f"TO STDOUT", [tenant.pk, since]) as copy:
                    for chunk in copy:
                        out.write(chunk)
                buffers[table].append(out.getvalue())
        rows = sum(b.count(b"\n") for chunks in buffers.values() for b in chunks)
        for table in TABLES:
            conn.execute(f"DROP TABLE IF EXISTS bench_copy_{table}")
            conn.execute(f"CREATE TABLE bench_copy_{table} (LIKE {table} INCLUDING ALL)")
        start = time.perf_counter()
        with conn.transaction():
            for table in TABLES:
                with conn.cursor().copy(f"COPY bench_copy_{table} FROM STDIN") as copy:
                    for chunk in buffers[table]:
                        copy.write(chunk)
        seconds = time.perf_counter() - start
        for table in TABLES:
            conn.execute(f"DROP TABLE bench_copy_{table}")
    return rows, seconds


def fan_out(rounds: int, *, per_round: int, log=print) -> list[dict]:
    from django.utils import timezone

    from messaging import outbox

    clinics = _tenants(log)
    real_enqueue = outbox.enqueue_on_commit
    with_q, without_q, copy_rates, rows_per = [], [], [], []
    for r in range(rounds):
        variants = [("enqueue", True), ("no_enqueue", False)]
        if r % 2:
            variants.reverse()
        for name, enqueue in variants:
            _seed(clinics, per_round)
            outbox.enqueue_on_commit = real_enqueue if enqueue else (lambda tenant_id, ids: None)
            since = timezone.now()
            try:
                sent, seconds = _fan_out(clinics)
            finally:
                outbox.enqueue_on_commit = real_enqueue
            rate = sent / seconds
            (with_q if enqueue else without_q).append(rate)
            if not enqueue:
                rows, copy_seconds = _copy_reference(clinics, since)
                copy_rates.append(sent / copy_seconds)
                rows_per.append(rows / max(sent, 1))
            log(f"  fan-out round {r + 1} {name}: {sent}/{per_round} reminders in {seconds:.1f} s ({rate:.1f}/s)")
    value, ref = statistics.median(without_q), statistics.median(copy_rates)
    return [
        figure("reminder_fanout", value, "reminders/s", ref,
               "raw COPY of the same rows into same-shaped tables", 0.25, True, rounds=rounds,
               reminders_per_round=per_round, tenants=TENANTS, rows_per_reminder=round(statistics.median(rows_per), 2)),
        figure("reminder_fanout_enqueue", statistics.median(with_q), "reminders/s", value,
               "the same fan-out without handing work to Celery", 0.85, True, rounds=rounds),
    ]
