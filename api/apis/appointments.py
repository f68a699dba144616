"""Appointments: list with filters, book, change. No clinical text is returned (reads need
only patients.view); ``reason`` and ``instructions`` can be written."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response

from accounts import permissions as perms
from api.apis.base import ApiView, AwareDateTimeField
from api.pagination import PageQuery
from api.schema import errors, page_of
from api.selectors import api_appointment_page, api_appointment_view
from api.services import api_appointment_patch
from patients.models import AppointmentStatus
from patients.selectors import appointment_get, patient_get
from patients.services import appointment_create


class AppointmentOut(serializers.Serializer):
    id = serializers.UUIDField()
    patient_id = serializers.UUIDField()
    starts_at = serializers.DateTimeField()
    ends_at = serializers.DateTimeField()
    provider_name = serializers.CharField()
    location_name = serializers.CharField()
    appointment_type = serializers.CharField()
    status = serializers.CharField(help_text=" | ".join(AppointmentStatus.values))
    source = serializers.CharField()
    external_id = serializers.CharField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class AppointmentPatch(serializers.Serializer):
    starts_at = AwareDateTimeField(required=False)
    ends_at = AwareDateTimeField(required=False)
    provider_name = serializers.CharField(required=False, allow_blank=True, max_length=200)
    location_name = serializers.CharField(required=False, allow_blank=True, max_length=200)
    appointment_type = serializers.CharField(required=False, allow_blank=True, max_length=100)
    external_id = serializers.CharField(required=False, allow_blank=True, max_length=200)
    reason = serializers.CharField(required=False, allow_null=True, allow_blank=True, max_length=2000)
    instructions = serializers.CharField(required=False, allow_null=True, allow_blank=True, max_length=2000)
    status = serializers.ChoiceField(choices=AppointmentStatus.choices, required=False)


class AppointmentIn(AppointmentPatch):
    patient = serializers.UUIDField()
    starts_at = AwareDateTimeField()
    ends_at = AwareDateTimeField()


class AppointmentQuery(PageQuery):
    date = serializers.DateField(required=False, help_text="A day in the clinic's time zone (YYYY-MM-DD).")
    status = serializers.ChoiceField(choices=AppointmentStatus.choices, required=False)
    patient = serializers.UUIDField(required=False)


class AppointmentCollectionApi(ApiView):
    """List appointments (by start time) or book one."""

    permission = perms.PATIENTS_VIEW
    write_permission = perms.APPOINTMENTS_CHANGE

    @extend_schema(operation_id="appointments_list", parameters=[AppointmentQuery],
                   responses={200: page_of(AppointmentOut, "AppointmentPage"), **errors(400)})
    def get(self, request):
        q = self.query(AppointmentQuery)
        result = api_appointment_page(tenant=self.tenant, actor=self.actor, page=q["page"], page_size=q["page_size"],
                                      day=q.get("date"), status=q.get("status"), patient_id=q.get("patient"))
        return self.page(result, AppointmentOut)

    @extend_schema(operation_id="appointments_create", request=AppointmentIn,
                   responses={201: AppointmentOut, **errors(400, 404)})
    def post(self, request):
        values = self.body(AppointmentIn)
        patient = patient_get(tenant=self.tenant, patient_id=values.pop("patient"))
        appointment = appointment_create(tenant=self.tenant, actor=self.actor, patient=patient, **values)
        return Response(AppointmentOut(appointment).data, status=status.HTTP_201_CREATED)


class AppointmentDetailApi(ApiView):
    """Read one appointment (audited as PATIENT_VIEWED), or change it: `status` moves it along its
    allowed transitions."""

    permission = perms.PATIENTS_VIEW
    write_permission = perms.APPOINTMENTS_CHANGE

    @extend_schema(operation_id="appointments_retrieve", responses={200: AppointmentOut, **errors(404)})
    def get(self, request, appointment_id):
        return Response(AppointmentOut(api_appointment_view(tenant=self.tenant, actor=self.actor,
                                                            appointment_id=appointment_id)).data)

    @extend_schema(operation_id="appointments_update", request=AppointmentPatch,
                   responses={200: AppointmentOut, **errors(400, 404)})
    def patch(self, request, appointment_id):
        appointment = appointment_get(tenant=self.tenant, appointment_id=appointment_id)
        changes = dict(self.body(AppointmentPatch))
        appointment = api_appointment_patch(tenant=self.tenant, actor=self.actor, appointment=appointment,
                                            changes=changes, status=changes.pop("status", None))
        return Response(AppointmentOut(appointment).data)
