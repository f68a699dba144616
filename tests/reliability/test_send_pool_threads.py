"""The send pool as production runs it (docker-compose ``sender``): a Celery worker with a thread
pool, pacing on (a shared bucket in the broker's Redis), under real failures. The set-up is
test_outbox_worker.py's: the test's own redis-server, real PostgreSQL commits, the counting
gateway; every scenario ends with ``assert_invariants``.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from datetime import datetime

import pytest

from messaging.models import SmsStatus
from tests.reliability.drive import (
    LEASE_SECONDS,
    count_in,
    notices_for,
    sweep_until_settled,
    tenants_of,
    wait_until,
)
from tests.reliability.invariants import assert_invariants
from tests.reliability.processes import BASE_DIR, Worker

pytestmark = [pytest.mark.slow, pytest.mark.reliability, pytest.mark.timeout(240)]

SCENARIO_SECONDS = 120
SWEEP_EVERY = LEASE_SECONDS + 1
RATE = 15  # messages/s on the (shared, platform) sender of the test's clinics
THREADS = 8


class ThreadWorker(Worker):
    """``celery worker -P threads`` with pacing on; otherwise as ``processes.Worker``."""

    def start(self) -> ThreadWorker:
        self.started += 1
        self.log_path = self.log_dir / f"thread-worker-{self.started}.log"
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", "-l", "info", "-P", "threads",
             "-c", str(self.concurrency), "-n", f"reliab-threads-{secrets.token_hex(4)}@%h", "-Q", "celery",
             "--without-gossip", "--without-mingle", "--without-heartbeat"],
            cwd=BASE_DIR, env={**self.env, "SMS_RATE_PER_SECOND": str(RATE)}, stdout=log,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self._wait_ready()
        return self


@pytest.fixture
def thread_worker(worker_env, tmp_path):
    process = ThreadWorker(tmp_path, worker_env, concurrency=THREADS)
    yield process
    process.kill()


def _submissions(gateway) -> list[datetime]:
    return sorted(datetime.fromisoformat(e["at"]) for e in gateway.log())


def test_threads_send_in_parallel_at_the_senders_rate_each_sms_once(clinics, thread_worker, gateway, figures):
    """A backlog larger than the sender's burst: the pool sends it at the configured rate, not
    faster (rows past the rate hold slots and are woken then), and each SMS goes once."""
    tenants = tenants_of(clinics)
    ids = notices_for(clinics, patients_per_clinic=3, per_patient=10)
    gateway.set_delay(100)
    thread_worker.start()
    wait_until(lambda: count_in(tenants, status__in=[SmsStatus.QUEUED, SmsStatus.SENDING]) == 0,
               timeout=SCENARIO_SECONDS, what="every SMS sent by the thread pool (no sweeper)")
    tally = assert_invariants(tenants, gateway)
    assert tally.by_status == {SmsStatus.SENT: len(ids)}
    times = _submissions(gateway)
    span = (times[-1] - times[0]).total_seconds()
    # GCRA: after a burst of RATE (one second's worth), one slot every 1/RATE s.
    assert (len(times) - RATE) / span <= RATE * 1.05, f"{len(times)} submissions in {span:.1f} s"
    figures(sms=len(ids), span_seconds=span, rate=(len(times) - 1) / span, configured=RATE)


def test_sigkill_of_the_thread_pool_mid_batch_each_sms_goes_once(clinics, thread_worker, gateway, figures):
    """SIGKILL while threads are at the provider and other rows hold future slots: the
    sweeper hands out what the dead worker held (after the lease), reconciling first; rows
    holding slots go when due; nothing is lost or sent twice."""
    tenants = tenants_of(clinics)
    ids = notices_for(clinics, patients_per_clinic=3, per_patient=10)
    gateway.set_delay(150)
    thread_worker.start()
    wait_until(lambda: gateway.accepted() >= 20, timeout=SCENARIO_SECONDS, what="20 sends")
    thread_worker.kill()
    accepted_at_kill = gateway.accepted()
    assert accepted_at_kill < len(ids), "the kill came too late to be mid-batch"
    gateway.set_delay(0)
    killed_at = time.monotonic()
    thread_worker.start()
    sweep_until_settled(tenants, timeout=SCENARIO_SECONDS, every=SWEEP_EVERY)
    tally = assert_invariants(tenants, gateway)
    assert tally.by_status == {SmsStatus.SENT: len(ids)}
    figures(sms=len(ids), accepted_at_kill=accepted_at_kill, lost=tally.lost, duplicated=tally.duplicated,
            recovery_seconds=time.monotonic() - killed_at)


@pytest.mark.parametrize("broker", [False, True], indirect=True, ids=["queues-lost", "queues-kept"])
def test_broker_restarted_under_the_thread_pool_everything_goes_once(clinics, thread_worker, broker, gateway,
                                                                     figures):
    """Redis (broker, cache and the senders' buckets) goes away while threads send and rows hold
    slots, and comes back: the worker reconnects, and what lost its task, its wake-up or its
    bucket is handed out by the sweeper; each SMS goes once."""
    tenants = tenants_of(clinics)
    ids = notices_for(clinics, patients_per_clinic=3, per_patient=10)
    gateway.set_delay(100)
    thread_worker.start()
    wait_until(lambda: gateway.accepted() >= 15, timeout=SCENARIO_SECONDS, what="15 sends")
    broker.stop(graceful=broker.persistent)
    time.sleep(1.0)
    broker.start()
    back_at = time.monotonic()
    gateway.set_delay(0)
    try:
        sweep_until_settled(tenants, timeout=SCENARIO_SECONDS, every=SWEEP_EVERY)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nworker log:\n{thread_worker.log_tail(6000)}") from None
    assert thread_worker.proc.poll() is None, "the worker must survive the broker restart:\n" + thread_worker.log_tail()
    tally = assert_invariants(tenants, gateway)
    assert tally.by_status == {SmsStatus.SENT: len(ids)}
    figures(sms=len(ids), lost=tally.lost, duplicated=tally.duplicated, recovery_seconds=time.monotonic() - back_at)
