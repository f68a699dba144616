"""Backup and restore drill: prove a `pg_dump` of Caretext restores into a working system.

    .venv/bin/python scripts/restore_drill.py [--patients 50] [--keep] [--json]

1. creates a scratch database `caretext_drill_src_<id>` (owner role), migrates it and seeds a
   clinic: an owner, patients with consent, appointments and secure messages, and so audit events;
2. `pg_dump -Fc` of it (as the PostgreSQL superuser: the tenant tables FORCE row-level security,
   so only a superuser or a BYPASSRLS role dumps every clinic's rows);
3. `pg_restore` into a fresh database `caretext_drill_restore_<id>`;
4. against the restored database, as the application role (under RLS): `manage.py audit_verify`
   passes, a sample of PHI decrypts with the KEK to the values seeded, and the app serves a
   signed-in patient page through Django's test client;
5. the same PHI does NOT decrypt with another KEK: the database alone is not a usable backup;
6. drops both databases (unless --keep) and prints the figures (dump/restore seconds, sizes).

Environment: PG_ADMIN_URL (a superuser; default postgres@127.0.0.1:5432 with trust auth),
PG_OWNER_ROLE / PG_APP_ROLE (scripts/pg_setup.py's roles), KEK and SECRET_KEY (the app's; a
dev KEK is used when unset). Exit status 0 only when every check passed.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent
ADMIN_URL = os.environ.get("PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
OWNER = os.environ.get("PG_OWNER_ROLE", "caretext_owner")
APP = os.environ.get("PG_APP_ROLE", "caretext_app")
DEV_KEK = "1:ZGV2LW9ubHkta2VrLWRvLW5vdC11c2UtaW4tcHJvZCE="  # settings.py's dev default
PREFIX = "caretext_drill_"
_GIVEN = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Radia")


# --- orchestration (no Django in this process) ---------------------------------------------------------


def _pg() -> dict[str, str]:
    parts = urlsplit(ADMIN_URL)
    return {"host": parts.hostname or "127.0.0.1", "port": str(parts.port or 5432), "user": parts.username or "postgres"}


def _db_url(role: str, database: str) -> str:
    pg = _pg()
    return f"postgres://{role}@{pg['host']}:{pg['port']}/{database}"


def _admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql)


def _create_database(name: str) -> None:
    assert name.startswith(PREFIX) and name.replace("_", "").isalnum(), name
    _admin(f'CREATE DATABASE "{name}" OWNER "{OWNER}"')


def _drop_database(name: str) -> None:
    assert name.startswith(PREFIX), name  # never anything but a drill database
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _django_env(database: str, *, role: str, kek: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "CARETEXT_TEST_DB"))}
    env.update({
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "CARETEXT_TESTING": "1",  # dev defaults for what a drill does not use (SMS gateway, hosts)
        "DATABASE_URL": _db_url(role, database),
        "DATABASE_APP_ROLE": APP,  # migrations (as the owner) grant the app role its DML
        "KEK": kek,
        "CELERY_TASK_ALWAYS_EAGER": "True",  # the seed's SMS go through the local gateway at once
        "SMS_GATEWAY": "local",
        "PYTHONUNBUFFERED": "1",
    })
    env.pop("DATABASE_OWNER_URL", None)
    return env


def _run(args: list[str], *, env: dict[str, str] | None = None, timeout: int = 600) -> tuple[str, float]:
    started = time.monotonic()
    done = subprocess.run(args, cwd=BASE_DIR, env=env, capture_output=True, text=True,  # noqa: S603 - fixed argv
                          timeout=timeout, check=False)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise DrillFailed(f"{Path(args[0]).name} {args[1] if len(args) > 1 else ''} exited {done.returncode}:\n"
                          + "\n".join((done.stdout + done.stderr).strip().splitlines()[-25:]))
    return done.stdout, seconds


def _self(step: str, *args: str, env: dict[str, str]) -> dict:
    out, _ = _run([sys.executable, str(Path(__file__).resolve()), step, *args], env=env)
    return json.loads(out.strip().splitlines()[-1])


class DrillFailed(Exception):
    pass


def drill(*, patients: int, keep: bool, kek: str) -> dict:
    run_id = f"{int(time.time())}_{secrets.token_hex(3)}"
    source, restored = f"{PREFIX}src_{run_id}", f"{PREFIX}restore_{run_id}"
    scratch = Path(tempfile.mkdtemp(prefix=PREFIX))
    dump = scratch / f"{source}.dump"
    pg = _pg()
    figures: dict = {}
    try:
        _create_database(source)
        _, figures["migrate_seconds"] = _run([sys.executable, "manage.py", "migrate", "--noinput"],
                                             env=_django_env(source, role=OWNER, kek=kek))
        seeded = _self("_seed", str(patients), env=_django_env(source, role=APP, kek=kek))

        _, figures["dump_seconds"] = _run(["pg_dump", "-Fc", "-h", pg["host"], "-p", pg["port"], "-U", pg["user"],
                                           "-f", str(dump), source])
        figures["dump_bytes"] = dump.stat().st_size
        _create_database(restored)
        _, figures["restore_seconds"] = _run(["pg_restore", "--exit-on-error", "-h", pg["host"], "-p", pg["port"],
                                              "-U", pg["user"], "-d", restored, str(dump)])

        app_env = _django_env(restored, role=APP, kek=kek)
        out, figures["audit_verify_seconds"] = _run([sys.executable, "manage.py", "audit_verify"], env=app_env)
        figures["audit_chains_intact"] = int(out.strip().splitlines()[-1].split()[0])
        checked = _self("_check", json.dumps(seeded), env=app_env)
        wrong_kek = "1:" + base64.b64encode(secrets.token_bytes(32)).decode()
        refused = _self("_check_wrong_kek", json.dumps(seeded), env=_django_env(restored, role=APP, kek=wrong_kek))
        if not refused["refused"]:
            raise DrillFailed("PHI decrypted with a KEK that is not the clinic's")
        figures.update({
            "patients": seeded["counts"]["patients"], "messages": seeded["counts"]["messages"],
            "audit_events": seeded["counts"]["audit_events"], "restored_counts_match": checked["counts"] == seeded["counts"],
            "phi_sample_decrypted": checked["decrypted"], "page_status": checked["page_status"],
            "wrong_kek_refused": refused["refused"],
            "rto_seconds": figures["restore_seconds"] + figures["audit_verify_seconds"],
        })
        figures = {k: round(v, 2) if isinstance(v, float) else v for k, v in figures.items()}
        if not figures["restored_counts_match"]:
            raise DrillFailed(f"row counts differ after restore: {seeded['counts']} != {checked['counts']}")
        return figures
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if not keep:
            _drop_database(restored)
            _drop_database(source)


# --- steps that run inside Django, against one database -------------------------------------------------------


def _django() -> None:
    sys.path.insert(0, str(BASE_DIR))
    import django

    django.setup()


def _counts() -> dict:
    from django.db import connection

    counts = {}
    with connection.cursor() as cursor:
        for name, table in (("patients", "patients_patient"), ("messages", "messaging_message"),
                            ("audit_events", "audit_auditevent"), ("consent_events", "consent_consentevent")):
            # The app role sees rows of the scoped tenant only (RLS): the caller opened the scope.
            cursor.execute(f"SELECT count(*) FROM {table}")  # noqa: S608  # nosec B608  # fixed table names
            counts[name] = cursor.fetchone()[0]
    return counts


def step_seed(patients: int) -> dict:
    """A clinic with an owner, ``patients`` patients with consent and one secure message each."""
    import datetime

    from accounts import services as accounts
    from accounts.models import TotpDevice
    from accounts.permissions import Role
    from accounts.tenancy import tenant_scope
    from consent.documents import baa_document
    from consent.services import baa_sign, consent_grant
    from messaging.services import message_send
    from patients.services import patient_create

    tenant = accounts.tenant_create(name="Drill Clinic", slug="drill-clinic", sms_sender_label="Drill Clinic")
    with tenant_scope(tenant):
        owner = accounts.staff_create(tenant=tenant, actor=None, email="owner@drill.test", role=Role.OWNER,
                                      password=secrets.token_urlsafe(16)).user
        TotpDevice.objects.create(user=owner, name="drill", confirmed=True)
        baa_sign(tenant=tenant, actor=owner, signer_name="Drill Owner", signer_title="Owner", agreed=True,
                 document_sha256=baa_document().sha256, ip="127.0.0.1")
        sample = []
        for n in range(patients):
            given = f"{_GIVEN[n % len(_GIVEN)]}{n}"
            patient = patient_create(tenant=tenant, actor=owner, mrn=f"DRILL-{n:05d}", given_name=given,
                                     family_name=f"Restore{n}", birth_date=datetime.date(1950, 1, 1)
                                     + datetime.timedelta(days=97 * n), phone=f"+1202555{2000 + n:04d}")
            consent_grant(tenant=tenant, actor=owner, patient=patient, method="verbal",
                          disclosure_version="sms-2026-01", evidence="Agreed at the front desk")
            message_send(tenant=tenant, actor=owner, patient=patient, body=f"Drill message {n}: your forms are ready.")
            if n % max(1, patients // 5) == 0:
                sample.append({"id": str(patient.pk), "given_name": given, "phone": patient.phone})
        counts = _counts()
    return {"tenant": tenant.slug, "owner": owner.email, "sample": sample, "counts": counts}


def step_check(seeded: dict) -> dict:
    """On the restored database: counts, PHI decrypts, a signed-in page renders it."""
    from django.test import Client
    from django.utils import timezone

    from accounts.middleware import AUTH_AT, LAST_SEEN, TENANT_ID, USER_SESSION_ID
    from accounts.models import Tenant, TotpDevice, User
    from accounts.services import user_session_start
    from accounts.tenancy import tenant_scope
    from patients.models import Patient

    tenant = Tenant.objects.get(slug=seeded["tenant"])
    with tenant_scope(tenant):
        counts = _counts()
        decrypted = 0
        for item in seeded["sample"]:
            patient = Patient.objects.get(pk=item["id"])
            if (patient.given_name, patient.phone) != (item["given_name"], item["phone"]):
                raise DrillFailed(f"patient {item['id']} did not decrypt to what was seeded")
            decrypted += 1
    # A signed-in page, as the running app serves it (MFA verified, as after a real sign-in).
    owner = User.objects.get(email=seeded["owner"])
    client = Client()
    client.force_login(owner, backend="django.contrib.auth.backends.ModelBackend")
    session = client.session
    now = timezone.now().timestamp()
    session.update({"otp_device_id": TotpDevice.objects.get(user=owner).persistent_id, AUTH_AT: now, LAST_SEEN: now,
                    TENANT_ID: tenant.pk})
    session[USER_SESSION_ID] = str(user_session_start(user=owner, session_key=session.session_key, ip="127.0.0.1",
                                                      user_agent="restore-drill").pk)
    session.save()
    item = seeded["sample"][0]
    page = client.get(f"/patients/{item['id']}/")
    if page.status_code != 200 or item["given_name"].encode() not in page.content:
        raise DrillFailed(f"the patient page did not render from the restored database ({page.status_code})")
    return {"counts": counts, "decrypted": decrypted, "page_status": page.status_code}


def step_check_wrong_kek(seeded: dict) -> dict:
    from accounts.models import Tenant
    from accounts.tenancy import tenant_scope
    from patients.models import Patient

    tenant = Tenant.objects.get(slug=seeded["tenant"])
    with tenant_scope(tenant):
        try:
            patient = Patient.objects.get(pk=seeded["sample"][0]["id"])
            refused = patient.given_name != seeded["sample"][0]["given_name"]
        except Exception:  # noqa: BLE001 - any failure to decrypt is the expected outcome
            refused = True
    return {"refused": refused}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0].startswith("_"):  # an inner step, run by drill() in its own process
        _django()
        step, arg = argv[0], argv[1]
        result = {"_seed": lambda: step_seed(int(arg)), "_check": lambda: step_check(json.loads(arg)),
                  "_check_wrong_kek": lambda: step_check_wrong_kek(json.loads(arg))}[step]()
        print(json.dumps(result))
        return 0
    parser = argparse.ArgumentParser(description="Backup/restore drill: pg_dump, pg_restore, audit_verify, decrypt, serve.")
    parser.add_argument("--patients", type=int, default=50)
    parser.add_argument("--keep", action="store_true", help="keep the drill databases (caretext_drill_*)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON line")
    options = parser.parse_args(argv)
    kek = os.environ.get("KEK") or DEV_KEK
    try:
        figures = drill(patients=options.patients, keep=options.keep, kek=kek)
    except DrillFailed as exc:
        print(f"restore drill FAILED: {exc}", file=sys.stderr)
        return 1
    if options.json:
        print(json.dumps(figures))
    else:
        for name, value in figures.items():
            print(f"{name:24} {value}")
        print("restore drill passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
