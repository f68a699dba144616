import logging
import os

from celery import Celery
from celery.signals import task_postrun, task_prerun
from kombu import Connection
from kombu.transport.redis import QoS as RedisQoS

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("caretext")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


# Database connections in workers are handled as gunicorn's threads handle them per request:
# each task thread keeps its own connection (Django's are per thread) for up to CONN_MAX_AGE,
# and before and after every task one that is too old, broken or left mid-transaction is closed
# (``close_old_connections``; CONN_HEALTH_CHECKS pings a reused one before its first query).
# Celery's own Django fixup instead closes the connection around every task (CELERY_DB_REUSE_MAX
# in settings turns that off): on a send pool that is a new PostgreSQL backend per SMS.
# Eager tasks (the demo) run inside the caller's request and its transaction: left alone.
def _close_old_connections(sender=None, **kwargs):
    if getattr(getattr(sender, "request", None), "is_eager", False):
        return
    from django.db import close_old_connections

    close_old_connections()


task_prerun.connect(_close_old_connections, weak=False)
task_postrun.connect(_close_old_connections, weak=False)


# Celery 5.7 / kombu 5.7 on Redis: when the broker drops while tasks are unacknowledged (acks_late),
# the consumer first ``collect()``s the connection, then ``close()``s it. If a BRPOP was in flight,
# collect's close of the default channel fails on the dead socket before the channel is marked
# closed, and collect then detaches the transport; close() closes the channel again, which now
# tries to restore the unacknowledged messages through the detached transport and raises
# AttributeError. ``ignore_errors`` does not ignore that: "Unrecoverable error", and the worker
# stops instead of reconnecting (tests/reliability: the broker restarted mid-batch, a timing race).
# Nothing is lost by ignoring it: the messages stay in Redis's unacked set until the visibility
# timeout, and the outbox row, not the broker, decides what is sent (the sweeper).
def _close_channel_ignoring_detached_transport(self, channel, _close=Connection.maybe_close_channel):
    try:
        _close(self, channel)
    except AttributeError:
        if self._transport is not None:  # not the detached-transport case: a real bug, let it raise
            raise
        logging.getLogger(__name__).info("broker connection lost with unacknowledged tasks; reconnecting")


Connection.maybe_close_channel = _close_channel_ignoring_detached_transport


# The same race, later: a thread-pool task that finishes after the connection was lost hands its
# acknowledgement to the consumer loop, which sends it on the message's old channel, whose
# transport is already detached (``client`` None): AttributeError, "Unrecoverable error", the
# worker stops. The acknowledgement has nowhere to go; the message stays in Redis's unacked set
# and comes back after the visibility timeout, when the outbox row (already sent) makes the task
# a no-op.
def _ack_ignoring_detached_transport(self, delivery_tag, _ack=RedisQoS.ack):
    try:
        _ack(self, delivery_tag)
    except AttributeError:
        if getattr(self.channel.connection, "client", None) is not None:  # not this race: let it raise
            raise
        logging.getLogger(__name__).info("acknowledgement after the broker connection was lost; left to redelivery")


RedisQoS.ack = _ack_ignoring_detached_transport
