"""A patient's SMS consent ledger: read it (PATIENT_VIEWED), append a grant or revoke."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response

from accounts import permissions as perms
from api.apis.base import ApiView, AwareDateTimeField
from api.pagination import PageQuery
from api.schema import errors, page_of
from api.selectors import api_consent_page
from consent.models import ConsentAction, ConsentMethod
from consent.selectors import consent_patient_get
from consent.services import EVIDENCE_MAX, consent_record

# SMS keywords come from the patient's own text, never from a caller.
_API_METHODS = [(value, label) for value, label in ConsentMethod.choices if value != ConsentMethod.SMS_KEYWORD]


class ConsentEventOut(serializers.Serializer):
    id = serializers.UUIDField()
    action = serializers.ChoiceField(choices=ConsentAction.choices)
    method = serializers.ChoiceField(choices=ConsentMethod.choices)
    channel = serializers.CharField()
    disclosure_version = serializers.CharField()
    evidence = serializers.CharField(allow_null=True)
    for_current_number = serializers.SerializerMethodField()
    captured_by_id = serializers.IntegerField(allow_null=True)
    occurred_at = serializers.DateTimeField()
    created_at = serializers.DateTimeField()

    def get_for_current_number(self, event) -> bool:
        """Consent covers only the number it was given for: false once the patient's number changed."""
        return event.phone_index == self.context["patient"].phone_index


class ConsentIn(serializers.Serializer):
    action = serializers.ChoiceField(choices=ConsentAction.choices)
    method = serializers.ChoiceField(choices=_API_METHODS)
    disclosure_version = serializers.CharField(required=False, allow_blank=True, max_length=40)
    evidence = serializers.CharField(required=False, allow_blank=True, max_length=EVIDENCE_MAX)
    occurred_at = AwareDateTimeField(required=False)


class PatientConsentApi(ApiView):
    """A patient's SMS consent ledger (newest first), or append a grant or revoke."""

    permission = perms.PATIENTS_VIEW_PHI
    write_permission = perms.CONSENT_CHANGE

    @extend_schema(operation_id="patients_consent_list", parameters=[PageQuery],
                   responses={200: page_of(ConsentEventOut, "ConsentEventPage"), **errors(400, 404)})
    def get(self, request, patient_id):
        q = self.query(PageQuery)
        patient, result = api_consent_page(tenant=self.tenant, actor=self.actor, patient_id=patient_id,
                                           page=q["page"], page_size=q["page_size"])
        return self.page(result, ConsentEventOut, patient=patient)

    @extend_schema(operation_id="patients_consent_create", request=ConsentIn,
                   responses={201: ConsentEventOut, **errors(400, 404)})
    def post(self, request, patient_id):
        patient = consent_patient_get(tenant=self.tenant, patient_id=patient_id)
        event = consent_record(tenant=self.tenant, actor=self.actor, patient=patient, **self.body(ConsentIn))
        return Response(ConsentEventOut(event, context={"patient": event.patient}).data,
                        status=status.HTTP_201_CREATED)
