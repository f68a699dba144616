"""Content negotiation for the FHIR endpoints: JSON only, as application/fhir+json or
application/json, at most ``MAX_BODY_BYTES``. XML and other types get 415 (DRF's
UnsupportedMediaType, turned into an OperationOutcome by the views)."""

from __future__ import annotations

import json

from rest_framework import exceptions, parsers, renderers

MAX_BODY_BYTES = 5 * 1024 * 1024  # a day's schedule as one Bundle fits many times over


class BodyTooLarge(exceptions.APIException):
    status_code = 413
    default_detail = f"The request body is larger than {MAX_BODY_BYTES // (1024 * 1024)} MB."
    default_code = "too_large"


class FhirJsonParser(parsers.BaseParser):
    media_type = "application/fhir+json"

    def parse(self, stream, media_type=None, parser_context=None):
        request = (parser_context or {}).get("request")
        declared = request.META.get("CONTENT_LENGTH") if request is not None else None
        if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise BodyTooLarge()
        raw = stream.read(MAX_BODY_BYTES + 1) if stream is not None else b""
        if len(raw) > MAX_BODY_BYTES:
            raise BodyTooLarge()
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: nested too deeply
            # The position only: the message must not echo the body (it may hold PHI).
            raise exceptions.ParseError("The body is not valid JSON (UTF-8).") from None


class PlainJsonParser(FhirJsonParser):
    media_type = "application/json"


class FhirJsonRenderer(renderers.JSONRenderer):
    media_type = "application/fhir+json"
