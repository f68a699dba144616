"""`make verify`: the static and deploy checks, then the reliability, security, PHI and restore
suites, as one table (scenario | result | figure). Exit status 0 only when every row passed.

Run it with the test environment (`make verify` sets it, as `make test` does):

    CARETEXT_TESTING=1 DATABASE_URL=... DATABASE_OWNER_URL=... REDIS_URL=... \
        .venv/bin/python scripts/verify.py [--static-only] [pytest arguments ...]

- The deploy check runs `manage.py check --deploy --fail-level WARNING` in a fresh process with
  production-like settings built from scratch (random SECRET_KEY and KEK, Twilio gateway, TLS
  proxy), the way tests/security/test_deploy.py does, so no test flag leaks in.
- bandit reads its exclusions from `[tool.bandit]` in pyproject.toml and reports medium severity
  and confidence or worse; ruff and the migrations check use the project's own configuration.
- The pytest suites write a JUnit XML report; every `record_property` of a test (the
  reliability suite's `figures(...)`, the restore drill's seconds) becomes that test's figure.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import secrets
import string
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET  # nosec B405  # parses only the JUnit file our pytest wrote
from dataclasses import dataclass
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
VENV_BIN = BASE_DIR / ".venv" / "bin"
# Its [tool.bandit] excludes .venv, tests and migrations (BANDIT_CONFIG: another file, e.g. a candidate).
BANDIT_CONFIG = os.environ.get("BANDIT_CONFIG", "pyproject.toml")
SUITES = ["tests/reliability", "tests/security", "tests/phi", "tests/ops"]
# Variables that make settings.py believe it runs under tests or the demo.
_NOT_PRODUCTION = ("CARETEXT_TESTING", "CARETEXT_DEMO", "DEBUG", "DJANGO_SETTINGS_MODULE", "CARETEXT_TEST_DB")


@dataclass
class Row:
    scenario: str
    result: str  # "pass" | "FAIL" | "skip"
    figure: str = ""

    @property
    def ok(self) -> bool:
        return self.result != "FAIL"


def _tool(name: str) -> str:
    local = VENV_BIN / name
    return str(local) if local.exists() else name


def production_env() -> dict[str, str]:
    """Settings as a production deployment gives them (see tests/security/test_deploy.py)."""
    alphabet = string.ascii_letters + string.digits + "!@#$%^&*(-_=+)"
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", str(BASE_DIR)),
        "LANG": "C.UTF-8",
        "SECRET_KEY": "".join(secrets.choice(alphabet) for _ in range(60)),
        "KEK": "1:" + base64.b64encode(secrets.token_bytes(32)).decode(),
        "DATABASE_URL": "postgres://caretext_app@127.0.0.1:5432/caretext",
        "ALLOWED_HOSTS": "caretext.example",
        "SITE_URL": "https://caretext.example",
        "BEHIND_TLS_PROXY": "true",
        "SMS_GATEWAY": "twilio",
        "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
        "TWILIO_AUTH_TOKEN": secrets.token_hex(16),
        "TWILIO_MESSAGING_SERVICE_SID": "MG" + "0" * 32,
    }


def _run(args: list[str], *, env: dict[str, str] | None = None, timeout: int = 300) -> tuple[int, str, float]:
    started = time.monotonic()
    try:
        done = subprocess.run(args, cwd=BASE_DIR, env=env, capture_output=True, text=True,  # noqa: S603 - our own argv
                              timeout=timeout, check=False)
        output, code = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired:
        output, code = f"timed out after {timeout}s", -1
    return code, output, time.monotonic() - started


def _last_lines(output: str, n: int = 15) -> str:
    return "\n".join(output.strip().splitlines()[-n:])


# --- static and deploy checks ---------------------------------------------------------------------


def check_deploy() -> tuple[Row, str]:
    code, out, seconds = _run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                              env=production_env())
    ok = code == 0 and "no issues" in out
    found = re.search(r"identified (\d+) issue", out)
    return Row("manage.py check --deploy (production settings)", "pass" if ok else "FAIL",
               f"{found.group(1) if found else 0} issues, {seconds:.1f}s"), out


def bandit_findings(target: str = ".") -> tuple[int, list[dict], str]:
    """(exit code, medium+ findings, raw output) of bandit over ``target`` with the project's config."""
    with tempfile.NamedTemporaryFile(suffix=".json") as report:
        code, out, _ = _run([_tool("bandit"), "-c", BANDIT_CONFIG, "-r", target, "--severity-level", "medium",
                             "--confidence-level", "medium", "-q", "-f", "json", "-o", report.name])
        try:
            results = json.loads(Path(report.name).read_text() or "{}").get("results", [])
        except json.JSONDecodeError:
            results = []
    return code, results, out


