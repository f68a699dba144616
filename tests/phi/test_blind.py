import datetime

import pytest

from accounts.tenancy import tenant_scope
from phi.blind import blind_index
from tests.phi_testapp.models import Record


def test_equal_after_normalisation_and_distinct_otherwise(tenant_a):
    with tenant_scope(tenant_a):
        assert blind_index(tenant_a, "phone", "+1 (555) 010-0199") == blind_index(tenant_a, "phone", "+15550100199")
        assert blind_index(tenant_a, "mrn", " ab-123 ") == blind_index(tenant_a, "mrn", "AB123")
        dob = datetime.date(1980, 5, 17)
        assert blind_index(tenant_a, "name_dob", ("  O'Brien ", dob)) == blind_index(tenant_a, "name_dob", ("o'brien", dob))
        assert blind_index(tenant_a, "name_dob", ("O'Brien", dob)) != blind_index(
            tenant_a, "name_dob", ("O'Brien", datetime.date(1980, 5, 18)))
        assert blind_index(tenant_a, "mrn", "123") != blind_index(tenant_a, "phone", "123")
        assert len(blind_index(tenant_a, "mrn", "123")) == 64


def test_each_tenant_has_its_own_index_key(tenant_a, tenant_b):
    with tenant_scope(tenant_a):
        a = blind_index(tenant_a, "mrn", "MRN-1")
    with tenant_scope(tenant_b):
        b = blind_index(tenant_b, "mrn", "MRN-1")
    assert a != b


def test_lookup_by_blind_index(tenant_a, make_record):
    with tenant_scope(tenant_a):
        index = blind_index(tenant_a, "text", "Ada Lovelace")
    make_record(tenant_a, name="Ada Lovelace", name_index=index)
    make_record(tenant_a, name="Grace Hopper", name_index="x")
    with tenant_scope(tenant_a):
        found = Record.objects.get(name_index=blind_index(tenant_a, "text", "  ada   LOVELACE"))
        assert found.name == "Ada Lovelace"


def test_unknown_kind_and_empty_phone_are_rejected(tenant_a):
    with tenant_scope(tenant_a):
        with pytest.raises(ValueError):
            blind_index(tenant_a, "ssn", "1")
        with pytest.raises(ValueError):
            blind_index(tenant_a, "phone", "call me")
