"""The outbox under real failures: a real Celery worker (prefork, 4 processes) in its own process
group, the test's own redis-server as the broker, real PostgreSQL commits, and a counting
gateway that, like a real provider, does not deduplicate (integrations.sms.counting).

Every scenario ends with ``assert_invariants`` (tests/reliability/invariants.py): nothing stuck,
the provider accepted every sent row exactly once and nothing else, the audit chains verify, no
cross-tenant actor, no canary in any sink. Each is bounded in time and records what it measured
(``figures``): lost and duplicated SMS, recovery seconds.

Backoff: the worker is a separate process with the real backoff (15 s, 30 s, …). The storm test
checks each row's next_attempt_at against that schedule and that the worker refuses a row
before it (a stale task for it is skipped), then makes the rows due now with an UPDATE instead
of waiting minutes (``drive.fast_forward_backoff``).
"""

from __future__ import annotations

import os
import signal
import time
from datetime import datetime

import pytest
from django.utils import timezone

from accounts.services import api_key_create
from accounts.tenancy import tenant_scope
from audit.events import AuditEventType
from audit.models import AuditEvent
from messaging.inbound import inbound_sms_receive
from messaging.models import MessageKind, OutboundSms, SmsStatus
from messaging.outbox import BACKOFF_BASE_SECONDS, BACKOFF_MAX_SECONDS, MAX_ATTEMPTS
from messaging.services import message_send
from messaging.tasks import outbox_send, outbox_sweep
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

pytestmark = [pytest.mark.slow, pytest.mark.reliability, pytest.mark.timeout(240)]

SCENARIO_SECONDS = 120
SWEEP_EVERY = LEASE_SECONDS + 1


# --- 1. SIGKILL mid-batch ---------------------------------------------------------------------------


def test_sigkill_mid_batch_of_500_sends_each_sms_exactly_once(clinics, worker, gateway, figures):
    tenants = tenants_of(clinics)
    ids = notices_for(clinics, patients_per_clinic=25, per_patient=10)  # 50 patients, a task per SMS
    assert len(ids) == 500
    gateway.set_delay(20)  # a provider answering in 20 ms
    worker.start()
    wait_until(lambda: gateway.accepted() >= 100, timeout=SCENARIO_SECONDS, what="100 sends")
    os.kill(worker.pool_pids()[0], signal.SIGKILL)  # one pool process dies: Celery requeues its task
    wait_until(lambda: gateway.accepted() >= 250, timeout=SCENARIO_SECONDS, what="250 sends before the kill")
    worker.kill()  # then the whole worker, main process and pool at once
    killed_at = time.monotonic()
    accepted_at_kill = gateway.accepted()
    sending_at_kill = count_in(tenants, status=SmsStatus.SENDING)
    assert accepted_at_kill < 500, "the kill came too late to be mid-batch"

    worker.start()
    sweep_until_settled(tenants, timeout=SCENARIO_SECONDS, every=SWEEP_EVERY)
    recovery = time.monotonic() - killed_at

    tally = assert_invariants(tenants, gateway)
    assert tally.by_status == {SmsStatus.SENT: 500}
    assert set(gateway.submissions()) == set(ids)
    figures(sms=500, accepted_at_kill=accepted_at_kill, sending_at_kill=sending_at_kill, lost=tally.lost,
            duplicated=tally.duplicated, kill_to_all_sent_seconds=recovery)


def test_sigkill_after_the_provider_accepted_reconciles_instead_of_resending(clinics, worker, gateway, figures):
    """The worst moment: the provider took the SMS, the worker died before storing the answer.
    The next attempt (after the lease) must find the SMS at the provider, not send it again."""
    tenants = tenants_of(clinics)
    ids = notices_for(clinics, patients_per_clinic=2, per_patient=10)
    gateway.set_hang_seconds(120)
    gateway.script(["ok"] * 8 + ["hang_after_accept"] * 4)  # every pool process ends up hanging
    worker.start()
    wait_until(lambda: len(gateway.hanging()) == 4, timeout=60, what="4 sends hanging after acceptance")
    worker.kill()
    killed_at = time.monotonic()
    hung = gateway.hanging()
    left_sending = {str(r.pk) for r in rows_in(tenants, status=SmsStatus.SENDING)}
    assert set(hung) <= left_sending  # accepted by the provider, but "sending" in our books

    worker.start()
    sweep_until_settled(tenants, timeout=SCENARIO_SECONDS, every=SWEEP_EVERY)
    recovery = time.monotonic() - killed_at

    tally = assert_invariants(tenants, gateway)
    assert tally.by_status == {SmsStatus.SENT: len(ids)}
    submissions = gateway.submissions()
    assert all(submissions[key] == 1 for key in hung)
    assert gateway.counter("reconciled") >= len(hung)  # found at the provider, not sent again
    figures(sms=len(ids), accepted_but_unrecorded=len(hung), reconciled=gateway.counter("reconciled"),
            lost=tally.lost, duplicated=tally.duplicated, recovery_seconds=recovery)


