"""Settings for the processes ``bench/run.py`` starts: the product's settings, plus the
bench-only reference views (``bench/urls.py``) and the per-request decryption stub
(``bench/middleware.py``). Never used outside ``bench/``.
"""

import os

from config.settings import *  # noqa: F403
from config.settings import MIDDLEWARE

ROOT_URLCONF = "bench.urls"
# The stub toggle runs first, so everything after it (views, templates) sees it.
MIDDLEWARE = ["bench.middleware.PhiStubToggleMiddleware", *MIDDLEWARE]

# CARETEXT_TESTING=1 (needed for SMS_GATEWAY=local/counting) puts the MD5 hasher first; the
# login workload measures the production hashers, so put them back in production order.
PASSWORD_HASHERS = [
    "accounts.hashers.TunedArgon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "django.contrib.auth.hashers.MD5PasswordHasher",
]
# The login workload signs in many times from one address.
AXES_ENABLED = os.environ.get("BENCH_AXES", "0") == "1"
LOGGING["root"]["level"] = "WARNING"  # noqa: F405
