"""Broadcasts on a paced sender: slices sized to the sender's rate and what it has reserved, the
fairness rule (a big broadcast never delays another clinic's message by more than a tick), and
the queue figures on the broadcast page. Real Redis holds the senders' buckets."""

from __future__ import annotations

import datetime
from unittest import mock

import pytest
import redis
from django.conf import settings as django_settings
from django.urls import reverse

from accounts.models import Tenant
from accounts.tenancy import tenant_scope
from broadcasts.models import BroadcastRecipient, RecipientStatus
from broadcasts.selectors import broadcast_progress
from broadcasts.services import TICK_SECONDS, broadcast_send_slice, slice_size
from messaging import pacing, services
from messaging.models import OutboundSms, SmsStatus
from messaging.outbox import PACED
from messaging.tasks import outbox_send
from tests.broadcasts.conftest import TOMORROW
from tests.broadcasts.helpers import book, make_broadcast
from tests.factories import make_textable_patient

SENT = {SmsStatus.SENT, SmsStatus.DELIVERED}


@pytest.fixture
def paced(settings, tenant_a, tenant_b):
    """Pacing on; each clinic has its own sender; their buckets start idle."""
    settings.SMS_RATE_PER_SECOND = 12
    Tenant.objects.filter(pk=tenant_a.pk).update(sms_number="+16175550170", settings={pacing.SETTING_KEY: 1})
    Tenant.objects.filter(pk=tenant_b.pk).update(sms_number="+16175550171")
    tenant_a.refresh_from_db()
    tenant_b.refresh_from_db()
    client = redis.Redis.from_url(django_settings.SMS_PACE_REDIS_URL)
    keys = [pacing.sender_key(tenant_a), pacing.sender_key(tenant_b)]
    client.delete(*keys)
    yield
    client.delete(*keys)


def _big_broadcast(tenant, owner, n: int, rate_per_minute: int = 600):
    patients = [make_textable_patient(tenant=tenant, owner=owner) for _ in range(n)]
    for patient in patients:
        book(tenant, patient, TOMORROW, hour=12)
    return make_broadcast(tenant=tenant, owner=owner, patients=patients, rate_per_minute=rate_per_minute)


def _publishes(run) -> list[dict]:
    """The outbox tasks ``run`` hands to Celery on commit (captured, not run)."""
    with mock.patch.object(outbox_send, "apply_async") as publish:
        run()
    return [c.kwargs["kwargs"] for c in publish.call_args_list]


def test_a_slice_is_sized_to_the_senders_rate(tenant_a, alice, paced, django_capture_on_commit_callbacks):
    broadcast = _big_broadcast(tenant_a, alice, 15)  # 600 a minute asked; the sender takes 1 a second
    assert slice_size(broadcast) == 1 * TICK_SECONDS
    with tenant_scope(tenant_a):
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            assert broadcast_send_slice(tenant=tenant_a, broadcast=broadcast) == 10
        assert BroadcastRecipient.objects.filter(status=RecipientStatus.PENDING).count() == 5
    assert len(callbacks) == 10  # only one tick of the sender's capacity enters the queues


def test_a_busy_sender_takes_reminders_first_and_the_broadcast_what_is_left(tenant_a, alice, paced):
    broadcast = _big_broadcast(tenant_a, alice, 12)
    key = pacing.sender_key(tenant_a)
    pacing.reserve(key, rate=1, burst=1, count=8)  # reminders hold the next 8 seconds of the sender
    with tenant_scope(tenant_a):
        assert 1 <= broadcast_send_slice(tenant=tenant_a, broadcast=broadcast) <= 2
    pacing.reserve(key, rate=1, burst=1, count=20)  # now more than a tick
    with tenant_scope(tenant_a):
        broadcast.refresh_from_db()
        type(broadcast).objects.filter(pk=broadcast.pk).update(last_slice_at=None)
        assert broadcast_send_slice(tenant=tenant_a, broadcast=broadcast) == 0
        assert BroadcastRecipient.objects.filter(status=RecipientStatus.PENDING).count() >= 10