def test_an_attempt_slower_than_its_lease_cannot_overwrite_the_next_attempt(clinics, worker, gateway, figures):
    """Attempt 1 stalls past its lease; attempt 2 (another pool process) sends; attempt 1 then
    fails late. Its stale answer must be dropped, or the row would be retried and sent twice."""
    tenants = tenants_of(clinics)
    (tenant, owner), _ = clinics
    [sms_id] = enqueue_notices(tenant, textable_patients(tenant, owner, 1)[0], 1)
    gateway.script_for(sms_id, ["hang_before_send", "ok"])
    gateway.set_hang_seconds(LEASE_SECONDS + 3)
    worker.start()
    wait_until(lambda: gateway.hanging() == [sms_id], timeout=30, what="attempt 1 to stall")
    [row] = rows_in(tenants, pk=sms_id)
    wait_until(lambda: timezone.now() > row.lease_until, timeout=LEASE_SECONDS + 5, what="the lease to run out")
    gateway.set_delay(5000)  # attempt 2 is still at the provider when attempt 1 gives up
    outbox_sweep()
    wait_until(lambda: gateway.accepted() == 1, timeout=30, what="attempt 2 to be accepted")
    gateway.set_delay(0)
    wait_until(lambda: count_in(tenants, status=SmsStatus.SENDING) == 0, timeout=30, what="both attempts to end")
    fast_forward_backoff(tenants)
    sweep_until_settled(tenants, timeout=SCENARIO_SECONDS, every=SWEEP_EVERY)

    tally = assert_invariants(tenants, gateway)
    [row] = rows_in(tenants, pk=sms_id)
    assert row.status == SmsStatus.SENT and row.attempts == 2
    figures(lost=tally.lost, duplicated=tally.duplicated, gateway_calls=len(gateway.outcomes()))


# --- 2. Redis down while messages are created -------------------------------------------------------


def test_redis_down_while_messages_are_created_then_everything_goes_once(
        clinics, worker, broker, gateway, client, caplog, figures):
    """Redis (broker and cache) stops. Sending through the service and the API still answers,
    fast: the rows commit and the failed publish is only logged. When Redis is back, empty,
    the sweeper hands every row out and each is sent once."""
    tenants = tenants_of(clinics)
    patients = [(tenant, owner, p) for tenant, owner in clinics for p in textable_patients(tenant, owner, 10)]
    (tenant_a, owner_a), _ = clinics
    api_patients = textable_patients(tenant_a, owner_a, 2)
    with tenant_scope(tenant_a):
        _key, raw_key = api_key_create(tenant=tenant_a, actor=owner_a, name="EHR", scopes=["messages:send"])
    worker.start()

    broker.stop()
    stopped_at = time.monotonic()
    service_seconds, api_seconds = [], []
    for n, (tenant, owner, patient) in enumerate(patients):
        began = time.monotonic()
        with tenant_scope(tenant):
            message_send(tenant=tenant, actor=owner, patient=patient, body=f"Your form number {n} is ready.")
        service_seconds.append(time.monotonic() - began)
    for n, patient in enumerate(api_patients):
        began = time.monotonic()
        response = client.post(f"/api/v1/patients/{patient.pk}/messages", {"body": "Please call us back."},
                               content_type="application/json",
                               headers={"Authorization": f"Bearer {raw_key}", "Idempotency-Key": f"outage-{n}"})
        api_seconds.append(time.monotonic() - began)
        assert response.status_code == 201, response.content[:300]
    began = time.monotonic()
    assert client.get("/healthz").status_code == 200
    healthz_seconds = time.monotonic() - began
    outage = time.monotonic() - stopped_at

    slowest = max(service_seconds + api_seconds + [healthz_seconds])
    assert slowest < 5, f"a request took {slowest:.1f} s while Redis was down"
    created = len(patients) + len(api_patients)
    not_published = [r for r in caplog.records if r.getMessage().startswith("outbox: could not enqueue")]
    assert len(not_published) == created  # each publish really failed (and only said so in the log)
    assert count_in(tenants, status=SmsStatus.QUEUED) == created
    assert gateway.accepted() == 0

    broker.start()  # same port, empty: every publish made during the outage is gone
    back_at = time.monotonic()
    sweep_until_settled(tenants, timeout=SCENARIO_SECONDS, every=SWEEP_EVERY)
    recovery = time.monotonic() - back_at

    tally = assert_invariants(tenants, gateway)
    assert tally.by_status == {SmsStatus.SENT: created}
    figures(created_during_outage=created, max_service_seconds=max(service_seconds), max_api_seconds=max(api_seconds),
            healthz_seconds=healthz_seconds, outage_seconds=outage, lost=tally.lost, duplicated=tally.duplicated,
            recovery_seconds=recovery)


