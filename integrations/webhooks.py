"""Twilio webhooks: inbound SMS and delivery-status callbacks (STYLE R17).

Both are ``csrf_exempt`` form POSTs that Twilio signs. ``X-Twilio-Signature`` is checked with
settings.TWILIO_AUTH_TOKEN over the exact public URL Twilio called: settings.SITE_URL plus the
path and query string. Behind the proxy the request's own host and scheme are internal, so
``build_absolute_uri`` would never match. A missing or wrong signature is a 403 and a
WEBHOOK_REJECTED audit event. With no auth token configured (the demo) every call is refused:
there is no unsigned path.

A signed request then has its fields checked (a 400 naming the field, nothing written), finds
its clinic and calls one service inside that clinic's scope:

- inbound (``To`` is the clinic's ``Tenant.sms_number``): ``inbound_sms_receive``, answered
  with empty TwiML. Replies leave through the outbox like every other SMS, never as TwiML.
- status (``?t=<tenant id>``, put there by ``messaging.outbox.status_callback_url`` and covered
  by the signature, so it cannot be swapped): ``sms_status_update``.

An unknown clinic or message id is a 200, so Twilio stops retrying. Both services are
idempotent on the MessageSid. Log lines carry ids only, never From, To or Body.
"""

from __future__ import annotations

import logging
import re

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.http import HttpRequest, HttpResponse, JsonResponse, QueryDict
from django.http.multipartparser import MultiPartParserError
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from accounts.errors import ApplicationError
from accounts.models import Tenant
from accounts.selectors import RowLoader
from accounts.tenancy import tenant_scope
from audit.events import AuditEventType
from audit.services import audit_record
from integrations.sms.twilio import signature_valid
from messaging.inbound import inbound_sms_receive
from messaging.outbox import sms_status_update

log = logging.getLogger(__name__)

INBOUND = "integrations-twilio-inbound"
STATUS = "integrations-twilio-status"
SIGNATURE_HEADER = "X-Twilio-Signature"

# Twilio ids: two letters and 32 hex digits (SM…, MM… for messages).
_SID_RE = re.compile(r"[A-Z]{2}[0-9a-fA-F]{32}")
_E164_RE = re.compile(r"\+[1-9][0-9]{6,14}")
_STATUS_RE = re.compile(r"[a-z_-]{1,20}")
_ERROR_CODE_RE = re.compile(r"[0-9]{1,10}")
_TENANT_ID_RE = re.compile(r"[0-9]{1,18}")

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


def _twiml() -> HttpResponse:
    return HttpResponse(EMPTY_TWIML, content_type="text/xml")


def _error(message: str, fields: dict[str, list[str]], *, code: str = "invalid", status: int = 400) -> JsonResponse:
    """The house error shape (accounts.errors); messages name the field, never echo its value."""
    return JsonResponse({"error": {"code": code, "message": message, "fields": fields}}, status=status)


def _bad_request(fields: dict[str, str]) -> JsonResponse:
    return _error("The webhook is missing fields or has invalid ones.",
                  {name: [message] for name, message in fields.items()})


def _form(request: HttpRequest) -> QueryDict:
    try:
        return request.POST
    except MultiPartParserError:  # a body that does not parse cannot carry a valid signature
        return QueryDict()


def _field(form: QueryDict, name: str) -> str:
    return (form.get(name) or "").strip()


# --- the signature -----------------------------------------------------------------------------------


def _rejected(request: HttpRequest, form: QueryDict, *, tenant: Tenant | None, path_name: str) -> HttpResponse | None:
    """The 403 for a call Twilio did not sign (audited), or None for a genuine one."""
    token = settings.TWILIO_AUTH_TOKEN
    url = settings.SITE_URL + request.get_full_path()
    if token and signature_valid(url=url, params=form, signature=request.headers.get(SIGNATURE_HEADER),
                                 auth_token=token):
        return None
    reason = "bad_signature" if token else "not_configured"
    details = {"path_name": path_name, "reason": reason}
    if tenant is not None:
        with tenant_scope(tenant):
            audit_record(tenant=tenant, actor=None, event_type=AuditEventType.WEBHOOK_REJECTED, details=details)
    else:
        audit_record(tenant=None, actor=None, event_type=AuditEventType.WEBHOOK_REJECTED, details=details)
    log.warning("twilio webhook %s rejected (%s), clinic %s", path_name, reason, tenant.pk if tenant else "-")
    return HttpResponse("Forbidden", status=403, content_type="text/plain")


# The clinic a webhook is for, by its number or id: written out on PostgreSQL (every webhook asks;
# compiling the ORM's query cost more than running it), the ORM's elsewhere. All columns load.
_TENANT_ROWS = RowLoader(Tenant)
_TENANT_SQL = (f"SELECT {_TENANT_ROWS.columns('t')} FROM {Tenant._meta.db_table} t "  # noqa: S608  # nosec B608  # names from _meta
               "WHERE t.{column} = %s AND t.is_active ORDER BY t.id LIMIT 1")
