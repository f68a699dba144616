#!/usr/bin/env bash
# Caretext roles and database, for the official postgres image (/docker-entrypoint-initdb.d/).
#
# The image runs this once, when the data directory is empty. It is idempotent, so after a
# password change it can be re-run on a live container:
#   docker compose exec -u postgres postgres /docker-entrypoint-initdb.d/01-roles.sh
#
# Same roles as scripts/pg_setup.py (and the same variable names):
#   owner role  LOGIN CREATEDB, owns the database and the tables, runs the migrations
#   app role    LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE; gets only DML, granted by
#               the post_migrate hook in accounts/dbroles.py
#
# Passwords reach psql through \getenv (psql >= 15), never on a command line.
set -euo pipefail

: "${PG_OWNER_PASSWORD:?PG_OWNER_PASSWORD must be set (password of the owner role)}"
: "${PG_APP_PASSWORD:?PG_APP_PASSWORD must be set (password of the application role)}"
export PG_OWNER_ROLE="${PG_OWNER_ROLE:-caretext_owner}"
export PG_APP_ROLE="${PG_APP_ROLE:-caretext_app}"
export PG_DATABASE="${PG_DATABASE:-caretext}"

if [ "$PG_OWNER_ROLE" = "$PG_APP_ROLE" ]; then
    echo "01-roles.sh: PG_OWNER_ROLE and PG_APP_ROLE must differ (row-level security relies on it)" >&2
    exit 1
fi

# During first initialisation the server listens on the Unix socket only, so clear PGHOST and
# PGHOSTADDR (as the image's own docker_process_sql does) and connect through the socket.
PGHOST='' PGHOSTADDR='' psql -v ON_ERROR_STOP=1 --no-psqlrc --no-password \
    --username "${POSTGRES_USER:-postgres}" --dbname postgres <<'SQL'
\set QUIET on
\getenv owner PG_OWNER_ROLE
\getenv owner_password PG_OWNER_PASSWORD
\getenv app PG_APP_ROLE
\getenv app_password PG_APP_PASSWORD
\getenv db PG_DATABASE

SELECT format('CREATE ROLE %I', :'owner')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'owner') \gexec
ALTER ROLE :"owner" WITH LOGIN CREATEDB NOSUPERUSER NOBYPASSRLS NOCREATEROLE PASSWORD :'owner_password';

SELECT format('CREATE ROLE %I', :'app')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'app') \gexec
ALTER ROLE :"app" WITH LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE PASSWORD :'app_password';

SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'owner')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \gexec
ALTER DATABASE :"db" OWNER TO :"owner";

-- Only the two roles may connect (PUBLIC has CONNECT and TEMP on a new database by default).
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"db" TO :"app";
SQL

echo "01-roles.sh: roles ${PG_OWNER_ROLE} (owner), ${PG_APP_ROLE} (app, no RLS bypass); database ${PG_DATABASE}"
