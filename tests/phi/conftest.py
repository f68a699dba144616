import pytest

from accounts.tenancy import tenant_scope
from phi import keys
from phi.kek import reset_kek_provider
from tests.phi_testapp.models import Record


@pytest.fixture(autouse=True)
def _fresh_key_state():
    keys.clear_cache()
    reset_kek_provider()
    yield
    keys.clear_cache()
    reset_kek_provider()


@pytest.fixture
def make_record():
    def _make(tenant, **values):
        values.setdefault("name", "Ada Lovelace")
        with tenant_scope(tenant):
            record = Record(tenant=tenant, **values)
            record.save()
        return record

    return _make


def raw_column(table: str, column: str, pk) -> bytes:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM {table} WHERE id = %s", [pk])
        return bytes(cursor.fetchone()[0])


def write_raw_column(table: str, column: str, pk, value: bytes) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {table} SET {column} = %s WHERE id = %s", [value, pk])
