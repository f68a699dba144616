# Caretext production image: gunicorn (default), or the same image as the Celery worker/beat
# and the one-off `migrate` (see docker/entrypoint.sh and docker-compose.yml). Two Celery
# workers: `celery -A config worker -P prefork -Q celery` (CPU-bound tasks) and
# `celery -A config worker -P threads -Q sms -c 10` (sending SMS: waiting on the gateway), with
# CELERY_SMS_QUEUE=sms in the environment of every process.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=config.settings

# An unprivileged user; the code stays root-owned and read-only for it.
RUN groupadd --system --gid 10001 caretext \
    && useradd --system --uid 10001 --gid caretext --home-dir /home/caretext --create-home \
       --shell /usr/sbin/nologin caretext \
    && install -d -o caretext -g caretext -m 0750 /var/lib/caretext

WORKDIR /app

# Dependencies first, so code changes do not reinstall them. The lock pins every package and
# names no index URL; every compiled one ships manylinux wheels, so no compiler is needed.
COPY requirements.lock ./
RUN pip install --no-cache-dir -r requirements.lock

# Only what runs in production: no tests, bench, .venv, .git or a local .env end up in the image.
COPY manage.py ./
COPY config/ config/
COPY accounts/ accounts/
COPY audit/ audit/
COPY phi/ phi/
COPY patients/ patients/
COPY consent/ consent/
COPY messaging/ messaging/
COPY integrations/ integrations/
COPY reminders/ reminders/
COPY broadcasts/ broadcasts/
COPY analytics/ analytics/
COPY api/ api/
COPY outbound/ outbound/
COPY templates/ templates/
COPY static/ static/
COPY docker/entrypoint.sh docker/entrypoint.sh

# collectstatic needs settings to import in production mode (hashed, compressed files for
# WhiteNoise). These values exist only for this RUN: they are not baked into the image's ENV,
# and nothing here touches a database.
RUN chmod 0755 docker/entrypoint.sh \
    && env -u CARETEXT_TESTING -u CARETEXT_DEMO -u DEBUG \
       SECRET_KEY="collectstatic-only-build-time-placeholder-not-used-at-runtime-0000" \
       KEK="1:YnVpbGQtdGltZS1vbmx5LW5vdC1hLXJlYWwta2VrISE=" \
       DATABASE_URL="sqlite:////tmp/collectstatic.sqlite3" \
       SITE_URL="https://build.invalid" ALLOWED_HOSTS="build.invalid" \
       SMS_GATEWAY="twilio" TWILIO_ACCOUNT_SID="ACbuildtimeplaceholder" TWILIO_AUTH_TOKEN="build-time-placeholder" \
       python manage.py collectstatic --noinput \
    && rm -f /tmp/collectstatic.sqlite3 \
    && find /app -name '__pycache__' -prune -exec rm -rf {} + \
    && python -m compileall -q /app

USER caretext

EXPOSE 8000

ENTRYPOINT ["/app/docker/entrypoint.sh"]

# Small box (1-2 vCPU): 2 processes x 8 threads (a thread waiting on a low-priority password
# hash must not hold up other requests: accounts/hashers.py). No access log on purpose: request paths can
# carry secure-link tokens. FORWARDED_ALLOW_IPS: the TLS proxy's address(es) or CIDR(s).
CMD ["sh", "-c", "exec gunicorn config.wsgi:application \
--bind 0.0.0.0:8000 \
--worker-class gthread \
--workers \"${GUNICORN_WORKERS:-2}\" \
--threads \"${GUNICORN_THREADS:-8}\" \
--timeout \"${GUNICORN_TIMEOUT:-30}\" \
--graceful-timeout 30 \
--keep-alive 5 \
--max-requests 2000 \
--max-requests-jitter 200 \
--worker-tmp-dir /dev/shm \
--no-control-socket \
--forwarded-allow-ips \"${FORWARDED_ALLOW_IPS:-127.0.0.1,::1}\""]
