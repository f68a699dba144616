#!/bin/sh
# Caretext container entrypoint.
#
#   migrate [args...]  run `manage.py migrate --noinput [args...]` as the database OWNER role
#                      (DATABASE_OWNER_URL or DATABASE_OWNER_URL_FILE). The post_migrate hook in
#                      accounts/dbroles.py then grants DML to the application role.
#   anything else      exec'd as is (the image's default is gunicorn; celery for worker/beat).
set -eu

if [ "${1:-}" = "migrate" ]; then
    shift

    # The role that receives the grants is the application role, i.e. the user in the app's
    # own DATABASE_URL. Work it out before DATABASE_URL is pointed at the owner: otherwise
    # settings would default DATABASE_APP_ROLE to the owner and the hook would grant nothing.
    if [ -z "${DATABASE_APP_ROLE:-}" ]; then
        DATABASE_APP_ROLE="$(python -c '
import os
from pathlib import Path

import dj_database_url

path = os.environ.get("DATABASE_URL_FILE")
url = Path(path).read_text().strip() if path else os.environ.get("DATABASE_URL", "")
print((dj_database_url.parse(url).get("USER") or "") if url else "")
')"
    fi
    if [ -z "$DATABASE_APP_ROLE" ]; then
        echo "entrypoint: cannot tell the application role (set DATABASE_APP_ROLE or DATABASE_URL);" \
             "no grants will be made" >&2
    fi
    export DATABASE_APP_ROLE

    # settings.py reads NAME_FILE before NAME, so switch whichever form is in use.
    if [ -n "${DATABASE_OWNER_URL_FILE:-}" ]; then
        DATABASE_URL_FILE="$DATABASE_OWNER_URL_FILE"
        export DATABASE_URL_FILE
    elif [ -n "${DATABASE_OWNER_URL:-}" ]; then
        unset DATABASE_URL_FILE
        DATABASE_URL="$DATABASE_OWNER_URL"
        export DATABASE_URL
    else
        echo "entrypoint: migrate needs DATABASE_OWNER_URL (or DATABASE_OWNER_URL_FILE):" \
             "migrations run as the table owner, not as the application role" >&2
        exit 64
    fi

    echo "entrypoint: migrating as the owner role; granting table privileges to '${DATABASE_APP_ROLE}'"
    exec python manage.py migrate --noinput "$@"
fi

if [ "$#" -eq 0 ]; then
    echo "entrypoint: no command given" >&2
    exit 64
fi

exec "$@"
