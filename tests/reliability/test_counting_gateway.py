"""The counting gateway the reliability scenarios stand on: it must count like a provider that
does not deduplicate, play its script, and exist only in tests and the demo."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from integrations.sms import notification as n
from integrations.sms.counting import CountingGateway
from integrations.sms.gateway import (
    AmbiguousGatewayError,
    Gateway,
    PermanentGatewayError,
    TransientGatewayError,
    get_gateway,
)

pytestmark = pytest.mark.reliability

TO = "+16175550123"


@pytest.fixture
def sms(settings):
    settings.SITE_URL = "http://127.0.0.1:8000"
    return n.link_notice(to=TO, sender_label="Test Clinic", link="http://127.0.0.1:8000/s/" + "k" * 43)


def _send(gateway, sms, key="row-1"):
    return gateway.send(sms, status_callback=None, idempotency_key=key)


def test_it_counts_every_submission_without_deduplicating(gateway, sms):
    first, second = _send(gateway, sms), _send(gateway, sms)
    assert first.provider_id != second.provider_id
    assert gateway.submissions() == {"row-1": 2}
    assert gateway.accepted() == 2
    assert [record["to"] for record in gateway.log()] == [TO, TO]
    assert all(sms.body not in str(record) for record in gateway.log())  # bodies only as digests


def test_it_plays_the_script_shared_and_per_key(gateway, sms):
    gateway.script(["429", "500", "timeout", "permanent"])
    gateway.script_for("row-2", ["ambiguous"])
    for expected in (TransientGatewayError, TransientGatewayError, TransientGatewayError, PermanentGatewayError):
        with pytest.raises(expected):
            _send(gateway, sms)
    with pytest.raises(AmbiguousGatewayError):
        _send(gateway, sms, key="row-2")
    assert _send(gateway, sms).status == "queued"
    assert gateway.submissions() == {"row-2": 1, "row-1": 1}  # failures submit nothing, ambiguous did
    assert gateway.attempts("row-1") == 5 and gateway.script_left() == 0
    with pytest.raises(ValueError, match="Unknown outcomes"):
        gateway.script(["teapot"])


def test_reconcile_and_lookup_find_what_the_provider_accepted(gateway, sms):
    gateway.script(["ambiguous"])
    with pytest.raises(AmbiguousGatewayError):
        _send(gateway, sms)
    since = timezone.now() - timedelta(minutes=1)
    found = gateway.reconcile(sms, idempotency_key="row-1", since=since)
    assert found is not None and gateway.lookup(found.provider_id) is not None
    assert gateway.reconcile(sms, idempotency_key="row-9", since=since) is None
    assert gateway.reconcile(sms, idempotency_key="row-1", since=timezone.now() + timedelta(minutes=1)) is None
    assert gateway.lookup("CT-unknown") is None
    assert gateway.counter("reconciles") == 3 and gateway.counter("reconciled") == 1


def test_it_is_a_gateway_that_sends_only_sealed_notices(gateway):
    assert isinstance(gateway, Gateway)
    with pytest.raises(TypeError):
        gateway.send("free text", status_callback=None, idempotency_key="row-1")


def test_get_gateway_gives_it_only_in_tests_and_the_demo(settings, gateway_store):
    settings.SMS_GATEWAY = "counting"
    settings.SMS_COUNTING_REDIS_URL = gateway_store.url
    assert isinstance(get_gateway(), CountingGateway)
    settings.TESTING, settings.DEMO = False, True
    assert isinstance(get_gateway(), CountingGateway)
    settings.DEMO = False
    with pytest.raises(ValueError, match="tests and the demo only"):
        get_gateway()
