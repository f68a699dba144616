"""A fault-injecting gateway for reliability tests: it fails on a script and counts sends.

``FaultyGateway(script=["429", "500", "ok"])`` plays the outcomes in order, one per ``send``
(then ``default``, "ok" unless given). Outcomes:

- "ok": accepted.
- "429", "500": TransientGatewayError, nothing submitted.
- "timeout": a timeout before the request left (TransientGatewayError), nothing submitted.
- "ambiguous": the provider accepted it but the answer was lost: AmbiguousGatewayError, and the
  SMS counts as submitted (``reconcile`` and ``lookup`` find it).
- "permanent": PermanentGatewayError (code 21211).

Like a real provider it does not deduplicate: ``submissions[key]`` counts how many times an SMS
for that idempotency key was really submitted, so "sent exactly once" is ``== 1`` for every
key; ``attempts[key]`` counts every call. Thread-safe (one process).
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter, deque
from collections.abc import Iterable
from datetime import datetime

from django.utils import timezone

from integrations.sms.gateway import (
    AmbiguousGatewayError,
    PermanentGatewayError,
    SendResult,
    TransientGatewayError,
    require_idempotency_key,
    require_notification,
)
from integrations.sms.notification import NotificationSms

OUTCOMES = frozenset({"ok", "429", "500", "timeout", "ambiguous", "permanent"})


class FaultyGateway:
    def __init__(self, script: Iterable[str] = (), *, default: str = "ok") -> None:
        script = list(script)
        unknown = set(script + [default]) - OUTCOMES
        if unknown:
            raise ValueError(f"Unknown outcomes {sorted(unknown)}; use {sorted(OUTCOMES)}")
        self._script = deque(script)
        self.default = default
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.attempts: Counter[str] = Counter()
        self.submissions: Counter[str] = Counter()
        self.sent: list[tuple[str, NotificationSms, str | None, datetime]] = []  # (provider id, sms, key, at)
        self.outcomes: list[str] = []

    def _submit(self, sms: NotificationSms, key: str) -> str:
        provider_id = f"FK{next(self._ids):032d}"
        self.submissions[key] += 1
        self.sent.append((provider_id, sms, key, timezone.now()))
        return provider_id

    def send(self, sms: NotificationSms, *, status_callback: str | None,
             idempotency_key: str, sender: str | None = None) -> SendResult:
        require_notification(sms)
        require_idempotency_key(idempotency_key)
        with self._lock:
            outcome = self._script.popleft() if self._script else self.default
            self.outcomes.append(outcome)
            self.attempts[idempotency_key] += 1
            if outcome == "ok":
                return SendResult(provider_id=self._submit(sms, idempotency_key), status="queued")
            if outcome == "ambiguous":
                self._submit(sms, idempotency_key)  # accepted, but the caller never hears so
        if outcome == "ambiguous":
            raise AmbiguousGatewayError("Timed out after sending", code="timeout")
        if outcome in ("429", "500"):
            raise TransientGatewayError(f"Provider answered {outcome}", code=outcome)
        if outcome == "timeout":
            raise TransientGatewayError("Timed out before sending", code="connect")
        raise PermanentGatewayError("Invalid number", code="21211")

    def lookup(self, provider_id: str) -> SendResult | None:
        with self._lock:
            for pid, _sms, _key, _at in self.sent:
                if pid == provider_id:
                    return SendResult(provider_id=pid, status="queued")
        return None

    def reconcile(self, sms: NotificationSms, *, idempotency_key: str,
                  since: datetime) -> SendResult | None:
        with self._lock:
            for pid, sent_sms, key, at in self.sent:
                if key == idempotency_key and sent_sms == sms and at >= since:
                    return SendResult(provider_id=pid, status="queued")
        return None
