"""The PHI canary checker: unique strings planted in every PHI field, and every sink they must
never reach, each scanned on its own so a finding names the sink.

``Canaries`` hands out the planted values (``CNRY`` + 12 hex per field; phone numbers and birth
dates are canaries too). ``Sinks`` records what the test process produced while the product ran
(log records of every logger at DEBUG, requested URLs and redirect targets, API error bodies,
Celery task arguments) and reads the stores afterwards (Redis, the local gateway's SMS, the
audit tables, decoded sessions, a ``pg_dump``). ``Sinks.leaks(canaries)`` returns ``{sink: [finding, ...]}``.

A finding never prints the canary itself, only its label: the test output is a sink too.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import logging
import os
import re
import secrets
import subprocess
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import redis
from django.conf import settings
from django.db import connection
from django.test import Client

from accounts.tenancy import tenant_scope

SINK_LOGS = "log records (every logger at DEBUG)"
SINK_LOG_FILES = "log files"
SINK_REDIS = "Redis (cache and broker)"
SINK_SMS = "SMS bodies of the local gateway"
SINK_URLS = "URLs requested and redirect Locations (access log)"
SINK_API_ERRORS = "API 4xx response bodies"
SINK_AUDITLOG = "django-auditlog LogEntry rows"
SINK_AUDIT_EVENTS = "AuditEvent rows"
SINK_CELERY = "Celery task arguments"
SINK_SESSIONS = "Django sessions (decoded: zlib-compressed in the dump)"
SINK_PG_DUMP = "pg_dump of the database"
ALL_SINKS = (SINK_LOGS, SINK_LOG_FILES, SINK_REDIS, SINK_SMS, SINK_URLS, SINK_API_ERRORS, SINK_AUDITLOG,
             SINK_AUDIT_EVENTS, SINK_CELERY, SINK_SESSIONS, SINK_PG_DUMP)


# --- the planted values ---------------------------------------------------------------------------------


@dataclass
class Canaries:
    """label -> needle. Phones are kept apart: the gateway's ``to`` must hold them."""

    text: dict[str, str] = field(default_factory=dict)
    phones: dict[str, str] = field(default_factory=dict)  # label -> E.164
    dates: dict[str, datetime.date] = field(default_factory=dict)
    _used_numbers: set[int] = field(default_factory=set)

    def new(self, label: str) -> str:
        value = "CNRY" + secrets.token_hex(6)
        self.text[label] = value
        return value

    def phone(self, label: str) -> str:
        """A number in 202-555-0300..0899 (no other test uses these) not used by another label of
        this run: the Redis database is shared with parallel test runs."""
        while True:
            n = 300 + secrets.randbelow(600)
            if n not in self._used_numbers:
                break
        self._used_numbers.add(n)
        self.phones[label] = f"+1202555{n:04d}"
        return self.phones[label]

    def birth_date(self, label: str) -> datetime.date:
        """A date in the 1930s: no timestamp a test run writes looks like it."""
        value = datetime.date(1930 + secrets.randbelow(10), 1 + secrets.randbelow(12), 1 + secrets.randbelow(28))
        self.dates[label] = value
        return value

    def needles(self, *, phones: bool = True, exclude: tuple[str, ...] = ()) -> dict[str, str]:
        """needle -> label, for every form a value takes in text."""
        found = {v: k for k, v in self.text.items() if k not in exclude}
        if phones:
            for label, e164 in self.phones.items():
                if label not in exclude:
                    found[e164[2:]] = f"{label} (digits)"  # 2025550142: in +12025550142 too
        for label, day in self.dates.items():
            if label not in exclude:
                for style, pattern in (("ISO", "%Y-%m-%d"), ("HL7", "%Y%m%d"), ("US", "%m/%d/%Y")):
                    found[day.strftime(pattern)] = f"{label} ({style})"
        return found


# --- matching -------------------------------------------------------------------------------------------

_BASE64_RE = re.compile(rb"[A-Za-z0-9+/_-]{16,}={0,2}")


def _decodings(blob: bytes) -> list[bytes]:
    """The blob and every base64 run inside it decoded (kombu keeps task bodies base64)."""
    out = [blob]
    for match in _BASE64_RE.finditer(blob):
        token = match.group(0)
        for decode in (base64.b64decode, base64.urlsafe_b64decode):
            try:
                out.append(decode(token + b"=" * (-len(token) % 4)))
            except (binascii.Error, ValueError):
                continue
    return out


def find(blob: str | bytes, needles: dict[str, str], *, where: str, decode_base64: bool = False) -> list[str]:
    """Findings (labels, never values) for each needle in ``blob``, case-insensitively."""
    raw = blob.encode("utf-8", "replace") if isinstance(blob, str) else blob
    texts = _decodings(raw) if decode_base64 else [raw]
    lowered = [t.lower() for t in texts]
    return [f"{where}: {label}" for needle, label in needles.items()
            if any(needle.lower().encode() in t for t in lowered)]


# --- what the test process produces ------------------------------------------------------------------------


