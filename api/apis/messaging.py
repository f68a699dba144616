"""Threads: a list without bodies, and one thread with its messages (THREAD_OPENED).
Sending stays ``POST /api/v1/patients/<id>/messages`` (messaging.apis)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from accounts import permissions as perms
from api.apis.base import ApiView
from api.pagination import PageQuery
from api.schema import errors, page_of
from api.selectors import api_thread_page
from messaging.models import ThreadStatus
from messaging.selectors import thread_messages, thread_open


class ThreadOut(serializers.Serializer):
    id = serializers.UUIDField()
    patient_id = serializers.UUIDField()
    kind = serializers.CharField()
    # Plain strings in responses: one enum per field name keeps the schema's enum names stable.
    status = serializers.CharField(help_text="open | closed")
    assigned_to_id = serializers.IntegerField(allow_null=True)
    urgent = serializers.BooleanField()
    unread = serializers.IntegerField(source="staff_unread")
    last_activity_at = serializers.DateTimeField()
    closed_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()


class MessageOut(serializers.Serializer):
    id = serializers.UUIDField()
    direction = serializers.CharField()
    kind = serializers.CharField()
    body = serializers.CharField()
    source = serializers.CharField()
    sender_id = serializers.IntegerField(allow_null=True)
    urgent = serializers.BooleanField()
    release_at = serializers.DateTimeField(allow_null=True)
    patient_read_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()


class ThreadDetailOut(ThreadOut):
    messages = MessageOut(many=True, source="messages_shown")


class ThreadQuery(PageQuery):
    status = serializers.ChoiceField(choices=ThreadStatus.choices, required=False)
    patient = serializers.UUIDField(required=False)


class ThreadListApi(ApiView):
    """Conversations, latest activity first, without message bodies."""

    permission = perms.MESSAGES_VIEW
    write_permission = perms.MESSAGES_VIEW  # read-only: other methods get 405

    @extend_schema(operation_id="threads_list", parameters=[ThreadQuery],
                   responses={200: page_of(ThreadOut, "ThreadPage"), **errors(400)})
    def get(self, request):
        q = self.query(ThreadQuery)
        result = api_thread_page(tenant=self.tenant, actor=self.actor, page=q["page"], page_size=q["page_size"],
                                 status=q.get("status"), patient_id=q.get("patient"))
        return self.page(result, ThreadOut)


class ThreadDetailApi(ApiView):
    """One conversation with its messages and staff notes (audited as THREAD_OPENED)."""

    permission = perms.MESSAGES_VIEW
    write_permission = perms.MESSAGES_VIEW

    @extend_schema(operation_id="threads_retrieve", responses={200: ThreadDetailOut, **errors(404)})
    def get(self, request, thread_id):
        thread = thread_open(tenant=self.tenant, actor=self.actor, thread_id=thread_id)
        thread.messages_shown = thread_messages(tenant=self.tenant, thread=thread)
        return Response(ThreadDetailOut(thread).data)
