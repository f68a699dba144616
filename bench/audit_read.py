"""Issue #12 item 10: the audit trail's read side. Reports must scale with what they return,
not with the table.

The trail is seeded to N events, the compliance access report (last 30 days, chart + count +
first page, as its page shows it) and one patient's accounting of disclosures (last 366 days)
are timed through the product's own report service, as the app role under RLS; then the trail
grows tenfold with *older* history and the same reports are timed again. Each figure's value
is t(10 N) / t(N); its reference is rows(10 N) / rows(N), the growth of what the report must
return (≈ 1 here: the new events are older than the windows), target ratio ≤ 1.2.

Seeding is server-side (``INSERT … SELECT generate_series``) over several clinics and many
patients with a realistic mix of event types. It connects as the superuser that created the
bench database: as the owner, the per-row foreign-key checks of 10 M rows would take minutes
(``session_replication_role = replica`` skips them and the append-only trigger; RLS does not
apply). The seeded rows are removed at the end, the trail's other rows kept as they were.
"""

from __future__ import annotations

import statistics
import time
from datetime import timedelta

from bench import env
from bench.figures import figure, interleave

TENANTS = 5
PATIENTS = 4000  # per clinic
MARK = "bench-audit-read"  # request_id of every seeded row
YEAR = 365.0  # days; the first N events fill the last year, the growth the nine before it
GAP = 2.0  # days between them, so the 366-day accounting of disclosures sees none of the growth
# (event type, has a patient): the everyday mix of a clinic's trail, by weight.
MIX = ([(300, True)] * 6 + [(301, True)] * 5 + [(302, True)] * 4 + [(200, True)] * 4 + [(313, True)] * 3
       + [(310, True)] * 3 + [(210, True)] * 2 + [(400, True)] + [(100, False)] * 3 + [(143, False)] * 2
       + [(204, False)] + [(501, False)])


def _admin():
    import psycopg

    return psycopg.connect(psycopg.conninfo.make_conninfo(env.ADMIN_URL, dbname=env.DATABASE), autocommit=True)


# One row per g in [lo, hi): clinic g mod TENANTS, a pseudo-random patient, the mix's type, at a
# time spread evenly over [now - to_days, now - from_days]. Ids are time-ordered per clinic like
# the product's uuid7, so the primary key is appended to, as in production.
SEED_SQL = """
    INSERT INTO audit_auditevent (id, tenant_id, occurred_at, event_type, actor_type, actor_user_id, actor_label,
        object_type, object_id, patient_id, ip_address, user_agent, request_id, details, seq, prev_hash, hash)
    SELECT (lpad(to_hex(k.slot), 8, '0') || '-0000-7000-8000-' || lpad(to_hex(g), 12, '0'))::uuid,
           k.tenant_id,
           %(now)s::timestamptz - make_interval(secs => (%(from_days)s + (%(to_days)s - %(from_days)s)
                                                         * (1 - (g - %(lo)s)::float8 / (%(hi)s - %(lo)s))) * 86400),
           t.event_type, 'user', k.user_id, '', 'messaging.Thread', lpad(to_hex(mod(g, 50000)), 12, '0'),
           CASE WHEN t.has_patient THEN ('00000000-0000-4000-8000-'
               || lpad(to_hex(k.slot * 1000000 + mod((g / %(clinics)s) * 7919, %(patients)s)), 12, '0'))::uuid END,
           '10.0.0.1', 'Mozilla/5.0', %(mark)s, '{"kind": "general"}'::jsonb, 1000000000 + g, '', ''
      FROM generate_series(%(lo)s::bigint, %(hi)s::bigint - 1) AS g
      JOIN unnest(%(tenants)s::bigint[], %(users)s::bigint[], %(slots)s::int[]) AS k(tenant_id, user_id, slot)
        ON k.slot = mod(g, %(clinics)s)
      CROSS JOIN LATERAL (
          SELECT (%(types)s::int[])[1 + mod(g / %(clinics)s, cardinality(%(types)s::int[]))] AS event_type,
                 (%(with_patient)s::bool[])[1 + mod(g / %(clinics)s, cardinality(%(types)s::int[]))] AS has_patient
      ) AS t
"""


def _seed(conn, clinics, *, lo: int, hi: int, now, from_days: float, to_days: float, log) -> None:
    from psycopg import sql

    start = time.monotonic()
    conn.execute("SET session_replication_role = replica")
    conn.execute("SET maintenance_work_mem = '256MB'")
    # Building an index once is far quicker than growing it row by row: the secondary indexes go
    # and come back exactly as they were defined (the constraints' indexes stay).
    indexes = conn.execute(
        "SELECT i.indexrelid::regclass::name, pg_get_indexdef(i.indexrelid) FROM pg_index i "
        "WHERE i.indrelid = 'audit_auditevent'::regclass "
        "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)").fetchall()
    for name, _ in indexes:
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
    conn.execute(SEED_SQL, {"lo": lo, "hi": hi, "now": now, "from_days": from_days, "to_days": to_days,
                            "tenants": [c[0].pk for c in clinics], "users": [c[1].pk for c in clinics],
                            "slots": list(range(TENANTS)), "clinics": TENANTS, "patients": PATIENTS, "mark": MARK,
                            "types": [t for t, _ in MIX], "with_patient": [p for _, p in MIX]})
    for _, definition in indexes:
        conn.execute(definition)
    conn.execute("VACUUM ANALYZE audit_auditevent")
    log(f"audit_read: {hi:,} events seeded in total ({hi - lo:,} in {time.monotonic() - start:.0f} s)")


