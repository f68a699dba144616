"""Render the main pages of a throwaway demo to PNGs for the README: ``make screenshots``.

What it does, start to finish, without touching any other database:

1. a fresh SQLite demo in a temporary folder (``CARETEXT_DEMO=1``: ``migrate``, ``seed_demo``),
   plus one new patient with a secure message, in a time zone where it is midday, so there is
   always a text with a link to open whatever the hour (quiet hours would otherwise hold it);
2. ``runserver`` on a free loopback port (stopped at the end, whatever happens);
3. Debian's Chromium (``/usr/bin/chromium``, or $CHROMIUM; never a downloaded browser) signs in
   as the Sunrise owner (password + the TOTP code computed from the secret seed_demo prints)
   and saves 1280x800 PNGs of the inbox, a conversation, a patient, the day's appointments,
   the access report, analytics and broadcasts, then the patient's secure page on a phone
   (390x844) after the birth-date check.

Usage: ``python scripts/screenshots.py [--out docs/screenshots]``. Exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "demo-clinic-pass-2026"  # seed_demo's DEMO_PASSWORD (it prints it too)
OWNER = "owner@sunrise.example"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# The secure page's patient: a fictional one added to the throwaway demo, with consent and a time
# zone where it is midday now, so the message goes at once at any hour (the seeded patients had a
# reminder today already: the daily cap would hold a second text).
PT_MRN, PT_PHONE, PT_BIRTH = "SUN-2001", "+12025550157", (9, 14, 1988)
PT_MESSAGE = ("Hi Amara, your flu shot is due. We have walk-in slots every weekday morning this month; "
              "reply here if you would like us to hold one for you.")

# Runs in `manage.py shell` (autocommit: the outbox sends the text at once).
SEND_MESSAGE = f"""
import datetime
from django.utils import timezone
from accounts.models import Tenant, User
from accounts.tenancy import tenant_scope
from consent.services import consent_grant
from messaging.services import message_send
from patients.services import patient_create

tenant = Tenant.objects.get(slug="sunrise")
owner = User.objects.get(email="owner@sunrise.example")
hour = timezone.now().astimezone(datetime.UTC).hour
offset = (12 - hour + 12) % 24 - 12
zone = "UTC" if offset == 0 else f"Etc/GMT{{'-' if offset > 0 else '+'}}{{abs(offset)}}"
month, day, year = {PT_BIRTH!r}
with tenant_scope(tenant):
    patient = patient_create(tenant=tenant, actor=owner, mrn={PT_MRN!r}, given_name="Amara", family_name="Nwosu",
                             birth_date=datetime.date(year, month, day), phone={PT_PHONE!r},
                             preferred_language="en", timezone=zone)
    consent_grant(tenant=tenant, actor=owner, patient=patient, method="paper_form",
                  disclosure_version="sms-2026-01", evidence="Signed intake form (demo)")
    message_send(tenant=tenant, actor=User.objects.get(email="clinician@sunrise.example"), patient=patient,
                 body={PT_MESSAGE!r})
