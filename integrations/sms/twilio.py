"""The Twilio gateway: the only module that imports the Twilio SDK (STYLE R17).

Credentials: settings.TWILIO_ACCOUNT_SID / TWILIO_AUTH_TOKEN. Sender: TWILIO_MESSAGING_SERVICE_SID
(preferred) or TWILIO_FROM_NUMBER, read from the environment here (a per-tenant sender is the
outbox's to pass in). Errors map to the gateway vocabulary:

- HTTP 429 / 5xx, connection refused, DNS failure, connect timeout → TransientGatewayError
  (the request never reached Twilio, or Twilio asks us to come back).
- 21610 (recipient replied STOP), 21211 / 21614 (invalid or non-mobile number), 21612 / 21408
  (unroutable), other 4xx → PermanentGatewayError, except 401 / 403 (our credentials: an
  operator fixes them, so the row retries within its bounded attempts).
- a read timeout or a connection dropped after the request went out → AmbiguousGatewayError:
  Twilio may have queued the SMS; ``reconcile()`` looks for it before anything is resent.

Twilio's Messages API has no idempotency key: ``idempotency_key`` is used by the outbox (one
row, one send), and ``reconcile()`` matches on recipient, body and creation time instead.
"""

from __future__ import annotations

from datetime import datetime

import requests
from django.conf import settings
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client
from urllib3.exceptions import NewConnectionError

from integrations.sms.gateway import (
    AmbiguousGatewayError,
    PermanentGatewayError,
    SendResult,
    TransientGatewayError,
    require_idempotency_key,
    require_notification,
)
from integrations.sms.notification import NotificationSms

TIMEOUT_SECONDS = 10
PERMANENT_CODES = frozenset({21610, 21211, 21614, 21612, 21408})
CREDENTIAL_STATUSES = frozenset({401, 403})


def _never_connected(exc: BaseException) -> bool:
    """True if the connection was never made (so the request cannot have reached Twilio)."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    seen: set[int] = set()
    stack: list[object] = [exc]
    while stack:
        current = stack.pop()
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, NewConnectionError):
            return True
        stack.extend([*current.args, getattr(current, "reason", None), current.__cause__, current.__context__])
    return False


def map_rest_error(exc: TwilioRestException) -> Exception:
    status, code = int(exc.status or 0), exc.code
    label = str(code or status)
    if status == 429 or status >= 500 or code == 20429:
        return TransientGatewayError(f"Twilio answered {status}", code=label)
    if status in CREDENTIAL_STATUSES:
        return TransientGatewayError(f"Twilio refused our credentials ({status})", code=label)
    if code in PERMANENT_CODES or 400 <= status < 500:
        return PermanentGatewayError(f"Twilio rejected the SMS ({label})", code=label)
    return TransientGatewayError(f"Twilio answered {status}", code=label)


def map_transport_error(exc: requests.exceptions.RequestException) -> Exception:
    if _never_connected(exc):
        return TransientGatewayError("Could not connect to Twilio", code="connect")
    if isinstance(exc, requests.exceptions.Timeout):
        return AmbiguousGatewayError("Twilio did not answer in time; the SMS may be queued", code="timeout")
    return AmbiguousGatewayError("The connection to Twilio failed after sending", code="connection")


class TwilioGateway:
    def __init__(self, *, client: Client, messaging_service_sid: str = "", from_number: str = "") -> None:
        if not (messaging_service_sid or from_number):
            raise ValueError("Twilio needs TWILIO_MESSAGING_SERVICE_SID or TWILIO_FROM_NUMBER")
        self.client = client
        self.messaging_service_sid = messaging_service_sid
        self.from_number = from_number

    @classmethod
    def from_settings(cls) -> TwilioGateway:
        client = Client(settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN,
                        http_client=TwilioHttpClient(timeout=TIMEOUT_SECONDS))
        return cls(client=client,
                   messaging_service_sid=settings.TWILIO_MESSAGING_SERVICE_SID,
                   from_number=settings.TWILIO_FROM_NUMBER)

    def _payload(self, sms: NotificationSms, status_callback: str | None) -> dict[str, str]:
        payload = {"to": sms.to, "body": sms.body}
        if self.messaging_service_sid:
            payload["messaging_service_sid"] = self.messaging_service_sid
        else:
            payload["from_"] = self.from_number
        if status_callback:
            payload["status_callback"] = status_callback
        return payload

    def send(self, sms: NotificationSms, *, status_callback: str | None,
             idempotency_key: str) -> SendResult:
        require_notification(sms)
        require_idempotency_key(idempotency_key)
        try:
            message = self.client.messages.create(**self._payload(sms, status_callback))
        except TwilioRestException as exc:
            raise map_rest_error(exc) from None
        except requests.exceptions.RequestException as exc:
            raise map_transport_error(exc) from None
        except TwilioException as exc:
            raise TransientGatewayError(f"Twilio client error: {type(exc).__name__}", code="client") from None
        return SendResult(provider_id=message.sid, status=str(message.status))

    def lookup(self, provider_id: str) -> SendResult | None:
        try:
            message = self.client.messages(provider_id).fetch()
        except TwilioRestException as exc:
            if exc.status == 404:
                return None
            raise map_rest_error(exc) from None
        except requests.exceptions.RequestException as exc:
            raise TransientGatewayError("Twilio lookup failed", code="connection") from exc
        return SendResult(provider_id=message.sid, status=str(message.status))

    def reconcile(self, sms: NotificationSms, *, idempotency_key: str,
                  since: datetime) -> SendResult | None:
        """The message Twilio created for this recipient with this body at or after ``since``."""
        require_notification(sms)
        try:
            messages = self.client.messages.list(to=sms.to, limit=50)
        except TwilioRestException as exc:
            raise map_rest_error(exc) from None
        except requests.exceptions.RequestException as exc:
            raise TransientGatewayError("Twilio lookup failed", code="connection") from exc
        for message in messages:
            created = getattr(message, "date_created", None)
            if message.body == sms.body and (created is None or created >= since):
                return SendResult(provider_id=message.sid, status=str(message.status))
        return None
