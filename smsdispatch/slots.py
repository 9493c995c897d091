"""A cap on the calls in flight to each gateway, per process (GATEWAY_CONCURRENCY).

A worker runs many threads (`--pool threads --concurrency 20`). When one gateway turns slow, every
thread that picks up a message for it waits on it (up to HTTP_TOTAL_TIMEOUT per call), and messages
for healthy gateways wait for a free thread. With a cap, a thread that finds its gateway's slots all
taken does not call it: the caller gives the message back (retry later) and the thread moves on.

    slots = GatewaySlots.from_settings(settings)
    with slots.slot("eskiz") as got:
        if not got:
            ...                       # no slot: nothing was called; try again later
        ...                           # the call; the slot is released on the way out

or `try_acquire(gateway)` / `release(gateway)` in pairs. Non-blocking and thread-safe. The counts are
per process (each worker process has its own), not shared through Redis: the cap protects this
process's threads, not the gateway (RATE_LIMITS does that).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from .config import Settings


class GatewaySlots:
    def __init__(self, limits: Mapping[str, int], default: int | None = None) -> None:
        """`limits`: the cap per gateway name (each at least 1); `default`: the cap of gateways not
        listed (None or 0: no cap)."""
        for gateway, limit in limits.items():
            if limit < 1:
                raise ValueError(f"{gateway}: a concurrency cap must be at least 1, got {limit}")
        if default is not None and default < 0:
            raise ValueError(f"the default concurrency cap must be 0 (none) or more, got {default}")
        self._limits = dict(limits)
        self._default = default or None
        self._in_use: Counter[str] = Counter()
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> GatewaySlots:
        return cls(settings.gateway_concurrency, settings.gateway_concurrency_default)

    def limit(self, gateway: str) -> int | None:
        """The cap of `gateway`; None: no cap."""
        return self._limits.get(gateway, self._default)

    def in_use(self, gateway: str) -> int:
        """Slots of `gateway` held now (gateways without a cap are counted too)."""
        with self._lock:
            return self._in_use[gateway]

    def try_acquire(self, gateway: str) -> bool:
        """Take a slot of `gateway` if one is free (always, without a cap); never waits. True: the caller
        must `release` it."""
        limit = self.limit(gateway)
        with self._lock:
            if limit is not None and self._in_use[gateway] >= limit:
                return False
            self._in_use[gateway] += 1
            return True

    def release(self, gateway: str) -> None:
        """Give back a slot taken by `try_acquire`. RuntimeError if none is held (a release too many
        would raise the cap for good)."""
        with self._lock:
            if self._in_use[gateway] <= 0:
                raise RuntimeError(f"release({gateway!r}) without a slot held")
            self._in_use[gateway] -= 1
            if not self._in_use[gateway]:
                del self._in_use[gateway]

    @contextmanager
    def slot(self, gateway: str) -> Iterator[bool]:
        """`with slots.slot(gateway) as got:`: got is try_acquire's answer; a slot taken is released
        when the block ends, however it ends."""
        got = self.try_acquire(gateway)
        try:
            yield got
        finally:
            if got:
                self.release(gateway)
