"""Static checks on every test run: bandit (medium severity and confidence or worse, with the
exclusions of ``[tool.bandit]`` in pyproject.toml), ruff and the migrations check are clean.

The checks themselves live in scripts/verify.py (``make verify`` prints them as a table); these
tests make a plain ``pytest`` fail on them too. Each runs in a subprocess in seconds."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tomllib

import pytest
from django.conf import settings

BASE_DIR = settings.BASE_DIR


def _verify():
    spec = importlib.util.spec_from_file_location("caretext_verify", BASE_DIR / "scripts" / "verify.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def verify():
    return _verify()


def test_bandit_is_configured_to_skip_the_venv_tests_and_migrations(verify):
    config = tomllib.loads((BASE_DIR / verify.BANDIT_CONFIG).read_text()).get("tool", {}).get("bandit")
    assert config is not None, "pyproject.toml needs the [tool.bandit] section (bandit -c pyproject.toml)"
    assert {".venv", "tests", "migrations"} <= set(config["exclude_dirs"])
    assert not config.get("skips"), "justify each exception on its line (# nosec BXXX), never skip a check globally"


def test_bandit_finds_nothing_at_medium_severity_and_confidence(verify):
    code, findings, output = verify.bandit_findings()
    assert findings == [], "\n".join(f"{f['filename']}:{f['line_number']} {f['test_id']} {f['issue_text']}"
                                     for f in findings)
    assert code == 0, output


def test_bandit_would_catch_a_real_finding(verify, tmp_path):
    """The scan above is not vacuous: the same command flags a shell=True call (outside migrations)."""
    probe = tmp_path / "clinic_app" / "probe.py"
    probe.parent.mkdir()
    probe.write_text("import subprocess\n\n\ndef run(name):\n    subprocess.call('ls ' + name, shell=True)\n")
    (tmp_path / "clinic_app" / "migrations").mkdir()
    (tmp_path / "clinic_app" / "migrations" / "0001_initial.py").write_text(probe.read_text())
    _, findings, _ = verify.bandit_findings(str(tmp_path))
    assert [(f["test_id"], f["filename"]) for f in findings] == [("B602", str(probe))]  # migrations excluded


def test_ruff_is_clean(verify):
    row, output = verify.check_ruff()
    assert row.result == "pass", output


def test_no_model_change_lacks_a_migration():
    env = {**os.environ, "CARETEXT_TESTING": "1"}
    env.pop("PYTEST_XDIST_WORKER", None)
    result = subprocess.run([sys.executable, "manage.py", "makemigrations", "--check", "--dry-run"], cwd=BASE_DIR,
                            env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No changes detected" in result.stdout


def test_the_verify_table_reports_each_static_check(verify):
    rows = [verify.Row("ruff check .", "pass", "0 problems"), verify.Row("bandit", "FAIL", "2 findings")]
    lines = verify.table(rows).splitlines()
    assert lines[0].split("|")[1:4] == [" scenario     ", " result ", " figure     "]
    assert "| bandit       | FAIL   | 2 findings |" in lines
    assert len({len(line) for line in lines}) == 1  # the columns line up
