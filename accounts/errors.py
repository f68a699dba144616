"""One error vocabulary (R19): services raise ApplicationError subclasses; one handler maps
them, Django's ValidationError and DRF's own errors to
``{"error": {"code", "message", "fields"}}``. Messages never contain PHI."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler


class ApplicationError(Exception):
    code = "invalid"
    status_code = status.HTTP_400_BAD_REQUEST

    def __init__(self, message: str, *, fields: dict[str, list[str]] | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.fields = fields or {}
        if code:
            self.code = code


class NotFound(ApplicationError):
    """Doesn't exist, or belongs to another tenant: the caller can't tell which."""

    code = "not_found"
    status_code = status.HTTP_404_NOT_FOUND

    def __init__(self, message: str = "Not found."):
        super().__init__(message)


class PermissionDeniedError(ApplicationError):
    code = "permission_denied"
    status_code = status.HTTP_403_FORBIDDEN


class ConflictError(ApplicationError):
    code = "conflict"
    status_code = status.HTTP_409_CONFLICT


def validation_fields(exc: DjangoValidationError) -> dict[str, list[str]]:
    if hasattr(exc, "error_dict"):
        return {field: [str(m) for e in errors for m in e.messages] for field, errors in exc.error_dict.items()}
    return {"non_field_errors": [str(m) for m in exc.messages]}


def _body(code: str, message: str, fields: dict | None = None) -> dict:
    return {"error": {"code": code, "message": message, "fields": fields or {}}}


def _drf_fields(detail) -> dict:
    if isinstance(detail, dict):
        return {k: [str(i) for i in (v if isinstance(v, list) else [v])] for k, v in detail.items()}
    if isinstance(detail, list):
        return {"non_field_errors": [str(i) for i in detail]}
    return {}


def api_exception_handler(exc, context):
    # json.loads raises RecursionError on deeply nested input; DRF's JSONParser only catches ValueError.
    if isinstance(exc, RecursionError):
        exc = exceptions.ParseError("JSON parse error - nested too deeply.")
    if isinstance(exc, ApplicationError):
        return Response(_body(exc.code, exc.message, exc.fields), status=exc.status_code)
    if isinstance(exc, DjangoValidationError):
        fields = validation_fields(exc)
        names = ", ".join(sorted(fields))
        return Response(_body("invalid", f"Invalid input: {names}.", fields), status=400)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = exception_handler(exc, context)
    if response is None:
        return None  # a real bug: Django's 500 handler shows only the request id
    if isinstance(exc, exceptions.ValidationError):
        fields = _drf_fields(exc.detail)
        message = f"Invalid input: {', '.join(sorted(fields))}." if fields else "Invalid input."
        response.data = _body("invalid", message, fields)
    elif isinstance(exc, exceptions.APIException):
        response.data = _body(exc.default_code if not isinstance(exc.get_codes(), str) else exc.get_codes(), str(exc.detail))
    return response
