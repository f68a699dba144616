"""The audit trail's tamper evidence: hash chains, the append-only trigger, verification,
checkpoints, fail-closed writes, and gap-free chains under concurrent writers."""

import json
import threading
from datetime import UTC, datetime, timedelta
from io import StringIO

import psycopg
import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction

from accounts import services
from accounts.permissions import ApiScope
from accounts.tenancy import tenant_scope
from audit.events import AuditEventType
from audit.models import AuditChainHead, AuditEvent
from audit.services import audit_record, seal_pending
from tests.audit.support import superuser, verify
from tests.factories import make_member, make_tenant


def _record(tenant, n: int, user=None):
    with tenant_scope(tenant):
        for i in range(n):
            audit_record(tenant=tenant, actor=user, event_type=AuditEventType.PATIENT_VIEWED, details={"count": i})
        # Events are sealed into the chain after their transaction commits; a test inside one
        # transaction (the ``db`` fixture) seals them itself.
        seal_pending(tenant)


def test_events_chain_per_tenant(tenant_a, tenant_b, alice):
    _record(tenant_a, 3, alice)
    seal_pending(tenant_b)
    with tenant_scope(tenant_a):
        events = list(AuditEvent.objects.order_by("seq"))
        head = AuditChainHead.objects.get(chain=f"tenant:{tenant_a.pk}")
    seqs = [e.seq for e in events]
    assert seqs == list(range(1, len(events) + 1))
    assert events[0].prev_hash == "0" * 64
    assert all(b.prev_hash == a.hash for a, b in zip(events, events[1:], strict=False))
    assert (head.seq, head.head_hash) == (events[-1].seq, events[-1].hash)
    with tenant_scope(tenant_b):
        assert AuditEvent.objects.order_by("seq").first().seq == 1  # B has its own chain


def test_intact_chainsverify(tenant_a, tenant_b, alice, client):
    _record(tenant_a, 5, alice)
    client.post("/accounts/login/", {"email": "nobody@x.test", "password": "wrong-password-1"})  # platform event
    ok, output = verify()
    assert ok, output
    assert "ok tenant:" in output and "ok platform" in output


def test_app_role_cannot_change_or_delete_events(tenant_a, alice):
    _record(tenant_a, 1, alice)
    with tenant_scope(tenant_a):
        for sql in ("UPDATE audit_auditevent SET actor_label = 'x'", "DELETE FROM audit_auditevent"):
            with pytest.raises(Exception, match="permission denied"), transaction.atomic(), connection.cursor() as c:
                c.execute(sql)


@pytest.fixture
def committed_chain(committed_db):
    tenant = make_tenant(slug="chained")
    user = make_member(tenant=tenant, role="owner")
    _record(tenant, 6, user)
    with tenant_scope(tenant):
        events = list(AuditEvent.objects.order_by("seq"))
    return tenant, events


