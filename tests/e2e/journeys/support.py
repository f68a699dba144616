"""What the journeys share: an authenticator app, signing in through the login page, and
database reads that stay off the Playwright thread.

While Playwright's event loop runs in the test's thread, Django would hand that thread a
separate, context-local connection that nobody closes (see tests/e2e/test_patient_page_browser.py).
Every database read or write a journey makes after the browser started goes through
``in_thread``: a short-lived worker thread with its own connection, closed before it returns.
The live server sees those rows because ``committed_db`` commits them.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import re
import struct
import time
from concurrent.futures import ThreadPoolExecutor

STEP = 30  # seconds (RFC 6238; TotpDevice.step)


def hotp(key: bytes, counter: int, digits: int = 6) -> str:
    """RFC 4226: what an authenticator app computes for one time step."""
    mac = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    value = (struct.unpack(">I", mac[offset:offset + 4])[0] & 0x7FFFFFFF) % 10**digits
    return f"{value:0{digits}d}"


def key_from_base32(secret: str) -> bytes:
    """The seed an app reads from the "enter this key instead" text (no padding, any case)."""
    secret = re.sub(r"\s+", "", secret).upper()
    return base64.b32decode(secret + "=" * (-len(secret) % 8))


class Authenticator:
    """A phone's authenticator app for one account.

    The server refuses a time step it already accepted (no replay) and accepts one step of
    drift either way, so a second sign-in within the same 30 s uses the next step's code, and
    beyond that waits for the clock, as a person would.
    """

    def __init__(self, key: bytes):
        self.key = key
        self.last_step = -1

    def code(self) -> str:
        while True:
            now_step = int(time.time()) // STEP
            step = max(now_step, self.last_step + 1)
            if step <= now_step + 1:
                self.last_step = step
                return hotp(self.key, step)
            time.sleep(0.5)


def in_thread(fn, *args, **kwargs):
    """Run ``fn`` in a fresh thread with its own database connection, closed afterwards."""
    from django.db import connections

    def run():
        try:
            return fn(*args, **kwargs)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result()


def authenticator_for(user) -> Authenticator:
    """The app holding ``user``'s confirmed TOTP seed (read once, before the browser starts)."""
    from accounts.models import TotpDevice

    return Authenticator(TotpDevice.objects.get(user=user, confirmed=True).bin_key)


def sign_in(page, base: str, email: str, authenticator: Authenticator, password: str) -> None:
    """Email and password on the login page, then the authenticator's code; ends on the dashboard."""
    page.goto(f"{base}/accounts/login/")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url("**/accounts/mfa/**")
    page.get_by_label("Code").fill(authenticator.code())
    page.get_by_role("button", name="Verify").click()
    page.wait_for_url(f"{base}/")


def sms_to(phone: str):
    """The texts the local gateway recorded for ``phone``, oldest first (from a worker thread)."""
    from tests.messaging.conftest import sent_sms

    return in_thread(lambda: [(s.kind, s.body) for s in sent_sms(to=phone)])


def link_token(body: str) -> str:
    match = re.search(r"/s/([A-Za-z0-9_-]{43})", body)
    assert match, f"no secure link in {body!r}"
    return match.group(1)


def fill_birth_date(page, date: datetime.date) -> None:
    page.get_by_label("Month").fill(str(date.month))
    page.get_by_label("Day", exact=True).fill(str(date.day))
    page.get_by_label("Year").fill(str(date.year))
    page.get_by_role("button", name="Continue").click()
