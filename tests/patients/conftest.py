"""Patients of clinic A and B with known values, and the clinic-A scope for service tests."""

import datetime

import pytest

from accounts.tenancy import tenant_scope
from tests.factories import make_appointment, make_patient

ADA = {"mrn": "A-1001", "given_name": "Ada", "family_name": "Lovelace", "birth_date": datetime.date(1985, 12, 10),
       "phone": "(202) 555-0143", "email": "ada@example.test"}


@pytest.fixture
def ada(tenant_a):
    return make_patient(tenant=tenant_a, **ADA)


@pytest.fixture
def ada_b(tenant_b):
    """The same person's values in clinic B (another clinic's record, not a duplicate)."""
    return make_patient(tenant=tenant_b, **ADA)


@pytest.fixture
def visit(tenant_a, ada):
    return make_appointment(tenant=tenant_a, patient=ada)


@pytest.fixture
def visit_b(tenant_b, ada_b):
    return make_appointment(tenant=tenant_b, patient=ada_b)


@pytest.fixture
def in_a(tenant_a):
    """Run the test body inside clinic A's scope (as a request or task would)."""
    with tenant_scope(tenant_a):
        yield tenant_a