def test_trigger_refuses_update_and_delete_even_for_a_superuser(committed_chain):
    _, events = committed_chain
    name = connection.settings_dict["NAME"]
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{name}", autocommit=True) as conn:
        for sql in ("UPDATE audit_auditevent SET actor_label = 'x' WHERE id = %s",
                    "DELETE FROM audit_auditevent WHERE id = %s"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                conn.execute(sql, [events[2].id])


def test_verify_detects_a_changed_row(committed_chain):
    tenant, events = committed_chain
    with superuser(bypass_triggers=True) as conn:
        conn.execute("UPDATE audit_auditevent SET details = '{\"count\": 99}' WHERE id = %s", [events[2].id])
    ok, output = verify("--tenant", tenant.slug)
    assert not ok
    assert f"event seq {events[2].seq} (id {events[2].id}): contents changed" in output


def test_verify_detects_a_deleted_row(committed_chain):
    tenant, events = committed_chain
    with superuser(bypass_triggers=True) as conn:
        conn.execute("DELETE FROM audit_auditevent WHERE id = %s", [events[3].id])
    ok, output = verify("--tenant", tenant.slug)
    assert not ok and f"event seq {events[3].seq}" in output and "missing" in output


def test_verify_detects_a_deleted_tail(committed_chain):
    tenant, events = committed_chain
    with superuser(bypass_triggers=True) as conn:
        conn.execute("DELETE FROM audit_auditevent WHERE id = %s", [events[-1].id])
    ok, output = verify("--tenant", tenant.slug)
    assert not ok and "chain head" in output


def test_verify_detects_an_inserted_row(committed_chain):
    """A row slipped into the middle: the later events are renumbered to make room (the
    unique (tenant, seq) constraint refuses a plain duplicate), and the forged event is given
    a correct-looking hash of its own."""
    from types import SimpleNamespace

    from audit.chain import link_hash

    tenant, events = committed_chain
    at = events[2]
    forged = SimpleNamespace(id="00000000-0000-7000-8000-000000000001", tenant_id=tenant.pk, seq=at.seq,
                             occurred_at=at.occurred_at, event_type=100, actor_type="system", actor_user_id=None,
                             actor_label="", object_type="", object_id="", patient_id=None, ip_address=None,
                             user_agent="", request_id="", details={})
    forged_hash = link_hash(at.prev_hash, forged)
    with superuser(bypass_triggers=True) as conn:
        conn.execute("UPDATE audit_auditevent SET seq = seq + 1000000 WHERE tenant_id = %s AND seq >= %s",
                     [tenant.pk, at.seq])
        conn.execute("UPDATE audit_auditevent SET seq = seq - 999999 WHERE tenant_id = %s AND seq >= 1000000",
                     [tenant.pk])
        conn.execute(
            "INSERT INTO audit_auditevent (id, tenant_id, occurred_at, event_type, actor_type, actor_label, object_type, "
            "object_id, user_agent, request_id, details, seq, prev_hash, hash) "
            "VALUES (%s, %s, %s, 100, 'system', '', '', '', '', '', '{}', %s, %s, %s)",
            [forged.id, tenant.pk, at.occurred_at, at.seq, at.prev_hash, forged_hash])
    ok, output = verify("--tenant", tenant.slug)
    assert not ok
    assert f"event seq {at.seq + 1} (id {at.id}): does not link to the previous event" in output


def test_checkpoints_catch_a_rebuilt_chain(committed_chain, tmp_path):
    tenant, events = committed_chain
    out = StringIO()
    call_command("audit_checkpoint", "--tenant", tenant.slug, stdout=out)
    point = json.loads(out.getvalue())
    assert point["seq"] == events[-1].seq and point["head_hash"] == events[-1].hash
    heads = tmp_path / "heads.jsonl"
    heads.write_text(out.getvalue())
    assert verify("--tenant", tenant.slug, "--checkpoints", str(heads))[0]
    # An attacker with superuser rewrites an event AND recomputes every later hash and the head:
    from audit.chain import link_hash

    with tenant_scope(tenant):
        rows = list(AuditEvent.objects.order_by("seq"))
    rows[1].details = {"count": 42}
    prev = rows[0].hash
    with superuser(bypass_triggers=True) as conn:
        for row in rows[1:]:
            row.prev_hash = prev
            row.hash = link_hash(prev, row)
            conn.execute("UPDATE audit_auditevent SET details = %s, prev_hash = %s, hash = %s WHERE id = %s",
                         [json.dumps(row.details), row.prev_hash, row.hash, row.id])
            prev = row.hash
        conn.execute("UPDATE audit_auditchainhead SET head_hash = %s WHERE chain = %s", [prev, f"tenant:{tenant.pk}"])
    assert verify("--tenant", tenant.slug)[0]  # self-consistent again...
    ok, output = verify("--tenant", tenant.slug, "--checkpoints", str(heads))
    assert not ok and "differs from the exported checkpoint" in output  # ...but not with the copy outside


def test_a_failed_audit_write_undoes_the_action(tenant_a, alice, monkeypatch):
    """Fail closed: if the audit event can't be written, the action it records doesn't happen."""
    import accounts.services as account_services

    def broken(**kwargs):
        raise RuntimeError("audit store unavailable")

    monkeypatch.setattr(account_services, "audit_record", broken)
    with tenant_scope(tenant_a), pytest.raises(RuntimeError):
        account_services.api_key_create(tenant=tenant_a, actor=alice, name="k", scopes=[ApiScope.PATIENTS_READ])
    with tenant_scope(tenant_a):
        from accounts.models import ApiKey

        assert not ApiKey.objects.exists()


def test_concurrent_writers_keep_a_gap_free_chain(committed_db):
    tenant = make_tenant(slug="busy")
    errors = []

    def writer(n):
        from django.db import connection as thread_connection

        try:
            for i in range(15):
                with tenant_scope(tenant), transaction.atomic():
                    audit_record(tenant=tenant, actor=None, event_type=AuditEventType.MESSAGE_SENT,
                                 details={"count": n * 100 + i})
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            thread_connection.close()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    with tenant_scope(tenant):
        seqs = list(AuditEvent.objects.order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) == 1 + 6 * 15  # + TENANT_CREATED
    assert verify("--tenant", "busy")[0]


def test_auditlog_keeps_field_history_without_secrets_and_under_rls(tenant_a, tenant_b, alice, charlie):
    from auditlog.models import LogEntry

    with tenant_scope(tenant_a):
        key, raw = services.api_key_create(tenant=tenant_a, actor=alice, name="EHR", scopes=[ApiScope.HL7_WRITE])
        entries = list(LogEntry.objects.filter(object_pk=str(key.pk)))
        assert entries and "key_hash" not in json.dumps([e.changes for e in entries])
        assert raw not in json.dumps([e.changes for e in entries])
    with tenant_scope(tenant_b):
        assert not LogEntry.objects.filter(object_pk=str(key.pk)).exists()


def test_encrypted_fields_never_reach_auditlog():
    from auditlog.registry import auditlog

    from phi.fields import EncryptedField

    for model in auditlog.get_models():
        excluded = set(auditlog.get_model_fields(model)["exclude_fields"])
        encrypted = {f.name for f in model._meta.concrete_fields if isinstance(f, EncryptedField)}
        assert encrypted <= excluded, model


def test_retention_purge_removes_a_prefix_and_the_chain_still_verifies(committed_chain, time_machine):
    tenant, events = committed_chain
    cutoff_day = events[-1].occurred_at.date() + timedelta(days=1)
    time_machine.move_to(datetime.combine(cutoff_day + timedelta(days=1), datetime.min.time(), tzinfo=UTC), tick=False)
    later = make_member(tenant=tenant, role="clinician")  # more events after the cut-off
    cutoff = cutoff_day.isoformat()
    with pytest.raises(CommandError, match="six years"):
        call_command("audit_purge", "--tenant", tenant.slug, "--before", cutoff, "--confirm", tenant.slug)
    out = StringIO()
    call_command("audit_purge", "--tenant", tenant.slug, "--before", cutoff, "--confirm", tenant.slug,
                 "--allow-short-retention", stdout=out)
    assert f"purged {events[-1].seq} event(s)" in out.getvalue()
    with tenant_scope(tenant):
        remaining = list(AuditEvent.objects.order_by("seq"))
    assert remaining[0].seq == events[-1].seq + 1 and later
    assert remaining[-1].event_type == AuditEventType.AUDIT_CHAIN_PURGED
    ok, output = verify("--tenant", tenant.slug)
    assert ok, output


def test_the_app_role_cannot_purge_even_with_the_flag(tenant_a, alice):
    _record(tenant_a, 2, alice)
    with tenant_scope(tenant_a), pytest.raises(Exception, match="permission denied"):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT set_config('caretext.audit_purge', 'on', true)")
            cursor.execute("DELETE FROM audit_auditevent")
