"""What a bench run stands on: its own PostgreSQL database, Redis DB 14, gunicorn and Celery
processes on loopback. Everything here is created at the start of a run and removed at its end.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
PG_HOST, PG_PORT = "127.0.0.1", 5432
# Overridable so that two runs on one machine don't collide (each its own database and Redis DBs).
DATABASE = os.environ.get("CARETEXT_BENCH_DB", "caretext_bench")
OWNER, APP = "caretext_owner", "caretext_app"
ADMIN_URL = os.environ.get("PG_ADMIN_URL", f"postgresql://postgres@{PG_HOST}:{PG_PORT}/postgres")
_REDIS_DB = int(os.environ.get("CARETEXT_BENCH_REDIS_DB", "14"))  # broker and cache; the next lower DB counts
REDIS_URL = f"redis://127.0.0.1:6379/{_REDIS_DB}"
COUNTING_REDIS_URL = f"redis://127.0.0.1:6379/{_REDIS_DB - 1}"  # the counting gateway's store: never the broker
SITE_URL = "https://ct.example.org"  # what Twilio signatures are computed over (as in the tests)
TWILIO_TOKEN = "bench-twilio-auth-token"

APP_URL = f"postgres://{APP}@{PG_HOST}:{PG_PORT}/{DATABASE}"
OWNER_URL = f"postgres://{OWNER}@{PG_HOST}:{PG_PORT}/{DATABASE}"


def bench_env(**extra: str) -> dict[str, str]:
    """The environment of every process of a run (like the Makefile's TEST_ENV)."""
    env = dict(os.environ)
    env.update({
        "CARETEXT_TESTING": "1",
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "DATABASE_URL": APP_URL,
        "DATABASE_OWNER_URL": OWNER_URL,
        "DATABASE_APP_ROLE": APP,
        "REDIS_URL": REDIS_URL,
        "CELERY_BROKER_URL": REDIS_URL,
        "SMS_COUNTING_REDIS_URL": COUNTING_REDIS_URL,
        "SITE_URL": SITE_URL,
        "ALLOWED_HOSTS": "127.0.0.1,localhost,testserver,ct.example.org",
        "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
        "SMS_GATEWAY": "local",
        "CELERY_TASK_ALWAYS_EAGER": "False",
        "PYTHONPATH": str(ROOT),
        "LOG_LEVEL": "WARNING",
        "AUDIT_SEAL_INTERVAL": "1",  # as in production (CARETEXT_TESTING would make it 0)
    })
    env.pop("CARETEXT_TEST_DB", None)
    env.update(extra)
    return env


def apply_env() -> None:
    os.environ.update(bench_env())
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


# --- PostgreSQL -------------------------------------------------------------------------------------------


def _admin():
    import psycopg

    return psycopg.connect(ADMIN_URL, autocommit=True)


def db_drop() -> None:
    with _admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')


def db_create_and_migrate(log) -> None:
    """Roles as scripts/pg_setup.py makes them, a fresh database, migrations as the owner."""
    db_drop()
    subprocess.run([PY, str(ROOT / "scripts" / "pg_setup.py")], check=True, cwd=ROOT, stdout=subprocess.DEVNULL,
                   env={**os.environ, "PG_ADMIN_URL": ADMIN_URL, "PG_DATABASE": DATABASE})
    start = time.monotonic()
    subprocess.run([PY, "manage.py", "migrate", "--noinput", "-v", "0"], check=True, cwd=ROOT,
                   env=bench_env(DATABASE_URL=OWNER_URL))
    log(f"database {DATABASE} migrated in {time.monotonic() - start:.0f} s")


def owner_connection():
    import psycopg

    return psycopg.connect(f"postgresql://{OWNER}@{PG_HOST}:{PG_PORT}/{DATABASE}", autocommit=True)


# --- Redis --------------------------------------------------------------------------------------------------


def redis_flush() -> None:
    import redis

    for url in (REDIS_URL, COUNTING_REDIS_URL):
        redis.Redis.from_url(url, socket_connect_timeout=2).flushdb()


# --- processes ------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A child process in its own process group, ended (TERM, then KILL) by ``stop``."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], logfile: Path):
        self.name = name
        self.log = open(logfile, "ab")
        self.popen = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                      start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 15) -> None:
        if self.alive():
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        self.log.close()


def start_gunicorn(logdir: Path, *, workers: int = 2, threads: int | None = None) -> tuple[Proc, str]:
    """As the production image runs it (Dockerfile: gthread, 2 workers × ``GUNICORN_THREADS``)."""
    threads = threads or int(os.environ.get("GUNICORN_THREADS", "8"))
    port = free_port()
    proc = Proc("gunicorn", [str(Path(PY).parent / "gunicorn"), "config.wsgi:application", "--bind",
                             f"127.0.0.1:{port}", "--workers", str(workers), "--worker-class", "gthread",
                             "--threads", str(threads),
                             "--timeout", "60", "--graceful-timeout", "5", "--log-level", "warning"],
                bench_env(), logdir / "gunicorn.log")
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"gunicorn exited; see {logdir / 'gunicorn.log'}")
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=2) as response:  # nosec B310  # loopback http only
                if response.status == 200:
                    return proc, base
        except OSError:
            time.sleep(0.3)
    proc.stop()
    raise RuntimeError("gunicorn did not answer /healthz within 60 s")


def start_celery(logdir: Path, *, pool: str = "prefork", concurrency: int = 2, queues: str = "",
                 extra_env: dict[str, str] | None = None) -> Proc:
    argv = [str(Path(PY).parent / "celery"), "-A", "config", "worker", "--loglevel", "WARNING", "--pool", pool,
            "--concurrency", str(concurrency), "--without-gossip", "--without-mingle", "--without-heartbeat"]
    if queues:
        argv += ["-Q", queues]
    return Proc("celery", argv, bench_env(**(extra_env or {})), logdir / "celery.log")