# --- 3. a 429/500 storm ---------------------------------------------------------------------------


def _backoff_bounds(attempts: int) -> tuple[float, float]:
    ceiling = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(0, attempts - 1))
    return ceiling / 2, ceiling


def _round_settled(tenants) -> bool:
    """Nothing being sent and nothing due, read in ONE query per clinic: two separate counts race
    with a claim between them (a due row becomes "sending" after the first count) and end the
    storm loop with a row still in flight."""
    from django.db.models import Q

    busy = Q(status=SmsStatus.SENDING) | Q(status=SmsStatus.QUEUED, next_attempt_at__lte=timezone.now())
    for tenant in tenants:
        with tenant_scope(tenant):
            if OutboundSms.objects.filter(busy).exists():
                return False
    return True


def _assert_backoff_respected(tenants) -> int:
    """Every row waiting to retry is scheduled inside its backoff window; how many wait."""
    waiting = rows_in(tenants, status=SmsStatus.QUEUED)
    for row in waiting:
        low, high = _backoff_bounds(row.attempts)
        delay = (row.next_attempt_at - row.last_attempt_at).total_seconds()
        assert low <= delay <= high + 10, f"attempt {row.attempts} retries after {delay:.1f} s, not {low}-{high} s"
    return len(waiting)


def _assert_worker_waits_for_backoff(tenants, broker, gateway) -> None:
    """Hand the worker tasks for rows that are not due yet (a stale or duplicated task): it must
    leave them alone."""
    before = {str(r.pk): (r.attempts, gateway.attempts(str(r.pk))) for r in rows_in(tenants, status=SmsStatus.QUEUED)}
    for tenant in tenants:
        with tenant_scope(tenant):
            ids = [str(r.pk) for r in rows_in([tenant], status=SmsStatus.QUEUED)]
        if ids:
            outbox_send.apply_async(kwargs={"tenant_id": tenant.pk, "sms_ids": ids}, ignore_result=True)
    wait_until(lambda: broker.queued_messages() == 0, timeout=30, what="the worker to take the stale tasks")
    time.sleep(1.0)
    after = {str(r.pk): (r.attempts, gateway.attempts(str(r.pk))) for r in rows_in(tenants, pk__in=list(before))}
    assert after == before


def test_gateway_storm_of_429_and_500_everything_sent_attempts_bounded(clinics, worker, broker, gateway, figures):

    tenants = tenants_of(clinics)
    ids = notices_for(clinics, patients_per_clinic=3, per_patient=10)
    (tenant_a, owner_a), _ = clinics
    [always_down] = enqueue_notices(tenant_a, textable_patients(tenant_a, owner_a, 1)[0], 1)
    [refused] = enqueue_notices(tenant_a, textable_patients(tenant_a, owner_a, 1)[0], 1)
    storm = ["429", "500", "timeout", "ambiguous"] * 38  # 152 failures for 60 SMS
    gateway.script(storm)
    gateway.fail_always(always_down, "500")
    gateway.fail_always(refused, "permanent")
    started = time.monotonic()
    worker.start()

    rounds = 0
    while True:
        wait_until(lambda: _round_settled(tenants), timeout=60, what=f"retry round {rounds + 1} to settle")
        rounds += 1
        waiting = _assert_backoff_respected(tenants)
        if rounds == 1:
            _assert_worker_waits_for_backoff(tenants, broker, gateway)
        if not waiting:
            break
        assert rounds <= MAX_ATTEMPTS, "more retry rounds than attempts allowed"
        fast_forward_backoff(tenants)
        outbox_sweep()
    elapsed = time.monotonic() - started

    assert gateway.script_left() == 0, "the storm was not used up"
    tally = assert_invariants(tenants, gateway)
    assert tally.by_status == {SmsStatus.SENT: len(ids), SmsStatus.FAILED: 2}
    rows = {str(r.pk): r for r in rows_in(tenants)}
    assert all(rows[key].attempts <= MAX_ATTEMPTS and gateway.attempts(key) <= MAX_ATTEMPTS for key in ids)
    assert rows[always_down].attempts == MAX_ATTEMPTS == gateway.attempts(always_down)
    assert rows[refused].attempts == 1 and rows[refused].error_code == "21211"
    with tenant_scope(tenant_a):
        failed_audits = AuditEvent.objects.filter(event_type=AuditEventType.SMS_FAILED).count()
    assert failed_audits == 2
    outcomes = gateway.outcomes()
    figures(sms=len(ids) + 2, failures_injected=len(storm), retry_rounds=rounds,
            max_attempts=max(r.attempts for r in rows.values()), reconciled=gateway.counter("reconciled"),
            gateway_calls=len(outcomes), lost=tally.lost, duplicated=tally.duplicated, seconds=elapsed)


