"""The API's own base view and field types, on top of TenantAPIView (R8)."""

from __future__ import annotations

from django.utils import timezone
from rest_framework import serializers
from rest_framework.response import Response

from accounts.api_base import TenantAPIView
from api.pagination import PageSlice, next_url
from api.throttling import ApiKeyRateThrottle
from messaging.apis import api_actor


class ApiView(TenantAPIView):
    """Adds the per-key throttle and small helpers; permissions stay TenantAPIView's."""

    throttle_classes = [ApiKeyRateThrottle]

    @property
    def actor(self):
        return api_actor(self.request)

    def query(self, serializer_class: type[serializers.Serializer]) -> dict:
        """Validated query parameters; a bad one is a 400 naming it."""
        data = serializer_class(data=self.request.query_params)
        data.is_valid(raise_exception=True)
        return data.validated_data

    def body(self, serializer_class: type[serializers.Serializer]) -> dict:
        data = serializer_class(data=self.request.data)
        data.is_valid(raise_exception=True)
        return data.validated_data

    def page(self, result: PageSlice, serializer_class: type[serializers.Serializer], **context) -> Response:
        return Response({"results": serializer_class(result.items, many=True, context=context).data,
                         "next": next_url(self.request, result)})


class AwareDateTimeField(serializers.DateTimeField):
    """An ISO 8601 time that must carry its offset: a naive time would silently mean UTC."""

    def enforce_timezone(self, value):
        if timezone.is_naive(value):
            raise serializers.ValidationError("Give the time with its UTC offset, e.g. 2026-03-09T10:00:00-05:00.")
        return super().enforce_timezone(value)
