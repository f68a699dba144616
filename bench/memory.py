"""Item 5: memory. Peak RSS of fan-out plus send for 10× the reminders ≤ 1.2 × that for 1×:
3,000 vs 300, in the full run and --quick alike. The issue's 100,000 vs 10,000 is
``BENCH_MEMORY_SIZES=10000,100000``: about half an hour on this 2-core box (sending is row by
row, ~30 ms per SMS), which the run's 15-minute budget can't hold.

For each size the parent seeds the due reminders (bulk, as ``bench.fanout.seed_due``: 20 new
clinics each) and starts a fresh child process that, in one process:

1. fans them out as the beat task does (``reminders_send_due`` per clinic: slices claimed and
   written one transaction each), with the enqueue switched off (nothing else sends them);
2. sends every outbox row with the outbox's own send code (``messaging.outbox.sms_send_one``:
   claim, consent check, gateway call, result) on a pool of ``SEND_THREADS`` threads, as a
   thread-pool worker does, ids streamed per clinic in batches of ``SEND_BATCH`` from
   ``messaging.outbox.due_ids``, to the counting gateway (``SMS_GATEWAY=counting``: no latency,
   submissions counted in Redis, as in the reliability tests);
3. reports its peak RSS (``VmHWM`` from /proc/self/status) and how many SMS it sent.

Figure: peak RSS at the large size ÷ peak RSS at the small size (lower is better; target ≤ 1.2).
The child's baseline (Python, Django, the app) is in both: what the ratio catches is memory
that grows with the count. One round: the two sizes are measured once each (the large one is
minutes of sending); the JSON line says so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from bench import env
from bench.figures import figure

FULL = QUICK = (300, 3_000)
SEND_BATCH = 400  # outbox ids read per round, shared out to the pool's threads
SEND_THREADS = 8  # a thread pool, as the send workers run (DESIGN: sending is waiting on the network)


def run(*, rounds: int, quick: bool, world=None, logdir=None, log=print) -> list[dict]:
    from bench import fanout

    small, large = _sizes(quick)
    peaks = {}
    for count in (small, large):
        clinics = fanout.clinics(f"mem{count}-", log)
        t0 = time.perf_counter()
        fanout.seed_due(clinics, count)
        log(f"  memory: seeded {count} due reminders in {time.perf_counter() - t0:.0f} s")
        peaks[count] = _child(clinics, count, log)
    value = peaks[large]["vmhwm_kb"] / 1024
    ref = peaks[small]["vmhwm_kb"] / 1024
    return [figure("memory_peak_rss_ratio", value, "MiB", ref,
                   f"peak RSS of the same fan-out plus send for {small:,} reminders", 1.2, False, rounds=1,
                   reminders=large, reference_reminders=small, sent=peaks[large]["sent"],
                   reference_sent=peaks[small]["sent"], seconds=peaks[large]["seconds"],
                   gateway="counting (in-process, no latency)")]


def _sizes(quick: bool) -> tuple[int, int]:
    """``BENCH_MEMORY_SIZES=small,large`` overrides the sizes (e.g. the issue's 10000,100000)."""
    override = os.environ.get("BENCH_MEMORY_SIZES", "")
    if override:
        small, large = (int(n) for n in override.split(","))
        return small, large
    return QUICK if quick else FULL


def _child(clinics, count: int, log) -> dict:
    ids = ",".join(str(tenant.pk) for tenant, _ in clinics)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "bench.memory", ids], env=env.bench_env(SMS_GATEWAY="counting"),
                          cwd=env.ROOT, capture_output=True, text=True, timeout=1800, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"memory child failed: {proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["seconds"] = round(time.perf_counter() - t0, 1)
    if result["sent"] != count or result["reminders_sent"] != count:
        raise RuntimeError(f"memory child sent {result}, expected {count}")
    log(f"  memory: {count} reminders fanned out and sent in {result['seconds']} s; "
        f"peak RSS {result['vmhwm_kb'] / 1024:.0f} MiB")
    return result


def _peak_kb() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def child(tenant_ids: list[int]) -> dict:
    """Fan out and send everything due for these clinics (runs in the child process)."""
    import django

    django.setup()
    from accounts.models import Tenant
    from accounts.tenancy import tenant_scope
    from messaging import bulk, outbox
    from reminders.services import reminders_send_due

    outbox.enqueue_on_commit = bulk.enqueue_on_commit = lambda tenant_id, ids: None  # this process sends
    reminders_sent = sent = 0
    for tenant in Tenant.objects.filter(pk__in=tenant_ids).order_by("pk"):
        with tenant_scope(tenant):
            reminders_sent += reminders_send_due(tenant=tenant).get("sent", 0)
    with ThreadPoolExecutor(max_workers=SEND_THREADS) as pool:
        for tenant in Tenant.objects.filter(pk__in=tenant_ids).order_by("pk"):
            while True:
                with tenant_scope(tenant):
                    batch = [str(i) for i in outbox.due_ids(limit=SEND_BATCH)]
                if not batch:
                    break
                chunks = [batch[i::SEND_THREADS] for i in range(SEND_THREADS)]
                done = sum(pool.map(lambda ids, t=tenant: _send(t, ids), chunks))
                if not done:
                    raise RuntimeError("the outbox sent nothing of a due batch")
                sent += done
    return {"reminders_sent": reminders_sent, "sent": sent, "vmhwm_kb": _peak_kb()}


def _send(tenant, ids: list[str]) -> int:
    """One pool thread's share of a batch: ``sms_send_one`` per row, as a worker does."""
    from accounts.tenancy import tenant_scope
    from messaging.outbox import sms_send_one

    with tenant_scope(tenant):
        return sum(sms_send_one(tenant=tenant, sms_id=i) == "sent" for i in ids)


if __name__ == "__main__":
    print(json.dumps(child([int(i) for i in sys.argv[1].split(",")])), flush=True)
