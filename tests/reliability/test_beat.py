"""Two beat schedulers at once (a deploy that briefly runs the old and the new beat, or a
second beat started by mistake): every reminders run happens twice or more, concurrently, on
a real prefork worker. Reminders are unique per appointment and offset, sends are claimed
with SKIP LOCKED and messages carry an idempotency key: each patient gets one reminder, one
SMS.
"""

from __future__ import annotations

import re
import threading
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.tenancy import tenant_scope
from messaging.models import Message, MessageKind, OutboundSms, SmsStatus
from reminders.models import Reminder, ReminderStatus
from reminders.tasks import reminders_run_for_tenant
from tests.factories import make_appointment
from tests.reliability.drive import count_in, sweep_until_settled, textable_patients, wait_until
from tests.reliability.invariants import SINKS, assert_invariants

pytestmark = [pytest.mark.slow, pytest.mark.reliability, pytest.mark.timeout(180)]

RUNS_EACH = 3  # reminders runs each beat must have published while both were up


def _two_runs_in_this_process_at_once(tenants) -> tuple[list[int], list[Exception]]:
    """Two more runs of every clinic's task body in this process, started together; (reminders
    each sent, errors). (``reminders_due`` itself only hands the clinics to the worker.)"""
    barrier, sent, errors = threading.Barrier(2), [], []

    def run():
        from django.db import connection as thread_connection

        try:
            barrier.wait(timeout=10)
            sent.append(sum(reminders_run_for_tenant(tenant_id=tenant.pk) for tenant in tenants))
        except Exception as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            thread_connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return sent, errors


def _worker_log(worker) -> str:
    return "".join(p.read_text(errors="replace") for p in worker.log_dir.glob("worker-*.log"))


def _sent_by_worker_runs(log: str) -> list[int]:
    """What each clinic's reminders run on the worker returned (reminders it sent)."""
    return [int(n) for n in re.findall(
        r"Task reminders\.tasks\.reminders_run_for_tenant\[[^]]+\] succeeded in [0-9.e-]+s: (\d+)", log)]


def test_two_beat_schedulers_at_once_send_each_reminder_once(clinics, worker, beats, gateway, figures):
    tenants = [tenant for tenant, _owner in clinics]
    starts_at = (timezone.now() + timedelta(hours=30)).replace(second=0, microsecond=0)
    appointments = []
    for tenant, owner in clinics:
        for patient in textable_patients(tenant, owner, 5):  # one appointment each: the daily cap holds no SMS
            appointments.append((tenant, make_appointment(tenant=tenant, patient=patient, actor=owner,
                                                          starts_at=starts_at)))
    # Booking scheduled the reminders already; drop them so the concurrent runs also race to create them.
    for tenant in tenants:
        with tenant_scope(tenant):
            Reminder.objects.all().delete()

    worker.start()
    began = time.monotonic()
    first, second = beats(2)
    # Two more runs in this process, at the moment the worker takes the first beat's run.
    wait_until(lambda: "Task reminders.tasks.reminders_due[" in _worker_log(worker), timeout=30,
               what="the first beat-triggered run on the worker")
    sent_here, errors = _two_runs_in_this_process_at_once(tenants)
    wait_until(lambda: first.sent("reminders-due") >= RUNS_EACH and second.sent("reminders-due") >= RUNS_EACH,
               timeout=60, what=f"{RUNS_EACH} reminders runs from each beat")
    for beat in (first, second):
        beat.kill()
    runs = first.sent("reminders-due") + second.sent("reminders-due")
    sweep_until_settled(tenants, timeout=60, every=2)
    seconds = time.monotonic() - began

    assert errors == []
    worker_log = _worker_log(worker)
    sent_per_run = _sent_by_worker_runs(worker_log) + sent_here
    assert sum(sent_per_run) == len(appointments)  # every reminder sent by exactly one run
    crashed = worker_log.count("reminders run failed") + sum("reminders run failed" in line for line in SINKS.log.lines)
    assert crashed == 0
    assert worker_log.count("Task reminders.tasks.reminders_due[") >= 2 * RUNS_EACH
    reminders_per_appointment, messages_per_appointment, sms_per_thread = [], [], []
    for tenant, appointment in appointments:
        with tenant_scope(tenant):
            reminders = list(Reminder.objects.filter(appointment=appointment))
            messages = list(Message.objects.filter(thread__appointment=appointment, kind=MessageKind.REMINDER))
            sms = OutboundSms.objects.filter(link__thread__appointment=appointment).count()
        reminders_per_appointment.append(len(reminders))
        messages_per_appointment.append(len(messages))
        sms_per_thread.append(sms)
        assert [r.status for r in reminders] == [ReminderStatus.SENT]
    assert reminders_per_appointment == [1] * len(appointments)
    assert messages_per_appointment == [1] * len(appointments)
    assert sms_per_thread == [1] * len(appointments)
    tally = assert_invariants(tenants, gateway)
    assert tally.by_status == {SmsStatus.SENT: len(appointments)}
    assert count_in(tenants, status=SmsStatus.SENT) == gateway.accepted() == len(appointments)
    figures(appointments=len(appointments), beat_runs=runs + 2, reminders=sum(reminders_per_appointment),
            duplicate_reminders=sum(reminders_per_appointment) - len(appointments),
            duplicate_messages=sum(messages_per_appointment) - len(appointments), lost=tally.lost,
            duplicated=tally.duplicated, runs_that_sent=sum(1 for n in sent_per_run if n), seconds=seconds)
