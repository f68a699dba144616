"""The invariant checker must catch what it claims to: a checker that cannot fail proves nothing.

Each test breaks one invariant on purpose and expects ``assert_invariants`` to name it.
"""

from __future__ import annotations

import logging

import pytest

from accounts.permissions import Role
from accounts.tenancy import tenant_scope
from audit.events import AuditEventType
from audit.services import audit_record
from messaging.models import OutboundSms, SmsStatus
from messaging.tasks import outbox_send
from tests.factories import make_member, make_textable_patient
from tests.reliability.drive import canary, enqueue_notices
from tests.reliability.invariants import SINKS, assert_invariants, canary_leaks, plant

pytestmark = pytest.mark.reliability


@pytest.fixture
def sent_in_a(settings, tenant_a, alice, gateway, django_capture_on_commit_callbacks):
    """Two SMS of clinic A that the counting gateway accepted (Celery is eager here)."""
    settings.SMS_GATEWAY = "counting"
    patient = make_textable_patient(tenant=tenant_a, owner=alice)
    with django_capture_on_commit_callbacks(execute=True):
        ids = enqueue_notices(tenant_a, patient, 2)
    with tenant_scope(tenant_a):
        assert set(OutboundSms.objects.values_list("status", flat=True)) == {SmsStatus.SENT}
    return ids


def test_a_clean_scenario_passes(tenant_a, tenant_b, sent_in_a, gateway):
    tally = assert_invariants([tenant_a, tenant_b], gateway)
    assert tally.by_status == {SmsStatus.SENT: 2} and tally.duplicated == tally.lost == 0


def test_it_catches_a_stuck_row_and_a_second_submission(tenant_a, sent_in_a, gateway):
    stuck, doubled = sent_in_a
    with tenant_scope(tenant_a):
        OutboundSms.objects.filter(pk=stuck).update(status=SmsStatus.SENDING)
    gateway.redis.hincrby(gateway._k("submissions"), doubled, 1)  # the provider took it twice
    with pytest.raises(AssertionError) as caught:
        assert_invariants([tenant_a], gateway)
    assert f"SMS {stuck} is stuck in 'sending'" in str(caught.value)
    assert f"SMS {doubled} is 'sent' but the provider accepted it 2 times" in str(caught.value)


def test_it_catches_an_actor_of_another_clinic_in_audit_events(tenant_a, tenant_b, charlie, gateway):
    with tenant_scope(tenant_a):
        audit_record(tenant=tenant_a, actor=charlie, event_type=AuditEventType.TENANT_SETTINGS_CHANGED,
                     details={})
    with pytest.raises(AssertionError, match=f"name user {charlie.pk}, not a member of it"):
        assert_invariants([tenant_a, tenant_b], gateway)


def test_it_catches_an_actor_of_another_clinic_in_field_history(tenant_a, tenant_b, charlie, gateway):
    from auditlog.context import set_actor

    with set_actor(charlie):  # as if charlie's request changed a row of clinic A
        make_textable_patient(tenant=tenant_a, owner=make_member(tenant=tenant_a, role=Role.OWNER))
    with pytest.raises(AssertionError, match=f"auditlog rows of tenant {tenant_a.pk} were changed by user "
                                             f"{charlie.pk}, not a member of it"):
        assert_invariants([tenant_a, tenant_b], gateway)


def test_it_finds_canaries_in_logs_files_the_broker_and_phones_outside_the_provider(
        tmp_path, real_celery, broker, gateway_store, gateway):
    name, phone = canary(), "+12025550987"
    plant(name)
    plant(phone, phone=True)
    assert canary_leaks() == []

    logging.getLogger("caretext.test").warning("patient %s could not be found", name)
    (tmp_path / "worker-9.log").write_text(f"Task received: {phone}\n")
    # A task whose arguments carry PHI: kombu keeps the body base64 in the Redis list.
    outbox_send.apply_async(kwargs={"tenant_id": 1, "sms_ids": [name]}, ignore_result=True)
    assert broker.queued_messages() == 1
    gateway.redis.set("caretext:counting:to", phone)  # the provider may know the number: not a leak

    leaks = canary_leaks()
    assert "a log record of the test process contains a canary (Kana…)" in leaks
    assert "log file worker-9.log contains a canary (+120…)" in leaks
    assert any(leak.startswith("redis broker key celery contains") for leak in leaks)
    assert not any(leak.startswith("redis gateway") for leak in leaks)
    assert SINKS.log is not None and SINKS.redis.keys() == {"broker", "gateway"}


def test_it_finds_a_canary_in_the_audit_trail(tenant_a, gateway):
    from auditlog.models import LogEntry
    from django.contrib.contenttypes.models import ContentType

    from accounts.models import Tenant

    name = canary()
    plant(name)
    assert_invariants([tenant_a], gateway)
    with tenant_scope(tenant_a):  # field history that kept a value in clear
        LogEntry.objects.create(content_type=ContentType.objects.get_for_model(Tenant), object_pk=str(tenant_a.pk),
                                object_repr="x", action=LogEntry.Action.UPDATE, changes={"note": ["", name]})
    with pytest.raises(AssertionError, match=f"django-auditlog rows of tenant {tenant_a.pk} contains a canary"):
        assert_invariants([tenant_a], gateway)
