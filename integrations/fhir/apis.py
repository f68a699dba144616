"""FHIR R4 endpoints under /api/v1/fhir/: Bundle import, single-resource upserts and two
read-only exports. Every error body is an OperationOutcome (``handle_exception``)."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, renderers
from rest_framework.response import Response

from accounts import permissions as perms
from accounts.api_base import TenantAPIView
from accounts.errors import ApplicationError
from integrations.ehr import ehr_import_rejected
from integrations.fhir import outcome as oo
from integrations.fhir.mapping import SUPPORTED
from integrations.fhir.parsers import FhirJsonParser, FhirJsonRenderer, PlainJsonParser
from integrations.fhir.selectors import fhir_appointment_export, fhir_communication_export
from integrations.fhir.services import fhir_bundle_import, fhir_resource_upsert
from messaging.apis import api_actor

FHIR_CONTENT_TYPE = "application/fhir+json"
_ACCEPTED_TYPES = (FhirJsonParser.media_type, PlainJsonParser.media_type)


class _FhirApi(TenantAPIView):
    parser_classes = [FhirJsonParser, PlainJsonParser]
    renderer_classes = [FhirJsonRenderer, renderers.JSONRenderer]

    def handle_exception(self, exc):
        response = self._handle_exception(exc)
        if self.request.method not in ("GET", "HEAD", "OPTIONS") and 400 <= response.status_code < 500 \
                and response.status_code not in (401, 403) and getattr(self.request._request, "tenant", None):
            # 401/403 are audited by the authentication layer already (API_KEY_REJECTED / PERMISSION_DENIED).
            ehr_import_rejected(tenant=self.tenant, actor=api_actor(self.request), source="fhir",
                                status=response.status_code)
        return response

    def _handle_exception(self, exc):
        if isinstance(exc, oo.FhirError):
            return self._outcome(exc.status, exc.issues)
        response = super().handle_exception(exc)
        error = response.data.get("error", {}) if isinstance(response.data, dict) else {}
        issues = [oo.issue(oo.code_for_status(response.status_code), str(messages[0]) if messages else "", name)
                  for name, messages in (error.get("fields") or {}).items()]
        message = error.get("message") or "The request was rejected."
        response.data = oo.outcome([oo.issue(oo.code_for_status(response.status_code), message)] + issues)
        return response

    def _outcome(self, status: int, issues: list[dict]) -> Response:
        return Response(oo.outcome(issues), status=status, content_type=FHIR_CONTENT_TYPE)

    def fhir_body(self, request):
        """The parsed JSON body; 415 unless it is declared as FHIR JSON or JSON."""
        if (request.content_type or "").split(";")[0].strip().lower() not in _ACCEPTED_TYPES:
            raise exceptions.UnsupportedMediaType(request.content_type or "none")
        return request.data

    def fhir_response(self, data: dict, status: int = 200, headers=None) -> Response:
        return Response(data, status=status, content_type=FHIR_CONTENT_TYPE, headers=headers)


_FHIR_JSON = "application/fhir+json"
_OUTCOME = OpenApiResponse(OpenApiTypes.OBJECT, description="An OperationOutcome naming what is wrong.")
_ERRORS = {status: _OUTCOME for status in (400, 401, 403, 404, 413, 415, 422)}
_PATIENT = OpenApiParameter("patient", str, OpenApiParameter.QUERY, required=True,
                            description="The patient's Caretext id (or Patient/<id>).")


def _write_schema(operation_id: str, summary: str):
    return extend_schema(operation_id=operation_id, summary=summary,
                         request={_FHIR_JSON: OpenApiTypes.OBJECT, "application/json": OpenApiTypes.OBJECT},
                         responses={200: OpenApiResponse(OpenApiTypes.OBJECT, description="Updated."),
                                    201: OpenApiResponse(OpenApiTypes.OBJECT, description="Created."), **_ERRORS})


def _export_schema(operation_id: str, summary: str):
    return extend_schema(operation_id=operation_id, summary=summary, parameters=[_PATIENT],
                         responses={200: OpenApiResponse(OpenApiTypes.OBJECT, description="A searchset Bundle."),
                                    **_ERRORS})


class FhirBundleApi(_FhirApi):
    permission = perms.INTEGRATIONS_FHIR_WRITE
    write_permission = perms.INTEGRATIONS_FHIR_WRITE

    @_write_schema("fhir_bundle", "Import a FHIR R4 Bundle (transaction, batch or collection)")
    def post(self, request):
        kind, results = fhir_bundle_import(tenant=self.tenant, actor=api_actor(request), bundle=self.fhir_body(request))
        refused = sum(1 for r in results if r.status >= 400)
        if refused:
            ehr_import_rejected(tenant=self.tenant, actor=api_actor(request), source="fhir", status="partial",
                                count=refused)
        body = {"resourceType": "Bundle", "type": kind, "entry": [{"response": r.response()} for r in results]}
        return self.fhir_response(body)


class _ResourceWrite:
    def _upsert(self, request, resource_type: str) -> Response:
        if resource_type not in SUPPORTED:
            raise oo.reject(404, "not-supported", f"Unsupported resource type; use one of: {', '.join(SUPPORTED)}.")
        result = fhir_resource_upsert(tenant=self.tenant, actor=api_actor(request), data=self.fhir_body(request),
                                      resource_type=resource_type)
        word = "created" if result.status == 201 else "updated"
        body = oo.outcome([oo.issue("informational", f"{resource_type} {word}.", severity="information"),
                           *result.issues])
        return self.fhir_response(body, status=result.status, headers={"Location": result.location})


class FhirResourceApi(_ResourceWrite, _FhirApi):
    """POST or PUT /<type>: upsert one resource by its identifier (PUT is a conditional update)."""

    permission = perms.INTEGRATIONS_FHIR_WRITE
    write_permission = perms.INTEGRATIONS_FHIR_WRITE

    @_write_schema("fhir_resource_create", "Create or update one Patient, Appointment, DiagnosticReport or Consent")
    def post(self, request, resource_type: str):
        return self._upsert(request, resource_type)

    @_write_schema("fhir_resource_update", "Update (or create) one resource by its identifier")
    def put(self, request, resource_type: str):
        return self._upsert(request, resource_type)


def _patient_param(request) -> str:
    value = request.query_params.get("patient", "").strip()
    value = value.removeprefix("Patient/")
    if not value:
        raise ApplicationError("Say whose data to export.", fields={"patient": ["Required: ?patient=<id>."]})
    return value


class FhirCommunicationExportApi(_FhirApi):
    permission = perms.MESSAGES_VIEW  # message bodies: what staff read in the inbox with messages.view

    @_export_schema("fhir_communication_export", "A patient's messages as FHIR Communication resources")
    def get(self, request):
        bundle = fhir_communication_export(tenant=self.tenant, actor=api_actor(request),
                                           patient_id=_patient_param(request))
        return self.fhir_response(bundle)


class FhirAppointmentApi(_ResourceWrite, _FhirApi):
    """GET exports the patient's appointments (patients.view_phi); POST/PUT upsert one (FHIR write)."""

    permission = perms.PATIENTS_VIEW_PHI
    write_permission = perms.INTEGRATIONS_FHIR_WRITE

    @_export_schema("fhir_appointment_export", "A patient's appointments (+ AppointmentResponse)")
    def get(self, request):
        bundle = fhir_appointment_export(tenant=self.tenant, actor=api_actor(request),
                                         patient_id=_patient_param(request))
        return self.fhir_response(bundle)

    @_write_schema("fhir_appointment_create", "Create or update one Appointment")
    def post(self, request):
        return self._upsert(request, "Appointment")

    @_write_schema("fhir_appointment_update", "Update (or create) one Appointment by its identifier")
    def put(self, request):
        return self._upsert(request, "Appointment")
