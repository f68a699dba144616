"""The Twilio gateway: the only module that imports the Twilio SDK (STYLE R17).

Credentials: settings.TWILIO_ACCOUNT_SID / TWILIO_AUTH_TOKEN. Sender: TWILIO_MESSAGING_SERVICE_SID
(preferred) or TWILIO_FROM_NUMBER from the environment, unless the outbox passes the clinic's own
``sender`` (its Messaging Service SID or number). Errors map to the gateway vocabulary:

- HTTP 429 / 5xx, connection refused, DNS failure, connect timeout → TransientGatewayError
  (the request never reached Twilio, or Twilio asks us to come back).
- 21610 (recipient replied STOP), 21211 / 21614 (invalid or non-mobile number), 21612 / 21408
  (unroutable), other 4xx → PermanentGatewayError, except 401 / 403 (our credentials: an
  operator fixes them, so the row retries within its bounded attempts).
- a read timeout or a connection dropped after the request went out → AmbiguousGatewayError:
  Twilio may have queued the SMS; ``reconcile()`` looks for it before anything is resent.

Twilio's Messages API has no idempotency key: ``idempotency_key`` is used by the outbox (one
row, one send), and ``reconcile()`` matches on recipient, body and creation time instead.

Webhooks: ``signature_valid`` checks ``X-Twilio-Signature`` for ``integrations.webhooks``.

The SDK's HTTP client logs every request URL at INFO, query string included (``reconcile``
filters by the patient's number): our client logs through a logger held at WARNING. For the
contract tests (tests/integrations/test_twilio_contract.py) ``api_base_url`` points the client
at a local mock of Twilio's published OpenAPI spec; it is a constructor argument only, never
read from settings or a request.
"""

from __future__ import annotations

import logging
from datetime import datetime

import requests
from django.conf import settings
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.request_validator import RequestValidator
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
TWILIO_API_ORIGIN = "https://api.twilio.com"

# The SDK logs request URLs (with the query string: a patient's number on ``reconcile``) at
# INFO. Held at WARNING here whatever LOG_LEVEL says, so they never reach a log.
_http_log = logging.getLogger("integrations.sms.twilio.http")
_http_log.setLevel(logging.WARNING)


class ApiHttpClient(TwilioHttpClient):
    """The SDK's HTTP client with a quiet logger, and optionally another API origin.

    ``api_base_url`` (e.g. ``http://127.0.0.1:4010``) replaces ``https://api.twilio.com`` in
    every request URL: only the contract tests pass it, to reach a local mock of Twilio's spec.
    """

    def __init__(self, *, api_base_url: str = "", timeout: float = TIMEOUT_SECONDS) -> None:
        super().__init__(timeout=timeout, logger=_http_log)
        self.api_base_url = api_base_url.rstrip("/")

    def request(self, method, url, *args, **kwargs):
        if self.api_base_url and url.startswith(TWILIO_API_ORIGIN + "/"):
            url = self.api_base_url + url[len(TWILIO_API_ORIGIN):]
        return super().request(method, url, *args, **kwargs)


def signature_valid(*, url: str, params, signature: str | None, auth_token: str) -> bool:
    """True if ``signature`` (the ``X-Twilio-Signature`` header) is Twilio's HMAC-SHA1 of
    ``url`` and the form ``params`` under ``auth_token``.

    ``url`` must be the public URL Twilio called, query string included, exactly as
    configured in Twilio (see ``integrations.webhooks``). An empty token or signature is never
    valid. https://www.twilio.com/docs/usage/webhooks/webhooks-security
    """
    if not (auth_token and signature and url):
        return False
    return bool(RequestValidator(auth_token).validate(url, params, signature))


def signature_for(*, url: str, params, auth_token: str) -> str:
    """The ``X-Twilio-Signature`` Twilio would send for this request (the benchmark's and the
    demo's simulated callbacks; production only checks, with ``signature_valid``)."""
    return RequestValidator(auth_token).compute_signature(url, params)


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
    def from_settings(cls, *, api_base_url: str = "") -> TwilioGateway:
        """The gateway settings.TWILIO_* describe. ``api_base_url``: contract tests only."""
        client = Client(settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN,
                        http_client=ApiHttpClient(api_base_url=api_base_url))
        return cls(client=client,
                   messaging_service_sid=settings.TWILIO_MESSAGING_SERVICE_SID,
                   from_number=settings.TWILIO_FROM_NUMBER)

    def _payload(self, sms: NotificationSms, status_callback: str | None,
                 sender: str | None = None) -> dict[str, str]:
        payload = {"to": sms.to, "body": sms.body}
        if sender and sender.startswith("MG"):
            payload["messaging_service_sid"] = sender
        elif sender:
            payload["from_"] = sender
        elif self.messaging_service_sid:
            payload["messaging_service_sid"] = self.messaging_service_sid
        else:
            payload["from_"] = self.from_number
        if status_callback:
            payload["status_callback"] = status_callback
        return payload

    def send(self, sms: NotificationSms, *, status_callback: str | None,
             idempotency_key: str, sender: str | None = None) -> SendResult:
        require_notification(sms)
        require_idempotency_key(idempotency_key)
        try:
            message = self.client.messages.create(**self._payload(sms, status_callback, sender))
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
        except requests.exceptions.RequestException:  # not chained: its message holds the URL (To=…)
            raise TransientGatewayError("Twilio lookup failed", code="connection") from None
        except TwilioException as exc:  # a list page that is not 200 is a bare TwilioException
            raise TransientGatewayError(f"Twilio lookup failed: {type(exc).__name__}", code="client") from None
        for message in messages:
            created = getattr(message, "date_created", None)
            if message.body == sms.body and (created is None or created >= since):
                return SendResult(provider_id=message.sid, status=str(message.status))
        return None
