"""Encrypted fields: round trips, tamper and swap detection, scope binding, failing closed."""

import base64
import datetime
import json

import pytest
from django.test import RequestFactory

from accounts.tenancy import tenant_scope
from phi import keys
from phi.errors import DecryptionError, EncryptedLookupError, KekError, KeyUnavailable, PhiError
from phi.kek import reset_kek_provider
from phi.models import DataKey
from tests.phi.conftest import raw_column, write_raw_column
from tests.phi_testapp.models import Record

SECRET_NAME = "Zebediah Quarrington-Vossberg"
WRONG_KEY = base64.b64encode(b"A" * 32).decode()


def test_round_trip_of_every_type_and_nothing_readable_at_rest(tenant_a, make_record):
    record = make_record(tenant_a, name=SECRET_NAME, birth_date=datetime.date(1961, 2, 28),
                         details={"dx": "hypertension", "n": [1, 2]})
    with tenant_scope(tenant_a):
        loaded = Record.objects.get(pk=record.pk)
        assert loaded.name == SECRET_NAME
        assert loaded.birth_date == datetime.date(1961, 2, 28)
        assert loaded.details == {"dx": "hypertension", "n": [1, 2]}
        stored = raw_column("phi_testapp_record", "name", record.pk)
        assert SECRET_NAME.encode() not in stored and stored[0] == 1
        assert b"hypertension" not in raw_column("phi_testapp_record", "details", record.pk)
        assert b"1961" not in raw_column("phi_testapp_record", "birth_date", record.pk)


def test_same_value_encrypts_differently_each_time(tenant_a, make_record):
    one, two = make_record(tenant_a, name=SECRET_NAME), make_record(tenant_a, name=SECRET_NAME)
    with tenant_scope(tenant_a):
        assert raw_column("phi_testapp_record", "name", one.pk) != raw_column("phi_testapp_record", "name", two.pk)


def test_nulls_stay_null_and_updates_reencrypt_only_changed_fields(tenant_a, make_record):
    record = make_record(tenant_a)
    with tenant_scope(tenant_a):
        before = raw_column("phi_testapp_record", "name", record.pk)
        loaded = Record.objects.get(pk=record.pk)
        assert loaded.birth_date is None and loaded.details is None
        loaded.details = {"allergy": "penicillin"}
        loaded.save()
        assert raw_column("phi_testapp_record", "name", record.pk) == before
        assert Record.objects.get(pk=record.pk).details == {"allergy": "penicillin"}


def test_bit_flip_is_detected_and_the_error_names_row_not_value(tenant_a, make_record):
    record = make_record(tenant_a, name=SECRET_NAME)
    with tenant_scope(tenant_a):
        blob = bytearray(raw_column("phi_testapp_record", "name", record.pk))
        blob[-5] ^= 0x01
        write_raw_column("phi_testapp_record", "name", record.pk, bytes(blob))
        loaded = Record.objects.get(pk=record.pk)
        with pytest.raises(DecryptionError) as error:
            loaded.name  # noqa: B018
    message = str(error.value)
    assert "phi_testapp_record.name" in message and str(record.pk) in message
    assert SECRET_NAME not in message


def test_ciphertext_copied_to_another_row_or_column_fails(tenant_a, make_record):
    one, two = make_record(tenant_a, name=SECRET_NAME), make_record(tenant_a, name="Other Person")
    with tenant_scope(tenant_a):
        write_raw_column("phi_testapp_record", "name", two.pk, raw_column("phi_testapp_record", "name", one.pk))
        write_raw_column("phi_testapp_record", "details", one.pk, raw_column("phi_testapp_record", "name", one.pk))
        with pytest.raises(DecryptionError):
            Record.objects.get(pk=two.pk).name  # noqa: B018
        with pytest.raises(DecryptionError):
            Record.objects.get(pk=one.pk).details  # noqa: B018
        assert Record.objects.get(pk=one.pk).name == SECRET_NAME


def test_ciphertext_moved_to_another_tenant_fails(tenant_a, tenant_b, make_record):
    a = make_record(tenant_a, name=SECRET_NAME)
    b = make_record(tenant_b, name="B Person")
    with tenant_scope(tenant_a):
        stolen = raw_column("phi_testapp_record", "name", a.pk)
    with tenant_scope(tenant_b):
        write_raw_column("phi_testapp_record", "name", b.pk, stolen)
        with pytest.raises(PhiError):
            Record.objects.get(pk=b.pk).name  # noqa: B018


def test_a_row_read_in_one_tenant_cannot_be_decrypted_in_another_scope(tenant_a, tenant_b, make_record):
    record = make_record(tenant_a, name=SECRET_NAME)
    with tenant_scope(tenant_a):
        loaded = Record.objects.get(pk=record.pk)
    with tenant_scope(tenant_b), pytest.raises(KeyUnavailable):
        loaded.name  # noqa: B018
    keys.clear_cache()
    with pytest.raises(KeyUnavailable):  # no scope at all
        loaded.name  # noqa: B018


def test_encrypted_fields_cannot_be_filtered(tenant_a, make_record):
    make_record(tenant_a, name=SECRET_NAME)
    with tenant_scope(tenant_a):
        with pytest.raises(EncryptedLookupError):
            list(Record.objects.filter(name=SECRET_NAME))
        assert Record.objects.filter(birth_date__isnull=True).count() == 1


def test_wrong_kek_fails_closed(tenant_a, make_record, settings):
    record = make_record(tenant_a, name=SECRET_NAME)
    keys.clear_cache()
    settings.KEK = "1:" + WRONG_KEY  # the wrong key
    reset_kek_provider()
    with tenant_scope(tenant_a), pytest.raises(KekError) as error:
        Record.objects.get(pk=record.pk).name  # noqa: B018
    assert SECRET_NAME not in str(error.value)


