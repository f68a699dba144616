"""The SMS gateway interface (STYLE R17). Every SMS leaves through ``get_gateway().send(...)``,
and ``send`` takes only a ``NotificationSms`` (see ``notification``): never free text.

Errors say what the outbox should do next:

- ``TransientGatewayError``: not sent (429, 5xx, connection refused); retry later with backoff.
- ``PermanentGatewayError``: will never be sent (invalid number, unsubscribed); fail the row.
- ``AmbiguousGatewayError``: the request may have reached the provider (timeout after sending);
  reconcile with ``reconcile()`` / ``lookup()`` before sending again, or risk a duplicate.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from django.conf import settings

from integrations.sms.notification import NotificationSms

__all__ = [
    "AmbiguousGatewayError", "Gateway", "GatewayError", "NotificationSms", "PermanentGatewayError",
    "SendResult", "TransientGatewayError", "get_gateway", "require_notification",
]


@dataclass(frozen=True, slots=True)
class SendResult:
    provider_id: str
    status: str  # the provider's status word: queued, accepted, sending, sent, delivered, failed …


class GatewayError(Exception):
    """A send or lookup that did not succeed. ``code`` is the provider's error code (or the HTTP
    status, or a short word such as "timeout"); it never carries the SMS body."""

    permanent = False

    def __init__(self, message: str, *, code: str = "", permanent: bool | None = None,
                 provider_id: str | None = None) -> None:
        super().__init__(message)
        self.code = str(code)
        if permanent is not None:
            self.permanent = permanent
        self.provider_id = provider_id


class TransientGatewayError(GatewayError):
    permanent = False


class PermanentGatewayError(GatewayError):
    permanent = True


class AmbiguousGatewayError(GatewayError):
    """The request may have been accepted. ``provider_id`` is set when it is known."""

    permanent = False


@runtime_checkable
class Gateway(Protocol):
    def send(self, sms: NotificationSms, *, status_callback: str | None,
             idempotency_key: str, sender: str | None = None) -> SendResult:
        """Send ``sms``. ``sender`` is the clinic's own Messaging Service SID (``MG…``) or
        E.164 number; None sends from the platform's. Gateways that send nowhere ignore it."""

    def lookup(self, provider_id: str) -> SendResult | None:
        """The provider's current view of a sent SMS, or None if it does not know the id."""

    def reconcile(self, sms: NotificationSms, *, idempotency_key: str,
                  since: datetime) -> SendResult | None:
        """After an ``AmbiguousGatewayError``: the SMS the provider accepted for this send (same
        recipient and body since ``since``, or the same key where the gateway keeps keys), or None."""


def require_notification(sms: object) -> NotificationSms:
    """Gateways call this first: only a sealed ``NotificationSms`` is ever sent."""
    if not isinstance(sms, NotificationSms):
        raise TypeError("Gateways send only NotificationSms values")
    sms.check()
    return sms


def require_idempotency_key(key: object) -> str:
    if not isinstance(key, str) or not key or len(key) > 100:
        raise ValueError("idempotency_key must be a non-empty string of at most 100 characters")
    return key


def get_gateway() -> Gateway:
    """The gateway settings.SMS_GATEWAY names: "local" (demo, tests), "twilio", or "counting"
    (reliability tests and the demo only: counts submissions across processes)."""
    name = getattr(settings, "SMS_GATEWAY", "local")
    if name == "local":
        from integrations.sms.local import LocalGateway

        return LocalGateway()
    if name == "twilio":
        from integrations.sms.twilio import TwilioGateway

        return TwilioGateway.from_settings()
    if name == "counting":
        if not (getattr(settings, "TESTING", False) or getattr(settings, "DEMO", False)):
            raise ValueError("SMS_GATEWAY 'counting' sends nothing: it is for tests and the demo only")
        from integrations.sms.counting import CountingGateway

        return CountingGateway()
    raise ValueError(f"Unknown SMS_GATEWAY {name!r}: use 'local' or 'twilio'")
