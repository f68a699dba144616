"""Create Caretext's PostgreSQL roles and database, idempotently.

- DB owner role (runs migrations, owns the tables; may create the test databases)
- application role: LOGIN, NOSUPERUSER, NOBYPASSRLS, NOCREATEDB, and only DML on the tables

Connects with PG_ADMIN_URL (a superuser; on this machine trust auth as `postgres`).
"""

import os
import sys

import psycopg
from psycopg import sql

ADMIN_URL = os.environ.get("PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
OWNER = os.environ.get("PG_OWNER_ROLE", "caretext_owner")
APP = os.environ.get("PG_APP_ROLE", "caretext_app")
DATABASE = os.environ.get("PG_DATABASE", "caretext")
OWNER_PASSWORD = os.environ.get("PG_OWNER_PASSWORD")
APP_PASSWORD = os.environ.get("PG_APP_PASSWORD")


def ensure_role(cur, name: str, attrs: str, password: str | None) -> None:
    cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [name])
    verb = "ALTER" if cur.fetchone() else "CREATE"
    cur.execute(sql.SQL(f"{verb} ROLE {{}} {attrs}").format(sql.Identifier(name)))
    if password:
        cur.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(name), sql.Literal(password)))


def main() -> int:
    try:
        conn = psycopg.connect(ADMIN_URL, autocommit=True)
    except psycopg.OperationalError as exc:
        print(f"pg_setup: cannot connect as admin ({exc.__class__.__name__})", file=sys.stderr)
        return 1
    with conn, conn.cursor() as cur:
        ensure_role(cur, OWNER, "LOGIN CREATEDB NOSUPERUSER NOBYPASSRLS NOCREATEROLE", OWNER_PASSWORD)
        ensure_role(cur, APP, "LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE", APP_PASSWORD)
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE])
        if cur.fetchone() is None:
            cur.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(DATABASE), sql.Identifier(OWNER)))
    print(f"pg_setup: roles {OWNER} (owner), {APP} (app, no RLS bypass); database {DATABASE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
