"""The fan-out's written-out reads (reminders._claim, bulk.patients_lock) return what the ORM
queries they replace return: the same rows in the same order, fields readable (encrypted ones
decrypt), the rest deferred, nothing of another clinic."""

from __future__ import annotations

import datetime

from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from accounts.tenancy import tenant_scope
from messaging import bulk
from patients.models import Patient
from reminders import services
from reminders.models import Reminder, ReminderStatus
from tests.factories import make_member, make_tenant, make_textable_patient
from tests.reminders.conftest import T0, book

H = datetime.timedelta(hours=1)


def _orm_claim(now, **filters):
    fields = (*services.CLAIM_REMINDER_FIELDS, *(f"appointment__{n}" for n in services.CLAIM_APPOINTMENT_FIELDS))
    rows = services._due(now).select_for_update(skip_locked=True, of=("self",)).select_related("appointment")
    return list(rows.filter(**filters).only(*fields))


def test_claim_returns_the_orm_claims_rows_in_its_order_with_appointments(tenant_a, alice, patient, in_a, _frozen):
    other = make_textable_patient(tenant=tenant_a, owner=alice, given_name="Bo", phone="+12025550179")
    due = [book(tenant_a, p, hours=hours, provider_name=f"Dr. {n}", instructions=f"Note {n}")
           for n, (p, hours) in enumerate([(patient, 30), (other, 40), (patient, 45)])]
    later = book(tenant_a, other, hours=120)  # due in 72 h
    sent = book(tenant_a, patient, hours=47)
    Reminder.objects.filter(appointment=sent).update(status=ReminderStatus.SENT)
    elsewhere = make_tenant(name="Clinic B", slug="claim-b")
    owner_b = make_member(tenant=elsewhere, role="owner", email="owner@claim-b.test")
    with tenant_scope(elsewhere):
        book(elsewhere, make_textable_patient(tenant=elsewhere, owner=owner_b, phone="+12025550178"), hours=30)
    now = T0 + H

    with transaction.atomic():
        claimed = services._claim(tenant=tenant_a, now=now, limit=10, ids=None, exclude=())
        expected = _orm_claim(now)
    assert [r.pk for r in claimed] == [r.pk for r in expected]
    assert {r.appointment_id for r in claimed} == {a.pk for a in due}
    assert later.pk not in {r.appointment_id for r in claimed}
    with CaptureQueriesContext(connection) as queries:
        for reminder, orm in zip(claimed, expected, strict=True):
            appointment = reminder.appointment
            assert reminder.idempotency_key == orm.idempotency_key and reminder.offset_minutes == orm.offset_minutes
            assert (appointment.pk, appointment.patient_id, appointment.status, appointment.starts_at) == (
                orm.appointment.pk, orm.appointment.patient_id, orm.appointment.status, orm.appointment.starts_at)
            assert (appointment.provider_name, appointment.instructions, appointment.location_name) == (
                orm.appointment.provider_name, orm.appointment.instructions, orm.appointment.location_name)
    assert len(queries) == 0  # everything sending reads came with the claim
    assert claimed[0].due_at == expected[0].due_at  # a field not claimed still loads when read


def test_claim_honours_ids_exclude_and_limit(tenant_a, alice, patient, in_a, _frozen):
    appointments = [book(tenant_a, patient, hours=30 + n) for n in range(4)]
    ids = [Reminder.objects.get(appointment=a).pk for a in appointments]
    now = T0 + H
    with transaction.atomic():
        assert [r.pk for r in services._claim(tenant=tenant_a, now=now, limit=10, ids=ids[1:3], exclude=())] == [
            r.pk for r in _orm_claim(now, pk__in=ids[1:3])]
        in_order = [r.pk for r in _orm_claim(now)]
        kept = services._claim(tenant=tenant_a, now=now, limit=2, ids=None, exclude={in_order[0]})
        assert [r.pk for r in kept] == in_order[1:3]
        assert services._claim(tenant=tenant_a, now=now, limit=10, ids=[], exclude=()) == []


def test_patients_lock_reads_the_patients_of_this_clinic_only(tenant_a, alice, patient, in_a):
    other = make_textable_patient(tenant=tenant_a, owner=alice, given_name="Bo", phone="+12025550179")
    elsewhere = make_tenant(name="Clinic B", slug="lock-b")
    owner_b = make_member(tenant=elsewhere, role="owner", email="owner@lock-b.test")
    with tenant_scope(elsewhere):
        stranger = make_textable_patient(tenant=elsewhere, owner=owner_b, phone="+12025550178")
    with transaction.atomic():
        locked = bulk.patients_lock([patient.pk, other.pk, patient.pk, stranger.pk])
    assert set(locked) == {patient.pk, other.pk}
    for p in (patient, other):
        fresh = Patient.objects.get(pk=p.pk)
        got = locked[p.pk]
        assert [getattr(got, f) for f in bulk.PATIENT_FIELDS] == [getattr(fresh, f) for f in bulk.PATIENT_FIELDS]
        assert got.family_name == fresh.family_name  # not read by sending: deferred, loads when read


def test_reminder_send_takes_the_id_as_text_too(tenant_a, patient, in_a, django_capture_on_commit_callbacks):
    appointment = book(tenant_a, patient, hours=30)  # due at once
    reminder = Reminder.objects.get(appointment=appointment)
    with django_capture_on_commit_callbacks(execute=True):
        assert services.reminder_send(tenant=tenant_a, reminder_id=str(reminder.pk)) == "sent"
        assert services.reminder_send(tenant=tenant_a, reminder_id=reminder.pk) == "busy"  # sent already: not due
