"""Per-principal request limits for the public API.

The bucket is the API key's prefix (never the secret) or the staff user's id, counted in the
Django cache (Redis outside demo mode), so every web worker shares one count. The rate comes
from ``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["api"]`` when set, else ``DEFAULT_RATE``; it is
read per request so ``override_settings`` in tests takes effect. With the cache unreachable the
limit is skipped (fail open), never a 500.
"""

from __future__ import annotations

import logging

from django.conf import settings
from rest_framework.throttling import SimpleRateThrottle

log = logging.getLogger(__name__)

DEFAULT_RATE = "600/min"  # an EHR syncing a day's schedule stays well under this


class ApiKeyRateThrottle(SimpleRateThrottle):
    scope = "api"
    cache_format = "api-throttle:%(scope)s:%(ident)s"

    def __init__(self):  # SimpleRateThrottle reads the rate once per instance: do it from settings
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)

    def allow_request(self, request, view) -> bool:
        """Fail open when the cache is down: a Redis outage must not take the API (and the
        outbox writes behind it) down with it; the limit comes back with the cache."""
        try:
            return super().allow_request(request, view)
        except Exception as exc:  # noqa: BLE001 - any cache backend error
            log.warning("api throttle skipped: cache unavailable (%s)", type(exc).__name__)
            return True

    def get_rate(self) -> str:
        rates = getattr(settings, "REST_FRAMEWORK", {}).get("DEFAULT_THROTTLE_RATES") or {}
        return rates.get(self.scope) or DEFAULT_RATE

    def get_cache_key(self, request, view) -> str | None:
        api_key = getattr(request._request, "api_key", None)
        if api_key is not None:
            ident = f"key:{api_key.prefix}"
        elif getattr(request.user, "pk", None) is not None:
            ident = f"user:{request.user.pk}"
        else:
            return None  # unauthenticated requests never get this far (TenantPermission)
        return self.cache_format % {"scope": self.scope, "ident": ident}
