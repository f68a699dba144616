"""Canaries: unique strings stored as PHI must appear nowhere at rest — not in a pg_dump of
the database, not in the logs, not in Redis, not in exception messages."""

import logging
import os
import secrets
import subprocess
import urllib.parse

import pytest
import redis
from django.conf import settings
from django.db import connection

from accounts.models import TotpDevice
from accounts.tenancy import tenant_scope
from phi.errors import PhiError
from tests.factories import make_member, make_tenant
from tests.phi.conftest import write_raw_column
from tests.phi_testapp.models import Record

pytestmark = pytest.mark.slow


def _pg_dump() -> str:
    params = connection.settings_dict
    env = {**os.environ, "PGPASSWORD": os.environ.get("PG_ADMIN_PASSWORD", "")}
    admin = urllib.parse.urlparse(os.environ.get("PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    result = subprocess.run(
        ["pg_dump", "--no-owner", "--host", params.get("HOST") or "127.0.0.1", "--port", str(params.get("PORT") or 5432),
         "--username", admin.username or "postgres", "--dbname", params["NAME"]],
        capture_output=True, text=True, env=env, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _redis_dump() -> bytes:
    client = redis.Redis.from_url(settings.REDIS_URL)
    blob = b""
    for key in client.scan_iter(count=1000):
        blob += key
        if client.type(key) == b"string":
            blob += client.get(key) or b""
    return blob


def test_canaries_appear_nowhere(committed_db, caplog):
    caplog.set_level(logging.DEBUG)
    canary = "CANARY" + secrets.token_hex(8)
    tenant = make_tenant(slug="canary")
    user = make_member(tenant=tenant, role="clinician")
    seed = TotpDevice.objects.get(user=user).key
    with tenant_scope(tenant):
        record = Record(tenant=tenant, name=f"{canary} Person", details={"note": canary})
        record.save()
        assert Record.objects.get(pk=record.pk).details["note"] == canary  # it really is stored
        write_raw_column("phi_testapp_record", "name", record.pk, b"\x01\x00\x00\x00\x01" + b"\x00" * 40)
        with pytest.raises(PhiError) as error:
            Record.objects.get(pk=record.pk).name  # noqa: B018
    assert canary not in str(error.value)

    dump = _pg_dump()
    assert "phi_testapp_record" in dump and "\tcanary\t" in dump  # tables and their rows are in it
    assert canary not in dump
    assert seed not in dump  # TOTP seeds are encrypted too
    assert canary not in caplog.text and seed not in caplog.text
    assert canary.encode() not in _redis_dump()
