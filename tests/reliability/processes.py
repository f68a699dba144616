"""The processes a reliability test runs: its own redis-server instances and a real Celery worker.

Every process here is started by the test, killed by its own pid (or its own process group,
for the worker and its pool children) and never by name: other test runs on this machine share
the Redis at 6379 and may run their own workers.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis

BASE_DIR = Path(__file__).resolve().parents[2]
READY_SECONDS = 60


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A throwaway redis-server on a free loopback port: no persistence, so a restart is empty
    (as a Redis without AOF loses its queues); ``persistent=True``: an append-only file in the
    test's directory, so a clean restart keeps what was queued."""

    def __init__(self, log_dir: Path, name: str, *, persistent: bool = False) -> None:
        self.port = free_port()
        self.log_path = log_dir / f"redis-{name}.log"
        self.data_dir = log_dir / f"redis-{name}-data"
        self.persistent = persistent
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.data_dir.mkdir(exist_ok=True)
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--appendonly", "no"]
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", *persistence,
             "--dir", str(self.data_dir), "--daemonize", "no"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if redis.Redis(port=self.port, socket_connect_timeout=0.5).ping():
                    return
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not start: {self.log_path.read_text()[-2000:]}")

    def stop(self, *, graceful: bool = False) -> None:
        """SIGKILL (a crash), or SIGTERM (``graceful``: a clean shutdown that flushes the AOF)."""
        if self.proc is not None and self.proc.poll() is None:
            if graceful:
                self.proc.terminate()
            else:
                self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def flushall(self) -> None:
        redis.Redis(port=self.port).flushall()

    def queued_messages(self) -> int:
        """Task messages waiting in the default Celery queue."""
        return int(redis.Redis(port=self.port).llen("celery"))

    def queued_sms_ids(self) -> list[str]:
        """The outbox ids the ``outbox_send`` task messages waiting in the default queue carry (one
        entry per message and id: an id queued twice is listed twice). Celery's message protocol 2,
        JSON: the body is ``[args, kwargs, embed]``, base64-encoded."""
        ids = []
        for raw in redis.Redis(port=self.port).lrange("celery", 0, -1):
            message = json.loads(raw)
            if message["headers"].get("task") != "messaging.tasks.outbox_send":
                continue
            body = message["body"]
            if message["properties"].get("body_encoding") == "base64":
                body = base64.b64decode(body)
            _args, kwargs, _embed = json.loads(body)
            ids += kwargs["sms_ids"]
        return ids


class Worker:
    """``celery -A config worker`` (prefork, 4 processes; docker-compose's CPU worker — the thread-pool sender is tests/reliability/test_send_pool_threads.py) in its own
    process group, pointed at the test database, the test's broker and the counting gateway."""

    def __init__(self, log_dir: Path, env: dict[str, str], *, concurrency: int = 4) -> None:
        self.env = env
        self.concurrency = concurrency
        self.log_dir = log_dir
        self.proc: subprocess.Popen | None = None
        self.log_path: Path | None = None
        self.started = 0

    def start(self) -> Worker:
        self.started += 1
        self.log_path = self.log_dir / f"worker-{self.started}.log"
        log = self.log_path.open("wb")
        name = f"reliab-{secrets.token_hex(4)}@%h"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", "-l", "info", "-P", "prefork",
             "-c", str(self.concurrency), "-n", name, "-Q", "celery", "--without-gossip", "--without-mingle",
             "--without-heartbeat"],
            cwd=BASE_DIR, env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)  # its own process group: a SIGKILL reaches the pool children too
        log.close()
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the worker exited ({self.proc.returncode}):\n{self.log_tail()}")
            if b" ready." in self.log_path.read_bytes():
                return
            time.sleep(0.1)
        raise RuntimeError(f"the worker was not ready in {READY_SECONDS} s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]

    def pool_pids(self) -> list[int]:
        """The prefork children (the processes that run the tasks)."""
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], capture_output=True, text=True,
                             check=False).stdout
        return [int(pid) for pid in out.split()]

    def warm_shutdown(self, *, timeout: float = 60) -> int:
        """SIGTERM to the main process only, as ``docker stop`` or systemd do: Celery stops taking
        tasks, lets the running ones finish, gives the unacknowledged ones back to the broker and
        exits. Returns its exit code (AssertionError if it does not exit in ``timeout``)."""
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the worker did not finish its warm shutdown in {timeout:.0f} s:\n"
                                 f"{self.log_tail()}") from None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self._group_alive():
            time.sleep(0.05)
        self.proc = None
        return code

    def kill(self) -> None:
        """SIGKILL the worker and its pool children at once: no warm shutdown, no acks."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=30)
        # Pool children die with the group; wait until none is left holding a database connection.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self._group_alive():
            time.sleep(0.05)
        self.proc = None

    def _group_alive(self) -> bool:
        try:
            os.killpg(self.proc.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


class Beat:
    """``celery -A tests.reliability.beat_app beat``: the production beat with a fast schedule
    (tests/reliability/beat_app.py), in its own process group, with its own schedule file."""

    def __init__(self, log_dir: Path, env: dict[str, str], name: str) -> None:
        self.env, self.log_dir, self.name = env, log_dir, name
        self.log_path = log_dir / f"beat-{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Beat:
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tests.reliability.beat_app", "beat", "-l", "info",
             "-s", str(self.log_dir / f"beat-{self.name}-schedule"), "--pidfile="],
            cwd=BASE_DIR, env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        log.close()
        return self

    def sent(self, task: str) -> int:
        """How many times this beat has published ``task``."""
        if not self.log_path.exists():
            return 0
        return self.log_path.read_text(errors="replace").count(f"Sending due task {task}")

    def kill(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=30)
        self.proc = None


# --- PostgreSQL: the superuser's view of the test database ---------------------------------------

SUPERUSER_DSN = "host=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout=5"


def _superuser(port) -> object:
    import psycopg

    return psycopg.connect(SUPERUSER_DSN.format(port=port or 5432), autocommit=True)


def backends(dbname: str, *, application_name: str, port=None) -> list[int]:
    """Server pids of the connections to ``dbname`` with that application_name."""
    with _superuser(port) as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
                            [dbname, application_name]).fetchall()
    return [row[0] for row in rows]


def terminate_backends(dbname: str, *, application_name: str | None = None, pids: list[int] | None = None,
                       port=None) -> int:
    """``pg_terminate_backend`` on the connections to ``dbname`` named ``application_name`` (or
    on ``pids``): what a failover, a DBA or an idle-session killer does. Returns how many."""
    with _superuser(port) as conn:
        if pids is None:
            rows = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                "WHERE datname = %s AND application_name = %s AND pid <> pg_backend_pid()",
                                [dbname, application_name]).fetchall()
        else:
            rows = conn.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid",
                                [pids]).fetchall()
    return sum(1 for (done,) in rows if done)
