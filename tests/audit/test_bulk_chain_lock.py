"""A bulk write whose chain lock was taken ahead (``audit_chain_lock``, for a pipelined writer)
seals inline exactly as one that takes it itself; with a float in details it goes in
unsealed and is sealed after commit; inside a pipeline its row-count check waits for the
pipeline's end."""

from __future__ import annotations

import uuid

from django.db import transaction

from accounts.dbpipeline import pipelined
from accounts.tenancy import tenant_scope
from audit.events import AuditEventType
from audit.models import AuditEvent
from audit.services import audit_chain_lock, audit_record_bulk
from tests.audit.support import verify
from tests.factories import make_tenant


def _records(count: int, details=None) -> list[dict]:
    return [{"event_type": AuditEventType.LINK_CREATED, "patient_id": uuid.uuid4(),
             "details": details or {"count": k, "kind": "reminder"}} for k in range(count)]


def _seqs(tenant) -> list:
    with tenant_scope(tenant):
        return list(AuditEvent.objects.order_by("seq").values_list("seq", flat=True))


def test_a_lock_taken_ahead_seals_the_pipelined_insert_inline(committed_db):
    tenant = make_tenant(slug="ahead")
    with tenant_scope(tenant), transaction.atomic():
        lock = audit_chain_lock(tenant)
        assert lock[0] is True and lock[1] is not None
        with pipelined():
            assert audit_record_bulk(tenant=tenant, actor=None, records=_records(3), chain_lock=lock) == 3
        assert not AuditEvent.objects.filter(seq__isnull=True).exists()  # sealed in the insert itself
    assert _seqs(tenant) == [1, 2, 3, 4]
    assert verify("--tenant", "ahead")[0]


def test_a_lock_taken_ahead_with_a_float_in_details_goes_in_unsealed(committed_db):
    tenant = make_tenant(slug="ahead-float")
    with tenant_scope(tenant), transaction.atomic():
        lock = audit_chain_lock(tenant)
        with pipelined():
            audit_record_bulk(tenant=tenant, actor=None, records=_records(2, {"count": 1e16}), chain_lock=lock)
        assert AuditEvent.objects.filter(seq__isnull=True).count() == 2
    assert _seqs(tenant) == [1, 2, 3]  # sealed after commit by this writer, which held the lock
    assert verify("--tenant", "ahead-float")[0]
