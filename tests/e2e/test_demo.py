"""The demo path a new user takes: SQLite, seed_demo, runserver, sign in with MFA.

Runs the real commands in subprocesses (what `make demo` runs), against a real server on
loopback, with a cookie-keeping HTTP client.
"""

import http.cookiejar
import os
import re
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _env(db_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CARETEXT_", "DATABASE_", "PYTEST"))}
    env.update(CARETEXT_DEMO="1", DATABASE_URL=f"sqlite:///{db_path}", DJANGO_SETTINGS_MODULE="config.settings")
    return env


def _manage(env, *args) -> str:
    result = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Browser:
    def __init__(self, base: str):
        self.base = base
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def get(self, path: str) -> tuple[str, str]:
        with self.opener.open(self.base + path, timeout=10) as response:
            return response.geturl(), response.read().decode()

    def post_form(self, path: str, page: str, fields: dict) -> tuple[str, str]:
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        data = urllib.parse.urlencode({"csrfmiddlewaretoken": token, **fields}).encode()
        request = urllib.request.Request(self.base + path, data=data, headers={"Referer": self.base + path})
        with self.opener.open(request, timeout=10) as response:
            return response.geturl(), response.read().decode()


@pytest.fixture
def demo_server(tmp_path):
    env = _env(tmp_path / "demo.sqlite3")
    _manage(env, "migrate", "--noinput")
    seeded = _manage(env, "seed_demo")
    port = _free_port()
    server = subprocess.Popen([sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(base + "/healthz", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        yield base, env, seeded
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_demo_user_signs_in_with_mfa_and_sees_their_clinic(demo_server):
    base, env, seeded = demo_server
    assert "owner@sunrise.example" in seeded and "demo-clinic-pass-2026" in seeded
    browser = Browser(base)
    url, page = browser.get("/")
    assert url.endswith("/accounts/login/?next=%2F") and "Sign in" in page
    url, page = browser.post_form("/accounts/login/", page, {"email": "owner@sunrise.example",
                                                             "password": "demo-clinic-pass-2026", "next": "/"})
    assert "/accounts/mfa/" in url and "Enter your code" in page
    code = _manage(env, "demo_totp", "owner@sunrise.example").strip()
    url, page = browser.post_form("/accounts/mfa/", page, {"code": code, "next": "/"})
    assert url == base + "/"
    assert "<h1>Sunrise Family Clinic</h1>" in page and "Lakeside" not in page


def test_demo_backup_code_works_once(demo_server):
    base, env, seeded = demo_server
    backup = re.search(r"clinician@lakeside\.example\s+\S+\s+(\S+)", seeded).group(1)
    browser = Browser(base)
    _, page = browser.get("/accounts/login/")
    _, page = browser.post_form("/accounts/login/", page, {"email": "clinician@lakeside.example",
                                                           "password": "demo-clinic-pass-2026"})
    url, page = browser.post_form("/accounts/mfa/", page, {"code": backup})
    assert "<h1>Lakeside Pediatrics</h1>" in page


CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def browser_page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"),
                                    args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        yield page
        browser.close()


def test_in_chromium_owner_signs_in_with_mfa_and_reaches_reports(demo_server, browser_page, tmp_path):
    base, env, _ = demo_server
    page = browser_page
    errors = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.goto(base + "/")
    assert page.url.startswith(base + "/accounts/login/")
    page.get_by_label("Email").fill("owner@sunrise.example")
    page.get_by_label("Password").fill("demo-clinic-pass-2026")
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url("**/accounts/mfa/**")
    page.get_by_label("Code").fill(_manage(env, "demo_totp", "owner@sunrise.example").strip())
    page.get_by_role("button", name="Verify").click()
    page.wait_for_url(base + "/")
    assert page.get_by_role("heading", name="Sunrise Family Clinic").is_visible()
    page.screenshot(path=str(tmp_path / "dashboard.png"))
    nav = page.get_by_role("navigation", name="Main")
    nav.get_by_role("link", name="Patients").click()
    page.get_by_role("link", name="Okafor", exact=False).first.click()
    assert page.get_by_role("heading", name="Consent to text").is_visible()
    page.screenshot(path=str(tmp_path / "patient.png"), full_page=True)
    nav.get_by_role("link", name="Reports").click()
    page.get_by_role("link", name="Failed logins and lockouts").first.click()
    page.wait_for_selector("canvas")
    assert errors == []  # the CSP allows everything the pages need (Chart.js included)
    page.screenshot(path=str(tmp_path / "report.png"))
    keep = os.environ.get("CARETEXT_SCREENSHOTS")  # a folder to keep the pictures in, for a look
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        for name in ("dashboard.png", "patient.png", "report.png"):
            Path(keep, name).write_bytes((tmp_path / name).read_bytes())
