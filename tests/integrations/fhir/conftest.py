"""Helpers for the FHIR API tests: keys, requests, the vendored official examples."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from django.test import Client

from accounts.services import api_key_create
from accounts.tenancy import tenant_scope

DATA = Path(__file__).parent / "data"
FHIR = "application/fhir+json"
MOBILE = "+12025550142"


def example(name: str) -> dict:
    return copy.deepcopy(json.loads((DATA / f"{name}.json").read_text()))


def key_for(tenant, owner, scopes=("fhir:write",)) -> str:
    with tenant_scope(tenant):
        _, raw = api_key_create(tenant=tenant, actor=owner, name="EHR", scopes=list(scopes))
    return raw


def send(raw, path, data, *, method="post", content_type=FHIR):
    body = data if isinstance(data, (bytes, str)) else json.dumps(data)
    return getattr(Client(), method)(f"/api/v1/fhir/{path}", body, content_type=content_type,
                                     HTTP_AUTHORIZATION=f"Bearer {raw}")


def fetch(raw, path):
    return Client().get(f"/api/v1/fhir/{path}", HTTP_AUTHORIZATION=f"Bearer {raw}")


def bundle(kind, *resources, full_urls=None):
    urls = full_urls or [None] * len(resources)
    return {"resourceType": "Bundle", "type": kind,
            "entry": [{**({"fullUrl": u} if u else {}), "resource": r} for r, u in zip(resources, urls, strict=True)]}


def patient_resource(mrn="MRN-F-1", phone=MOBILE, **extra):
    resource = {"resourceType": "Patient",
                "identifier": [{"system": "urn:oid:1.2.3", "value": mrn,
                                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                                     "code": "MR"}]}}],
                "name": [{"family": "Rivera", "given": ["Ana"]}], "birthDate": "1984-03-09",
                "telecom": [{"system": "phone", "use": "mobile", "value": phone}]}
    resource.update(extra)
    return resource


def appointment_resource(ident="APT-1", patient_ref="urn:uuid:p1", status="booked", **extra):
    resource = {"resourceType": "Appointment", "identifier": [{"system": "urn:ehr", "value": ident}],
                "status": status, "start": "2030-05-01T09:00:00Z", "end": "2030-05-01T09:30:00Z",
                "participant": [{"actor": {"reference": patient_ref}, "status": "accepted"}]}
    resource.update(extra)
    return resource


@pytest.fixture
def fhir_key(tenant_a, alice):
    return key_for(tenant_a, alice)
