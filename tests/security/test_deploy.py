"""Production settings: Django's deploy checks pass, and a missing or weak secret stops the
process (R11). Each case runs ``manage.py`` in a fresh process with an environment built from
scratch, so nothing from the test run (CARETEXT_TESTING, an imported pytest) leaks in."""

from __future__ import annotations

import base64
import json
import os
import secrets
import string
import subprocess
import sys

import pytest
from django.conf import settings

BASE_DIR = str(settings.BASE_DIR)
PRODUCTION_SIGNALS = ("CARETEXT_TESTING", "CARETEXT_DEMO", "DEBUG", "PYTEST_CURRENT_TEST", "PYTEST_XDIST_WORKER",
                      "DJANGO_SETTINGS_MODULE")


def _production_env(**overrides: str | None) -> dict[str, str]:
    alphabet = string.ascii_letters + string.digits + "!@#$%^&*(-_=+)"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "LANG": "C.UTF-8",
        "SECRET_KEY": "".join(secrets.choice(alphabet) for _ in range(60)),
        "KEK": "1:" + base64.b64encode(secrets.token_bytes(32)).decode(),
        "DATABASE_URL": "postgres://caretext_app@127.0.0.1:5432/caretext",
        "ALLOWED_HOSTS": "caretext.example",
        "SITE_URL": "https://caretext.example",
        "BEHIND_TLS_PROXY": "true",
        "SMS_GATEWAY": "twilio",
        "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
        "TWILIO_AUTH_TOKEN": secrets.token_hex(16),
        "TWILIO_MESSAGING_SERVICE_SID": "MG" + "0" * 32,
    }
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    assert not set(PRODUCTION_SIGNALS) & set(env), "the production environment must not look like a test run"
    return env


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=BASE_DIR, env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def test_the_subprocess_really_runs_production_settings():
    """Without this, a passing deploy check could just mean the test flags leaked in."""
    probe = (
        "import json, os, sys; os.environ['DJANGO_SETTINGS_MODULE'] = 'config.settings'; "
        "from django.conf import settings; "
        "print(json.dumps({'pytest': 'pytest' in sys.modules, 'testing': settings.TESTING, "
        "'debug': settings.DEBUG, 'demo': settings.DEMO, 'ssl_redirect': settings.SECURE_SSL_REDIRECT, "
        "'secure_cookies': settings.SESSION_COOKIE_SECURE and settings.CSRF_COOKIE_SECURE, "
        "'hsts': settings.SECURE_HSTS_SECONDS, 'hosts': settings.ALLOWED_HOSTS, "
        "'db_user': settings.DATABASES['default']['USER'], "
        "'hasher': settings.PASSWORD_HASHERS[0].rsplit('.', 1)[-1]}))"
    )
    result = _run("-c", probe, env=_production_env())
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen == {
        "pytest": False, "testing": False, "debug": False, "demo": False, "ssl_redirect": True,
        "secure_cookies": True, "hsts": 31536000, "hosts": ["caretext.example"], "db_user": "caretext_app",
        "hasher": "TunedArgon2PasswordHasher",
    }


def test_plain_check_passes_in_production():
    result = _run("manage.py", "check", env=_production_env())
    assert result.returncode == 0, result.stderr


def test_deploy_check_passes_at_warning_level():
    result = _run("manage.py", "check", "--deploy", "--fail-level", "WARNING", env=_production_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"SECRET_KEY": None}, "SECRET_KEY"),
        ({"SECRET_KEY": ""}, "SECRET_KEY"),
        ({"SECRET_KEY": "too-short-a-secret"}, "SECRET_KEY"),
        ({"SECRET_KEY": "insecure-" + "x" * 60}, "SECRET_KEY"),
        ({"KEK": None}, "KEK"),
        ({"DATABASE_URL": None}, "DATABASE_URL"),
        ({"SITE_URL": None}, "SITE_URL"),
        ({"ALLOWED_HOSTS": None}, "ALLOWED_HOSTS"),
        ({"SMS_GATEWAY": None}, "SMS_GATEWAY"),
        ({"SMS_GATEWAY": "local"}, "SMS_GATEWAY"),
        ({"SMS_GATEWAY": "counting"}, "SMS_GATEWAY"),
        ({"TWILIO_AUTH_TOKEN": None}, "TWILIO_AUTH_TOKEN"),
    ],
    ids=["no-secret-key", "empty-secret-key", "short-secret-key", "insecure-secret-key", "no-kek",
         "no-database-url", "no-site-url", "no-allowed-hosts", "no-sms-gateway", "local-sms-gateway",
         "counting-sms-gateway", "twilio-without-token"],
)
def test_production_refuses_to_start_without_its_secrets(overrides, variable):
    env = _production_env(**overrides)
    result = _run("manage.py", "check", env=env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert variable in result.stderr.strip().splitlines()[-1]
    # The refusal names the variable, never a secret's value.
    for name in ("SECRET_KEY", "KEK"):
        if env.get(name):
            assert env[name] not in result.stderr
