"""Item 3: outbox rows through a real Celery worker and Redis to a stub gateway that takes a
fixed 200 ms per SMS (the counting gateway with ``set_delay(200)``).

The worker runs as docker-compose's ``sender`` does: a thread pool (sending is waiting on the
gateway), ``SEND_CONCURRENCY`` threads. The clinic has its own sender with a configured rate
above what the pool can do, so the pool is what is measured; pacing at the sender's rate is
bench/pacing.py's figure.

Each round: with no worker running, N link notices are written through ``message_send`` (one
per thread; their tasks wait on the broker); then the worker starts, and the rate is measured
between the first and the last submission the gateway records (worker start-up excluded).
Reference: min(configured messages/s, pool concurrency ÷ 0.2 s).
"""

from __future__ import annotations

import os
import statistics
import time
from datetime import datetime

from bench import env, seed
from bench.figures import figure

GATEWAY_MS = 200
SEND_POOL = "threads"
SEND_CONCURRENCY = 10
SEND_PROCESSES = 1
SENDER_RATE = 500.0  # messages/s configured for the clinic's sender: above the pool's 50/s
CLINIC_NUMBER = "+12025550102"
MIN_SECONDS = 4.0  # every round sends at least this long at the reference rate (start and end effects amortised)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of one process (all its threads) so far, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_for(gateway, count: int, timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = gateway.log()
        if len(log) >= count:
            return log
        time.sleep(0.25)
    return gateway.log()


def send_pool(logdir, rounds: int, *, messages: int, pool: str = SEND_POOL, concurrency: int = SEND_CONCURRENCY,
              processes: int = SEND_PROCESSES, log=print) -> list[dict]:
    """``concurrency``: threads (or processes for prefork) in all; ``processes``: worker
    processes they are split over (docker-compose: one sender per core)."""
    import redis

    from accounts.models import Tenant
    from accounts.permissions import Role
    from accounts.tenancy import tenant_scope
    from config.celery import app as celery_app
    from integrations.sms.counting import CountingGateway
    from messaging import pacing, services
    from tests.factories import make_member, make_tenant, make_textable_patient

    messages = max(messages, int(MIN_SECONDS * min(SENDER_RATE, concurrency / (GATEWAY_MS / 1000))))
    tenant = make_tenant(name="Bench Send Clinic", slug="bench-send")
    Tenant.objects.filter(pk=tenant.pk).update(sms_number=CLINIC_NUMBER, settings={pacing.SETTING_KEY: SENDER_RATE})
    tenant.refresh_from_db()
    owner = make_member(tenant=tenant, role=Role.OWNER, email="owner@bench-send.test")
    # A patient gets at most one link notice a day: fresh patients for every round.
    patients = [make_textable_patient(tenant=tenant, owner=owner, phone=seed._phone())
                for _ in range(messages * rounds)]
    configured = pacing.clinic_rate(tenant)  # what the workers pace this clinic's own sender at
    gateway = CountingGateway(url=env.COUNTING_REDIS_URL)
    rates, done, cpu_per_sms = [], [], []
    for r in range(rounds):
        celery_app.control.purge()  # only this round's tasks on the broker (keeps kombu's bindings)
        redis.Redis.from_url(env.COUNTING_REDIS_URL).flushdb()
        redis.Redis.from_url(env.REDIS_URL).delete(pacing.sender_key(tenant))  # the sender starts idle
        gateway.set_delay(GATEWAY_MS)
        with tenant_scope(tenant):
            for p in patients[r * messages:(r + 1) * messages]:
                services.message_send(tenant=tenant, actor=owner, patient=p, body=f"{seed.OUT_BODY} ({r})")
        workers = [env.start_celery(logdir, pool=pool, concurrency=concurrency // processes,
                                    extra_env={"SMS_GATEWAY": "counting", "SMS_RATE_PER_SECOND": "12"})
                   for _ in range(processes)]
        try:
            # The workers' CPU from their first submission to their last (start-up excluded), per SMS:
            # steadier than the rate on a shared machine.
            first = _wait_for(gateway, 1, timeout=30)
            cpu_start, count_start = sum(_cpu_seconds(w.popen.pid) for w in workers), len(first)
            sent = _wait_for(gateway, messages, timeout=30 + messages * GATEWAY_MS / 1000)
            if len(sent) > count_start:
                cpu = sum(_cpu_seconds(w.popen.pid) for w in workers) - cpu_start
                cpu_per_sms.append(cpu * 1000 / (len(sent) - count_start))
        finally:
            for worker in workers:
                worker.stop()
        times = sorted(datetime.fromisoformat(e["at"]) for e in sent)
        span = (times[-1] - times[0]).total_seconds() if len(times) > 1 else 0
        rate = (len(times) - 1) / span if span else 0.0
        log(f"  send pool round {r + 1}: {len(sent)}/{messages} submitted, {rate:.1f}/s")
        rates.append(rate)
        done.append(len(sent))
    pool_rate = concurrency / (GATEWAY_MS / 1000)
    reference = min(configured, pool_rate)
    return [figure("send_pool_rate", statistics.median(rates), "SMS/s", reference,
                   f"min(sender's configured {configured:g}/s, pool concurrency ÷ {GATEWAY_MS / 1000:g} s "
                   f"= {pool_rate:g}/s) ({pool}, concurrency {concurrency} in {processes} process(es))", 0.9, True,
                   rounds=rounds, messages=messages, submitted_min=min(done),
                   worker_cpu_ms_per_sms=round(statistics.median(cpu_per_sms), 2) if cpu_per_sms else None)]