def _drop_seeded(conn, log) -> None:
    """Remove the seeded rows and keep the rest of the trail byte for byte (TRUNCATE + restore
    is far quicker than deleting millions of rows; triggers are off in this session)."""
    start = time.monotonic()
    with conn.transaction():
        conn.execute("CREATE TEMP TABLE audit_keep AS SELECT * FROM audit_auditevent WHERE request_id <> %s", [MARK])
        conn.execute("TRUNCATE audit_auditevent")
        conn.execute("INSERT INTO audit_auditevent SELECT * FROM audit_keep")
        conn.execute("DROP TABLE audit_keep")
    conn.execute("ANALYZE audit_auditevent")
    log(f"audit_read: seeded events dropped in {time.monotonic() - start:.0f} s")


def _timer(report_call, repeats: int):
    def run() -> tuple[float, int]:
        times, rows = [], 0
        for _ in range(repeats):
            start = time.perf_counter()
            rows = report_call()
            times.append(time.perf_counter() - start)
        return statistics.median(times), rows

    return run


def _reports(clinic, patient_id):
    """The two report pages' work, through audit.reports.services.report_view (chart, total,
    first page, and the AUDIT_REPORT_VIEWED event it records). Each returns the report's total."""
    from django.utils import timezone

    from accounts.tenancy import tenant_scope
    from audit.reports import services
    from audit.reports.definitions import REPORTS
    from audit.reports.filters import ReportFilters
    from audit.reports.hours import clinic_zone

    tenant, owner = clinic
    today = timezone.localdate(timezone=clinic_zone(tenant))

    def access() -> int:
        filters = ReportFilters(start=today - timedelta(days=29), end=today)
        with tenant_scope(tenant):
            result = services.report_view(tenant=tenant, actor=owner, report=REPORTS["access"], filters=filters,
                                          cursor=None)
        assert len(result.page.rows) == 50, "the access report's first page should be full"
        return result.total

    def disclosures() -> int:
        filters = ReportFilters(start=today - timedelta(days=365), end=today, patient_id=patient_id)
        with tenant_scope(tenant):
            result = services.report_view(tenant=tenant, actor=owner, report=REPORTS["disclosures"],
                                          filters=filters, cursor=None)
        assert result.page.rows, "the patient's accounting of disclosures should not be empty"
        return result.total

    return access, disclosures


def _measure(clinic, patient_id, rounds: int, repeats: int) -> dict[str, tuple[float, int]]:
    access, disclosures = _reports(clinic, patient_id)
    access(), disclosures()  # warm the caches
    a, d = interleave(rounds, _timer(access, repeats), _timer(disclosures, repeats))
    return {"access": (statistics.median(t for t, _ in a), a[-1][1]),
            "disclosures": (statistics.median(t for t, _ in d), d[-1][1])}


def _clinics():
    from accounts.permissions import Role
    from tests.factories import make_member, make_tenant

    clinics = []
    for i in range(TENANTS):
        tenant = make_tenant(name=f"Bench Audit Clinic {i}", slug=f"bench-audit-{i}")
        clinics.append((tenant, make_member(tenant=tenant, role=Role.OWNER, email=f"owner@bench-audit-{i}.test")))
    return clinics


def run(*, rounds: int, quick: bool, world, logdir, log) -> list[dict]:
    from django.utils import timezone

    small = 100_000 if quick else 1_000_000
    big = small * 10
    repeats = 3 if quick else 5
    clinics = _clinics()
    # Clinic 0's patients 1 and 2 have as many events in the last year as each other. Reading a
    # patient's accounting is itself recorded in it, so each size reads a patient of its own.
    patients = [f"00000000-0000-4000-8000-{n:012x}" for n in (1, 2)]
    now = timezone.now()
    results = {}
    with _admin() as conn:
        try:
            _seed(conn, clinics, lo=0, hi=small, now=now, from_days=0, to_days=YEAR, log=log)
            results[small] = _measure(clinics[0], patients[0], rounds, repeats)
            _seed(conn, clinics, lo=small, hi=big, now=now, from_days=YEAR + GAP, to_days=10 * YEAR, log=log)
            results[big] = _measure(clinics[0], patients[1], rounds, repeats)
        finally:
            _drop_seeded(conn, log)
    figures = []
    for name, title in (("access", "the access report (30 days: chart, count, first page)"),
                        ("disclosures", "one patient's accounting of disclosures (366 days)")):
        (t_small, rows_small), (t_big, rows_big) = results[small][name], results[big][name]
        figures.append(figure(
            f"audit_read_{name}", t_big / t_small, "x", rows_big / rows_small,
            f"{title}: time at {big:,} events ÷ at {small:,}, against rows returned at {big:,} ÷ at {small:,}",
            1.2, False, rounds=rounds, ms_small=round(t_small * 1000, 2), ms_big=round(t_big * 1000, 2),
            rows_small=rows_small, rows_big=rows_big, events_small=small, events_big=big))
    return figures