def test_missing_kek_version_fails_closed(tenant_a, make_record, settings):
    record = make_record(tenant_a, name=SECRET_NAME)
    keys.clear_cache()
    settings.KEK = "2:" + WRONG_KEY
    reset_kek_provider()
    with tenant_scope(tenant_a), pytest.raises(KekError, match="version 1 is not configured"):
        Record.objects.get(pk=record.pk).name  # noqa: B018


def test_missing_data_key_version_fails_closed(tenant_a, make_record):
    record = make_record(tenant_a, name=SECRET_NAME)
    keys.clear_cache()
    with tenant_scope(tenant_a):
        DataKey.objects.filter(tenant=tenant_a, purpose="data").delete()
        with pytest.raises(KeyUnavailable, match="does not exist"):
            Record.objects.get(pk=record.pk).name  # noqa: B018


def test_a_list_costs_one_kek_unwrap_not_one_per_row(tenant_a, make_record, monkeypatch):
    for n in range(25):
        make_record(tenant_a, name=f"Person {n}")
    keys.clear_cache()
    from phi.kek import kek_provider

    provider = kek_provider()
    calls = []
    real = provider.unwrap
    monkeypatch.setattr(provider, "unwrap", lambda *a, **k: calls.append(1) or real(*a, **k))
    with tenant_scope(tenant_a):
        names = [r.name for r in Record.objects.order_by("created_at")]
    assert len(names) == 25 and names[0] == "Person 0"
    assert len(calls) == 1


def test_totp_seeds_are_encrypted_at_rest(alice):
    from accounts.models import TotpDevice

    device = TotpDevice.objects.get(user=alice)
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT key FROM accounts_totpdevice WHERE id = %s", [device.pk])
        stored = bytes(cursor.fetchone()[0])
    assert device.key.encode() not in stored and len(device.key) == 40


def test_decryption_failure_is_a_503_without_details(tenant_a):
    from phi.middleware import PhiFailClosedMiddleware

    middleware = PhiFailClosedMiddleware(lambda r: None)
    request = RequestFactory().get("/patients/x/")
    request.user = None
    response = middleware.process_exception(request, DecryptionError("cannot decrypt t.c of row 1: authentication failed"))
    assert response.status_code == 503
    assert b"temporarily unavailable" in response.content and b"row 1" not in response.content
    api = middleware.process_exception(RequestFactory().get("/api/v1/x"), KeyUnavailable("keys destroyed"))
    assert api.status_code == 503 and json.loads(api.content)["error"]["code"] == "phi_unavailable"


def test_key_rows_are_under_rls(tenant_a, tenant_b, alice):
    from django.db import connection

    with tenant_scope(tenant_b), connection.cursor() as cursor:
        cursor.execute("SELECT tenant_id FROM phi_datakey")
        visible = {row[0] for row in cursor.fetchall()}
    assert tenant_a.pk not in visible
    assert tenant_b.pk in visible and None in visible  # its own keys and the platform key
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM phi_datakey WHERE tenant_id IS NOT NULL")
        assert cursor.fetchone()[0] == 0  # no scope: no clinic's keys


# --- open_many: a page's rows opened at once ------------------------------------------------------------------


def test_open_many_opens_every_sealed_row_as_reading_each_would(tenant_a, make_record, monkeypatch):
    records = [make_record(tenant_a, name=f"{SECRET_NAME} {i}", details={"n": i}) for i in range(5)]
    with tenant_scope(tenant_a):
        loaded = list(Record.objects.filter(pk__in=[r.pk for r in records]))
        loaded[0].name  # noqa: B018  # already open: left as it is
        field = Record._meta.get_field("name")
        lookups = []
        real_cipher = keys.data_cipher
        monkeypatch.setattr(keys, "data_cipher", lambda *a, **k: lookups.append(a) or real_cipher(*a, **k))
        field.open_many(loaded)
        assert all(isinstance(r.__dict__["name"], str) for r in loaded)  # opened now, not on first read
        expected = {r.pk: (r.name, r.details) for r in records}
        assert {r.pk: r.name for r in loaded} == {pk: name for pk, (name, _) in expected.items()}
        assert len(lookups) == 1  # one key lookup (and scope check) for the page, not one per row
        assert all(type(r.__dict__["details"]).__name__ == "Sealed" for r in loaded)  # other fields: untouched
        assert {r.pk: r.details for r in loaded} == {pk: details for pk, (_, details) in expected.items()}


def test_open_many_fails_like_a_read_and_names_the_row_not_the_value(tenant_a, tenant_b, make_record):
    one, two = make_record(tenant_a, name=SECRET_NAME), make_record(tenant_a, name="Other Person")
    with tenant_scope(tenant_a):
        write_raw_column("phi_testapp_record", "name", two.pk, raw_column("phi_testapp_record", "name", one.pk))
        loaded = list(Record.objects.filter(pk__in=[one.pk, two.pk]))
        with pytest.raises(DecryptionError) as error:
            Record._meta.get_field("name").open_many(loaded)
    message = str(error.value)
    assert "phi_testapp_record.name" in message and str(two.pk) in message and SECRET_NAME not in message
    with tenant_scope(tenant_a):
        fresh = list(Record.objects.filter(pk=one.pk))
    with tenant_scope(tenant_b), pytest.raises(KeyUnavailable):  # another clinic's scope: its key is not usable
        Record._meta.get_field("name").open_many(fresh)
