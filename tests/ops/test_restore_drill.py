"""The backup/restore drill (scripts/restore_drill.py) runs end to end: pg_dump → pg_restore
into a fresh database → audit_verify passes → PHI decrypts with the KEK (and not with another)
→ the app serves a signed-in patient page from the restored database.

It works on its own scratch databases (caretext_drill_*), created and dropped as the PostgreSQL
superuser, never on the test database. Its figures (dump/restore seconds, RTO) are recorded as
``ops.*`` properties, which ``make verify`` prints."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import psycopg
import pytest
from django.conf import settings

DRILL = settings.BASE_DIR / "scripts" / "restore_drill.py"


def _drill_module():
    spec = importlib.util.spec_from_file_location("caretext_restore_drill", DRILL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _drill_databases(module) -> set[str]:
    with psycopg.connect(module.ADMIN_URL, autocommit=True) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", [module.PREFIX + "%"])
        return {name for (name,) in rows}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_restore_drill_restores_a_working_system(record_property):
    module = _drill_module()
    before = _drill_databases(module)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "CARETEXT_TEST_DB"))}
    result = subprocess.run([sys.executable, str(DRILL), "--patients", "20", "--json"], cwd=settings.BASE_DIR,
                            env=env, capture_output=True, text=True, timeout=540, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    for name in ("dump_seconds", "restore_seconds", "audit_verify_seconds", "rto_seconds", "dump_bytes"):
        record_property(f"ops.{name}", figures[name])

    assert figures["patients"] == 20 and figures["messages"] == 20
    assert figures["audit_events"] > 20 * 3  # each patient: created, consent, message (and more)
    assert figures["restored_counts_match"] is True
    assert figures["audit_chains_intact"] >= 2  # the clinic's chain and the platform's
    assert figures["phi_sample_decrypted"] >= 4
    assert figures["page_status"] == 200
    assert figures["wrong_kek_refused"] is True
    assert figures["dump_bytes"] > 0
    assert _drill_databases(module) == before  # both scratch databases dropped


def test_the_drill_only_ever_creates_or_drops_its_own_databases():
    module = _drill_module()
    for name in ("caretext", "postgres", "test_caretext"):
        with pytest.raises(AssertionError):
            module._drop_database(name)
    with pytest.raises(AssertionError):
        module._create_database('caretext_drill_x"; DROP DATABASE "caretext')


def test_a_failed_step_fails_the_drill_with_its_output():
    module = _drill_module()
    with pytest.raises(module.DrillFailed, match="exited 3"):
        module._run([sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"])
