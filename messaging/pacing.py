"""Per-sender pacing: every worker draws send slots for a sender from one bucket in Redis.

Carriers limit each sender (a Messaging Service or a number) to so many messages a second
(US 10DLC about 12-225 by brand trust, toll-free 3, short codes 100+). The limit is the
sender's, not the worker's, so the bucket lives in Redis and one Lua script updates it
atomically for all workers.

The bucket is GCRA (a token bucket kept as one timestamp, the "theoretical arrival time"):
asking for ``n`` slots returns the time each may be submitted, spaced ``1/rate`` apart, with up to
``burst`` of them at once after an idle spell, and moves the sender's clock on. A slot is a
reservation: the outbox marks the row with its slot and sends it then without asking again, so a
backlog is reserved once, in order, instead of every waiting row asking again and again.
Slots are handed out only up to ``horizon`` seconds ahead; rows beyond it stay due, and the
sweeper offers them again. Redis's own clock is the clock, so workers on hosts whose clocks
differ a little still share one schedule.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

from django.conf import settings

log = logging.getLogger(__name__)

RATE_MIN, RATE_MAX = 0.1, 1000.0
SETTING_KEY = "sms_rate_per_second"  # Tenant.settings key: the clinic's own sender's rate
PLATFORM = "platform"  # the bucket of the platform's shared sender (clinics without their own)

# KEYS[1]: the sender's clock (microseconds since the epoch, Redis time).
# ARGV: interval µs (1e6 / rate), burst (slots allowed at once), n, horizon µs.
# Returns {now, slot_1 … slot_m}, m ≤ n: the slots that fit within the horizon.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = (tonumber(ARGV[2]) - 1) * interval
local n = tonumber(ARGV[3])
local horizon = tonumber(ARGV[4])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local out = {now}
for i = 1, n do
  local slot = tat - tolerance
  if slot < now then slot = now end
  if slot - now > horizon then break end
  out[#out + 1] = slot
  tat = tat + interval
end
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.floor((tat - now) / 1000) + 60000)
return out
"""


@dataclass(frozen=True)
class Slots:
    """What ``reserve`` handed out: Redis's time and one slot per reserved message (seconds since
    the epoch, ascending); fewer slots than asked for when the rest lie beyond the horizon."""

    now: float
    at: list[float]


_BACKLOG = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then return 0 end
return tat - now
"""


def backlog_seconds(key: str) -> float:
    """How far ahead the sender's slots are already reserved (0: idle). 0 if Redis cannot be
    reached: the slots themselves still hold the rate."""
    try:
        client, _ = _redis()
        return int(client.eval(_BACKLOG, 1, key)) / 1_000_000
    except Exception as exc:  # noqa: BLE001 - a figure for planning, never a reason to fail
        log.warning("pacing: backlog of a sender unknown (%s)", type(exc).__name__)
        return 0.0


def clinic_rate(tenant) -> float | None:
    """The clinic's own setting (messages/s), None if unset or unreadable."""
    value = (tenant.settings or {}).get(SETTING_KEY)
    try:
        rate = float(value)
    except (TypeError, ValueError):
        return None
    return rate if RATE_MIN <= rate <= RATE_MAX else None


def sender_rate(tenant) -> float:
    """Messages/s allowed on the clinic's sender; 0: not paced. A clinic sets the rate of its own
    sender only; clinics on the platform's shared sender share the platform's rate."""
    from messaging.outbox import sender_of

    default = float(getattr(settings, "SMS_RATE_PER_SECOND", 0) or 0)
    if default <= 0:
        return 0.0
    if sender_of(tenant) is None:
        return default
    return clinic_rate(tenant) or default


def sender_key(tenant) -> str:
    """The bucket's Redis key. Includes the database name, so two deployments (or test runs)
    sharing one Redis never share a clock."""
    from messaging.outbox import sender_of

    database = settings.DATABASES["default"].get("NAME", "")
    return f"caretext:pace:{database}:{sender_of(tenant) or PLATFORM}"


@functools.cache
def _redis():
    import redis

    # One client per process; redis-py's pool is thread-safe (the send pool's threads share it).
    client = redis.Redis.from_url(settings.SMS_PACE_REDIS_URL, socket_connect_timeout=2, socket_timeout=5)
    return client, client.register_script(_RESERVE)


def reserve(key: str, *, rate: float, count: int, burst: float | None = None,
            horizon: float | None = None) -> Slots:
    """Reserve up to ``count`` consecutive send slots on ``key``'s bucket. Raises
    redis.RedisError when Redis cannot be reached (the caller sends nothing then)."""
    if rate <= 0:
        raise ValueError("reserve needs a positive rate")
    burst = burst if burst is not None else max(1.0, rate * settings.SMS_RATE_BURST_SECONDS)
    horizon = horizon if horizon is not None else settings.SMS_PACE_HORIZON_SECONDS
    _, script = _redis()
    raw = script(keys=[key], args=[round(1_000_000 / rate), max(1, int(burst)), max(0, count),
                                   round(horizon * 1_000_000)])
    values = [int(v) / 1_000_000 for v in raw]
    return Slots(now=values[0], at=values[1:])


def rate_clean(value) -> float:
    """A clinic's sender rate from a form or API: a number of messages/s within bounds."""
    from accounts.errors import ApplicationError

    try:
        rate = float(value)
    except (TypeError, ValueError):
        rate = 0.0
    if isinstance(value, bool) or not RATE_MIN <= rate <= RATE_MAX:
        raise ApplicationError("Choose the sender's rate.", fields={
            SETTING_KEY: [f"Messages a second your carrier allows this sender, from {RATE_MIN:g} to {RATE_MAX:g}."]})
    return rate


def sender_rate_set(*, tenant, actor, rate_per_second) -> float:
    """The clinic's own sender's rate (from its carrier registration), audited; None clears it."""
    from django.db import transaction

    from accounts.services import tenant_setting_put

    rate = None if rate_per_second in (None, "") else rate_clean(rate_per_second)
    with transaction.atomic():
        tenant_setting_put(tenant=tenant, actor=actor, key=SETTING_KEY, value=rate)
    return rate if rate is not None else sender_rate(tenant)
