"""Item 3: outbox rows through a real Celery worker and Redis to a stub gateway that takes a
fixed 200 ms per SMS (the counting gateway with ``set_delay(200)``).

Each round: with no worker running, N link notices are written through ``message_send`` (one
per thread; their tasks wait on the broker); then the worker starts, and the rate is measured
between the first and the last submission the gateway records (worker start-up excluded).
Reference: min(configured messages/s, pool concurrency ÷ 0.2 s); Caretext has no per-sender
rate setting yet, so the reference is concurrency ÷ 0.2 s.
"""

from __future__ import annotations

import statistics
import time
from datetime import datetime

from bench import env, seed
from bench.figures import figure

GATEWAY_MS = 200


def _wait_for(gateway, count: int, timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = gateway.log()
        if len(log) >= count:
            return log
        time.sleep(0.25)
    return gateway.log()


def send_pool(logdir, rounds: int, *, messages: int, pool: str = "prefork", concurrency: int = 4,
              log=print) -> list[dict]:
    import redis

    from accounts.permissions import Role
    from accounts.tenancy import tenant_scope
    from config.celery import app as celery_app
    from integrations.sms.counting import CountingGateway
    from messaging import services
    from tests.factories import make_member, make_tenant, make_textable_patient

    tenant = make_tenant(name="Bench Send Clinic", slug="bench-send")
    owner = make_member(tenant=tenant, role=Role.OWNER, email="owner@bench-send.test")
    # A patient gets at most one link notice a day: fresh patients for every round.
    patients = [make_textable_patient(tenant=tenant, owner=owner, phone=seed._phone())
                for _ in range(messages * rounds)]
    gateway = CountingGateway(url=env.COUNTING_REDIS_URL)
    rates, done = [], []
    for r in range(rounds):
        celery_app.control.purge()  # only this round's tasks on the broker (keeps kombu's bindings)
        redis.Redis.from_url(env.COUNTING_REDIS_URL).flushdb()
        gateway.set_delay(GATEWAY_MS)
        with tenant_scope(tenant):
            for p in patients[r * messages:(r + 1) * messages]:
                services.message_send(tenant=tenant, actor=owner, patient=p, body=f"{seed.OUT_BODY} ({r})")
        worker = env.start_celery(logdir, pool=pool, concurrency=concurrency,
                                  extra_env={"SMS_GATEWAY": "counting"})
        try:
            sent = _wait_for(gateway, messages, timeout=30 + messages * GATEWAY_MS / 1000)
        finally:
            worker.stop()
        times = sorted(datetime.fromisoformat(e["at"]) for e in sent)
        span = (times[-1] - times[0]).total_seconds() if len(times) > 1 else 0
        rate = (len(times) - 1) / span if span else 0.0
        log(f"  send pool round {r + 1}: {len(sent)}/{messages} submitted, {rate:.1f}/s")
        rates.append(rate)
        done.append(len(sent))
    reference = concurrency / (GATEWAY_MS / 1000)
    return [figure("send_pool_rate", statistics.median(rates), "SMS/s", reference,
                   f"pool concurrency ÷ {GATEWAY_MS / 1000:g} s ({pool}, concurrency {concurrency})", 0.9, True,
                   rounds=rounds, messages=messages, submitted_min=min(done))]
