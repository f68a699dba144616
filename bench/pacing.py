"""Item 4: pacing per sender and fair queuing across clinics, through a real Celery worker (the
send pool: threads) and Redis to the counting gateway (200 ms a send).

Clinic A runs a big broadcast (10,000 recipients; 5,000 with ``--quick``) at 600 a minute on
its own sender, whose configured rate (5 messages/s) is the slower one. Only one tick of a
broadcast is ever in the queues (``broadcasts.services.slice_size``), so its size past what the
window can drain changes nothing measured; 50,000 would only make the seeding (~2.5 ms a
recipient here) take longer than the whole workload may. Clinic B, on its own
sender, sends a reminder every 3 s meanwhile. The bench plays beat: ``broadcasts_tick`` every
10 s, so the broadcast goes slice by slice as in production. Over 60 s (15 s quick):

* ``pacing_sender_rate``: clinic A's submissions/s between its first submission and the end of
  the window ÷ its sender's configured rate (target ≤ 1; the bucket shared by the worker's
  threads keeps it; close to 1 means the pacing does not waste the sender either). The line also
  gives the most in any one second (the bucket allows a one-second burst on top of the rate).
* ``pacing_reminder_latency``: the longest time from clinic B's commit of a reminder to its
  submission at the gateway ÷ one scheduling interval (the 10 s broadcast tick); target ≤ 1.
"""

from __future__ import annotations

import datetime
import statistics
import time

from bench import env
from bench.figures import figure

GATEWAY_MS = 200
THREADS = 10  # as docker-compose's sender
A_RATE = 5.0  # messages/s configured on clinic A's sender (slower than its broadcast's 10/s)
B_RATE = 10.0
BROADCAST_PER_MINUTE = 600
REMINDER_EVERY = 3.0
A_NUMBER, B_NUMBER = "+12025550103", "+12025550104"


def _clinic_a(recipients: int, log):
    from accounts.models import Tenant
    from accounts.tenancy import tenant_scope
    from bench import fanout
    from broadcasts.services import broadcast_create
    from messaging import pacing
    from patients.services import clinic_zone

    [(tenant, owner)] = fanout.clinics("pace", log, count=1)
    Tenant.objects.filter(pk=tenant.pk).update(sms_number=A_NUMBER, settings={pacing.SETTING_KEY: A_RATE})
    tenant.refresh_from_db()
    started = time.monotonic()
    fanout.seed_due([(tenant, owner)], recipients)  # textable patients with an appointment tomorrow
    with tenant_scope(tenant):
        from patients.models import Appointment

        first = Appointment.objects.order_by("starts_at").values_list("starts_at", flat=True).first()
        day = first.astimezone(clinic_zone(tenant)).date()
        broadcast = broadcast_create(tenant=tenant, actor=owner, body="The clinic closes at noon tomorrow.",
                                     audience="appointments_on_day", day=day, rate_per_minute=BROADCAST_PER_MINUTE)
    log(f"  pacing: clinic A's broadcast to {broadcast.total} patients seeded in {time.monotonic() - started:.0f} s")
    # No ANALYZE after this seed: a broadcast often starts right after a bulk import, before
    # autovacuum has statistics for the new rows (with a claim joined to patients, such stale
    # statistics once made each 10 s tick take 8 s and the sender pace at 3.3/s).
    return tenant, broadcast


def _clinic_b(reminders: int):
    from accounts.models import Tenant
    from accounts.permissions import Role
    from messaging import pacing
    from tests.factories import make_member, make_tenant, make_textable_patient

    tenant = make_tenant(name="Bench Reminder Clinic", slug="bench-reminders")
    Tenant.objects.filter(pk=tenant.pk).update(sms_number=B_NUMBER, settings={pacing.SETTING_KEY: B_RATE})
    tenant.refresh_from_db()
    owner = make_member(tenant=tenant, role=Role.OWNER, email="owner@bench-reminders.test")
    # Fresh patients (the frequency cap allows one automated notice a day), on numbers that
    # tell B's submissions from A's.
    patients = [make_textable_patient(tenant=tenant, owner=owner, phone=f"+1303555{1000 + i:04d}")
                for i in range(reminders)]
    return tenant, owner, patients


