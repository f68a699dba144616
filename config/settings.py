"""Caretext settings: one module, every knob from the environment.

The helpers below fail loudly: outside DEBUG and tests, a missing secret stops
the process instead of falling back to an insecure default.
"""

import os
import sys
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def envbool(name: str, default: str = "False") -> bool:
    return os.environ.get(name, default).strip().lower() in {"1", "true", "yes", "on"}


def envint(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be an integer") from exc


def envlist(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def envsecret(name: str) -> str | None:
    """Read NAME, or the contents of the file named by NAME_FILE (Docker/K8s secrets)."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        return Path(path).read_text().strip()
    return os.environ.get(name) or None


TESTING = "pytest" in sys.modules or envbool("CARETEXT_TESTING")
DEBUG = envbool("DEBUG")
DEMO = envbool("CARETEXT_DEMO")


def env_required(name: str, dev_default: str | None = None) -> str:
    """A value production must set; DEBUG, the demo and tests may use dev_default."""
    value = envsecret(name)
    if value:
        return value
    if (DEBUG or DEMO or TESTING) and dev_default is not None:
        return dev_default
    raise ImproperlyConfigured(f"{name} must be set (or {name}_FILE) in production")


SECRET_KEY = env_required("SECRET_KEY", dev_default="insecure-dev-only-secret-key-not-for-production")
if not (DEBUG or DEMO or TESTING) and (len(SECRET_KEY) < 50 or SECRET_KEY.startswith("insecure")):
    raise ImproperlyConfigured("SECRET_KEY must be at least 50 random characters in production")

# Key-encryption key for PHI data keys (see phi/). Comma-separated "version:base64key" pairs,
# each key 32 random bytes; the highest version wraps new keys. Never derived from SECRET_KEY.
KEK = env_required("KEK", dev_default="1:ZGV2LW9ubHkta2VrLWRvLW5vdC11c2UtaW4tcHJvZCE=")
try:
    from phi.kek import KekFormatError, parse_kek

    parse_kek(KEK)
except KekFormatError as exc:
    raise ImproperlyConfigured(f"KEK is malformed: {exc}") from None
PHI_KEK_PROVIDER = os.environ.get("PHI_KEK_PROVIDER", "phi.kek.EnvKekProvider")
# How long an unwrapped data key may stay in a process's memory (also how long a destroyed or
# rotated key can linger in other processes).
PHI_KEY_CACHE_SECONDS = envint("PHI_KEY_CACHE_SECONDS", 60)

# The public URL (secure links and invitations point here) and the host names served.
SITE_URL = env_required("SITE_URL", dev_default="http://127.0.0.1:8000").rstrip("/")
ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", env_required("ALLOWED_HOSTS", dev_default="127.0.0.1,localhost,testserver"))
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", SITE_URL)

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_otp",
    "axes",
    "auditlog",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI / ReDoc served from our static files, no CDN
    "accounts",
    "audit",
    "phi",
    "patients",
    "consent",
    "messaging",
    "integrations",
    "reminders",
    "broadcasts",
    "analytics",
    "api",
    "outbound",
]
if TESTING:
    INSTALLED_APPS.append("tests.phi_testapp")  # a tenant model with every encrypted field type

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "accounts.middleware.RequestIdMiddleware",
    "accounts.middleware.SecurityHeadersMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "accounts.backends.OTPMiddleware",  # django-otp's, reading user and device in one query
    "auditlog.middleware.AuditlogMiddleware",
    "accounts.middleware.SessionPolicyMiddleware",
    "accounts.middleware.TenantMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",
    "phi.middleware.PhiFailClosedMiddleware",
    "config.errors.DatabaseUnavailableMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
AUTH_USER_MODEL = "accounts.User"
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "dashboard"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "accounts.context_processors.tenant",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
# DATABASE_URL is what the application connects as. On PostgreSQL that is a role that is
# neither superuser nor BYPASSRLS; migrations run with DATABASE_OWNER_URL (the table owner).
_default_db = "sqlite:///" + str(BASE_DIR / "db.sqlite3") if (DEBUG or DEMO) else None
DATABASE_URL = env_required("DATABASE_URL", dev_default=_default_db or "postgres://caretext_app@127.0.0.1:5432/caretext")
DATABASE_OWNER_URL = envsecret("DATABASE_OWNER_URL")
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=envint("DB_CONN_MAX_AGE", 60))}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if os.environ.get("CARETEXT_TEST_DB"):  # lets two test runs on one machine use separate databases
    DATABASES["default"]["TEST"] = {"NAME": os.environ["CARETEXT_TEST_DB"]}
# The role that post-migrate grants table privileges to (the application role).
DATABASE_APP_ROLE = os.environ.get("DATABASE_APP_ROLE") or DATABASES["default"].get("USER") or ""
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
# The demo needs no services; everything else shares one Redis cache (rate limits, throttles).
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    if DEMO
    else {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL, "KEY_PREFIX": "caretext"}
}

# --- Passwords, MFA, lockout ----------------------------------------------------------------
PASSWORD_HASHERS = [
    "accounts.hashers.TunedArgon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
# Each process hashes on this many threads at this (Linux, per-thread) nice value, so a burst of
# sign-ins gets the CPU the pages leave (accounts/hashers.py); 0 hashes on the request's thread.
PASSWORD_HASH_THREADS = envint("PASSWORD_HASH_THREADS", 1)
PASSWORD_HASH_NICE = envint("PASSWORD_HASH_NICE", 10)
PASSWORD_HASHES_PER_SECOND = envint("PASSWORD_HASHES_PER_SECOND", 10)
if TESTING:
    # Argon2 at full cost makes a test suite crawl; the hasher choice is tested separately.
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher", *PASSWORD_HASHERS]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = envint("LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=envint("LOGIN_LOCKOUT_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_USERNAME_FORM_FIELD = "email"
AXES_LOCKOUT_CALLABLE = "accounts.views.auth.lockout_response"
AXES_VERBOSE = False
# The client address used for lockout and audit. X-Forwarded-For is read only behind a proxy,
# and then from the right (the entries our own proxies appended), so a client cannot choose
# its address by sending the header itself.
BEHIND_TLS_PROXY = envbool("BEHIND_TLS_PROXY")
AXES_IPWARE_PROXY_COUNT = envint("TRUSTED_PROXY_COUNT", 1 if BEHIND_TLS_PROXY else 0)
AXES_IPWARE_PROXY_ORDER = "right-most"
AXES_IPWARE_META_PRECEDENCE_ORDER = ["HTTP_X_FORWARDED_FOR", "REMOTE_ADDR"] if BEHIND_TLS_PROXY else ["REMOTE_ADDR"]
OTP_TOTP_ISSUER = os.environ.get("OTP_ISSUER", "Caretext")
OTP_TOTP_THROTTLE_FACTOR = 1  # seconds, doubled after each failure (django-otp)
MFA_BACKUP_CODE_COUNT = 10

# --- Sessions -------------------------------------------------------------------------------
SESSION_ENGINE = "accounts.sessions"  # Django's database sessions, fewer round trips
SESSION_IDLE_TIMEOUT = timedelta(minutes=envint("SESSION_IDLE_MINUTES", 15))
SESSION_ABSOLUTE_TIMEOUT = timedelta(hours=envint("SESSION_ABSOLUTE_HOURS", 12))
SESSION_COOKIE_AGE = int(SESSION_ABSOLUTE_TIMEOUT.total_seconds())
# How often open staff pages (inbox, a conversation) ask for news. These background polls
# never count as activity for the idle timeout (accounts/middleware.py, BACKGROUND_HEADER).
STAFF_POLL_SECONDS = envint("STAFF_POLL_SECONDS", 10)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_NAME = "caretext_session"
# Flash messages live in the server-side session, never in a cookie.
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"
CSRF_COOKIE_HTTPONLY = True
CSRF_COOKIE_SAMESITE = "Lax"
SECURE_COOKIES = envbool("SECURE_COOKIES", "False" if (DEBUG or DEMO or TESTING) else "True")
SESSION_COOKIE_SECURE = SECURE_COOKIES
CSRF_COOKIE_SECURE = SECURE_COOKIES

# --- HTTP security --------------------------------------------------------------------------
SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", "False" if (DEBUG or DEMO or TESTING) else "True")
SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", 0 if (DEBUG or DEMO or TESTING) else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
SECURE_HSTS_PRELOAD = envbool("SECURE_HSTS_PRELOAD")
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
if BEHIND_TLS_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    USE_X_FORWARDED_HOST = True
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
# HSTS preload is hard to undo once a domain is submitted: the operator opts in with
# SECURE_HSTS_PRELOAD=true, so Django's reminder about it is silenced.
SILENCED_SYSTEM_CHECKS = ["security.W021"]

# --- I18N, static ---------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
WHITENOISE_USE_FINDERS = DEBUG or DEMO or TESTING
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not (DEBUG or DEMO or TESTING)
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# --- Email ----------------------------------------------------------------------------------
EMAIL_BACKEND = os.environ.get(
    "EMAIL_BACKEND",
    "django.core.mail.backends.console.EmailBackend" if (DEBUG or DEMO) else "django.core.mail.backends.smtp.EmailBackend",
)
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = envint("EMAIL_PORT", 25)
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = envsecret("EMAIL_HOST_PASSWORD") or ""
EMAIL_USE_TLS = envbool("EMAIL_USE_TLS")
EMAIL_USE_SSL = envbool("EMAIL_USE_SSL")
EMAIL_TIMEOUT = envint("EMAIL_TIMEOUT", 10)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "Caretext <no-reply@localhost>")

# --- REST API -------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.api_auth.ApiKeyAuthentication",
        "accounts.api_auth.VerifiedSessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["accounts.api_auth.TenantPermission"],
    "EXCEPTION_HANDLER": "accounts.errors.api_exception_handler",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # One bucket per API key (or staff user) in the shared cache, for every API view.
    "DEFAULT_THROTTLE_CLASSES": ["api.throttling.ApiKeyRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"api": os.environ.get("API_RATE", "600/min")},
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Caretext API",
    "DESCRIPTION": "Secure clinic texting: patients, appointments, messages, consent, FHIR R4 and HL7 v2.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Celery ---------------------------------------------------------------------------------
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", REDIS_URL)
CELERY_TASK_ALWAYS_EAGER = envbool("CELERY_TASK_ALWAYS_EAGER", "True" if DEMO else "False")
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Explicit before Celery 6 flips the default: a worker that loses the broker cancels what it runs
# and the tasks are redelivered; safe because every send holds a lease and reconciles first.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": envint("CELERY_VISIBILITY_TIMEOUT", 3600),
    # A broker that is down must fail a publish fast: the outbox row is already committed and
    # the sweeper hands it out when the broker is back.
    "socket_connect_timeout": 2,
    "socket_timeout": 5,
    # Publishing: one connection try, not kombu's default of retrying for broker_connection_timeout
    # (4 s) plus a 2 s sleep: that made every enqueue during a Redis outage take 6 s.
    "max_retries": 0,
}
CELERY_TASK_PUBLISH_RETRY = False
# Seconds between a process's after-commit sealings of one clinic's audit chain (audit/services.py):
# events committed in between wait for the next sealing of that chain, at the latest the
# `audit-seal` beat task (15 s). 0 (tests, demo: no beat there) seals after every commit.
AUDIT_SEAL_INTERVAL = float(os.environ.get("AUDIT_SEAL_INTERVAL", "0" if (DEMO or TESTING) else "1"))
CELERY_BEAT_SCHEDULE = {
    "outbox-sweep": {"task": "messaging.tasks.outbox_sweep", "schedule": 60.0},
    "reminders-due": {"task": "reminders.tasks.reminders_due", "schedule": 60.0},
    "broadcasts-tick": {"task": "broadcasts.tasks.broadcasts_tick", "schedule": 10.0},
    "outbound-sweep": {"task": "outbound.tasks.outbound_sweep", "schedule": 60.0},
    # The backstop for audit events no committer sealed (a crash between commit and sealing).
    "audit-seal": {"task": "audit.tasks.audit_seal", "schedule": 15.0},
    "audit-seal-full": {"task": "audit.tasks.audit_seal", "schedule": 3600.0, "kwargs": {"full": True}},
}
# How long a worker holds an SMS it is sending; after that the sweeper assumes the worker died
# and the next attempt reconciles with the gateway before sending again.
SMS_SEND_LEASE_SECONDS = envint("SMS_SEND_LEASE_SECONDS", 120)

# --- Sending SMS: the send pool and per-sender pacing (issue #12 items 3-4; messaging/pacing.py) ---
# Sending is waiting on the gateway, so SMS go out on a thread pool sized by Little's law
# (concurrency >= messages/s x gateway latency): docker-compose's `sender` runs
# `celery worker -P threads -c SMS_SEND_CONCURRENCY -Q sms`, and CPU-bound tasks (fan-out, reports)
# stay on the prefork `worker`. CELERY_SMS_QUEUE is the queue outbox sends are routed to; the
# default queue "celery" when one worker takes everything (tests, the bench, a small box).
CELERY_SMS_QUEUE = os.environ.get("CELERY_SMS_QUEUE", "celery")
CELERY_TASK_ROUTES = {"messaging.tasks.outbox_send": {"queue": CELERY_SMS_QUEUE}}
# Worker DB connections (config/celery.py): each task thread keeps its own for up to
# CONN_MAX_AGE, and one that is too old, broken or mid-transaction is closed before and after
# every task, as gunicorn's threads do per request. Celery's fixup would instead open a new
# connection for every task; this number of tasks between its closes turns that off. A send pool
# of N threads holds at most N connections.
CELERY_DB_REUSE_MAX = 1_000_000_000
#
# Messages/s one sender (a Messaging Service or number) may submit, enforced by a token bucket in
# Redis shared by every worker. The default applies to the platform's shared sender and to a
# clinic's own sender until the clinic sets its registered rate (Tenant.settings
# "sms_rate_per_second", messaging.pacing.sender_rate_set). 12/s: a low-trust US 10DLC brand
# (toll-free starts at 3/s, short codes 100+/s). 0 turns pacing off: the demo (no Redis) and the
# test suite, whose tests send back to back through one shared clock per sender (tests of pacing,
# and the bench, set it).
try:
    SMS_RATE_PER_SECOND = float(os.environ.get("SMS_RATE_PER_SECOND", "0" if (DEMO or TESTING) else "12"))
except ValueError as exc:
    raise ImproperlyConfigured("SMS_RATE_PER_SECOND must be a number (messages a second)") from exc
SMS_RATE_BURST_SECONDS = 1.0  # the bucket holds one second of the rate: a sender never bursts past it
# How far ahead a sender's slots are reserved. Longer than the sweeper's minute, so a backlog
# keeps its sender busy between sweeps; rows beyond it stay due and the sweeper offers them again.
SMS_PACE_HORIZON_SECONDS = envint("SMS_PACE_HORIZON_SECONDS", 120)
SMS_PACE_REDIS_URL = os.environ.get("SMS_PACE_REDIS_URL", REDIS_URL)

# --- SMS ------------------------------------------------------------------------------------
SMS_GATEWAY = env_required("SMS_GATEWAY", dev_default="local")
if SMS_GATEWAY not in {"local", "twilio"} and not (SMS_GATEWAY == "counting" and (TESTING or DEMO)):
    raise ImproperlyConfigured("SMS_GATEWAY must be 'local' or 'twilio' ('counting' only in tests and the demo)")
if SMS_GATEWAY == "local" and not (DEBUG or DEMO or TESTING):
    raise ImproperlyConfigured("SMS_GATEWAY=local records SMS instead of sending them: not for production")
# FHIR: the identifier system of the clinics' MRNs (blank: the first identifier typed MR, else the first).
FHIR_MRN_SYSTEM = os.environ.get("FHIR_MRN_SYSTEM", "")
# HL7 v2: the largest message (or batch) accepted over HTTP or MLLP, in bytes.
HL7_MAX_MESSAGE_BYTES = envint("HL7_MAX_MESSAGE_BYTES", 1048576)
# SMS_GATEWAY=counting (tests/reliability) keeps its count of submissions in this Redis (not the broker).
SMS_COUNTING_REDIS_URL = os.environ.get("SMS_COUNTING_REDIS_URL", "")
TWILIO_ACCOUNT_SID = os.environ.get("TWILIO_ACCOUNT_SID", "")
TWILIO_AUTH_TOKEN = envsecret("TWILIO_AUTH_TOKEN") or ""
# The sender: a Messaging Service (preferred: pools numbers, handles opt-out lists) or one number.
TWILIO_MESSAGING_SERVICE_SID = os.environ.get("TWILIO_MESSAGING_SERVICE_SID", "")
TWILIO_FROM_NUMBER = os.environ.get("TWILIO_FROM_NUMBER", "")
if SMS_GATEWAY == "twilio" and not (TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN):
    raise ImproperlyConfigured("SMS_GATEWAY=twilio needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN")
if SMS_GATEWAY == "twilio" and not (TWILIO_MESSAGING_SERVICE_SID or TWILIO_FROM_NUMBER):
    raise ImproperlyConfigured("SMS_GATEWAY=twilio needs TWILIO_MESSAGING_SERVICE_SID or TWILIO_FROM_NUMBER")
# A link notice is one GSM-7 segment: a 20-letter sender label, the fixed words and
# SITE_URL + "/s/" + a 43-character token leave 38 characters for SITE_URL.
if not (DEBUG or DEMO or TESTING) and len(SITE_URL) > 38:
    raise ImproperlyConfigured("SITE_URL must be at most 38 characters so a link notice fits one SMS segment")

# --- Logging: no PHI, request ids on every line ----------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "accounts.requestmeta.RequestIdLogFilter"},
                "redact_link_tokens": {"()": "accounts.requestmeta.RedactLinkTokenFilter"}},
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain",
                    "filters": ["request_id", "redact_link_tokens"]},
    },
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        # Django's request logger would print the full URL (secure-link tokens) on 404s.
        "django.request": {"level": "ERROR"},
        "django.server": {"level": "WARNING" if not DEMO else "INFO"},
        # A wrong Host header is noise from scanners, not an incident; no traceback.
        "django.security.DisallowedHost": {"level": "CRITICAL"},
        # urllib3 logs request lines with their query string at DEBUG (Twilio lookups carry numbers).
        "urllib3": {"level": "WARNING"},
    },
}

# django-auditlog: field-level change history; PHI fields are excluded per model (R13).
AUDITLOG_INCLUDE_ALL_MODELS = False
