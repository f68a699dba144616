"""Appointment reminders: ids, times and statuses only (no text: it is rendered when sent)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers

from accounts import permissions as perms
from api.apis.base import ApiView
from api.pagination import PageQuery
from api.schema import errors, page_of
from api.selectors import api_reminder_page
from reminders.models import ReminderStatus


class ReminderOut(serializers.Serializer):
    id = serializers.UUIDField()
    appointment_id = serializers.UUIDField()
    offset_minutes = serializers.IntegerField()
    due_at = serializers.DateTimeField()
    starts_at = serializers.DateTimeField()
    status = serializers.CharField(help_text=" | ".join(ReminderStatus.values))
    reason = serializers.CharField()
    sent_at = serializers.DateTimeField(allow_null=True)
    follow_up_sent_at = serializers.DateTimeField(allow_null=True)


class ReminderQuery(PageQuery):
    status = serializers.ChoiceField(choices=ReminderStatus.choices, required=False)
    appointment = serializers.UUIDField(required=False)


class ReminderListApi(ApiView):
    """Appointment reminders, soonest due first."""

    permission = perms.PATIENTS_VIEW
    write_permission = perms.PATIENTS_VIEW  # read-only: other methods get 405

    @extend_schema(operation_id="reminders_list", parameters=[ReminderQuery],
                   responses={200: page_of(ReminderOut, "ReminderPage"), **errors(400)})
    def get(self, request):
        q = self.query(ReminderQuery)
        result = api_reminder_page(tenant=self.tenant, actor=self.actor, page=q["page"], page_size=q["page_size"],
                                   status=q.get("status"), appointment_id=q.get("appointment"))
        return self.page(result, ReminderOut)
