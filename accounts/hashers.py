"""Password hashing: Argon2id at OWASP's recommended minimum (m = 19 MiB, t = 2, p = 1), run at a
lower CPU priority than page requests.

Django's defaults (100 MiB, t = 2, 8 lanes) are well above that and, on a small server, a burst
of sign-ins takes every CPU and hundreds of MiB at once: `make bench` measured other requests'
p95 at 66× their normal value during 8 concurrent logins. The algorithm name stays "argon2", so
hashes made with other parameters still verify and Django re-hashes them at the next sign-in.

At the minimum cost a hash still takes ~20 ms of a core, and a burst of sign-ins (a shift
starting, a credential-stuffing run held back only by the lockout) would take every core from
the pages patients and staff are waiting for. So each process hashes on its own small pool of
threads (``PASSWORD_HASH_THREADS``) whose Linux scheduling priority is lowered
(``PASSWORD_HASH_NICE``, a per-thread nice value): when the machine is idle a sign-in costs what
it always did, when it is busy the hashing gets what the other requests leave. The cost of a
hash (what an attacker pays offline) does not change. ``PASSWORD_HASH_NICE=0`` hashes on the
request's own thread, as Django does.

Lower priority alone left other requests' p95 at 2.2× during 8 concurrent sign-ins: the hashing
took only idle cycles, but every finished hash let another sign-in's session and audit writes
(normal priority) run. Each hashing thread therefore also starts at most
``PASSWORD_HASHES_PER_SECOND`` hashes a second (default 10): a burst queues, and `make bench`
measured 1.6×. The queue costs a sign-in at most a few tenths of a second in such a burst.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.contrib.auth.hashers import Argon2PasswordHasher

_pool: ThreadPoolExecutor | None = None
_pool_pid: int | None = None
_pool_lock = threading.Lock()


def _lower_priority(nice: int) -> None:
    """Add ``nice`` to this thread's nice value (never lowering it). Linux keeps it per thread;
    elsewhere it would apply to the whole process, so other platforms keep their priority."""
    if sys.platform.startswith("linux"):
        try:
            thread = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + nice))
        except OSError:  # a sandbox that refuses it: hash at normal priority
            pass


def _hash_pool(nice: int) -> ThreadPoolExecutor:
    """This process's hashing threads (created on first use, again after a fork)."""
    global _pool, _pool_pid
    pid = os.getpid()
    if _pool is None or _pool_pid != pid:
        with _pool_lock:
            if _pool is None or _pool_pid != pid:
                _pool = ThreadPoolExecutor(max_workers=max(1, settings.PASSWORD_HASH_THREADS),
                                           thread_name_prefix="password-hash", initializer=_lower_priority,
                                           initargs=(nice,))
                _pool_pid = pid
    return _pool


_thread_state = threading.local()


def _paced(func, *args):
    """Run one hash on a hashing thread, starting no sooner than 1 / ``PASSWORD_HASHES_PER_SECOND``
    after that thread's previous hash started: each thread starts at most that many hashes a
    second, so a burst of sign-ins cannot turn every spare cycle into sign-ins (each one also costs
    the page threads a few milliseconds of session and audit writes, and Argon2's 19 MiB evicts
    their caches). The wait falls on the next sign-in in the queue, never on this one's answer."""
    rate = settings.PASSWORD_HASHES_PER_SECOND
    if rate > 0:
        wait = getattr(_thread_state, "next_start", 0.0) - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        _thread_state.next_start = time.monotonic() + 1 / rate
    return func(*args)


def _deprioritised(func, *args):
    nice = settings.PASSWORD_HASH_NICE
    if nice <= 0:
        return func(*args)
    # argon2-cffi releases the GIL while it hashes: the waiting request thread costs nothing.
    future = _hash_pool(nice).submit(_paced, func, *args)
    return future.result()


class TunedArgon2PasswordHasher(Argon2PasswordHasher):
    time_cost = 2
    memory_cost = 19 * 1024  # KiB
    parallelism = 1

    def encode(self, password, salt):
        return _deprioritised(super().encode, password, salt)

    def verify(self, password, encoded):
        return _deprioritised(super().verify, password, encoded)