def check_bandit() -> tuple[Row, str]:
    code, results, out = bandit_findings()
    lines = [f"{r['filename']}:{r['line_number']}: {r['test_id']} {r['issue_text']}" for r in results]
    ok = code == 0 and not results
    return Row("bandit -c pyproject.toml (medium+ severity and confidence)", "pass" if ok else "FAIL",
               f"{len(results)} findings"), "\n".join(lines) or out


def check_ruff() -> tuple[Row, str]:
    code, out, _ = _run([_tool("ruff"), "check", ".", "--output-format", "concise"])
    problems = sum(1 for line in out.splitlines() if ": " in line and line[:1] not in (" ", "F"))
    return Row("ruff check .", "pass" if code == 0 else "FAIL", f"{0 if code == 0 else problems} problems"), out


def check_migrations() -> tuple[Row, str]:
    code, out, _ = _run([sys.executable, "manage.py", "makemigrations", "--check", "--dry-run"],
                        env={**os.environ, "CARETEXT_TESTING": "1"})
    return Row("makemigrations --check (models match migrations)", "pass" if code == 0 else "FAIL",
               "no missing migrations" if code == 0 else "missing migrations"), out


# --- the pytest suites --------------------------------------------------------------------------------


def suite_rows(junit: Path) -> list[Row]:
    """One row per test that recorded figures or did not pass, and one summary row per suite."""
    rows, totals = [], {}
    root = ET.parse(junit).getroot()  # noqa: S314  # nosec B314  # our pytest's own JUnit file
    for case in root.iter("testcase"):
        suite = "/".join(case.get("classname", "").split(".")[:2])
        outcome = "pass"
        if case.find("failure") is not None or case.find("error") is not None:
            outcome = "FAIL"
        elif case.find("skipped") is not None:
            outcome = "skip"
        passed, failed, skipped, seconds = totals.get(suite, (0, 0, 0, 0.0))
        totals[suite] = (passed + (outcome == "pass"), failed + (outcome == "FAIL"), skipped + (outcome == "skip"),
                         seconds + float(case.get("time") or 0))
        figures = [f"{p.get('name').split('.', 1)[-1]}={p.get('value')}" for p in case.iter("property")]
        if figures or outcome == "FAIL":
            rows.append(Row(f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}", outcome,
                            ", ".join(figures)))
    for suite, (passed, failed, skipped, seconds) in sorted(totals.items()):
        rows.append(Row(f"{suite} (suite)", "FAIL" if failed else "pass",
                        f"{passed} passed, {failed} failed, {skipped} skipped, {seconds:.0f}s"))
    return rows


def run_suites(pytest_args: list[str], suites: list[str]) -> tuple[list[Row], str]:
    suites = [s for s in suites if (BASE_DIR / s.split("::")[0]).exists()]
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "verify.xml"
        args = [sys.executable, "-m", "pytest", *suites, "-q", f"--junitxml={junit}",
                "-o", "junit_family=xunit1", *pytest_args]
        code, out, seconds = _run(args, timeout=3600)
        if not junit.exists():
            return [Row("pytest " + " ".join(suites), "FAIL", f"no report (exit {code})")], out
        rows = suite_rows(junit)
    if code not in (0, 5) and all(r.ok for r in rows):  # e.g. an error outside any test
        rows.append(Row("pytest exit status", "FAIL", f"exit {code}"))
    rows.append(Row("pytest total wall time", "pass" if code in (0, 5) else "FAIL", f"{seconds:.0f}s"))
    return rows, out


# --- the table ------------------------------------------------------------------------------------------


def table(rows: list[Row]) -> str:
    header = Row("scenario", "result", "figure")
    widths = [max(len(getattr(r, f)) for r in [header, *rows]) for f in ("scenario", "result", "figure")]

    def line(r: Row) -> str:
        return "| " + " | ".join(getattr(r, f).ljust(w) for f, w in zip(("scenario", "result", "figure"), widths,
                                                                           strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--static-only", action="store_true", help="skip the pytest suites")
    parser.add_argument("--suites", nargs="+", default=SUITES, metavar="PATH",
                        help=f"test paths to run (default: {' '.join(SUITES)})")
    options, pytest_args = parser.parse_known_args(argv)
    pytest_args = [a for a in pytest_args if a != "--"]
    rows, details = [], []
    for check in (check_deploy, check_bandit, check_ruff, check_migrations):
        row, output = check()
        rows.append(row)
        if not row.ok:
            details.append(f"--- {row.scenario} ---\n{_last_lines(output, 40)}")
    if not options.static_only:
        suite, output = run_suites(pytest_args or ["-n", "2", "--dist", "loadfile"], options.suites)
        rows.extend(suite)
        if not all(r.ok for r in suite):
            details.append(f"--- pytest ---\n{_last_lines(output, 60)}")
    for block in details:
        print(block, file=sys.stderr)
    print(table(rows))
    failed = [r for r in rows if not r.ok]
    print(f"\n{len(rows) - len(failed)} rows passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