def test_a_big_broadcast_does_not_delay_another_clinics_reminder(tenant_a, tenant_b, alice, charlie, paced,
                                                                  django_capture_on_commit_callbacks):
    """Clinic A's broadcast (its sender: 1 a second) puts one tick of tasks in the queue; clinic
    B's message queued behind them goes at once, on its own sender's slot, and A's texts past
    their sender's rate hold slots instead of occupying the pool."""
    broadcast = _big_broadcast(tenant_a, alice, 30)
    with tenant_scope(tenant_a):
        queued_a = _publishes(lambda: _with_commit(django_capture_on_commit_callbacks,
                                                   lambda: broadcast_send_slice(tenant=tenant_a, broadcast=broadcast)))
    patient_b = make_textable_patient(tenant=tenant_b, owner=charlie)
    with tenant_scope(tenant_b):
        queued_b = _publishes(lambda: _with_commit(django_capture_on_commit_callbacks, lambda: services.message_send(
            tenant=tenant_b, actor=charlie, patient=patient_b, body="Your appointment is tomorrow at 9.")))
    assert len(queued_a) == TICK_SECONDS and len(queued_b) == 1  # B's message is behind 10 of A's, not 30
    for task in [*queued_a, *queued_b]:  # the pool takes them in order
        with mock.patch.object(outbox_send, "apply_async"):
            outbox_send(**task)
    with tenant_scope(tenant_b):
        [b_row] = OutboundSms.objects.all()
        assert b_row.status in SENT and b_row.attempts == 1
    with tenant_scope(tenant_a):
        rows = list(OutboundSms.objects.all())
        assert sum(r.status in SENT for r in rows) == 1  # A's sender: a burst of one
        held = [r for r in rows if r.error_code == PACED]
        assert len(held) == 9 and all(r.status == SmsStatus.QUEUED and r.attempts == 0 for r in held)
        spread = max(r.next_attempt_at for r in held) - min(r.next_attempt_at for r in held)
        assert spread <= datetime.timedelta(seconds=TICK_SECONDS)  # their slots: within one tick


def _with_commit(capture, run):
    with capture(execute=True):
        run()


def test_the_page_shows_the_queue_and_when_it_will_be_done(client, login, tenant_a, alice, paced,
                                                           django_capture_on_commit_callbacks):
    broadcast = _big_broadcast(tenant_a, alice, 15, rate_per_minute=30)
    login(alice)
    page = client.get(reverse("broadcasts-detail", args=[broadcast.pk]))
    queue = page.context["queue"]
    # 15 to go at 30 a minute (the sender's 60 a minute is faster): 30 s.
    assert (queue.remaining, queue.sender_queued, queue.rate_per_minute, queue.drain_seconds) == (15, 0, 30, 30)
    assert b'id="queue-remaining">15<' in page.content and b"about a minute" in page.content
    with tenant_scope(tenant_a), mock.patch.object(outbox_send, "apply_async"):
        with django_capture_on_commit_callbacks(execute=True):
            assert broadcast_send_slice(tenant=tenant_a, broadcast=broadcast) == 5
        progress = broadcast_progress(tenant=tenant_a, broadcast=broadcast)
    # 10 recipients still to write and 5 texts written, queued on the sender (their tasks not run).
    page = client.get(reverse("broadcasts-detail", args=[broadcast.pk]))
    queue = page.context["queue"]
    assert dict((v, n) for v, _, n in progress.sms)[SmsStatus.QUEUED] == 5
    assert (queue.to_write, queue.written_queued, queue.sender_queued, queue.drain_seconds) == (10, 5, 5, 30)
    assert b'id="queue-sender">5 (it sends at most 1 a second' in page.content


def test_a_slow_sender_sets_the_pace_shown(client, login, tenant_a, alice, paced):
    Tenant.objects.filter(pk=tenant_a.pk).update(settings={pacing.SETTING_KEY: 0.1})  # 6 a minute
    broadcast = _big_broadcast(tenant_a, alice, 12, rate_per_minute=600)
    login(alice)
    page = client.get(reverse("broadcasts-detail", args=[broadcast.pk]))
    queue = page.context["queue"]
    assert queue.rate_per_minute == 6 and queue.drain_seconds == 120 and queue.drain_minutes == 2
    assert b"about 2 minutes" in page.content and b"not the 600 asked for: the clinic's SMS sender is slower" in page.content
