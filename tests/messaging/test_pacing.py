"""Per-sender pacing: the Redis bucket (real Redis) and how the outbox task uses it.

The bucket is driven directly with its own keys; the task tests run ``outbox_send`` in this
process (its wake-ups and hand-offs captured instead of published) against the local gateway.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from unittest import mock

import pytest
import redis
from django.conf import settings
from django.utils import timezone

from accounts.errors import ApplicationError
from audit.events import AuditEventType
from audit.models import AuditEvent
from messaging import outbox, pacing
from messaging.models import OutboundSms, SmsStatus
from messaging.outbox import PACED, sms_enqueue
from messaging.tasks import outbox_send
from tests.messaging.conftest import sent_sms

SENT = {SmsStatus.SENT, SmsStatus.DELIVERED}  # the local gateway answers "delivered"


@pytest.fixture
def bucket_key(request):
    key = f"caretext:pace:test:{request.node.name}"
    client = redis.Redis.from_url(settings.SMS_PACE_REDIS_URL)
    client.delete(key)
    yield key
    client.delete(key)


@pytest.fixture
def clean_buckets(tenant_a, tenant_b):
    """The test's senders start idle (their keys include this test database's name)."""
    client = redis.Redis.from_url(settings.SMS_PACE_REDIS_URL)
    keys = [pacing.sender_key(tenant_a), pacing.sender_key(tenant_b)]
    client.delete(*keys)
    yield
    client.delete(*keys)


# --- the bucket ------------------------------------------------------------------------------------------


def test_a_burst_goes_at_once_then_slots_are_spaced_at_the_rate(bucket_key):
    slots = pacing.reserve(bucket_key, rate=4, burst=3, count=7, horizon=60)
    assert len(slots.at) == 7
    assert slots.at[:3] == [slots.now] * 3  # the burst: now
    gaps = [round(b - a, 3) for a, b in zip(slots.at[2:], slots.at[3:])]
    assert gaps == [0.25] * 4  # then 1/rate apart
    again = pacing.reserve(bucket_key, rate=4, burst=3, count=1, horizon=60)
    assert again.at[0] == pytest.approx(slots.at[-1] + 0.25, abs=0.001)  # the queue continues


def test_slots_are_reserved_only_up_to_the_horizon(bucket_key):
    slots = pacing.reserve(bucket_key, rate=10, burst=1, count=100, horizon=2)
    assert 20 <= len(slots.at) <= 21
    assert max(slots.at) - slots.now <= 2
    assert pacing.reserve(bucket_key, rate=10, burst=1, count=5, horizon=2).at == []  # full: nothing more


def test_workers_reserving_at_once_never_share_a_slot(bucket_key):
    """Eight threads (as eight workers would) each reserve 25 slots: 200 distinct slots, spaced
    at the rate, none beyond what the burst allows at the start."""
    got: list[float] = []
    lock = threading.Lock()

    def worker():
        for _ in range(5):
            slots = pacing.reserve(bucket_key, rate=50, burst=5, count=5, horizon=60)
            with lock:
                got.extend(slots.at)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got.sort()
    assert len(got) == 200
    assert min(b - a for a, b in zip(got[4:], got[5:])) >= 0.0199  # after the burst: ≥ 1/rate apart
    assert got[-1] - got[0] == pytest.approx((200 - 5) / 50, abs=0.2)  # 200 slots take ~(n − burst)/rate


def test_an_idle_sender_forgets_its_past(bucket_key):
    first = pacing.reserve(bucket_key, rate=1000, burst=1, count=3, horizon=60)
    assert first.at[-1] - first.now <= 0.0021
    client = redis.Redis.from_url(settings.SMS_PACE_REDIS_URL)
    assert 0 < client.pttl(bucket_key) <= 61_000  # the key expires once idle


# --- the rate a clinic's sender gets ----------------------------------------------------------------------


def test_a_clinic_sets_its_own_senders_rate_audited(tenant_a, alice, in_a, settings):
    settings.SMS_RATE_PER_SECOND = 12
    tenant_a.sms_number = "+16175550100"
    tenant_a.save(update_fields=["sms_number"])
    assert pacing.sender_rate(tenant_a) == settings.SMS_RATE_PER_SECOND
    assert pacing.sender_rate_set(tenant=tenant_a, actor=alice, rate_per_second="3") == 3.0
    assert pacing.sender_rate(tenant_a) == 3.0
    assert AuditEvent.objects.filter(event_type=AuditEventType.TENANT_SETTINGS_CHANGED,
                                     details__fields=[pacing.SETTING_KEY]).exists()
    assert pacing.sender_rate_set(tenant=tenant_a, actor=alice, rate_per_second=None) == settings.SMS_RATE_PER_SECOND


@pytest.mark.parametrize("bad", ["fast", 0, -1, 5000, True, [3]])
def test_a_bad_rate_names_the_field_and_changes_nothing(tenant_a, alice, in_a, bad):
    with pytest.raises(ApplicationError) as exc:
        pacing.sender_rate_set(tenant=tenant_a, actor=alice, rate_per_second=bad)
    assert pacing.SETTING_KEY in exc.value.fields
    tenant_a.refresh_from_db()
    assert pacing.SETTING_KEY not in tenant_a.settings


def test_clinics_on_the_platform_sender_share_the_platform_rate(tenant_a, tenant_b, in_a, clean_buckets, settings):
    settings.SMS_RATE_PER_SECOND = 12
    tenant_a.settings = {pacing.SETTING_KEY: 100}
    assert outbox.sender_of(tenant_a) is None
    assert pacing.sender_rate(tenant_a) == settings.SMS_RATE_PER_SECOND  # a clinic cannot speed up a shared sender
    assert pacing.sender_key(tenant_a) == pacing.sender_key(tenant_b)
    tenant_b.sms_number = "+16175550101"
    assert pacing.sender_key(tenant_a) != pacing.sender_key(tenant_b)


# --- the outbox task ------------------------------------------------------------------------------------


def _replies(tenant, n: int) -> list[OutboundSms]:
    return [sms_enqueue(tenant=tenant, to=f"+120255501{i:02d}", notification="keyword_reply",
                        sms_kind="keyword_reply", payload="help") for i in range(n)]


def _run(tenant, rows) -> tuple[dict, list]:
    """outbox_send in this process; returns its outcomes and what it published (kwargs, countdown)."""
    with mock.patch.object(outbox_send, "apply_async") as publish:
        outcomes = outbox_send(tenant_id=tenant.pk, sms_ids=[str(r.pk) for r in rows])
    return outcomes, [(c.kwargs["kwargs"]["sms_ids"], c.kwargs.get("countdown")) for c in publish.call_args_list]


def test_rows_past_the_senders_rate_keep_a_slot_and_spend_no_attempt(tenant_a, in_a, clean_buckets, settings):
    settings.SMS_RATE_PER_SECOND = 2  # burst: 2 now, then one every 0.5 s
    rows = _replies(tenant_a, 5)
    outcomes, published = _run(tenant_a, rows)
    assert outcomes["sent"] == 2 and outcomes["paced"] == 3
    assert len(sent_sms()) == 2
    later = [OutboundSms.objects.get(pk=r.pk) for r in rows[2:]]
    assert all(r.status == SmsStatus.QUEUED and r.error_code == PACED and r.attempts == 0 for r in later)
    assert [r.next_attempt_at for r in later] == sorted(r.next_attempt_at for r in later)
    assert later[-1].next_attempt_at - timezone.now() <= timedelta(seconds=2)
    woken = sorted(pk for ids, countdown in published for pk in ids)
    assert woken == sorted(str(r.pk) for r in later)
    assert all(countdown and 0 < countdown <= 2.1 for _, countdown in published)  # woken, not slept on


def test_a_row_holding_its_slot_goes_without_asking_again(tenant_a, in_a, clean_buckets, settings, time_machine):
    settings.SMS_RATE_PER_SECOND = 1
    rows = _replies(tenant_a, 3)
    _run(tenant_a, rows)  # one now; two hold slots 1 s and 2 s ahead
    time_machine.move_to(timezone.now() + timedelta(seconds=3), tick=False)
    with mock.patch.object(pacing, "reserve", wraps=pacing.reserve) as reserve:
        outcomes, _ = _run(tenant_a, rows[1:])
    reserve.assert_not_called()
    assert outcomes["sent"] == 2
    assert {OutboundSms.objects.get(pk=r.pk).status for r in rows} <= SENT
    assert OutboundSms.objects.get(pk=rows[1].pk).error_code == ""


def test_a_stale_slot_asks_again_so_a_backlog_never_leaves_in_one_burst(tenant_a, in_a, clean_buckets, settings,
                                                                         time_machine):
    settings.SMS_RATE_PER_SECOND = 1
    rows = _replies(tenant_a, 3)
    _run(tenant_a, rows)
    time_machine.move_to(timezone.now() + timedelta(minutes=10), tick=False)  # the workers were down
    redis.Redis.from_url(settings.SMS_PACE_REDIS_URL).delete(pacing.sender_key(tenant_a))  # and the bucket idled
    with mock.patch.object(pacing, "reserve", wraps=pacing.reserve) as reserve:
        outcomes, _ = _run(tenant_a, rows[1:])
    reserve.assert_called_once()
    assert outcomes["sent"] == 1 and outcomes["paced"] == 1


def test_without_redis_nothing_new_is_sent_and_rows_stay_due(tenant_a, in_a, clean_buckets, settings):
    settings.SMS_RATE_PER_SECOND = 12
    rows = _replies(tenant_a, 2)
    with mock.patch.object(pacing, "reserve", side_effect=redis.ConnectionError("down")):
        outcomes, published = _run(tenant_a, rows)
    assert outcomes.get("sent", 0) == 0 and published == []
    assert sent_sms() == []
    assert set(outbox.due_ids()) >= {r.pk for r in rows}  # the sweeper offers them again
    assert {OutboundSms.objects.get(pk=r.pk).attempts for r in rows} == {0}


def test_a_batch_is_split_so_the_pool_sends_it_in_parallel(tenant_a, in_a, clean_buckets, settings):
    settings.SMS_RATE_PER_SECOND = 1000
    rows = _replies(tenant_a, 10)
    outcomes, published = _run(tenant_a, rows)
    assert outcomes["sent"] == outbox.SEND_CHUNK
    assert [len(ids) for ids, countdown in published] == [4, 2] and all(c is None for _, c in published)
    handed = [OutboundSms.objects.get(pk=pk) for ids, _ in published for pk in ids]
    assert all(r.error_code == PACED and r.status == SmsStatus.QUEUED for r in handed)  # they hold their slots
    with mock.patch.object(pacing, "reserve", wraps=pacing.reserve) as reserve:
        for ids, _ in published:
            outbox_send(tenant_id=tenant_a.pk, sms_ids=ids)
    reserve.assert_not_called()
    assert OutboundSms.objects.filter(status__in=SENT).count() == 10


def test_pacing_off_sends_everything_due(tenant_a, in_a, settings):
    settings.SMS_RATE_PER_SECOND = 0
    rows = _replies(tenant_a, 3)
    outcomes, published = _run(tenant_a, rows)
    assert outcomes["sent"] == 3 and published == []
