"""A small, bounded HTTP load generator for loopback (threads + http.client).

``run(base, make_request, clients=8, requests=N, max_seconds=T)``: ``clients`` threads take
request numbers 0..N-1 in turn; ``make_request(i)`` returns (method, path, headers, body,
expected_statuses). A new connection per request (gunicorn's sync workers close it anyway).
Stops after N requests or T seconds, whichever comes first.
"""

from __future__ import annotations

import http.client
import itertools
import statistics
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

ALLOWED_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass
class LoadResult:
    done: int
    errors: int
    seconds: float
    latencies: list[float]
    first_error: str = ""

    @property
    def throughput(self) -> float:
        return self.done / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        data = sorted(self.latencies)
        k = min(len(data) - 1, max(0, int(round(q / 100 * len(data) + 0.5)) - 1))
        return data[k]

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies) if self.latencies else float("nan")


def run(base: str, make_request, *, clients: int = 8, requests: int = 200, max_seconds: float = 60.0,
        timeout: float = 30.0) -> LoadResult:
    parts = urlsplit(base)
    if parts.hostname not in ALLOWED_HOSTS:
        raise ValueError("the bench only sends traffic to loopback")
    host, port = parts.hostname, parts.port or 80
    counter = itertools.count()
    lock = threading.Lock()
    latencies: list[float] = []
    errors = [0]
    first_error = [""]
    start = time.perf_counter()
    deadline = start + max_seconds

    def worker():
        while time.perf_counter() < deadline:
            i = next(counter)
            if i >= requests:
                return
            method, path, headers, body, expected = make_request(i)
            t0 = time.perf_counter()
            status, detail = 0, ""
            try:
                conn = http.client.HTTPConnection(host, port, timeout=timeout)
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                status = response.status
                conn.close()
            except OSError as exc:
                detail = f"{type(exc).__name__}: {exc}"
            elapsed = time.perf_counter() - t0
            with lock:
                if status in expected:
                    latencies.append(elapsed)
                else:
                    errors[0] += 1
                    if not first_error[0]:
                        first_error[0] = f"{method} {path.split('?')[0]} -> {status or detail}"

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max_seconds + timeout + 5)
    seconds = time.perf_counter() - start
    return LoadResult(done=len(latencies), errors=errors[0], seconds=seconds, latencies=latencies,
                      first_error=first_error[0])