"""


class ScreenshotError(Exception):
    pass


def totp(secret_base32: str, at: float | None = None) -> str:
    """RFC 6238 (SHA-1, 30 s, 6 digits): what the demo user's authenticator app shows."""
    secret = secret_base32.strip().upper()
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    counter = int((time.time() if at is None else at) // 30)
    mac = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    return f"{(struct.unpack('>I', mac[offset:offset + 4])[0] & 0x7FFFFFFF) % 10**6:06d}"


def demo_env(db_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CARETEXT_", "DATABASE_", "PYTEST"))}
    env.update(CARETEXT_DEMO="1", DATABASE_URL=f"sqlite:///{db_path}", DJANGO_SETTINGS_MODULE="config.settings")
    return env


def manage(env: dict, *args: str) -> str:
    result = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env,  # noqa: S603 - our own argv
                            capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise ScreenshotError(f"manage.py {' '.join(args[:1])} failed:\n{result.stderr[-3000:]}")
    return result.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(base: str, server: subprocess.Popen, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise ScreenshotError(f"runserver exited with {server.returncode}")
        try:
            urllib.request.urlopen(base + "/healthz", timeout=1).read()  # noqa: S310  # nosec B310  # our loopback http server
            return
        except OSError:
            time.sleep(0.2)
    raise ScreenshotError("runserver did not answer /healthz in time")


def owner_secret(seed_output: str) -> str:
    match = re.search(rf"^\S+\s+\S+\s+{re.escape(OWNER)}\s+([A-Z2-7]+)\s", seed_output, re.M)
    if not match:
        raise ScreenshotError("seed_demo did not print the owner's TOTP secret")
    return match.group(1)


def patient_link(env: dict) -> str:
    texts = json.loads(manage(env, "sms_outbox", "--json", "--limit", "1000"))
    links = [re.search(r"/s/[A-Za-z0-9_-]{43}", t["body"]) for t in texts
             if t["to"] == PT_PHONE and t["kind"] == "link_notice"]
    links = [m.group(0) for m in links if m]
    if not links:
        raise ScreenshotError(f"no link notice to {PT_PHONE} in the local gateway")
    return links[-1]


def shoot(base: str, secret: str, link: str, out: Path) -> list[Path]:
    from playwright.sync_api import expect, sync_playwright

    saved: list[Path] = []

    def save(page, name: str) -> None:
        page.wait_for_load_state("networkidle")
        text = page.locator("body").inner_text()
        if "{#" in text or "{%" in text or "{{" in text:  # a template tag the page shows as text
            print(f"screenshots: warning: {name} shows raw template syntax", file=sys.stderr)
        path = out / f"{name}.png"
        page.screenshot(path=str(path))
        saved.append(path)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"),
                                    args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=DESKTOP)
            page.set_default_timeout(20_000)
            page.goto(base + "/accounts/login/")
            page.get_by_label("Email").fill(OWNER)
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Continue").click()
            page.wait_for_url("**/accounts/mfa/**")
            page.get_by_label("Code").fill(totp(secret))
            page.get_by_role("button", name="Verify").click()
            page.wait_for_url(base + "/")

            page.goto(base + "/inbox/")
            expect(page.locator("a[href*='/inbox/t/']").first).to_be_visible()
            save(page, "inbox")
            # Maya Okafor's conversation: a message, her reply and the patient panel.
            maya = page.locator("tr", has_text="Okafor").filter(has_text="General").locator("a[href*='/inbox/t/']")
            (maya.first if maya.count() else page.locator("a[href*='/inbox/t/']").first).click()
            page.wait_for_url("**/inbox/t/**")
            save(page, "thread")
            page.goto(base + "/patients/")
            page.get_by_role("link", name="Okafor").first.click()
            expect(page.get_by_role("heading", name="Consent to text")).to_be_visible()
            save(page, "patient")
            page.goto(base + "/patients/appointments/")
            expect(page.locator("table tbody tr").first).to_be_visible()
            save(page, "appointments")
            page.goto(base + "/reports/access/")
            expect(page.locator("table tbody tr").first).to_be_visible()
            save(page, "reports")
            page.goto(base + "/analytics/")
            save(page, "analytics")
            page.goto(base + "/broadcasts/")
            save(page, "broadcasts")

            phone = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True).new_page()
            phone.set_default_timeout(20_000)
            phone.goto(base + link)
            month, day, year = PT_BIRTH
            phone.get_by_label("Month").fill(str(month))
            phone.get_by_label("Day", exact=True).fill(str(day))
            phone.get_by_label("Year").fill(str(year))
            phone.get_by_role("button", name="Continue").click()
            expect(phone.get_by_text(PT_MESSAGE)).to_be_visible()
            save(phone, "patient-phone")
        finally:
            browser.close()
    return saved


def run(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="caretext-screenshots-") as tmp:
        env = demo_env(Path(tmp) / "demo.sqlite3")
        manage(env, "migrate", "--noinput")
        secret = owner_secret(manage(env, "seed_demo"))
        manage(env, "shell", "-c", SEND_MESSAGE)
        link = patient_link(env)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        argv = [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"]
        server = subprocess.Popen(argv, cwd=ROOT, env=env,  # noqa: S603 - our own argv
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print(f"screenshots: demo server at {base}", file=sys.stderr, flush=True)
        try:
            wait_until_up(base, server)
            return shoot(base, secret, link, out)
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots",
                        help="folder for the PNGs (default: docs/screenshots)")
    args = parser.parse_args(argv)
    try:
        saved = run(args.out)
    except Exception as exc:  # noqa: BLE001 - any failure: say what, exit non-zero
        print(f"screenshots: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    for path in saved:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
