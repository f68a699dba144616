"""Patients and a signed BAA for the consent tests.

``make_patient`` builds a Patient row directly (with its blind indexes) so these tests don't
depend on patients/ services; a shared factory replaces it later.
"""

from __future__ import annotations

import datetime
import itertools

import pytest
from django.utils import timezone

from accounts.tenancy import tenant_scope
from consent import services
from consent.documents import baa_document
from patients.models import Patient
from phi.blind import blind_index

_seq = itertools.count(1)


def make_patient(*, tenant, phone: str = "+12025550143", **overrides) -> Patient:
    with tenant_scope(tenant):
        values = {"mrn": f"MRN-{next(_seq)}", "given_name": "Ada", "family_name": "Lovelace",
                  "birth_date": datetime.date(1980, 1, 2), "phone": phone, "timezone": ""}
        values.update(overrides)
        patient = Patient(tenant=tenant, **values)
        patient.mrn_index = blind_index(tenant, "mrn", patient.mrn)
        patient.phone_index = blind_index(tenant, "phone", patient.phone)
        patient.name_dob_index = blind_index(tenant, "name_dob", (patient.family_name, patient.birth_date))
        patient.save(force_insert=True)
    return patient


def change_phone(patient: Patient, phone: str, *, at: datetime.datetime | None = None) -> Patient:
    """What patients/ does on a number change: new number, new index, the time it changed."""
    with tenant_scope(patient.tenant):
        patient.phone = phone
        patient.phone_index = blind_index(patient.tenant, "phone", phone)
        patient.phone_changed_at = at or timezone.now()
        patient.save(update_fields=["phone", "phone_index", "phone_changed_at", "updated_at"])
    return patient


def sign_baa(*, tenant, owner):
    with tenant_scope(tenant):
        return services.baa_sign(tenant=tenant, actor=owner, signer_name="Alice Owner", signer_title="Owner",
                                 agreed=True, document_sha256=baa_document().sha256, ip="127.0.0.1")


@pytest.fixture
def patient_a(tenant_a):
    return make_patient(tenant=tenant_a)


@pytest.fixture
def patient_b(tenant_b):
    return make_patient(tenant=tenant_b, given_name="Bea", family_name="Bravo")


@pytest.fixture
def baa_a(tenant_a, alice):
    return sign_baa(tenant=tenant_a, owner=alice)


@pytest.fixture
def in_a(tenant_a):
    """Run the test body inside clinic A's scope (service and selector tests)."""
    with tenant_scope(tenant_a):
        yield tenant_a
