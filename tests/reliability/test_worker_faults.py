"""More failures under the real worker (see test_outbox_worker.py for the set-up): a warm
shutdown mid-batch, the broker restarted with and without its queues, PostgreSQL connections
killed while the worker sends, and a provider that times out after accepting or refuses for good.

Every scenario ends with ``assert_invariants`` and records its figures.
"""

from __future__ import annotations

import time
import uuid

import pytest
from django.db import connection

from accounts.tenancy import tenant_scope
from audit.events import AuditEventType
from audit.models import AuditEvent
from messaging.models import SmsStatus
from tests.reliability.conftest import WORKER_APPLICATION_NAME
from tests.reliability.drive import (
    LEASE_SECONDS,
    count_in,
    enqueue_notices,
    fast_forward_backoff,
    notices_for,
    rows_in,
    sweep_until_settled,
    tenants_of,
    textable_patients,
    wait_until,
)
from tests.reliability.invariants import assert_invariants
from tests.reliability.processes import backends, terminate_backends

pytestmark = [pytest.mark.slow, pytest.mark.reliability, pytest.mark.timeout(180)]

SCENARIO_SECONDS = 90
SWEEP_EVERY = LEASE_SECONDS + 1


# --- warm shutdown ---------------------------------------------------------------------------------


def test_warm_shutdown_mid_batch_finishes_what_runs_and_hands_back_the_rest(
        clinics, worker, broker, gateway, figures):
    """SIGTERM (a deploy, ``docker stop``): the running sends finish and are recorded, the tasks
    the worker held go back to the broker, and the next worker sends them, without the sweeper."""
    tenants = tenants_of(clinics)
    ids = notices_for(clinics, patients_per_clinic=3, per_patient=20)
    assert len(ids) == 120
    gateway.set_delay(40)
    worker.start()
    wait_until(lambda: gateway.accepted() >= 24, timeout=SCENARIO_SECONDS, what="24 sends")
    stopped_at = time.monotonic()
    exit_code = worker.warm_shutdown(timeout=60)
    shutdown_seconds = time.monotonic() - stopped_at
    accepted_at_stop = gateway.accepted()
    assert exit_code == 0, worker.log_tail()
    assert accepted_at_stop < len(ids), "the shutdown came too late to be mid-batch"
    # Nothing was cut off: every SMS the provider took is recorded as sent, none is left "sending".
    assert count_in(tenants, status=SmsStatus.SENDING) == 0
    assert count_in(tenants, status=SmsStatus.SENT) == accepted_at_stop
    # The tasks it had reserved went back: a task for every SMS still to send. Redis may also give
    # back a task that finished just as the worker stopped (its late ack raced the restore of the
    # unacked: at-least-once delivery); such a task finds its SMS sent and does nothing (the claim
    # takes only open rows; the invariants below count every send).
    queued = broker.queued_sms_ids()
    handed_back = len(queued)
    rows = rows_in(tenants)
    unsent = {row.pk for row in rows if row.status != SmsStatus.SENT}
    sent = {row.pk for row in rows if row.status == SmsStatus.SENT}
    assert len(unsent) == len(ids) - accepted_at_stop
    assert unsent <= {uuid.UUID(i) for i in queued}, "a task for an SMS still to send was lost"
    extra = [i for i in queued if uuid.UUID(i) not in unsent]
    assert all(uuid.UUID(i) in sent for i in extra) and len(extra) <= worker.concurrency, extra

    gateway.set_delay(0)
    restarted_at = time.monotonic()
    worker.start()
    wait_until(lambda: count_in(tenants, status=SmsStatus.QUEUED) == 0
               and count_in(tenants, status=SmsStatus.SENDING) == 0,
               timeout=SCENARIO_SECONDS, what="the new worker to send the rest (no sweeper)")
    recovery = time.monotonic() - restarted_at

    tally = assert_invariants(tenants, gateway)
    assert tally.by_status == {SmsStatus.SENT: len(ids)}
    figures(sms=len(ids), accepted_at_stop=accepted_at_stop, handed_back=handed_back,
            shutdown_seconds=shutdown_seconds, lost=tally.lost, duplicated=tally.duplicated,
            recovery_seconds=recovery)


# --- the broker restarted ---------------------------------------------------------------------------


@pytest.mark.parametrize("broker", [False, True], indirect=True, ids=["queues-lost", "queues-kept"])
def test_broker_restarted_mid_batch_everything_goes_once(clinics, worker, broker, gateway, figures):
    """Redis goes away while the worker is busy and comes back on the same port: without
    persistence (a crash: its queued tasks are gone), or with an append-only file and a clean
    shutdown (its queued tasks are still there). The worker reconnects; the sweeper hands out
    whatever has no task any more; each SMS goes exactly once."""
    tenants = tenants_of(clinics)
    ids = notices_for(clinics, patients_per_clinic=3, per_patient=20)
    gateway.set_delay(40)
    worker.start()
    wait_until(lambda: gateway.accepted() >= 20, timeout=SCENARIO_SECONDS, what="20 sends")
    broker.stop(graceful=broker.persistent)
    down_at = time.monotonic()
    time.sleep(1.0)
    broker.start()
    back_at = time.monotonic()
    queued_after_restart = broker.queued_messages()
    if broker.persistent:
        assert queued_after_restart > 0, "the append-only file should have kept the queued tasks"
    else:
        assert queued_after_restart == 0
    gateway.set_delay(0)
    try:
        sweep_until_settled(tenants, timeout=SCENARIO_SECONDS, every=SWEEP_EVERY)
    except AssertionError as exc:  # say whether the worker ever consumed again
        raise AssertionError(f"{exc}\nworker log:\n{worker.log_tail(6000)}") from None
    recovery = time.monotonic() - back_at

    assert worker.proc.poll() is None, "the worker must survive the broker restart:\n" + worker.log_tail()
    tally = assert_invariants(tenants, gateway)
    assert tally.by_status == {SmsStatus.SENT: len(ids)}
    figures(sms=len(ids), queued_after_restart=queued_after_restart, outage_seconds=back_at - down_at,
            lost=tally.lost, duplicated=tally.duplicated, recovery_seconds=recovery)


