"""List endpoints cost the same number of queries for 2 rows as for 6 (no query per row)."""

from __future__ import annotations

import datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.tenancy import tenant_scope
from consent.services import consent_grant
from tests.api.conftest import ApiClient, make_key
from tests.factories import make_appointment, make_patient, make_textable_patient


def _add_rows(tenant, owner, n: int, anchor) -> None:
    with tenant_scope(tenant):
        for _ in range(n):
            consent_grant(tenant=tenant, actor=owner, patient=anchor, method="verbal",
                          disclosure_version="sms-2026-01", evidence="Agreed at the front desk")
    for i in range(n):
        patient = make_textable_patient(tenant=tenant, owner=owner, phone=f"+1202555{200 + i:04d}"[-12:])
        make_appointment(tenant=tenant, patient=patient, starts_at=timezone.now() + datetime.timedelta(days=3, hours=i))


@pytest.mark.parametrize("url", ["/api/v1/patients", "/api/v1/appointments", "/api/v1/reminders",
                                 "/api/v1/patients/{patient}/consent"])
def test_list_query_count_does_not_grow_with_rows(tenant_a, alice, django_assert_num_queries, url):
    api = ApiClient(make_key(tenant_a, alice, "patients:read"))
    anchor = make_patient(tenant=tenant_a, actor=alice)
    url = url.format(patient=anchor.pk)
    _add_rows(tenant_a, alice, 2, anchor)
    api.get(url)  # warm up: the key's first use and per-process caches (clinic keys) cost extra once
    with CaptureQueriesContext(connection) as small:
        assert api.get(url).status_code == 200
    _add_rows(tenant_a, alice, 4, anchor)
    with django_assert_num_queries(len(small.captured_queries)):
        assert api.get(url).status_code == 200
