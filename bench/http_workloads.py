"""Workloads over HTTP against gunicorn (issue #12 items 6, 7, 8, 11)."""

from __future__ import annotations

import os
import statistics
import threading
import uuid
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from bench import env, load, seed
from bench.figures import Pair, figure, interleave, pair_figures

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pids) -> dict[int, float]:
    """user + system CPU of each of these processes so far (Linux /proc); gone ones are left out."""
    used = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        used[pid] = (int(fields[11]) + int(fields[12])) / _TICK
    return used


def _cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU spent between two samples: by processes seen in both, plus all of those that started
    in between. A process that ended in between drops out (a slight undercount)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def _gunicorn_pids(port: int) -> list[int]:
    """The gunicorn processes listening on ``port`` (master and workers), from /proc."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if b"gunicorn" in cmd and f"127.0.0.1:{port}".encode() in cmd:
                pids.append(int(entry.name))
    return pids


def _backend_pids() -> list[int]:
    """The PostgreSQL backends serving the bench database (gunicorn's connections among them)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                       "AND pid <> pg_backend_pid()")
        return [row[0] for row in cursor.fetchall()]


class Http:
    """``seconds``: how long each load runs (throughput = answers / elapsed); ``cap``: at most
    this many requests per load (the bound for loads that consume prepared rows).

    Each load also records the server's CPU per answered request (``cpu_ms``: gunicorn's
    processes plus the database backends, from /proc): throughput on a shared machine swings
    with the load of other processes, CPU per request much less, so the HTTP figures carry
    both (``server_cpu_ms_per_request`` and the reference's)."""

    def __init__(self, base: str, world: seed.World, *, clients: int, seconds: float, cap: int):
        self.base, self.w = base, world
        self.clients, self.seconds, self.cap = clients, seconds, cap
        self.server_pids = _gunicorn_pids(urlsplit(base).port)

    def load(self, make, *, requests: int | None = None, clients: int | None = None) -> load.LoadResult:
        backends = _backend_pids()
        before = _cpu_seconds([*self.server_pids, *backends])
        result = load.run(self.base, make, clients=clients or self.clients, requests=requests or 1_000_000,
                          max_seconds=self.seconds)
        backends = set(backends) | set(_backend_pids())  # a connection opened during the load counts too
        used = _cpu_used(before, _cpu_seconds([*self.server_pids, *backends]))
        result.cpu_ms = used * 1000 / result.done if result.done else float("nan")
        if result.errors:  # a figure with errors says so in its "errors" key
            print(f"  warning: {result.errors} unexpected answers ({result.first_error})", flush=True)
        return result

    # --- requests ---------------------------------------------------------------------------------------
    def ref(self, i):
        return "GET", f"/bench/ref?k={uuid.uuid4().hex}", {}, None, (200,)

    def page(self, stub: bool = False):
        cookies, secret = self.w.page_cookies, self.w.csrf_secret

        def make(i):
            # As a returning browser sends them: the session, and the CSRF cookie an earlier page
            # set (the page's forms then reuse its secret instead of making a new one).
            headers = {"Cookie": f"csrftoken={secret}; ct_patient={cookies[i % len(cookies)]}"}
            if stub:
                headers["X-Bench-Phi-Stub"] = "1"
            return "GET", "/s/", headers, None, (200,)

        return make

    def inbox(self, stub: bool = False):
        def make(i):
            headers = {"Cookie": f"caretext_session={self.w.staff_cookie}"}
            if stub:
                headers["X-Bench-Phi-Stub"] = "1"
            return "GET", "/inbox/", headers, None, (200,)

        return make

    def verify(self, path: str, keys: list[str]):
        secret = self.w.csrf_secret
        body = urlencode({"csrfmiddlewaretoken": secret, "day": seed.BIRTH_DATE.day, "month": seed.BIRTH_DATE.month,
                          "year": seed.BIRTH_DATE.year})

        def make(i):
            headers = {**FORM, "Cookie": f"csrftoken={secret}; ct_patient={keys[i]}"}
            return "POST", path, headers, body, (303,)

        return make


def _with_cpu(figures: list[dict], pair: Pair) -> list[dict]:
    """Add the server's median CPU per request, and the reference's, to the throughput figure."""
    figures[0]["server_cpu_ms_per_request"] = round(statistics.median(r.cpu_ms for r in pair.value), 2)
    figures[0]["reference_server_cpu_ms_per_request"] = round(statistics.median(r.cpu_ms for r in pair.reference), 2)
    return figures


def secure_page(h: Http, rounds: int) -> list[dict]:
    """Item 6: the verified patient's 20-message thread vs one indexed query; 8 clients."""
    page, ref = interleave(rounds, lambda: h.load(h.page()), lambda: h.load(h.ref))
    return _with_cpu(pair_figures("secure_page", Pair(page, ref), "reference view (one indexed query)",
                                  throughput_target=0.35, p95_target=3.0), Pair(page, ref))


def identity_check(h: Http, rounds: int) -> list[dict]:
    """Item 6: the date-of-birth POST (fresh session each) vs the same POST answered by a bench
    view that only compares an HMAC in constant time and marks the session."""
    n = h.cap
    tenant, link_rows = h.w.page_tenant, [link for _, link in h.w.page_threads]

    def product():
        return h.load(h.verify("/s/verify", seed.fresh_sessions(tenant=tenant, links_=link_rows, count=n)),
                      requests=n)

    def reference():
        return h.load(h.verify("/bench/ref-verify", seed.fresh_sessions(tenant=tenant, links_=link_rows, count=n)),
                      requests=n)

    prod, ref = interleave(rounds, product, reference)
    return _with_cpu(pair_figures("identity_check_post", Pair(prod, ref),
                                  "same POST with a plain constant-time HMAC check", throughput_target=0.8,
                                  p95_target=None), Pair(prod, ref))


def staff_inbox(h: Http, rounds: int) -> list[dict]:
    """Item 8: the staff inbox (50 open threads; the page lists 25) vs the reference view."""
    prod, ref = interleave(rounds, lambda: h.load(h.inbox()), lambda: h.load(h.ref))
    return _with_cpu(pair_figures("staff_inbox", Pair(prod, ref), "reference view (one indexed query)",
                                  throughput_target=0.15, p95_target=None), Pair(prod, ref))


def encryption(h: Http, rounds: int) -> list[dict]:
    """Item 7: the same pages with every encrypted field read from a memo instead of decrypted."""
    out = []
    prod, ref = interleave(rounds, lambda: h.load(h.page()), lambda: h.load(h.page(stub=True)))
    out += _with_cpu(pair_figures("secure_page_vs_stubbed_decryption", Pair(prod, ref),
                                  "same page, decryption stubbed", throughput_target=0.95, p95_target=None),
                     Pair(prod, ref))
    prod, ref = interleave(rounds, lambda: h.load(h.inbox()), lambda: h.load(h.inbox(stub=True)))
    out += _with_cpu(pair_figures("staff_inbox_vs_stubbed_decryption", Pair(prod, ref),
                                  "same page, decryption stubbed", throughput_target=0.90, p95_target=None),
                     Pair(prod, ref))
    return out


def _sign(url: str, params: dict) -> str:
    from integrations.sms.twilio import signature_for  # the only module that imports the SDK

    return signature_for(url=url, params=params, auth_token=env.TWILIO_TOKEN)


def status_rows(count: int, tenant) -> list[str]:
    """``count`` outbox rows in status "sent" with provider ids, cloned (as the table owner) from
    one real row of ``tenant``, for delivery callbacks to move to "delivered"."""
    prefix = uuid.uuid4().hex[:8]
    with env.owner_connection() as conn:
        conn.execute("SELECT set_config('app.tenant_id', %s, false)", [str(tenant.pk)])  # RLS is forced
        cols = [r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'messaging_outboundsms' "
            "ORDER BY ordinal_position").fetchall()]
        override = {"id": "gen_random_uuid()", "status": "'sent'", "payload": "NULL",
                    "provider_id": f"'SM{prefix}' || lpad(n::text, 24, '0')", "sent_at": "now()",
                    "status_at": "now()", "lease_until": "NULL", "attempts": "1"}
        select = ", ".join(override.get(c, f't."{c}"') for c in cols)
        names = ", ".join(f'"{c}"' for c in cols)
        # Column names come from the table's own catalogue and fixed expressions; values are bound.
        conn.execute(f"INSERT INTO messaging_outboundsms ({names}) SELECT {select} FROM "  # nosec B608
                     f"(SELECT * FROM messaging_outboundsms WHERE tenant_id = %s LIMIT 1) t, "
                     f"generate_series(1, %s) n", [tenant.pk, count])
        made = conn.execute("SELECT count(*) FROM messaging_outboundsms WHERE provider_id LIKE %s",
                            [f"SM{prefix}%"]).fetchone()[0]
    if made != count:
        raise RuntimeError(f"status_rows: made {made} of {count} outbox rows")
    return [f"SM{prefix}{n:024d}" for n in range(1, count + 1)]


