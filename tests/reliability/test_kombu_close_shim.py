"""config/celery.py works around a Celery 5.7 / kombu 5.7 reconnect bug: after ``collect()`` has
detached a Redis connection's transport, closing its default channel again may raise
AttributeError (the channel tries to restore unacknowledged messages through the detached
transport), and the worker died of it ("Unrecoverable error") when the broker restarted while a
BRPOP was in flight. Driven here directly, since the race itself is a matter of timing."""

from __future__ import annotations

import pytest
from kombu import Connection

import config.celery  # noqa: F401 - installs the shim


class _Channel:
    def __init__(self):
        self.closed = 0

    def close(self):
        self.closed += 1
        raise AttributeError("'NoneType' object has no attribute 'hostname'")


def test_closing_a_channel_of_a_detached_connection_is_not_fatal():
    connection = Connection("redis://127.0.0.1:1/0")
    connection._transport = None  # what collect() leaves behind
    channel = _Channel()
    connection.maybe_close_channel(channel)  # swallowed: the worker goes on to reconnect
    assert channel.closed == 1


def test_any_other_attribute_error_still_raises():
    connection = Connection("redis://127.0.0.1:1/0")
    connection.transport  # attached  # noqa: B018
    with pytest.raises(AttributeError):
        connection.maybe_close_channel(_Channel())
