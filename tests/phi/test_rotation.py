"""Key rotation (resumable, readers unaffected), KEK re-wrapping, and crypto-shredding."""

import base64
import threading
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from accounts.models import Tenant, TotpDevice
from accounts.tenancy import tenant_scope
from audit.events import AuditEventType
from audit.models import AuditEvent
from phi import keys
from phi.envelope import blob_key_version
from phi.errors import KeyUnavailable
from phi.kek import reset_kek_provider
from phi.models import DataKey, KeyState
from phi.rotation import reencrypt
from tests.phi.conftest import raw_column
from tests.phi_testapp.models import Record


def _run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def _versions(tenant) -> set[int]:
    with tenant_scope(tenant):
        return {blob_key_version(raw_column("phi_testapp_record", "name", pk))
                for pk in Record.objects.values_list("pk", flat=True)}


def test_rotation_reencrypts_everything_and_retires_the_old_key(tenant_a, tenant_b, make_record):
    for n in range(30):
        make_record(tenant_a, name=f"Patient {n}", details={"n": n})
    make_record(tenant_b, name="B patient")
    assert _versions(tenant_a) == {1}
    output = _run("rotate_keys", "--tenant", "clinic-a", "--batch-size", "7")
    assert "new data key version 2" in output and "30 row(s) re-encrypted" in output and "rows checked" in output
    assert _versions(tenant_a) == {2}
    assert _versions(tenant_b) == {1}  # other clinics untouched
    with tenant_scope(tenant_a):
        assert sorted(r.details["n"] for r in Record.objects.all()) == list(range(30))
        states = dict(DataKey.objects.filter(tenant=tenant_a, purpose="data").values_list("version", "state"))
        assert states == {1: KeyState.RETIRED, 2: KeyState.ACTIVE}
        event = AuditEvent.objects.get(event_type=AuditEventType.PHI_KEY_ROTATED)
        assert event.details == {"key_version": 2, "count": 30, "retired": [1]}


def test_a_stopped_rotation_resumes_without_starting_another(tenant_a, make_record):
    for n in range(10):
        make_record(tenant_a, name=f"Patient {n}")

    class Stop(Exception):
        pass

    def stop_after_first_batch(line):
        raise Stop

    with tenant_scope(tenant_a):
        keys.add_version(tenant_a.pk)
        with pytest.raises(Stop):
            reencrypt(tenant_a.pk, batch_size=4, progress=stop_after_first_batch)
    assert _versions(tenant_a) == {1, 2}
    output = _run("rotate_keys", "--tenant", "clinic-a")
    assert "finishing the rotation to version 2" in output
    assert _versions(tenant_a) == {2}


def test_platform_rotation_covers_totp_seeds(alice):
    device = TotpDevice.objects.get(user=alice)
    seed = device.key
    _run("rotate_keys", "--platform")
    refreshed = TotpDevice.objects.get(pk=device.pk)
    assert refreshed.key == seed
    with connection.cursor() as cursor:
        cursor.execute("SELECT key FROM accounts_totpdevice WHERE id = %s", [device.pk])
        assert blob_key_version(bytes(cursor.fetchone()[0])) == 2


def test_kek_rotation_rewraps_every_key(tenant_a, tenant_b, make_record, settings, alice):
    make_record(tenant_a, name="Ada")
    old = settings.KEK
    new_kek = "2:" + base64.b64encode(b"n" * 32).decode()
    settings.KEK = f"{old},{new_kek}"
    reset_kek_provider()
    keys.clear_cache()
    output = _run("rotate_keys", "--kek", "--all-tenants", "--platform")
    assert "under KEK version 2" in output
    settings.KEK = new_kek  # the old KEK is gone for good
    reset_kek_provider()
    keys.clear_cache()
    with tenant_scope(tenant_a):
        assert Record.objects.get().name == "Ada"
    assert TotpDevice.objects.get(user=alice).key


def test_shredding_makes_a_tenant_unreadable_and_spares_the_others(tenant_a, tenant_b, make_record):
    a = make_record(tenant_a, name="A secret")
    make_record(tenant_b, name="B secret")
    with pytest.raises(CommandError):
        _run("shred_tenant_keys", "--tenant", "clinic-a", "--confirm", "clinic-b")
    with tenant_scope(tenant_a):
        assert Record.objects.get(pk=a.pk).name == "A secret"
    assert "destroyed 2 key(s)" in _run("shred_tenant_keys", "--tenant", "clinic-a", "--confirm", "clinic-a")
    tenant = Tenant.objects.get(pk=tenant_a.pk)
    assert not tenant.is_active
    with tenant_scope(tenant):
        with pytest.raises(KeyUnavailable, match="destroyed"):
            Record.objects.get(pk=a.pk).name  # noqa: B018
        assert DataKey.objects.filter(tenant=tenant, wrapped=b"").count() == 2
        assert AuditEvent.objects.filter(event_type=AuditEventType.PHI_KEYS_DESTROYED).exists()
        with pytest.raises(KeyUnavailable):  # no new keys either: nothing can be written again
            keys.add_version(tenant.pk)
    with tenant_scope(tenant_b):
        assert Record.objects.get().name == "B secret"


def test_readers_keep_working_during_rotation(committed_db):
    from tests.factories import make_tenant

    tenant = make_tenant(slug="rotating")
    with tenant_scope(tenant):
        for n in range(150):
            Record(tenant=tenant, name=f"Patient {n}").save()
    errors, reads = [], [0]
    stop = threading.Event()

    def reader():
        from django.db import connection as thread_connection

        try:
            while not stop.is_set():
                with tenant_scope(tenant):
                    names = sorted(r.name for r in Record.objects.all())
                assert names == sorted(f"Patient {n}" for n in range(150))
                reads[0] += 1
        except Exception as exc:  # noqa: BLE001 - reported to the main thread
            errors.append(exc)
        finally:
            thread_connection.close()

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        _run("rotate_keys", "--tenant", "rotating", "--batch-size", "10")
    finally:
        stop.set()
        thread.join(timeout=30)
    assert errors == []
    assert reads[0] >= 1
    assert _versions(tenant) == {2}
