"""Password hashing: Argon2id at OWASP's recommended minimum (m = 19 MiB, t = 2, p = 1).

Django's defaults (100 MiB, t = 2, 8 lanes) are well above that and, on a small server, a burst
of sign-ins takes every CPU and hundreds of MiB at once: `make bench` measured other requests'
p95 at 66× their normal value during 8 concurrent logins. The algorithm name stays "argon2", so
hashes made with other parameters still verify and Django re-hashes them at the next sign-in.
"""

from django.contrib.auth.hashers import Argon2PasswordHasher


class TunedArgon2PasswordHasher(Argon2PasswordHasher):
    time_cost = 2
    memory_cost = 19 * 1024  # KiB
    parallelism = 1
