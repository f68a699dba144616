"""OpenAPI pieces shared by every API view: the error envelope, the documented error
responses, the bearer-key security scheme and the paginated envelope."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiViewExtension
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from rest_framework import serializers


class ErrorBodySerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    # Absent on the middleware's own 401s (bad key, expired session); else field -> messages.
    fields = serializers.DictField(child=serializers.ListField(child=serializers.CharField()), required=False)


class ErrorSerializer(serializers.Serializer):
    error = ErrorBodySerializer()


_ERROR_TEXT = {
    400: "Invalid input: `error.fields` names each bad field or query parameter.",
    401: "No credentials, or an invalid or revoked API key.",
    403: "The key or user lacks the permission this operation needs (the denial is audited).",
    404: "No such object in your clinic (another clinic's ids look exactly like unknown ones).",
    405: "Method not allowed.",
    409: "Conflicts with the current state.",
    429: "Too many requests for this key or user: retry after the `Retry-After` header's seconds.",
}


def errors(*codes: int) -> dict[int, OpenApiResponse]:
    """Documented error responses; 401, 403 and 429 apply to every operation."""
    wanted = sorted({401, 403, 405, 429, *codes})
    return {code: OpenApiResponse(ErrorSerializer, description=_ERROR_TEXT[code]) for code in wanted}


def page_of(item: type[serializers.Serializer], name: str):
    """The one list envelope: ``{"results": [...], "next": url | null}``."""
    return inline_serializer(name=name, fields={
        "results": item(many=True),
        "next": serializers.URLField(allow_null=True),
    })


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.api_auth.ApiKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer",
                "description": "An API key from Settings → API keys: `Authorization: Bearer ct_…`."}


class VerifiedSessionScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.api_auth.VerifiedSessionAuthentication"
    name = "staffSession"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "cookie", "name": settings.SESSION_COOKIE_NAME,
                "description": "A staff browser session with two-factor sign-in done (unsafe methods need CSRF)."}


# Views of other apps, documented here so their modules stay as they are.


class MessageSendSchema(OpenApiViewExtension):
    target_class = "messaging.apis.MessageSendApi"

    def view_replacement(self):
        target = self.target_class
        idempotency = OpenApiParameter(
            "Idempotency-Key", str, OpenApiParameter.HEADER, required=False,
            description="Retry-safe sends: the same key returns the first message (200) instead of sending again.")

        class MessageSendIn(target.InputSerializer):
            pass

        class MessageSendOut(target.OutputSerializer):
            pass

        class Documented(target):
            @extend_schema(operation_id="patients_messages_create", request=MessageSendIn, parameters=[idempotency],
                           description="Send a secure message: the SMS carries only a notice and a link.",
                           responses={200: MessageSendOut, 201: MessageSendOut, **errors(400, 404, 409)})
            def post(self, request, patient_id):
                return super().post(request, patient_id)

        return Documented


class WhoAmISchema(OpenApiViewExtension):
    target_class = "accounts.apis.WhoAmIApi"

    def view_replacement(self):
        target = self.target_class

        class WhoAmIOut(target.OutputSerializer):
            pass

        class Documented(target):
            @extend_schema(operation_id="me_retrieve", description=target.__doc__,
                           responses={200: WhoAmIOut, **errors()})
            def get(self, request):
                return super().get(request)

        return Documented
