"""`make screenshots` (scripts/screenshots.py): a throwaway demo, a real server and Chromium
render the main pages to PNGs of the promised sizes."""

import re
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

DESKTOP = ("inbox", "thread", "patient", "appointments", "reports", "analytics", "broadcasts")


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path.name} is not a PNG"
    return struct.unpack(">II", data[16:24])


def test_script_renders_every_page_to_a_png(tmp_path):
    from tests.e2e.test_demo import _env  # the demo's environment: no test settings leak in

    out = tmp_path / "shots"
    env = {k: v for k, v in _env(tmp_path / "unused.sqlite3").items() if k != "DATABASE_URL"}
    result = subprocess.run([sys.executable, "scripts/screenshots.py", "--out", str(out)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    written = sorted(p.name for p in out.glob("*.png"))
    assert written == sorted([f"{name}.png" for name in DESKTOP] + ["patient-phone.png"])
    for name in DESKTOP:
        assert _png_size(out / f"{name}.png") == (1280, 800), name
        assert (out / f"{name}.png").stat().st_size > 20_000, f"{name}.png looks blank"
    assert _png_size(out / "patient-phone.png") == (390, 844)
    assert (out / "patient-phone.png").stat().st_size > 10_000


def test_script_fails_loudly_and_leaves_no_server(tmp_path):
    """A browser that cannot start: exit 1 with the reason, and the server it started is gone."""
    from tests.e2e.test_demo import _env

    env = {k: v for k, v in _env(tmp_path / "unused.sqlite3").items() if k != "DATABASE_URL"}
    env["CHROMIUM"] = str(tmp_path / "no-such-browser")
    result = subprocess.run([sys.executable, "scripts/screenshots.py", "--out", str(tmp_path / "shots")], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 1
    assert "screenshots: failed" in result.stderr
    port = int(re.search(r"demo server at http://127\.0\.0\.1:(\d+)", result.stderr).group(1))
    with socket.socket() as probe:  # stopped: nothing listens on its port any more
        assert probe.connect_ex(("127.0.0.1", port)) != 0
