"""Items 1 and 2: reminder fan-out, as the beat task runs it (``reminders_send_due`` per clinic,
in one process), against a raw COPY of the same rows.

Each run seeds N due reminders spread evenly over 20 clinics (see ``run`` for N and the
rounds): a patient who may be texted (consent granted, the clinic's BAA
signed, a daytime zone), a booked appointment tomorrow and its 48-hour reminder, due at once.
The seed is bulk-inserted (``seed_due``), not written through the services one row at a time,
but row for row it is what ``patient_create``, ``consent_grant``, ``appointment_create`` and
``reminders_schedule_for`` store (the same encrypted fields and blind indexes, computed by the
product's own helpers). The seeding's audit events are left out: the fan-out never reads them.

Then it times the fan-out: reminder → message, thread, secure link, outbox row and audit events,
committed. Two variants: with the enqueue (outbox ids handed to Celery on commit, to the real
Redis broker, in batches; no worker runs) and without it (``enqueue_on_commit`` replaced by a
no-op in this process).

A third figure, ``reminder_fanout_per_clinic_tasks``, measures the product's own path instead:
the beat task hands each clinic to the worker pool as its own task, and a prefork worker of 2
processes (docker-compose's ``worker``) runs them, enqueue included. It uses both cores, so it is
kept apart from ``reminder_fanout`` (one stream against one COPY) and says ``processes: 2``.

Reference: the rows the fan-out wrote (messages, threads, links, outbox, audit events) copied
with ``COPY FROM STDIN`` into empty tables of the same definition (``LIKE … INCLUDING ALL``:
same columns, defaults, indexes and constraints; no RLS, no triggers, no FKs). Figure:
reminders/s of the fan-out ÷ reminders/s of the COPY.
"""

from __future__ import annotations

import datetime
import io
import statistics
import time

from bench import env
from bench.figures import figure

TABLES = ("messaging_thread", "messaging_message", "messaging_securelink", "messaging_outboundsms",
          "audit_auditevent")
TENANTS = 20
FULL, QUICK = 100_000, 5_000
SEED_BATCH = 2_000  # rows of each table per seeding transaction
DISCLOSURE = "sms-2026-01"


def clinics(prefix: str, log, count: int = TENANTS) -> list:
    """``count`` clinics with an owner and a signed BAA, through the product's services."""
    from accounts.permissions import Role
    from tests.factories import make_member, make_tenant, sign_baa

    out = []
    for i in range(count):
        tenant = make_tenant(name=f"Fan-out Clinic {prefix}{i}", slug=f"bench-{prefix}{i}")
        owner = make_member(tenant=tenant, role=Role.OWNER, email=f"owner@bench-{prefix}{i}.test")
        sign_baa(tenant=tenant, owner=owner)
        out.append((tenant, owner))
    log(f"  fan-out: {count} clinics ({prefix})")
    return out


_serial = iter(range(10**9))