def delivered(prefix: str, tenant) -> int:
    with env.owner_connection() as conn:
        conn.execute("SELECT set_config('app.tenant_id', %s, false)", [str(tenant.pk)])
        return conn.execute("SELECT count(*) FROM messaging_outboundsms WHERE provider_id LIKE %s "
                            "AND status = 'delivered'", [f"{prefix}%"]).fetchone()[0]


def inbound_messages(tenant) -> int:
    with env.owner_connection() as conn:
        conn.execute("SELECT set_config('app.tenant_id', %s, false)", [str(tenant.pk)])
        return conn.execute("SELECT count(*) FROM messaging_inboundsms WHERE outcome = 'message'").fetchone()[0]


def webhooks(h: Http, rounds: int) -> list[dict]:
    """Item 8: Twilio's delivery callback and an inbound SMS, signed as Twilio signs them."""
    tenant = h.w.inbox_tenant
    path = f"/integrations/twilio/status?t={tenant.pk}"
    account = "AC" + "0" * 32

    def status_load():
        sids = status_rows(h.cap, tenant)

        def make(i):
            params = {"MessageSid": sids[i], "SmsSid": sids[i], "AccountSid": account, "MessageStatus": "delivered",
                      "SmsStatus": "delivered", "From": seed.CLINIC_NUMBER_INBOX, "To": "+12025551000",
                      "ApiVersion": "2010-04-01"}
            sig = _sign(env.SITE_URL + path, params)
            return "POST", path, {**FORM, "X-Twilio-Signature": sig}, urlencode(params), (200,)

        result = h.load(make, requests=h.cap)
        result.updated = delivered(sids[0][:10], tenant)
        return result

    phones = [p.phone for p in h.w.inbox_patients]
    inbound_path = "/integrations/twilio/inbound"

    def inbound_load():
        def make(i):
            sid = "SM" + uuid.uuid4().hex
            params = {"MessageSid": sid, "SmsSid": sid, "AccountSid": account, "From": phones[i % len(phones)],
                      "To": seed.CLINIC_NUMBER_INBOX, "Body": "Thanks, see you on Tuesday.", "NumMedia": "0",
                      "NumSegments": "1"}
            sig = _sign(env.SITE_URL + inbound_path, params)
            return "POST", inbound_path, {**FORM, "X-Twilio-Signature": sig}, urlencode(params), (200,)

        return h.load(make, requests=h.cap)

    out = []
    st, ref = interleave(rounds, status_load, lambda: h.load(h.ref))
    out += _with_cpu(pair_figures("twilio_status_webhook", Pair(st, ref), "reference view (one indexed query)",
                                  throughput_target=0.25, p95_target=None), Pair(st, ref))
    out[-2]["rows_delivered"] = sum(r.updated for r in st)  # every callback moved a row: not the "unknown" path
    out.append(_p99_figure("twilio_status_webhook", st))
    inb, ref = interleave(rounds, inbound_load, lambda: h.load(h.ref))
    out += _with_cpu(pair_figures("twilio_inbound_webhook", Pair(inb, ref), "reference view (one indexed query)",
                                  throughput_target=0.12, p95_target=None), Pair(inb, ref))
    out[-2]["inbound_stored_as_messages"] = inbound_messages(tenant)
    out.append(_p99_figure("twilio_inbound_webhook", inb))
    return out


