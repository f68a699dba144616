"""Messaging fixtures: clinic A with a signed BAA and a patient who may be texted now."""

from __future__ import annotations

import datetime

import pytest

from accounts.tenancy import tenant_scope
from integrations.models import LocalSms
from tests.factories import make_textable_patient

BIRTH_DATE = datetime.date(1984, 3, 9)


@pytest.fixture
def patient(tenant_a, alice):
    return make_textable_patient(tenant=tenant_a, owner=alice, given_name="Ada", family_name="Quill",
                                 birth_date=BIRTH_DATE, phone="+12025550171")


@pytest.fixture
def in_a(tenant_a):
    with tenant_scope(tenant_a):
        yield tenant_a


def sent_sms(to: str | None = None) -> list[LocalSms]:
    rows = LocalSms.objects.order_by("created_at", "id")
    return list(rows.filter(to=to) if to else rows)


def token_of(sms: LocalSms) -> str:
    """The link token in a link notice."""
    import re

    match = re.search(r"/s/([A-Za-z0-9_-]{43})", sms.body)
    assert match, "not a link notice"
    return match.group(1)


@pytest.fixture
def audit_cost(tenant_a) -> int:
    """Queries one audit event costs inside an action's transaction, as audit.services writes it now."""
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    from audit.events import AuditEventType
    from audit.services import audit_record

    with tenant_scope(tenant_a), transaction.atomic():
        audit_record(tenant=tenant_a, actor=None, event_type=AuditEventType.PATIENT_SEARCHED,
                     details={"path_name": "budget-probe", "count": 0})  # the clinic's chain exists now
        with CaptureQueriesContext(connection) as queries:
            audit_record(tenant=tenant_a, actor=None, event_type=AuditEventType.PATIENT_SEARCHED,
                         details={"path_name": "budget-probe", "count": 0})
    return len(queries)
