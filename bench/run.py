"""Caretext benchmarks (issue #12): one JSON line per figure, each a ratio against a reference
measured in the same run.

    .venv/bin/python bench/run.py            # full run, ≤ 15 minutes
    .venv/bin/python bench/run.py --quick    # smoke run, ≤ 3 minutes
    .venv/bin/python bench/run.py --only secure_page,audit

Needs PostgreSQL on 127.0.0.1:5432 with a trust-auth `postgres` superuser (or PG_ADMIN_URL)
and Redis on 127.0.0.1:6379. Creates and drops its own database `caretext_bench`, uses Redis
DBs 14 (broker, cache) and 13 (counting gateway) and flushes them, starts gunicorn (2 workers)
on a free loopback port. Sends traffic to 127.0.0.1 only. Progress goes to stderr, figures to
stdout; bench/results/<timestamp>.jsonl keeps a copy. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import env  # noqa: E402

WORKLOADS = ("secure_page", "identity_check", "staff_inbox", "encryption", "webhooks", "audit", "login", "send_pool",
             "fanout", "pacing", "memory", "audit_read", "footprint")
# Workloads that live in their own module: ``bench.<name>.run(rounds=, quick=, world=, logdir=, log=)``
# returns the figures. They need no gunicorn.
MODULE_WORKLOADS = ("fanout", "pacing", "memory", "audit_read", "footprint")


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: fewer requests and rounds (≤ 3 min)")
    parser.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(WORKLOADS)}")
    parser.add_argument("--keep", action="store_true", help="keep the database and Redis data afterwards")
    args = parser.parse_args()
    only = [w for w in args.only.split(",") if w] or list(WORKLOADS)
    unknown = set(only) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workloads: {', '.join(sorted(unknown))}")

    rounds = 3  # the minimum; 5 full rounds put the whole run past its 15 minutes
    seconds = 2.0 if args.quick else 5.0  # each load, each round
    budget = 180 if args.quick else 900  # the whole run; workloads that would start late are skipped
    cap = 300 if args.quick else 1500  # requests per load that consume prepared rows (sessions, SMS)
    started = time.monotonic()
    results_dir = ROOT / "bench" / "results"
    results_dir.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    out_path = results_dir / f"{stamp}{'-quick' if args.quick else ''}.jsonl"
    logdir = results_dir / f"{stamp}-logs"
    logdir.mkdir()

    env.apply_env()
    env.db_create_and_migrate(log)
    env.redis_flush()

    import django

    django.setup()
    from bench import db_workloads, http_workloads, seed

    procs: list[env.Proc] = []
    lines: list[dict] = []

    def emit(figures: list[dict]) -> None:
        for fig in figures:
            print(json.dumps(fig), flush=True)
            lines.append(fig)
        with open(out_path, "w") as fh:
            fh.writelines(json.dumps(f) + "\n" for f in lines)

    try:
        world = seed.build(log=log)
        load_before = os.getloadavg()
        if set(only) - {"audit", "send_pool", "fanout", *MODULE_WORKLOADS}:
            gunicorn, base = env.start_gunicorn(logdir)
            procs.append(gunicorn)
            log(f"gunicorn (2 gthread workers) on {base}")
            h = http_workloads.Http(base, world, clients=8, seconds=seconds, cap=cap)
            log("warm-up")
            h.load(h.page(), requests=80)
            h.load(h.inbox(), requests=40)
            h.load(h.ref, requests=80)
            http_workloads.sanity(h)
        for name in only:
            if name != "footprint" and time.monotonic() - started > budget * 0.85:  # footprint: one query
                log(f"workload {name} SKIPPED: the run is near its {budget} s budget")
                continue
            log(f"workload {name}")
            if name in ("secure_page", "identity_check", "staff_inbox", "encryption", "login"):
                http_workloads.sanity(h)  # sessions still live, pages still the real ones
            t0 = time.monotonic()
            if name == "secure_page":
                emit(http_workloads.secure_page(h, rounds))
            elif name == "identity_check":
                emit(http_workloads.identity_check(h, rounds))
            elif name == "staff_inbox":
                emit(http_workloads.staff_inbox(h, rounds))
            elif name == "encryption":
                # 5 rounds: the two pairs differ by a few percent at most (20 decryptions are 0.06 ms
                # of a 3.2 ms page), which 3 rounds' median does not resolve on a shared box (±3 %).
                emit(http_workloads.encryption(h, max(rounds, 5)))
            elif name == "webhooks":
                emit(http_workloads.webhooks(h, rounds))
            elif name == "audit":
                emit(db_workloads.audit_writes(world.page_tenant, rounds, per_writer=40 if args.quick else 100))
            elif name == "login":
                emit(http_workloads.login_burst(h, rounds, window=4.0 if args.quick else 8.0))
            elif name == "send_pool":
                from bench import send_pool

                emit(send_pool.send_pool(logdir, 3, messages=200 if args.quick else 400, log=log))
            elif name in MODULE_WORKLOADS:
                import importlib

                module = importlib.import_module(f"bench.{name}")
                emit(module.run(rounds=rounds, quick=args.quick, world=world, logdir=logdir, log=log))
            log(f"workload {name} took {time.monotonic() - t0:.0f} s")
        load_after = os.getloadavg()
        emit([{"name": "_run", "value": round(time.monotonic() - started, 1), "unit": "s", "reference": "",
               "ratio": None, "target": 180 if args.quick else 900, "higher_is_better": False,
               "loadavg_1m_before": round(load_before[0], 2), "loadavg_1m_after": round(load_after[0], 2),
               "cpus": os.cpu_count(), "quick": args.quick}])
    finally:
        for proc in procs:
            proc.stop()
        if not args.keep:
            from django.db import connections

            connections.close_all()
            env.db_drop()
            env.redis_flush()
        log(f"results in {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
