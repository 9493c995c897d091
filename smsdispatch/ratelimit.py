"""Global rate limits per gateway: a token bucket in Redis, shared by every worker.

`RATE_LIMITS` gives a gateway its messages per second; the bucket holds at most one second's worth
(at least one message). A single send takes 1 token, a native batch call as many tokens as it
carries messages. `acquire` *reserves*: it takes the tokens even when the bucket is short (the count
goes negative) and answers how long the caller must wait before calling, so concurrent callers queue
up in order instead of polling. A reservation longer than `max_wait` is not made; the caller gives
its claim back and runs again later (Celery countdown) instead of holding a worker thread.

A 429 from the gateway (`slow_down`) halves the bucket's rate (down to a tenth) until
max(Retry-After, 30 s) passes without another 429, and, when the gateway said Retry-After, empties
the bucket for that long so no worker calls before then.

Time comes from the caller (`now`): workers of one deployment share a clock closely enough, and
tests can drive it. Each operation is one Lua script (lua/ratelimit_*.lua), so the bucket is exact
under concurrency.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from . import scripts
from .keys import Keys

MIN_FACTOR = 0.1
SLOW_FOR = 30.0


@dataclass(frozen=True)
class Permit:
    granted: bool      # tokens reserved: call after `wait` seconds
    wait: float        # granted: sleep this long first; not granted: try again after this long


class RateLimiter:
    def __init__(self, client: redis.Redis, keys: Keys, limits: dict[str, float]) -> None:
        self.redis, self.keys, self.limits = client, keys, dict(limits)
        self._acquire = scripts.register(client, "ratelimit_acquire")
        self._slow_down = scripts.register(client, "ratelimit_slow_down")

    def limited(self, gateway: str) -> bool:
        return gateway in self.limits

    def burst(self, gateway: str) -> int:
        """The most messages one call may carry (the bucket's size)."""
        return max(1, int(self.limits[gateway])) if gateway in self.limits else 10**9

    def acquire(self, gateway: str, n: int = 1, *, now: float, max_wait: float) -> Permit:
        rate = self.limits.get(gateway)
        if rate is None:
            return Permit(True, 0.0)
        granted, wait = self._acquire(keys=[self.keys.rate_bucket(gateway), self.keys.metrics()],
                                      args=[repr(now), rate, self.burst(gateway), n, max_wait, gateway])
        return Permit(bool(granted), float(wait))

    def slow_down(self, gateway: str, *, now: float, retry_after: float | None) -> float | None:
        """The gateway answered 429: slow every worker's bucket down. Returns the new rate factor."""
        rate = self.limits.get(gateway)
        if rate is None:
            return None
        factor = self._slow_down(keys=[self.keys.rate_bucket(gateway)],
                                 args=[repr(now), rate, self.burst(gateway), retry_after or 0, SLOW_FOR, MIN_FACTOR])
        return float(factor)