_TENANT_BY_NUMBER_SQL = _TENANT_SQL.format(column=Tenant._meta.get_field("sms_number").column)
_TENANT_BY_ID_SQL = _TENANT_SQL.format(column=Tenant._meta.pk.column)


def _active_tenant(sql: str, value, **lookup) -> Tenant | None:
    conn = connections[DEFAULT_DB_ALIAS]
    if conn.vendor != "postgresql":
        return Tenant.objects.filter(is_active=True, **lookup).order_by("pk").first()
    with conn.cursor() as cursor:
        cursor.execute(sql, [value])
        row = cursor.fetchone()
    return None if row is None else _TENANT_ROWS.build(row, conn)


def _tenant_by_number(number: str) -> Tenant | None:
    if not _E164_RE.fullmatch(number):
        return None
    return _active_tenant(_TENANT_BY_NUMBER_SQL, number, sms_number=number)


def _tenant_by_id(raw: str) -> Tenant | None:
    if not _TENANT_ID_RE.fullmatch(raw):
        return None
    return _active_tenant(_TENANT_BY_ID_SQL, int(raw), pk=int(raw))


# --- inbound SMS --------------------------------------------------------------------------------------


def _inbound_errors(form: QueryDict) -> dict[str, str]:
    errors = {}
    if not _SID_RE.fullmatch(_field(form, "MessageSid")):
        errors["MessageSid"] = "Required: a Twilio message SID."
    if not _E164_RE.fullmatch(_field(form, "From")):
        errors["From"] = "Required: a phone number in E.164 format."
    if not _E164_RE.fullmatch(_field(form, "To")):
        errors["To"] = "Required: a phone number in E.164 format."
    return errors


@csrf_exempt
@require_POST
def twilio_inbound_view(request: HttpRequest) -> HttpResponse:
    """An SMS to a clinic's number. Configure as the number's (or Messaging Service's)
    "A message comes in" webhook: POST {SITE_URL}/integrations/twilio/inbound."""
    form = _form(request)
    tenant = _tenant_by_number(_field(form, "To"))
    refusal = _rejected(request, form, tenant=tenant, path_name=INBOUND)
    if refusal is not None:
        return refusal
    errors = _inbound_errors(form)
    if errors:
        return _bad_request(errors)
    sid = _field(form, "MessageSid")
    if tenant is None:
        log.info("twilio inbound %s: no active clinic has the number called", sid)
        return _twiml()
    try:
        with tenant_scope(tenant):
            inbound = inbound_sms_receive(tenant=tenant, provider_id=sid, from_number=_field(form, "From"),
                                          body=form.get("Body") or "")
    except ApplicationError as exc:  # the service refused it and wrote nothing
        return _error(exc.message, exc.fields, code=exc.code, status=exc.status_code)
    log.info("twilio inbound %s for clinic %s: %s", sid, tenant.pk, inbound.outcome)
    return _twiml()


# --- delivery status ------------------------------------------------------------------------------------


def _status_errors(request: HttpRequest, form: QueryDict) -> dict[str, str]:
    errors = {}
    if not _TENANT_ID_RE.fullmatch(request.GET.get("t", "")):
        errors["t"] = "Required: the clinic id from our status callback URL."
    if not _SID_RE.fullmatch(_field(form, "MessageSid")):
        errors["MessageSid"] = "Required: a Twilio message SID."
    if not _STATUS_RE.fullmatch(_field(form, "MessageStatus")):
        errors["MessageStatus"] = "Required: a Twilio message status."
    code = _field(form, "ErrorCode")
    if code and not _ERROR_CODE_RE.fullmatch(code):
        errors["ErrorCode"] = "A Twilio error code is a number."
    return errors


@csrf_exempt
@require_POST
def twilio_status_view(request: HttpRequest) -> HttpResponse:
    """A delivery callback for an SMS we sent; its URL is ``status_callback_url(tenant)``."""
    form = _form(request)
    tenant = _tenant_by_id(request.GET.get("t", ""))
    refusal = _rejected(request, form, tenant=tenant, path_name=STATUS)
    if refusal is not None:
        return refusal
    errors = _status_errors(request, form)
    if errors:
        return _bad_request(errors)
    sid, word = _field(form, "MessageSid"), _field(form, "MessageStatus")
    if tenant is None:
        log.info("twilio status %s: clinic %s is not active", sid, request.GET["t"])
        return HttpResponse(status=200)
    with tenant_scope(tenant):
        outcome = sms_status_update(tenant=tenant, provider_id=sid, provider_status=word,
                                    error_code=_field(form, "ErrorCode"))
    log.info("twilio status %s (%s) for clinic %s: %s", sid, word, tenant.pk, outcome)
    return HttpResponse(status=200)
