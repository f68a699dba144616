"""Patients and a signed BAA for the consent tests.

``make_patient`` is the shared factory with this suite's default phone number.
"""

from __future__ import annotations

import datetime

import pytest
from django.utils import timezone

from accounts.tenancy import tenant_scope
from consent import services
from consent.documents import baa_document
from patients.models import Patient
from phi.blind import blind_index
from tests.factories import make_patient as _make_patient


def make_patient(*, tenant, phone: str = "+12025550143", **overrides) -> Patient:
    """The shared factory (through patient_create), with the consent tests' default number."""
    return _make_patient(tenant=tenant, phone=phone, **overrides)


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
