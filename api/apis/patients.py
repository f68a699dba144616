"""Patients: list, read, create, change (PHI: reads need patients.view_phi and are audited)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response

from accounts import permissions as perms
from api.apis.base import ApiView
from api.pagination import PageQuery
from api.schema import errors, page_of
from api.selectors import api_patient_page
from patients.models import Language
from patients.selectors import patient_get, patient_search, patient_view
from patients.services import patient_create, patient_update


class PatientOut(serializers.Serializer):
    id = serializers.UUIDField()
    mrn = serializers.CharField()
    given_name = serializers.CharField()
    family_name = serializers.CharField()
    birth_date = serializers.DateField()
    phone = serializers.CharField()
    email = serializers.CharField(allow_null=True)
    preferred_language = serializers.CharField()
    timezone = serializers.CharField()
    external_ids = serializers.DictField(child=serializers.CharField())
    is_active = serializers.BooleanField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class PatientPatch(serializers.Serializer):
    """Every field optional; only those sent change. Checked in depth by ``patients.services``."""

    mrn = serializers.CharField(required=False, max_length=64)
    given_name = serializers.CharField(required=False, max_length=200)
    family_name = serializers.CharField(required=False, max_length=200)
    birth_date = serializers.DateField(required=False)
    phone = serializers.CharField(required=False, allow_blank=True, max_length=32,
                                  help_text="A mobile number; blank: none on file (the patient is not texted).")
    email = serializers.CharField(required=False, allow_null=True, allow_blank=True, max_length=254)
    preferred_language = serializers.ChoiceField(choices=Language.choices, required=False)
    timezone = serializers.CharField(required=False, allow_blank=True, max_length=64)
    external_ids = serializers.DictField(child=serializers.CharField(max_length=200), required=False)


class PatientIn(PatientPatch):
    mrn = serializers.CharField(max_length=64)
    given_name = serializers.CharField(max_length=200)
    family_name = serializers.CharField(max_length=200)
    birth_date = serializers.DateField()


class PatientSearchIn(serializers.Serializer):
    """Criteria travel in the body, never the URL (they are PHI)."""

    mrn = serializers.CharField(required=False, max_length=64)
    phone = serializers.CharField(required=False, max_length=32)
    family_name = serializers.CharField(required=False, max_length=200)
    birth_date = serializers.DateField(required=False)


class PatientCollectionApi(ApiView):
    """List patients (newest first) or create one."""

    permission = perms.PATIENTS_VIEW_PHI
    write_permission = perms.PATIENTS_CHANGE

    @extend_schema(operation_id="patients_list", parameters=[PageQuery],
                   responses={200: page_of(PatientOut, "PatientPage"), **errors(400)})
    def get(self, request):
        q = self.query(PageQuery)
        result = api_patient_page(tenant=self.tenant, actor=self.actor, page=q["page"], page_size=q["page_size"])
        return self.page(result, PatientOut)

    @extend_schema(operation_id="patients_create", request=PatientIn, responses={201: PatientOut, **errors(400)})
    def post(self, request):
        patient = patient_create(tenant=self.tenant, actor=self.actor, **self.body(PatientIn))
        return Response(PatientOut(patient).data, status=status.HTTP_201_CREATED)


class PatientSearchApi(ApiView):
    """Exact match by MRN, by phone, or by last name and birth date together."""

    permission = perms.PATIENTS_VIEW_PHI
    write_permission = perms.PATIENTS_VIEW_PHI  # a POST only to keep the criteria out of URLs

    @extend_schema(operation_id="patients_search", request=PatientSearchIn,
                   responses={200: page_of(PatientOut, "PatientSearchResult"), **errors(400)})
    def post(self, request):
        _, found = patient_search(tenant=self.tenant, actor=self.actor, **self.body(PatientSearchIn))
        return Response({"results": PatientOut(found, many=True).data, "next": None})


class PatientDetailApi(ApiView):
    """One patient: read (audited as PATIENT_VIEWED) or change."""

    permission = perms.PATIENTS_VIEW_PHI
    write_permission = perms.PATIENTS_CHANGE

    @extend_schema(operation_id="patients_retrieve", responses={200: PatientOut, **errors(404)})
    def get(self, request, patient_id):
        return Response(PatientOut(patient_view(tenant=self.tenant, actor=self.actor, patient_id=patient_id)).data)

    @extend_schema(operation_id="patients_update", request=PatientPatch,
                   responses={200: PatientOut, **errors(400, 404)})
    def patch(self, request, patient_id):
        patient = patient_get(tenant=self.tenant, patient_id=patient_id)
        patient = patient_update(tenant=self.tenant, actor=self.actor, patient=patient, **self.body(PatientPatch))
        return Response(PatientOut(patient).data)