def _remind(tenant, owner, patient) -> float:
    """A reminder to ``patient``, committed; returns the commit's wall-clock time."""
    from accounts.tenancy import tenant_scope
    from messaging.models import MessageKind
    from messaging.services import message_send

    with tenant_scope(tenant):
        message_send(tenant=tenant, actor=None, patient=patient, kind=MessageKind.REMINDER, source="system",
                     body="Reminder: your appointment is tomorrow.")
    return time.time()


def _max_in_one_second(times: list[float]) -> int:
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= 1.0:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def run(*, rounds: int, quick: bool, world=None, logdir=None, log=print) -> list[dict]:
    import redis

    from broadcasts.services import TICK_SECONDS
    from broadcasts.tasks import broadcasts_tick
    from config.celery import app as celery_app
    from integrations.sms.counting import CountingGateway
    from messaging import pacing

    window = 15.0 if quick else 60.0
    a_tenant, broadcast = _clinic_a(5_000 if quick else 10_000, log)
    b_tenant, b_owner, b_patients = _clinic_b(int(window / REMINDER_EVERY) + 1)
    gateway = CountingGateway(url=env.COUNTING_REDIS_URL)
    celery_app.control.purge()
    redis.Redis.from_url(env.COUNTING_REDIS_URL).flushdb()
    redis.Redis.from_url(env.REDIS_URL).delete(pacing.sender_key(a_tenant), pacing.sender_key(b_tenant))
    gateway.set_delay(GATEWAY_MS)
    worker = env.start_celery(logdir, pool="threads", concurrency=THREADS,
                              extra_env={"SMS_GATEWAY": "counting", "SMS_RATE_PER_SECOND": "12"})
    committed: dict[str, float] = {}
    try:
        time.sleep(3)  # the worker's start-up, before the window opens
        start = time.time()
        next_tick, next_reminder, i = start, start + 1.0, 0
        while time.time() < start + window:
            now = time.time()
            if now >= next_tick:
                broadcasts_tick()  # as beat does every 10 s: one slice per sending broadcast
                next_tick += TICK_SECONDS
            if now >= next_reminder and i < len(b_patients):
                committed[b_patients[i].phone] = _remind(b_tenant, b_owner, b_patients[i])
                next_reminder += REMINDER_EVERY
                i += 1
            time.sleep(0.05)
        end = time.time()
        deadline = end + TICK_SECONDS + 5  # the last reminders may still be on their way
        while time.time() < deadline and len({e["to"] for e in gateway.log()} & set(committed)) < len(committed):
            time.sleep(0.25)
    finally:
        worker.stop()
    submissions = [(e["to"], datetime.datetime.fromisoformat(e["at"]).timestamp()) for e in gateway.log()]
    b_sent = {to: t for to, t in submissions if to in committed}
    a_times = sorted(t for to, t in submissions if to not in committed and t <= end)
    a_rate = (len(a_times) - 1) / (end - a_times[0]) if len(a_times) > 1 else 0.0
    latencies = [b_sent[phone] - t0 if phone in b_sent else float("inf") for phone, t0 in committed.items()]
    log(f"  pacing: clinic A {len(a_times)} submitted in the window ({a_rate:.2f}/s, configured {A_RATE:g}/s); "
        f"clinic B {len(b_sent)}/{len(committed)} reminders, latency max {max(latencies):.2f} s")
    return [
        figure("pacing_sender_rate", a_rate, "SMS/s", A_RATE,
               f"the sender's configured rate (clinic A's broadcast, {window:g} s window)", 1.0, False,
               submitted=len(a_times), max_in_any_second=_max_in_one_second(a_times),
               broadcast_recipients=broadcast.total, window_seconds=window, rounds=1),
        figure("pacing_reminder_latency", max(latencies), "s", float(TICK_SECONDS),
               "one scheduling interval (the 10 s broadcast tick)", 1.0, False,
               reminders=len(committed), delivered=len(b_sent), median_s=round(statistics.median(latencies), 3),
               broadcast_recipients=broadcast.total, rounds=1),
    ]
