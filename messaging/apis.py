"""The send API: ``POST /api/v1/patients/<id>/messages`` with an ``Idempotency-Key`` header.

The rest of the messaging API (threads, lists) belongs to the public API issue; this is the
one endpoint EHRs and scripts need to send, and it is safe to retry: the same key returns the
first message (200) instead of sending again (201 the first time).
"""

from __future__ import annotations

from rest_framework import serializers, status
from rest_framework.response import Response

from accounts import permissions as perms
from accounts.api_base import TenantAPIView
from accounts.errors import PermissionDeniedError
from messaging.models import Message, MessageKind, OutboundSms
from messaging.services import BODY_MAX, message_send
from patients.selectors import patient_get


def api_actor(request):
    """The ApiKey row or the staff user behind this API request (for the audit trail)."""
    return getattr(request._request, "api_key", None) or request.user


class MessageSendApi(TenantAPIView):
    permission = perms.MESSAGES_SEND
    write_permission = perms.MESSAGES_SEND

    class InputSerializer(serializers.Serializer):
        body = serializers.CharField(max_length=BODY_MAX, trim_whitespace=True)
        kind = serializers.ChoiceField(choices=[MessageKind.GENERAL, MessageKind.RESULT_NOTICE],
                                       default=MessageKind.GENERAL)

    class OutputSerializer(serializers.Serializer):
        id = serializers.UUIDField()
        thread_id = serializers.UUIDField()
        kind = serializers.CharField()
        created_at = serializers.DateTimeField()
        sms_status = serializers.CharField(allow_null=True)

    def post(self, request, patient_id):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        kind = data.validated_data["kind"]
        if kind == MessageKind.RESULT_NOTICE and perms.RESULTS_SEND not in request._request.permissions:
            raise PermissionDeniedError("Sending result notices needs the results.send permission.")
        key = request.headers.get("Idempotency-Key", "")
        patient = patient_get(tenant=self.tenant, patient_id=patient_id)
        before = Message.objects.filter(idempotency_key=key).exists() if key else False
        message = message_send(tenant=self.tenant, actor=api_actor(request), patient=patient,
                               body=data.validated_data["body"], kind=kind, idempotency_key=key, source="api")
        sms = OutboundSms.objects.filter(message=message).order_by("-created_at").first()
        out = {"id": message.pk, "thread_id": message.thread_id, "kind": message.kind,
               "created_at": message.created_at, "sms_status": sms.status if sms else None}
        return Response(self.OutputSerializer(out).data, status=status.HTTP_200_OK if before else status.HTTP_201_CREATED)
