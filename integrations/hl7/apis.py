"""``POST /api/v1/hl7/``: an HL7 v2 message (or batch) in ER7, answered with its ACK in ER7.

The HTTP status is 200 whenever an ACK was produced, including AE/AR: the ACK carries the
verdict, as it would over MLLP. 4xx only for what is not HL7 at all (wrong content type,
empty or oversized body) and for authentication and permission.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.parsers import BaseParser

from accounts import permissions as perms
from accounts.api_base import TenantAPIView
from accounts.errors import ApplicationError
from integrations.hl7.er7 import decode
from integrations.hl7.services import hl7_receive
from messaging.apis import api_actor

ER7_CONTENT_TYPE = "x-application/hl7-v2+er7"
DEFAULT_MAX_BYTES = 1024 * 1024


def max_message_bytes() -> int:
    return int(getattr(settings, "HL7_MAX_MESSAGE_BYTES", DEFAULT_MAX_BYTES))


class PayloadTooLarge(ApplicationError):
    code = "too_large"
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE


class Er7Parser(BaseParser):
    """The raw body as text, bounded (HL7 has no JSON to parse)."""

    media_type = ER7_CONTENT_TYPE

    def parse(self, stream, media_type=None, parser_context=None) -> str:
        limit = max_message_bytes()
        data = stream.read(limit + 1) if stream is not None else b""
        if len(data) > limit:
            raise PayloadTooLarge(f"The body is larger than {limit} bytes.", fields={"body": ["Too large."]})
        return decode(data)


class TextEr7Parser(Er7Parser):
    media_type = "text/plain"


class Hl7V2Parser(Er7Parser):
    media_type = "application/hl7-v2"


class Hl7MessageApi(TenantAPIView):
    """Receive an HL7 v2 message, batch or file (ER7) and answer with its ACK in ER7.

    ADT^A01/A04/A05/A08/A28/A31 upsert the patient, SIU^S12/S13/S14/S15/S26 the appointment,
    ORU^R01 makes a result notice. The ACK's MSA-1 is AA, AE (fix the data: ERR names the
    field) or AR (never accepted, e.g. an unsupported type). Needs the hl7:write scope.
    """

    permission = perms.INTEGRATIONS_HL7_WRITE
    write_permission = perms.INTEGRATIONS_HL7_WRITE
    parser_classes = [Er7Parser, TextEr7Parser, Hl7V2Parser]

    @extend_schema(operation_id="hl7_message", summary="Receive HL7 v2 (ER7); answers with the ACK",
                   request={ER7_CONTENT_TYPE: {"type": "string"}, "text/plain": {"type": "string"}},
                   responses={(200, ER7_CONTENT_TYPE): OpenApiResponse(OpenApiTypes.STR, description="The ACK."),
                              (413, "application/json"): OpenApiResponse(description="Larger than the limit."),
                              (415, "application/json"): OpenApiResponse(description="Not an ER7 content type.")})
    def post(self, request):
        payload = request.data if isinstance(request.data, str) else ""
        if not payload.strip():
            raise ApplicationError("Send an HL7 v2 message.", fields={"body": ["Required: an HL7 v2 message."]})
        ack = hl7_receive(tenant=self.tenant, actor=api_actor(request), payload=payload)
        return HttpResponse(ack.encode(), content_type=ER7_CONTENT_TYPE)
