"""The beat task hands each active clinic to the worker pool as its own task (ids only); eager
Celery (the demo, tests) runs the clinics in turn in one process."""

from __future__ import annotations

import json

import pytest

from accounts.tenancy import current_tenant, tenant_scope
from reminders import tasks
from reminders.models import Reminder, ReminderStatus
from tests.factories import make_member, make_tenant, make_textable_patient
from tests.reminders.conftest import book


@pytest.fixture
def not_eager():
    from config.celery import app

    previous = app.conf.task_always_eager
    app.conf.task_always_eager = False
    yield
    app.conf.task_always_eager = previous


def _clinic_with_due_reminder(slug: str, phone: str):
    tenant = make_tenant(name=f"Clinic {slug}", slug=slug)
    owner = make_member(tenant=tenant, role="owner", email=f"owner@{slug}.test")
    patient = make_textable_patient(tenant=tenant, owner=owner, phone=phone)
    with tenant_scope(tenant):
        appointment = book(tenant, patient, hours=30)  # inside the first offset: due at once
    return tenant, appointment


def _status(tenant, appointment) -> str:
    with tenant_scope(tenant):
        return Reminder.objects.get(appointment=appointment).status


def test_beat_task_hands_each_active_clinic_out_as_its_own_task_with_its_id_only(db, not_eager, monkeypatch):
    first, _ = _clinic_with_due_reminder("hand-a", "+12025550181")
    second, _ = _clinic_with_due_reminder("hand-b", "+12025550182")
    closed = make_tenant(name="Closed clinic", slug="hand-closed")
    closed.is_active = False
    closed.save(update_fields=["is_active"])
    handed = []
    monkeypatch.setattr(tasks.reminders_run_for_tenant, "apply_async",
                        lambda args=None, kwargs=None, **options: handed.append((args, kwargs, options)))

    assert tasks.reminders_due() == 2
    assert [kwargs for _, kwargs, _ in handed] == [{"tenant_id": first.pk}, {"tenant_id": second.pk}]
    for args, kwargs, options in handed:
        assert not args and json.loads(json.dumps(kwargs)) == kwargs  # ids only: nothing else to leak
        assert options["expires"] == tasks.RUN_EXPIRES_SECONDS  # a backlog never stacks a clinic's runs


def test_broker_down_skips_the_clinic_and_hands_out_the_others(db, not_eager, monkeypatch, caplog):
    first, _ = _clinic_with_due_reminder("down-a", "+12025550183")
    second, _ = _clinic_with_due_reminder("down-b", "+12025550184")
    handed = []

    def apply_async(args=None, kwargs=None, **options):
        if kwargs["tenant_id"] == first.pk:
            raise ConnectionError("broker down")
        handed.append(kwargs["tenant_id"])

    monkeypatch.setattr(tasks.reminders_run_for_tenant, "apply_async", apply_async)
    assert tasks.reminders_due() == 1
    assert handed == [second.pk]
    assert f"could not hand out the run of tenant {first.pk}" in caplog.text


def test_per_clinic_task_runs_that_clinic_only_in_its_scope(db):
    first, first_appointment = _clinic_with_due_reminder("own-a", "+12025550185")
    second, second_appointment = _clinic_with_due_reminder("own-b", "+12025550186")

    assert tasks.reminders_run_for_tenant(tenant_id=first.pk) == 1
    assert current_tenant() is None  # the task's scope ended with it
    assert _status(first, first_appointment) == ReminderStatus.SENT
    assert _status(second, second_appointment) == ReminderStatus.SCHEDULED
    assert tasks.reminders_run_for_tenant(tenant_id=first.pk) == 0  # idempotent: nothing twice


def test_per_clinic_task_of_an_inactive_clinic_does_nothing(db):
    tenant, appointment = _clinic_with_due_reminder("gone", "+12025550187")
    tenant.is_active = False
    tenant.save(update_fields=["is_active"])
    assert tasks.reminders_run_for_tenant(tenant_id=tenant.pk) is None
    assert _status(tenant, appointment) == ReminderStatus.SCHEDULED


def test_one_clinics_failure_does_not_stop_the_others_in_one_process(db, monkeypatch, caplog):
    from reminders import services

    first, first_appointment = _clinic_with_due_reminder("fail-a", "+12025550188")
    second, second_appointment = _clinic_with_due_reminder("fail-b", "+12025550189")
    real = services.reminders_run_for_tenant

    def run(*, tenant, now=None):
        if tenant.pk == first.pk:
            raise RuntimeError("boom")
        return real(tenant=tenant, now=now)

    monkeypatch.setattr(services, "reminders_run_for_tenant", run)
    assert tasks.reminders_due() == 1  # eager (the tests' and the demo's Celery): in turn, here, reminders sent
    assert f"reminders run failed for tenant {first.pk}" in caplog.text
    assert _status(first, first_appointment) == ReminderStatus.SCHEDULED
    assert _status(second, second_appointment) == ReminderStatus.SENT


def test_eager_beat_task_sends_every_clinics_due_reminders_in_this_process(db):
    clinics = [_clinic_with_due_reminder(f"eager-{i}", f"+1202555019{i}") for i in range(3)]
    assert tasks.reminders_due() == 3
    assert [_status(t, a) for t, a in clinics] == [ReminderStatus.SENT] * 3
