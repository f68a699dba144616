"""Helpers that set up outbox rows in committed transactions and drive the sweeper."""

from __future__ import annotations

import secrets
import string
import time
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from accounts.tenancy import tenant_scope
from consent.policy import SmsKind
from messaging.models import OutboundSms, SmsStatus
from messaging.outbox import sms_enqueue
from tests.factories import make_textable_patient
from tests.reliability.invariants import plant

LEASE_SECONDS = 3  # the worker's SMS_SEND_LEASE_SECONDS: a dead worker's SMS is free again after it


def canary(prefix: str = "Kanary") -> str:
    """A unique PHI-looking word (letters only, as names must be) to plant and search for."""
    return prefix + "".join(secrets.choice(string.ascii_lowercase) for _ in range(10))


def textable_patients(tenant, owner, count: int, **overrides) -> list:
    """Patients who may be texted now, each with canary names, planted for the invariant check
    (their names must never leave the database; their phone numbers only towards the provider)."""
    patients = []
    for _ in range(count):
        given, family = canary("Kanary"), canary("Vogel")
        patient = make_textable_patient(tenant=tenant, owner=owner, given_name=given, family_name=family, **overrides)
        plant(given, family)
        plant(patient.phone, phone=True)
        patients.append(patient)
    return patients


def enqueue_notices(tenant, patient, count: int) -> list[str]:
    """``count`` link notices to ``patient`` in one committed transaction (a task per row is
    published after the commit). Staff replies: not frequency-capped."""
    with tenant_scope(tenant), transaction.atomic():
        rows = [sms_enqueue(tenant=tenant, to=patient.phone, notification="link_notice",
                            sms_kind=SmsKind.STAFF_REPLY, payload=secrets.token_urlsafe(32), patient=patient)
                for _ in range(count)]
    assert all(row.status == SmsStatus.QUEUED for row in rows)
    return [str(row.pk) for row in rows]


def tenants_of(clinics) -> list:
    """The tenants of the ``clinics`` fixture's (tenant, owner) pairs."""
    return [tenant for tenant, _owner in clinics]


def notices_for(clinics, *, patients_per_clinic: int, per_patient: int) -> list[str]:
    """Queue ``per_patient`` link notices for each of ``patients_per_clinic`` new textable
    patients of every clinic; returns the outbox row ids."""
    ids = []
    for tenant, owner in clinics:
        for patient in textable_patients(tenant, owner, patients_per_clinic):
            ids += enqueue_notices(tenant, patient, per_patient)
    return ids


def rows_in(tenants, **filters) -> list[OutboundSms]:
    rows = []
    for tenant in tenants:
        with tenant_scope(tenant):
            rows.extend(OutboundSms.objects.filter(**filters))
    return rows


def count_in(tenants, **filters) -> int:
    total = 0
    for tenant in tenants:
        with tenant_scope(tenant):
            total += OutboundSms.objects.filter(**filters).count()
    return total


def open_rows(tenants) -> int:
    """Rows a worker still has to act on: queued or sending."""
    return count_in(tenants, status__in=[SmsStatus.QUEUED, SmsStatus.SENDING])


def wait_until(predicate, *, timeout: float, what: str, interval: float = 0.05) -> float:
    """Poll ``predicate`` until it is true; seconds waited. AssertionError after ``timeout``."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - start


def sweep_until_settled(tenants, *, timeout: float, every: float) -> float:
    """Run the beat sweeper (messaging.tasks.outbox_sweep, in this process) every ``every``
    seconds until no row is queued or sending; seconds it took."""
    from messaging.tasks import outbox_sweep

    start = time.monotonic()
    last_sweep = float("-inf")
    while open_rows(tenants):
        now = time.monotonic()
        if now - start > timeout:
            stuck = rows_in(tenants, status__in=[SmsStatus.QUEUED, SmsStatus.SENDING])
            raise AssertionError(f"{len(stuck)} SMS still open after {timeout:.0f} s: "
                                 + ", ".join(f"{r.pk}={r.status}/{r.error_code}/{r.attempts}" for r in stuck[:10]))
        if now - last_sweep >= every:
            outbox_sweep()
            last_sweep = now
        time.sleep(0.1)
    return time.monotonic() - start


def fast_forward_backoff(tenants) -> int:
    """Make every queued row due now (instead of waiting out its backoff); how many."""
    moved = 0
    now = timezone.now() - timedelta(milliseconds=1)
    for tenant in tenants:
        with tenant_scope(tenant):
            moved += OutboundSms.objects.filter(status=SmsStatus.QUEUED, next_attempt_at__gt=now).update(
                next_attempt_at=now)
    return moved