# --- 4. STOP while SMS are queued -----------------------------------------------------------------------


def test_stop_while_sms_are_queued_means_no_sms_after_it_but_the_confirmation(clinics, worker, gateway, figures):

    tenants = tenants_of(clinics)
    (tenant, owner), _ = clinics
    patient, bystander = textable_patients(tenant, owner, 2)
    # Two notices meet trouble first: one stalls before reaching the provider (the worker dies
    # holding it), one reaches the provider but the answer is lost.
    [stalled] = enqueue_notices(tenant, patient, 1)
    [accepted_unanswered] = enqueue_notices(tenant, patient, 1)
    gateway.script_for(stalled, ["hang_before_send"])
    gateway.script_for(accepted_unanswered, ["ambiguous"])
    gateway.set_hang_seconds(120)
    worker.start()
    wait_until(lambda: gateway.hanging() == [stalled]
               and count_in(tenants, pk=accepted_unanswered, error_code="ambiguous") == 1,
               timeout=60, what="one stalled and one unanswered send")
    worker.kill()
    assert count_in(tenants, pk=stalled, status=SmsStatus.SENDING) == 1

    # With no worker running, more SMS for the patient queue up (and one for someone else).
    queued = enqueue_notices(tenant, patient, 3)
    with tenant_scope(tenant):
        queued.append(str(message_send(tenant=tenant, actor=owner, patient=patient, body="A").sms.get().pk))
        queued.append(str(message_send(tenant=tenant, actor=owner, patient=patient, body="B",
                                       kind=MessageKind.RESULT_NOTICE).sms.get().pk))
        other = str(message_send(tenant=tenant, actor=owner, patient=bystander, body="C").sms.get().pk)
    assert count_in(tenants, pk__in=queued, status=SmsStatus.WAITING) >= 1  # the frequency cap held one

    stop_at = timezone.now()
    with tenant_scope(tenant):
        inbound_sms_receive(tenant=tenant, provider_id="SM" + "5" * 32, from_number=patient.phone, body="STOP")
    [confirmation] = [str(r.pk) for r in rows_in(tenants, notification="keyword_reply")]

    time.sleep(LEASE_SECONDS + 0.5)  # the dead worker's lease on the stalled SMS runs out
    fast_forward_backoff(tenants)  # the unanswered one is due for its check now
    worker.start()
    sweep_until_settled(tenants, timeout=SCENARIO_SECONDS, every=SWEEP_EVERY)

    assert_invariants(tenants, gateway)
    rows = {str(r.pk): r for r in rows_in(tenants)}
    after_stop = [rec for rec in gateway.log() if rec["to"] == patient.phone
                  and datetime.fromisoformat(rec["at"]) >= stop_at]
    assert [rec["key"] for rec in after_stop] == [confirmation]
    assert rows[stalled].status == SmsStatus.CANCELLED and rows[stalled].error_code == "revoked"
    assert all(rows[key].status == SmsStatus.CANCELLED for key in queued)
    # It reached the provider before the STOP: the books say so, and it was not sent again.
    assert rows[accepted_unanswered].status == SmsStatus.SENT
    assert gateway.submissions()[accepted_unanswered] == 1
    assert rows[confirmation].status == SmsStatus.SENT and rows[other].status == SmsStatus.SENT
    figures(queued_for_patient=len(queued) + 2, sends_after_stop=len(after_stop),
            cancelled=sum(1 for r in rows.values() if r.status == SmsStatus.CANCELLED))


# --- 5. Redis flushed before the worker consumed ------------------------------------------------------------


def test_redis_flushed_before_the_worker_consumed_the_sweeper_sends_everything_once(
        clinics, worker, broker, gateway, figures):
    tenants = tenants_of(clinics)
    ids = notices_for(clinics, patients_per_clinic=10, per_patient=5)
    assert broker.queued_messages() == len(ids)
    broker.flushall()
    flushed_at = time.monotonic()
    worker.start()
    time.sleep(1.0)
    assert gateway.accepted() == 0  # nothing left for the worker: the tasks are gone

    sweep_until_settled(tenants, timeout=SCENARIO_SECONDS, every=SWEEP_EVERY)
    recovery = time.monotonic() - flushed_at

    tally = assert_invariants(tenants, gateway)
    assert tally.by_status == {SmsStatus.SENT: len(ids)}
    figures(sms=len(ids), tasks_flushed=len(ids), lost=tally.lost, duplicated=tally.duplicated,
            recovery_seconds=recovery)