class RecordingHandler(logging.Handler):
    """Every record of every logger, formatted with its arguments, extras and traceback."""

    _STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # noqa: BLE001 - a record that cannot format is still kept raw
            line = repr(record.__dict__)
        extras = {k: v for k, v in record.__dict__.items() if k not in self._STANDARD}
        self.lines.append(f"{line} {extras!r}" if extras else line)


class LogCapture:
    """Every logger at DEBUG into one handler (non-propagating loggers get it directly)."""

    def __init__(self) -> None:
        self.handler = RecordingHandler()
        self._saved: list[tuple[logging.Logger, int, bool]] = []

    def start(self) -> None:
        loggers = [logging.getLogger(), *(logging.getLogger(name) for name in (
            "django", "django.request", "django.server", "django.security", "celery", "celery.app.trace",
            "celery.task", "kombu", "py.warnings"))]
        loggers += [lg for lg in logging.root.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
        for logger in dict.fromkeys(loggers):
            self._saved.append((logger, logger.level, logger.disabled))
            logger.setLevel(logging.DEBUG)
            logger.disabled = False
            if logger is logging.root or not logger.propagate:
                logger.addHandler(self.handler)

    def stop(self) -> None:
        for logger, level, disabled in self._saved:
            logger.setLevel(level)
            logger.disabled = disabled
            if self.handler in logger.handlers:
                logger.removeHandler(self.handler)
        self._saved.clear()


class RecordingClient(Client):
    """The Django test client, keeping what an access log and an API client would see."""

    def __init__(self, sinks: Sinks, **defaults):
        super().__init__(**defaults)
        self._sinks = sinks

    def request(self, **request):
        response = super().request(**request)
        path, query = request.get("PATH_INFO", ""), request.get("QUERY_STRING", "")
        self._sinks.urls.append(urllib.parse.unquote_plus(f"{path}?{query}" if query else path))
        if response.has_header("Location"):
            self._sinks.urls.append(urllib.parse.unquote_plus(response["Location"]))
        if path.startswith("/api/") and response.status_code >= 400:
            body = b"".join(response.streaming_content) if response.streaming else response.content
            self._sinks.api_errors.append(f"{request.get('REQUEST_METHOD')} {path} {response.status_code} "
                                          f"{body.decode('utf-8', 'replace')}")
        return response


class CeleryRecorder:
    """Patches ``Task.apply_async`` (``delay`` goes through it) to keep each call's arguments."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def install(self, monkeypatch) -> None:
        from celery.app.task import Task

        original = Task.apply_async
        recorder = self

        def apply_async(task, args=None, kwargs=None, *rest, **options):
            recorder.calls.append(f"{task.name} args={args!r} kwargs={kwargs!r} options={options!r}")
            return original(task, args, kwargs, *rest, **options)

        monkeypatch.setattr(Task, "apply_async", apply_async)


# --- the stores --------------------------------------------------------------------------------------------


def redis_entries(client) -> list[tuple[str, bytes]]:
    """(key, key and value) for every key of one Redis database (a ``redis.Redis``), read by type."""
    found = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key).decode()
        if kind == "string":
            parts = [client.get(key) or b""]
        elif kind == "list":
            parts = client.lrange(key, 0, -1)
        elif kind == "hash":
            parts = [b for pair in client.hgetall(key).items() for b in pair]
        elif kind == "set":
            parts = list(client.smembers(key))
        elif kind == "zset":
            parts = client.zrange(key, 0, -1)
        else:
            parts = [client.dump(key) or b""]
        found.append((key.decode(errors="replace"), key + b"\n" + b"\n".join(parts)))
    return found


def redis_dump(url: str) -> list[tuple[str, bytes]]:
    """``redis_entries`` of the Redis database at ``url``."""
    return redis_entries(redis.Redis.from_url(url))


def pg_dump(*, exclude_table_data: tuple[str, ...] = ()) -> str:
    """The whole test database as SQL, dumped by the admin role (it sees past RLS)."""
    params = connection.settings_dict
    env = {**os.environ, "PGPASSWORD": os.environ.get("PG_ADMIN_PASSWORD", "")}
    admin = urllib.parse.urlparse(os.environ.get("PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    command = ["pg_dump", "--no-owner", "--host", params.get("HOST") or "127.0.0.1",
               "--port", str(params.get("PORT") or 5432), "--username", admin.username or "postgres",
               "--dbname", params["NAME"], *(f"--exclude-table-data={t}" for t in exclude_table_data)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _rows_as_json(table: str, tenants) -> str:
    """Every row of an audit table, all columns, as JSON text: once per tenant scope (RLS) and
    once unscoped (rows without a tenant)."""
    sql = f"SELECT row_to_json(t)::text FROM {table} t"  # noqa: S608 - fixed table names
    rows: list[str] = []
    with connection.cursor() as cursor:
        cursor.execute(sql)
        rows += [r[0] for r in cursor.fetchall()]
    for tenant in tenants:
        with tenant_scope(tenant), connection.cursor() as cursor:
            cursor.execute(sql)
            rows += [r[0] for r in cursor.fetchall()]
    return "\n".join(rows)


def local_sms_rows() -> list[dict]:
    """Every SMS the local gateway took, all columns (``to`` kept apart by the caller)."""
    from integrations.models import LocalSms

    return list(LocalSms.objects.order_by("created_at", "id").values())


def session_texts() -> list[str]:
    """Every staff session's data, decoded (flash messages live there)."""
    from django.contrib.sessions.backends.db import SessionStore
    from django.contrib.sessions.models import Session

    return [repr(SessionStore().decode(row.session_data)) for row in Session.objects.all()]


def log_files(since: float, directories: list[Path]) -> list[Path]:
    """Log files written during the run: settings' file handlers, and *.log under ``directories``."""
    paths = {Path(h["filename"]) for h in settings.LOGGING.get("handlers", {}).values() if "filename" in h}
    for base in directories:
        for root, dirs, files in os.walk(base):
            dirs[:] = [d for d in dirs if d not in {".venv", ".git", "node_modules", "__pycache__", "static"}]
            paths.update(Path(root) / f for f in files if f.endswith(".log"))
    return sorted(p for p in paths if p.exists() and p.stat().st_mtime >= since)


# --- all of it ----------------------------------------------------------------------------------------------


@dataclass
class Sinks:
    logs: LogCapture = field(default_factory=LogCapture)
    celery: CeleryRecorder = field(default_factory=CeleryRecorder)
    urls: list[str] = field(default_factory=list)
    api_errors: list[str] = field(default_factory=list)
    extra_log_lines: list[str] = field(default_factory=list)  # e.g. caplog.text
    started: float = field(default_factory=time.time)
    log_dirs: list[Path] = field(default_factory=lambda: [Path(settings.BASE_DIR)])
    scanned: dict[str, int] = field(default_factory=dict)

    def client(self, **defaults) -> RecordingClient:
        return RecordingClient(self, **defaults)

    def leaks(self, canaries: Canaries, *, tenants, known: dict[str, tuple[str, ...]] | None = None
              ) -> dict[str, list[str]]:
        """``{sink: findings}`` for every sink. ``known``: per sink, canary labels not looked for
        there (a leak another test pins with an xfail). ``self.scanned`` counts what each sink held,
        so a test can tell an empty sink from a clean one."""
        known = known or {}

        def needles(sink, *, phones=True):
            return canaries.needles(phones=phones, exclude=known.get(sink, ()))

        out: dict[str, list[str]] = {sink: [] for sink in ALL_SINKS}
        scanned: dict[str, int] = {}
        lines = self.logs.handler.lines + self.extra_log_lines
        scanned[SINK_LOGS] = len(lines)
        out[SINK_LOGS] += find("\n".join(lines), needles(SINK_LOGS), where="a record")
        files = log_files(self.started, self.log_dirs)
        scanned[SINK_LOG_FILES] = len(files)
        for path in files:
            out[SINK_LOG_FILES] += find(path.read_bytes(), needles(SINK_LOG_FILES), where=path.name)
        scanned[SINK_REDIS] = 0
        for url in {settings.REDIS_URL, settings.CELERY_BROKER_URL}:
            for key, blob in redis_dump(url):
                scanned[SINK_REDIS] += 1
                out[SINK_REDIS] += find(blob, needles(SINK_REDIS), where=f"key {key[:60]}", decode_base64=True)
        rows = local_sms_rows()
        scanned[SINK_SMS] = len(rows)
        for row in rows:
            to = row.pop("to")
            out[SINK_SMS] += find(repr(row), needles(SINK_SMS), where=f"SMS {row['kind']}")
            out[SINK_SMS] += find(to, needles(SINK_SMS, phones=False), where="SMS to")  # the number belongs there
        scanned[SINK_URLS] = len(self.urls)
        out[SINK_URLS] += find("\n".join(self.urls), needles(SINK_URLS), where="a URL")
        scanned[SINK_API_ERRORS] = len(self.api_errors)
        out[SINK_API_ERRORS] += find("\n".join(self.api_errors), needles(SINK_API_ERRORS), where="an error body")
        for sink, table in ((SINK_AUDITLOG, "auditlog_logentry"), (SINK_AUDIT_EVENTS, "audit_auditevent")):
            text = _rows_as_json(table, tenants)
            scanned[sink] = text.count("\n") + bool(text)
            out[sink] += find(text, needles(sink), where="a row")
        scanned[SINK_CELERY] = len(self.celery.calls)
        out[SINK_CELERY] += find("\n".join(self.celery.calls), needles(SINK_CELERY), where="a task call")
        sessions = session_texts()
        scanned[SINK_SESSIONS] = len(sessions)
        out[SINK_SESSIONS] += find("\n".join(sessions), needles(SINK_SESSIONS), where="a session")
        # The local gateway's table holds the numbers it was asked to text (as Twilio would):
        # its rows are checked above, column by column.
        dump = pg_dump(exclude_table_data=("integrations_localsms",))
        scanned[SINK_PG_DUMP] = len(dump)
        out[SINK_PG_DUMP] += find(dump, needles(SINK_PG_DUMP), where="the dump", decode_base64=True)
        self.scanned = scanned
        return {sink: sorted(set(found)) for sink, found in out.items()}