def seed_due(clinics_: list, count: int) -> int:
    """Bulk-insert ``count`` due reminders (and their patients, consent and appointments),
    spread evenly over ``clinics_``; returns how many."""
    from accounts.tenancy import tenant_scope

    per = [count // len(clinics_) + (1 if i < count % len(clinics_) else 0) for i in range(len(clinics_))]
    for (tenant, owner), n in zip(clinics_, per, strict=True):
        with tenant_scope(tenant):
            for start in range(0, n, SEED_BATCH):
                _seed_batch(tenant, owner, min(SEED_BATCH, n - start))
    return count


def _seed_batch(tenant, owner, n: int) -> None:
    from django.db import connection, transaction
    from django.utils import timezone

    from consent.models import ConsentAction, ConsentEvent, ConsentMethod
    from messaging.bulk import insert_many
    from patients import services as patient_services
    from patients.models import Appointment, AppointmentStatus, Patient
    from reminders.models import Reminder
    from reminders.services import WHY_BOOKED_LATE, reminder_policy_get
    from tests.factories import daytime_zone

    now = timezone.now()
    zone = daytime_zone()
    starts = (now + datetime.timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
    policy = reminder_policy_get(tenant=tenant)
    patients, consents, appointments, reminders = [], [], [], []
    for _ in range(n):
        k = next(_serial)
        patient = Patient(tenant=tenant, mrn=f"FAN-{k:08d}", given_name="Fan", family_name=f"Out{k}",
                          birth_date=datetime.date(1980, 1, 1) + datetime.timedelta(days=k % 9000),
                          phone=f"+1202555{1000 + k % 9000:04d}", email=None, external_ids={},
                          preferred_language="es" if k % 5 == 0 else "en", timezone=zone)
        patient_services._set_indexes(tenant, patient)  # the blind indexes patient_create stores
        patients.append(patient)
        consents.append(ConsentEvent(tenant=tenant, patient=patient, action=ConsentAction.GRANT,
                                     method=ConsentMethod.VERBAL, disclosure_version=DISCLOSURE,
                                     phone_index=patient.phone_index, captured_by=owner,
                                     evidence="Agreed at the front desk", occurred_at=now))
        appointment = Appointment(tenant=tenant, patient=patient, starts_at=starts,
                                  ends_at=starts + datetime.timedelta(hours=1), provider_name="Dr. Rivera",
                                  location_name="Room 2", appointment_type="Follow-up",
                                  status=AppointmentStatus.BOOKED)
        set_descriptors = getattr(patient_services, "_set_descriptor_indexes", None)
        if set_descriptors is not None:  # encrypted descriptors carry blind indexes
            set_descriptors(tenant, appointment)
        appointments.append(appointment)
        # reminders_schedule_for: booked less than the first offset ahead, so due at once.
        reminders.append(Reminder(tenant=tenant, appointment=appointment, offset_minutes=policy.first_offset_minutes,
                                  due_at=now, starts_at=starts, reason=WHY_BOOKED_LATE))
    with transaction.atomic():  # bulk_create's rows, inserted as the fan-out inserts its own
        with connection.cursor() as cursor:  # foreign-key checks planned for today's table sizes
            cursor.execute("DISCARD PLANS")  # (see reminders.services._slice_start)
        for rows in (patients, consents, appointments, reminders):
            insert_many(type(rows[0]), rows)


def fan_out_all(clinics_: list) -> tuple[dict, float]:
    """The beat task's send step for every clinic; returns (outcomes, seconds)."""
    from accounts.tenancy import tenant_scope
    from reminders.services import reminders_send_due

    outcomes: dict[str, int] = {}
    start = time.perf_counter()
    for tenant, _ in clinics_:
        with tenant_scope(tenant):
            for name, n in reminders_send_due(tenant=tenant).items():
                outcomes[name] = outcomes.get(name, 0) + n
    return outcomes, time.perf_counter() - start


def _group_cpu_seconds(pgid: int) -> float:
    """User + system CPU so far of every live process in process group ``pgid`` (a prefork
    worker and its children), from /proc."""
    import os

    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _admin_connection():
    """To the bench database as the superuser: RLS does not hide other clinics' rows from it."""
    import psycopg

    return psycopg.connect(env.ADMIN_URL.rsplit("/", 1)[0] + f"/{env.DATABASE}", autocommit=True)


def _none_due(conn) -> bool:
    """No reminder of any clinic is scheduled and due."""
    return not conn.execute("SELECT EXISTS (SELECT 1 FROM reminders_reminder WHERE status = 'scheduled' "
                            "AND due_at <= now())").fetchone()[0]


def _wait_none_due(*, timeout: float, worker) -> None:
    deadline = time.perf_counter() + timeout
    with _admin_connection() as conn:
        while not _none_due(conn):
            if time.perf_counter() > deadline or not worker.alive():
                raise RuntimeError(f"per-clinic tasks: reminders still due after {timeout:.0f} s (see celery.log)")
            time.sleep(0.02)


def per_clinic_tasks(clinics_: list, worker, *, timeout: float) -> tuple[int, float, float]:
    """The product's path: the beat task (``reminders_due``, not eager) hands each clinic to the
    worker pool as its own task, and ``worker``'s processes run them. Returns (clinics handed
    out, seconds from the beat task's start until no reminder is due, worker CPU seconds)."""
    from reminders.tasks import reminders_due

    cpu0, start = _group_cpu_seconds(worker.pid), time.perf_counter()
    handed = reminders_due()
    _wait_none_due(timeout=timeout, worker=worker)
    return handed, time.perf_counter() - start, _group_cpu_seconds(worker.pid) - cpu0


def _copy_reference(clinics_, since) -> tuple[int, float]:
    """COPY the rows written since ``since`` into empty LIKE-clones; returns (rows, seconds)."""
    buffers: dict[str, list[bytes]] = {t: [] for t in TABLES}
    with env.owner_connection() as conn:
        for tenant, _ in clinics_:
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
        conn.commit()
        start = time.perf_counter()
        with conn.transaction():
            for table in TABLES:
                with conn.cursor().copy(f"COPY bench_copy_{table} FROM STDIN") as copy:
                    for chunk in buffers[table]:
                        copy.write(chunk)
        seconds = time.perf_counter() - start
        for table in TABLES:
            conn.execute(f"DROP TABLE bench_copy_{table}")
        conn.commit()
    return rows, seconds


def run(*, rounds: int, quick: bool, world=None, logdir=None, log=print) -> list[dict]:
    """The figures, bounded in time (full: about 3-4 minutes on an idle 2-core machine).

    ``reminder_fanout``: full, one fan-out of the issue's 100,000 (no enqueue) and the COPY of
    its rows; quick, the no-enqueue runs of the pairs below, 5,000 each.
    ``reminder_fanout_enqueue``: pairs with and without the enqueue, alternating which goes
    first, 3 rounds of 5,000 in both modes (a pair at 100,000 would double the workload's time
    for a ratio that does not depend on the count).
    """
    clinics_ = clinics("fan-", log)
    pair_count, pair_rounds = QUICK, 3
    with_q, without_q, copies = [], [], []
    for r in range(pair_rounds):
        for enqueue in ((True, False) if r % 2 == 0 else (False, True)):
            rate, copy = _variant(clinics_, pair_count, enqueue=enqueue, reference=quick and not enqueue,
                                  label=f"round {r + 1}", log=log)
            (with_q if enqueue else without_q).append(rate)
            if copy:
                copies.append((*copy, rate))
    if quick:
        value, count, runs = statistics.median(without_q), QUICK, pair_rounds
    else:
        rate, copy = _variant(clinics_, FULL, enqueue=False, reference=True, label=f"{FULL:,}", log=log)
        value, count, runs = rate, FULL, 1
        copies = [(*copy, rate)]
    ref = statistics.median(c[0] for c in copies)
    tasks = _per_clinic_task_rounds(clinics_, pair_count, pair_rounds, logdir=logdir, log=log)
    return [
        figure("reminder_fanout", value, "reminders/s", ref,
               "raw COPY of the same rows into same-shaped tables", 0.25, True, rounds=runs,
               reminders_per_round=count, tenants=TENANTS, rows_per_reminder=round(statistics.median(
                   c[1] for c in copies), 2),
               # each run against the COPY measured right after it: steadier under a changing load
               round_ratios=[round(c[2] / c[0], 3) for c in copies]),
        figure("reminder_fanout_enqueue", statistics.median(with_q), "reminders/s", statistics.median(without_q),
               "the same fan-out without handing work to Celery", 0.85, True, rounds=pair_rounds,
               reminders_per_round=pair_count),
        # Not the single-stream figure above: the product's own path on this machine's
        # 2 cores, one clinic per task on a 2-process worker, against the same single COPY.
        figure("reminder_fanout_per_clinic_tasks", statistics.median(t[0] for t in tasks), "reminders/s",
               statistics.median(t[1] for t in tasks),
               "raw COPY of the same rows into same-shaped tables (one stream)", None, True, processes=2,
               rounds=len(tasks), reminders_per_round=pair_count, tenants=TENANTS, enqueue=True,
               worker_cpu_us_per_reminder=round(statistics.median(t[2] for t in tasks), 1),
               round_ratios=[round(t[0] / t[1], 3) for t in tasks]),
    ]


def _per_clinic_task_rounds(clinics_, count: int, rounds: int, *, logdir, log) -> list[tuple[float, float, float]]:
    """``rounds`` runs of ``count`` reminders through ``per_clinic_tasks`` on a prefork worker
    of 2 processes (queue ``celery``, as docker-compose's ``worker``), each followed by the COPY
    of its rows; the outbox ids the runs hand on wait in Redis (no sender runs). Returns
    (reminders/s, COPY reminders/s, worker CPU µs per reminder) per round."""
    import redis
    from django.utils import timezone

    from reminders.tasks import reminders_due

    # The earlier rounds' link notices went to the default queue (this process routes them
    # there); drop them, and route the worker's own to "sms" as docker-compose does, where no
    # sender takes them: this measures the fan-out, not the sending.
    redis.Redis.from_url(env.REDIS_URL).delete("celery")
    worker = env.start_celery(logdir, pool="prefork", concurrency=2, queues="celery",
                              extra_env={"CELERY_SMS_QUEUE": "sms"})
    out = []
    try:
        seed_due(clinics_, 10 * len(clinics_))  # warm-up: both processes connect, load keys, import
        reminders_due()
        _wait_none_due(timeout=120, worker=worker)
        for r in range(rounds):
            seed_due(clinics_, count)
            since = timezone.now()
            handed, seconds, cpu = per_clinic_tasks(clinics_, worker, timeout=60 + count / 100)
            rows, copy_seconds = _copy_reference(clinics_, since)
            out.append((count / seconds, count / copy_seconds, cpu / count * 1e6))
            log(f"  fan-out round {r + 1} per-clinic tasks ({handed} clinics, 2 processes): {count} in {seconds:.1f} s "
                f"({count / seconds:.0f}/s, worker CPU {cpu / count * 1e6:.0f} µs each); COPY of its {rows} rows "
                f"{copy_seconds:.2f} s")
    finally:
        worker.stop()
    return out


def _variant(clinics_, count: int, *, enqueue: bool, reference: bool, label: str, log):
    """Seed ``count`` due reminders, fan them out; returns (reminders/s, (COPY reminders/s,
    rows per reminder) or None)."""
    from django.utils import timezone

    from messaging import bulk, outbox

    t0 = time.perf_counter()
    seed_due(clinics_, count)
    seeded = time.perf_counter() - t0
    real = (outbox.enqueue_on_commit, bulk.enqueue_on_commit)
    if not enqueue:
        outbox.enqueue_on_commit = bulk.enqueue_on_commit = lambda tenant_id, ids: None
    since = timezone.now()
    try:
        outcomes, seconds = fan_out_all(clinics_)
    finally:
        outbox.enqueue_on_commit, bulk.enqueue_on_commit = real
    sent = outcomes.get("sent", 0)
    if sent != count or set(outcomes) != {"sent"}:
        raise RuntimeError(f"fan-out sent {outcomes}, expected {count} sent")
    copy, note = None, ""
    if reference:
        rows, copy_seconds = _copy_reference(clinics_, since)
        copy = (sent / copy_seconds, rows / sent)
        note = f"; COPY of its {rows} rows {copy_seconds:.2f} s ({copy[0]:.0f} reminders/s)"
    log(f"  fan-out {label} {'enqueue' if enqueue else 'no_enqueue'}: seeded {count} in {seeded:.1f} s; "
        f"sent {sent} in {seconds:.1f} s ({sent / seconds:.0f}/s){note}")
    return sent / seconds, copy

