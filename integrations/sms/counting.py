"""A counting gateway for reliability tests and the demo: it records every submission in Redis,
so a test can count what a real Celery worker in another process handed to "the provider".

Like a real provider it does NOT deduplicate: every ``send`` that is accepted adds one
submission for its idempotency key, so "sent exactly once" means ``submissions(key) == 1``.
Faults are scripted across processes: outcomes for one idempotency key (``script_for(key,
[...])``, popped per send of that key), else the shared script (``script([...])``, popped per
send), else "ok"; ``fail_always(key, outcome)`` fixes every send of one key. Outcomes:

- "ok": accepted.
- "429", "500": TransientGatewayError; nothing submitted.
- "timeout": a connect timeout before the request left (TransientGatewayError); nothing submitted.
- "ambiguous": accepted, but the answer was lost (AmbiguousGatewayError); counts as submitted.
- "permanent": PermanentGatewayError (21211, invalid number); nothing submitted.
- "hang_after_accept": accepted, then the answer takes ``hang_seconds`` (the test kills the
  worker meanwhile: the row is left "sending" although the provider took it).
- "hang_before_send": the request never leaves for ``hang_seconds`` (the test kills the worker
  meanwhile: the row is left "sending" and nothing was submitted).

``reconcile`` and ``lookup`` answer from the same store (an accepted SMS is findable by its
idempotency key, recipient and body, as in Twilio's message list). ``set_delay(ms)`` slows
every send. The store is a Redis database named by ``SMS_COUNTING_REDIS_URL``: never the
broker, which the tests stop and flush. Bodies are kept only as SHA-256 digests.

``get_gateway`` returns this gateway for ``SMS_GATEWAY=counting``, only in tests and the demo.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from datetime import UTC, datetime

from django.conf import settings

from integrations.sms.gateway import (
    AmbiguousGatewayError,
    PermanentGatewayError,
    SendResult,
    TransientGatewayError,
    require_idempotency_key,
    require_notification,
)
from integrations.sms.notification import NotificationSms

OUTCOMES = frozenset({"ok", "429", "500", "timeout", "ambiguous", "permanent", "hang_after_accept",
                      "hang_before_send"})
DEFAULT_PREFIX = "caretext:counting"
ACCEPTED_STATUS = "queued"  # what Twilio answers on a create

_clients: dict[str, object] = {}


def _store_url() -> str:
    url = getattr(settings, "SMS_COUNTING_REDIS_URL", "") or os.environ.get("SMS_COUNTING_REDIS_URL", "")
    if not url:
        raise ValueError("SMS_GATEWAY=counting needs SMS_COUNTING_REDIS_URL (a Redis that is not the broker)")
    return url


def _client(url: str):
    # One client per process and URL; redis-py resets its pool in a forked child by itself.
    if url not in _clients:
        import redis

        _clients[url] = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=30)
    return _clients[url]


def _digest(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()


class CountingGateway:
    def __init__(self, *, url: str | None = None, prefix: str = DEFAULT_PREFIX) -> None:
        self.redis = _client(url or _store_url())
        self.prefix = prefix

    def _k(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    # --- the Gateway interface ---------------------------------------------------------------

    def send(self, sms: NotificationSms, *, status_callback: str | None,
             idempotency_key: str, sender: str | None = None) -> SendResult:
        require_notification(sms)
        key = require_idempotency_key(idempotency_key)
        delay_ms = int(self.redis.get(self._k("delay_ms")) or 0)
        if delay_ms:
            time.sleep(delay_ms / 1000)
        outcome = self._next_outcome(key)
        self.redis.incr(self._k("attempts", key))
        self.redis.rpush(self._k("outcomes"), outcome)
        if outcome in ("429", "500"):
            raise TransientGatewayError(f"Provider answered {outcome}", code=outcome)
        if outcome == "timeout":
            raise TransientGatewayError("Timed out before sending", code="connect")
        if outcome == "permanent":
            raise PermanentGatewayError("Invalid number", code="21211")
        if outcome == "hang_before_send":
            self._hang(key)
            raise TransientGatewayError("Timed out before sending", code="connect")
        provider_id = self._submit(sms, key)
        if outcome == "ambiguous":
            raise AmbiguousGatewayError("Timed out after sending", code="timeout")
        if outcome == "hang_after_accept":
            self._hang(key)
        return SendResult(provider_id=provider_id, status=ACCEPTED_STATUS)

    def lookup(self, provider_id: str) -> SendResult | None:
        found = self.redis.exists(self._k("provider", provider_id))
        return SendResult(provider_id=provider_id, status=ACCEPTED_STATUS) if found else None

    def reconcile(self, sms: NotificationSms, *, idempotency_key: str,
                  since: datetime) -> SendResult | None:
        self.redis.incr(self._k("reconciles"))
        for raw in self.redis.lrange(self._k("sent", idempotency_key), 0, -1):
            record = json.loads(raw)
            if (record["to"], record["kind"], record["body_sha256"]) == (sms.to, sms.kind, _digest(sms.body)) \
                    and datetime.fromisoformat(record["at"]) >= since:
                self.redis.incr(self._k("reconciled"))
                return SendResult(provider_id=record["provider_id"], status=ACCEPTED_STATUS)
        return None

    def _next_outcome(self, key: str) -> str:
        fixed = self.redis.get(self._k("fault", key))
        if fixed:
            return fixed.decode()
        scripted = self.redis.lpop(self._k("script", key)) or self.redis.lpop(self._k("script"))
        return scripted.decode() if scripted else "ok"

    def _hang(self, key: str) -> None:
        self.redis.rpush(self._k("hanging"), key)
        time.sleep(float(self.redis.get(self._k("hang_seconds")) or 30))

    def _submit(self, sms: NotificationSms, key: str) -> str:
        provider_id = f"CT{self.redis.incr(self._k('seq')):032d}"
        record = json.dumps({"provider_id": provider_id, "key": key, "to": sms.to, "kind": sms.kind,
                             "body_sha256": _digest(sms.body), "at": datetime.now(UTC).isoformat()})
        pipe = self.redis.pipeline(transaction=True)
        pipe.rpush(self._k("sent", key), record)
        pipe.hincrby(self._k("submissions"), key, 1)
        pipe.set(self._k("provider", provider_id), key)
        pipe.rpush(self._k("log"), record)
        pipe.execute()
        return provider_id

    # --- controls and counts (for tests) -----------------------------------------------------

    def script(self, outcomes: list[str]) -> None:
        """Append outcomes, one per coming ``send`` (any process); "ok" once they run out."""
        self._append_script(self._k("script"), outcomes)

    def script_for(self, key: str, outcomes: list[str]) -> None:
        """Append outcomes for the coming sends of one idempotency key (before the shared script)."""
        self._append_script(self._k("script", key), outcomes)

    def _append_script(self, name: str, outcomes: list[str]) -> None:
        unknown = set(outcomes) - OUTCOMES
        if unknown:
            raise ValueError(f"Unknown outcomes {sorted(unknown)}; use {sorted(OUTCOMES)}")
        if outcomes:
            self.redis.rpush(name, *outcomes)

    def fail_always(self, key: str, outcome: str) -> None:
        """Every send with this idempotency key gets ``outcome`` (overrides the script)."""
        if outcome not in OUTCOMES:
            raise ValueError(f"Unknown outcome {outcome!r}")
        self.redis.set(self._k("fault", key), outcome)

    def set_delay(self, milliseconds: int) -> None:
        self.redis.set(self._k("delay_ms"), int(milliseconds))

    def set_hang_seconds(self, seconds: float) -> None:
        self.redis.set(self._k("hang_seconds"), float(seconds))

    def submissions(self) -> dict[str, int]:
        """Idempotency key → how many times the provider accepted an SMS for it."""
        return {k.decode(): int(v) for k, v in self.redis.hgetall(self._k("submissions")).items()}

    def log(self) -> list[dict]:
        """Every accepted submission in order: provider id, key, recipient, kind, body digest, time."""
        return [json.loads(raw) for raw in self.redis.lrange(self._k("log"), 0, -1)]

    def accepted(self) -> int:
        """How many submissions the provider accepted in all."""
        return int(self.redis.llen(self._k("log")))

    def attempts(self, key: str) -> int:
        return int(self.redis.get(self._k("attempts", key)) or 0)

    def outcomes(self) -> list[str]:
        return [o.decode() for o in self.redis.lrange(self._k("outcomes"), 0, -1)]

    def hanging(self) -> list[str]:
        return [k.decode() for k in self.redis.lrange(self._k("hanging"), 0, -1)]

    def counter(self, name: str) -> int:
        """"reconciles" (reconcile calls) or "reconciled" (calls that found an earlier send)."""
        return int(self.redis.get(self._k(name)) or 0)

    def script_left(self) -> int:
        return int(self.redis.llen(self._k("script")))
