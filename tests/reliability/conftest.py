"""Reliability fixtures: real commits, the test's own Redis servers, a real Celery worker.

- ``broker``: a redis-server of this test only (the Celery broker and the cache), so stopping
  or flushing it never touches the Redis other test runs share.
- ``gateway``: the counting gateway (integrations.sms.counting) on a second redis-server of this
  test: the worker records every provider submission there, and the test reads them.
- ``real_celery``: this process publishes to ``broker`` for real (tests/conftest.py makes Celery
  eager for every other test).
- ``worker``: ``celery -A config worker`` on the same test database (as the application role,
  under RLS), the same KEK and SECRET_KEY, a 3-second send lease; killed at teardown.

Every scenario ends with ``invariants.assert_invariants``; the sinks it searches for canaries
(this process's log records, the log files of the test's processes, the test's Redis servers)
are registered here by the fixtures that create them (``_sinks``, ``broker``, ``gateway_store``).

Each scenario records what it measured with ``figures(...)``; the figures are printed in a
"outbox reliability figures" section at the end of the run, one line per scenario and result, which
``make verify`` collects.
"""

from __future__ import annotations

import os
from urllib.parse import quote

import pytest

from accounts.permissions import Role
from integrations.sms.counting import CountingGateway
from tests.factories import make_member, make_tenant
from tests.reliability import invariants
from tests.reliability.drive import LEASE_SECONDS
from tests.reliability.processes import Beat, RedisServer, Worker

FIGURE_PREFIX = "reliability."


def _reset_publisher() -> None:
    """Drop this process's broker connections so the next publish uses the current broker URL.

    ``kombu.pools.reset()`` closes every pooled producer AND forgets them: closing alone would
    leave a closed pool registered for the old URL, and the next test that publishes to it
    (eager tasks acquire a producer too) would fail with "Acquire on closed pool"."""
    from kombu import pools

    from config.celery import app

    pools.reset()
    app._pool = None
    amqp = app.__dict__.get("amqp")
    if amqp is not None:
        amqp._producer_pool = None


@pytest.fixture(autouse=True)
def _sinks(tmp_path):
    """Record this process's log records (at the configured level, as in production) and the
    test's log directory for the canary check."""
    import logging

    handler = invariants.RecordingHandler()
    sinks = invariants.reset_sinks(handler)
    sinks.log_dirs.append(tmp_path)
    root = logging.getLogger()
    root.addHandler(handler)
    yield sinks
    root.removeHandler(handler)
    invariants.reset_sinks(None)


@pytest.fixture
def broker(request, tmp_path):
    """The test's broker; ``@pytest.mark.parametrize("broker", [True], indirect=True)``: with an
    append-only file, so a clean restart keeps the queued tasks."""
    server = RedisServer(tmp_path, "broker", persistent=bool(getattr(request, "param", False)))
    server.start()
    invariants.SINKS.redis["broker"] = server
    yield server
    server.stop()


@pytest.fixture
def gateway_store(tmp_path):
    server = RedisServer(tmp_path, "gateway")
    server.start()
    invariants.SINKS.redis["gateway"] = server
    yield server
    server.stop()


@pytest.fixture
def gateway(gateway_store, settings):
    settings.SMS_COUNTING_REDIS_URL = gateway_store.url
    return CountingGateway(url=gateway_store.url)


@pytest.fixture
def real_celery(settings, broker):
    settings.CELERY_TASK_ALWAYS_EAGER = False
    settings.CELERY_BROKER_URL = broker.url
    settings.SMS_SEND_LEASE_SECONDS = LEASE_SECONDS
    # One Redis for the broker and the cache, as in production: "Redis is down" means both.
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                   "LOCATION": broker.url, "KEY_PREFIX": "caretext"}}
    # Celery copied Django's settings on first use in this process: point the app itself too.
    from config.celery import app

    previous = app.conf.task_always_eager, app.conf.broker_url
    app.conf.task_always_eager, app.conf.broker_url = False, broker.url
    _reset_publisher()
    yield
    app.conf.task_always_eager, app.conf.broker_url = previous
    _reset_publisher()


def _database_url() -> str:
    from django.db import connection

    db = connection.settings_dict
    auth = quote(db["USER"], safe="") + (":" + quote(db["PASSWORD"], safe="") if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


WORKER_APPLICATION_NAME = "caretext-reliability-worker"  # how tests find the worker's DB connections


@pytest.fixture
def worker_env(committed_db, real_celery, broker, gateway_store) -> dict[str, str]:
    """The environment of the test's Celery processes (worker and beat)."""
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("PYTEST_", "CARETEXT_TEST_DB"))}
    env.update({
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "CARETEXT_TESTING": "1",
        "DATABASE_URL": _database_url(),  # the test database this test commits to
        "PGAPPNAME": WORKER_APPLICATION_NAME,  # libpq's application_name: pg_stat_activity shows it
        "CELERY_BROKER_URL": broker.url,
        "REDIS_URL": broker.url,
        "CELERY_TASK_ALWAYS_EAGER": "False",
        "SMS_GATEWAY": "counting",
        "SMS_COUNTING_REDIS_URL": gateway_store.url,
        "SMS_SEND_LEASE_SECONDS": str(LEASE_SECONDS),
        "PYTHONUNBUFFERED": "1",
    })
    return env


@pytest.fixture
def worker(worker_env, tmp_path):
    """A worker, not yet started: ``worker.start()``, ``worker.kill()``; always killed at the end
    (before ``committed_db`` empties the tables)."""
    process = Worker(tmp_path, worker_env)
    yield process
    process.kill()


@pytest.fixture
def beats(worker_env, tmp_path):
    """``beats(2)``: that many ``celery beat`` processes, started; all killed at the end."""
    started = []

    def start(count: int) -> list[Beat]:
        for _ in range(count):
            started.append(Beat(tmp_path, worker_env, name=str(len(started) + 1)).start())
        return started[-count:]

    yield start
    for beat in started:
        beat.kill()


@pytest.fixture
def clinics(committed_db):
    """Two clinics with an owner each (committed: the worker sees them)."""
    tenant_a = make_tenant(name="Reliable A", slug="reliable-a")
    tenant_b = make_tenant(name="Reliable B", slug="reliable-b")
    owner_a = make_member(tenant=tenant_a, role=Role.OWNER, email="owner@reliable-a.test")
    owner_b = make_member(tenant=tenant_b, role=Role.OWNER, email="owner@reliable-b.test")
    return [(tenant_a, owner_a), (tenant_b, owner_b)]


@pytest.fixture
def figures(record_property):
    """``figures(lost=0, duplicated=0, recovery_seconds=4.2)``: shown at the end of the run."""

    def record(**values):
        for name, value in values.items():
            record_property(FIGURE_PREFIX + name, round(value, 2) if isinstance(value, float) else value)

    return record


def pytest_terminal_summary(terminalreporter):
    lines = []
    for outcome in ("passed", "failed", "xfailed"):
        for report in terminalreporter.stats.get(outcome, []):
            if getattr(report, "when", "") != "call":
                continue
            shown = [f"{name.removeprefix(FIGURE_PREFIX)}={value}" for name, value in report.user_properties
                     if name.startswith(FIGURE_PREFIX)]
            if shown:
                lines.append(f"{report.nodeid.rsplit('::', 1)[-1]} [{outcome}]: " + ", ".join(shown))
    if lines:
        terminalreporter.section("outbox reliability figures")
        for line in lines:
            terminalreporter.line(line)