# --- PostgreSQL connections killed while sending -------------------------------------------------------


def test_database_connections_killed_mid_send_each_sms_goes_once(clinics, worker, gateway, figures):
    """``pg_terminate_backend`` on every connection of the worker, again and again, while its
    sends are at the provider: the attempt in flight cannot store the provider's answer, the
    row keeps its lease, and the next attempt (after the lease, from the sweeper) finds the SMS
    at the provider instead of sending it again. The worker itself keeps running."""
    tenants = tenants_of(clinics)
    ids = notices_for(clinics, patients_per_clinic=3, per_patient=10)
    dbname = connection.settings_dict["NAME"]
    gateway.set_delay(150)  # the connection sits idle while the provider answers: that is when it dies
    worker.start()
    wait_until(lambda: len(backends(dbname, application_name=WORKER_APPLICATION_NAME)) >= 2
               and gateway.accepted() >= 4, timeout=30, what="the worker's connections and first sends")
    killed_at = time.monotonic()
    killed = 0
    for _ in range(8):
        killed += terminate_backends(dbname, application_name=WORKER_APPLICATION_NAME)
        time.sleep(0.3)
    gateway.set_delay(0)
    sweep_until_settled(tenants, timeout=SCENARIO_SECONDS, every=SWEEP_EVERY)
    recovery = time.monotonic() - killed_at

    assert killed >= 4
    assert worker.proc.poll() is None, worker.log_tail()
    worker_log = "".join(p.read_text(errors="replace") for p in worker.log_dir.glob("worker-*.log"))
    interrupted = worker_log.count("raised; it stays due for the sweeper")
    assert interrupted >= 1, "no send was interrupted: the kills missed every task"
    tally = assert_invariants(tenants, gateway)
    assert tally.by_status == {SmsStatus.SENT: len(ids)}
    figures(sms=len(ids), connections_killed=killed, sends_interrupted=interrupted,
            reconciled=gateway.counter("reconciled"), lost=tally.lost, duplicated=tally.duplicated,
            recovery_seconds=recovery)


# --- the provider: timeouts after accepting, and refusals --------------------------------------------------


def test_timeouts_after_acceptance_are_reconciled_never_resent_and_refusals_fail_once(
        clinics, worker, gateway, figures):
    tenants = tenants_of(clinics)
    (tenant_a, owner_a), (tenant_b, owner_b) = clinics
    ambiguous, plain = [], []
    for tenant, owner in clinics:
        for patient in textable_patients(tenant, owner, 3):
            rows = enqueue_notices(tenant, patient, 8)
            ambiguous += rows[:4]
            plain += rows[4:]
    # Refusals get a patient each: "invalid number" marks the number, and would cancel the rest.
    refused = [enqueue_notices(tenant, patient, 1)[0] for tenant, owner in clinics
               for patient in textable_patients(tenant, owner, 4)]
    for key in ambiguous:
        gateway.script_for(key, ["ambiguous"])
    for key in refused:
        gateway.fail_always(key, "permanent")
    started = time.monotonic()
    worker.start()
    everything = ambiguous + plain + refused
    # Attempts first, then "nothing in flight": in this order no claim can slip in between.
    wait_until(lambda: sum(gateway.attempts(k) for k in everything) == len(everything)
               and count_in(tenants, status=SmsStatus.SENDING) == 0,
               timeout=SCENARIO_SECONDS, what="one attempt at every SMS")
    # The timed-out ones wait out their backoff as "queued, ambiguous"; the provider has them.
    assert count_in(tenants, status=SmsStatus.QUEUED, error_code="ambiguous") == len(ambiguous)
    fast_forward_backoff(tenants)
    sweep_until_settled(tenants, timeout=SCENARIO_SECONDS, every=SWEEP_EVERY)
    elapsed = time.monotonic() - started

    tally = assert_invariants(tenants, gateway)
    rows = {str(r.pk): r for r in rows_in(tenants)}
    submissions = gateway.submissions()
    for key in ambiguous:
        assert (rows[key].status, rows[key].attempts) == (SmsStatus.SENT, 2)
        assert gateway.attempts(key) == 1 and submissions[key] == 1  # reconciled, never sent again
    for key in refused:
        assert (rows[key].status, rows[key].attempts, rows[key].error_code) == (SmsStatus.FAILED, 1, "21211")
        assert gateway.attempts(key) == 1 and key not in submissions  # no retry
    assert all(rows[key].status == SmsStatus.SENT and rows[key].attempts == 1 for key in plain)
    assert gateway.counter("reconciled") == len(ambiguous)
    for tenant in tenants:
        with tenant_scope(tenant):
            failed = list(AuditEvent.objects.filter(event_type=AuditEventType.SMS_FAILED)
                          .values_list("details__sms_id", flat=True))
        assert sorted(failed) == sorted(k for k in refused if rows[k].tenant_id == tenant.pk)  # once each
    figures(sms=len(rows), ambiguous=len(ambiguous), refused=len(refused), reconciled=gateway.counter("reconciled"),
            resent=sum(gateway.attempts(k) - 1 for k in ambiguous), lost=tally.lost, duplicated=tally.duplicated,
            seconds=elapsed)