def _p99_figure(name: str, results: list[load.LoadResult]) -> dict:
    value = statistics.median(r.pct(99) for r in results) * 1000
    return {"name": f"{name}_p99", "value": round(value, 1), "unit": "ms", "reference": "Twilio's 15 s timeout",
            "ratio": round(value / 15000, 4), "target": 0.1, "higher_is_better": False}


def login_burst(h: Http, rounds: int, window: float) -> list[dict]:
    """Item 11: p95 of other requests (the secure page, 2 clients) while 8 clients sign in
    (Argon2 as configured), vs the same load without the sign-ins."""
    from tests.factories import PASSWORD

    secret = h.w.csrf_secret
    email = h.w.inbox_owner.email
    body = urlencode({"csrfmiddlewaretoken": secret, "email": email, "password": PASSWORD})

    def login(i):
        return "POST", "/accounts/login/", {**FORM, "Cookie": f"csrftoken={secret}"}, body, (302, 303)

    def other():
        return load.run(h.base, h.page(), clients=2, requests=100_000, max_seconds=window)

    def with_burst():
        burst: dict = {}
        t = threading.Thread(target=lambda: burst.setdefault(
            "r", load.run(h.base, login, clients=8, requests=100_000, max_seconds=window)))
        t.start()
        result = other()
        t.join()
        logins = burst["r"]
        if logins.errors:
            print(f"  warning: {logins.errors} unexpected login answers ({logins.first_error})", flush=True)
        result.logins_per_s = logins.throughput
        return result

    busy, quiet = interleave(rounds, with_burst, other)
    value = statistics.median(r.pct(95) for r in busy) * 1000
    ref = statistics.median(r.pct(95) for r in quiet) * 1000
    logins = statistics.median(r.logins_per_s for r in busy)
    return [figure("login_burst_other_p95", value, "ms", ref, "same requests' p95 without the 8-client login burst",
                   2.0, False, rounds=rounds, logins_per_s=round(logins, 2))]


def sanity(h: Http) -> None:
    """The pages measured are the real ones: the thread with its messages, the inbox with names."""
    import http.client
    from urllib.parse import urlsplit

    for make, needle in ((h.page(), seed.OUT_BODY[:30]), (h.page(stub=True), seed.OUT_BODY[:30]),
                         (h.inbox(), "Patient4"), (h.inbox(stub=True), "Patient4")):
        method, path, headers, body, _ = make(0)
        parts = urlsplit(h.base)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        text = response.read().decode()
        conn.close()
        if response.status != 200 or needle not in text:
            raise RuntimeError(f"sanity check failed for {path} (stub={'X-Bench-Phi-Stub' in headers}): "
                               f"{response.status}, {needle!r} not in page")
