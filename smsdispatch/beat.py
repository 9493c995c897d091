"""celery beat's scheduler, with a heartbeat: every pass of beat's loop records its time in Redis.

Beat sends nothing when it is stuck, and a stuck process looks alive to `ps` and to Docker. So the
scheduler writes `sms:beat` (keys.beat) on every tick, with SMSDISPATCH_BEAT_STALE_AFTER as the key's
TTL: while beat loops the key is there; when beat stops, hangs (a blocked publish, a deadlock, a
SIGSTOP) or never started, it expires, and the beat health check (health.py) fails. No clock is
compared across machines: Redis's TTL does the timing. Beat's loop sleeps until its next due task,
at most `beat_max_loop_interval`, which worker.py sets to a quarter of BEAT_STALE_AFTER, so an idle beat
still ticks in time.

The write has its own connection with short timeouts: an unreachable Redis costs a tick two seconds at
most, and a failed write is logged (once per outage) and never stops the loop. Configured as the app's
``beat_scheduler`` (worker.py); a beat started with another scheduler (``-S``) has no heartbeat, and
its health check fails.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from celery.beat import PersistentScheduler

from .keys import Keys
from .redisclient import connect_to

log = logging.getLogger("smsdispatch.beat")

#: At most one heartbeat write per this many seconds (beat ticks once per due task when several are due).
TOUCH_EVERY = 1.0
#: Socket timeouts of the heartbeat's connection.
TIMEOUT = 2.0


class Scheduler(PersistentScheduler):
    """Celery's default scheduler (the schedule kept in the --schedule file), plus the heartbeat."""

    _client: redis.Redis | None = None
    _touched_at = 0.0
    _failing = False

    def tick(self, *args: Any, **kwargs: Any) -> float:
        self.touch()
        return super().tick(*args, **kwargs)

    def touch(self, now: float | None = None) -> None:
        """Write the heartbeat, unless this process wrote it less than TOUCH_EVERY ago (`now`: monotonic)."""
        now = time.monotonic() if now is None else now
        if now - self._touched_at < TOUCH_EVERY:
            return
        self._touched_at = now
        settings = self.app.runtime.settings
        try:
            if self._client is None:
                self._client = connect_to(settings, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT)
            self._client.set(Keys(settings.key_prefix).beat(), repr(time.time()),
                             ex=max(1, round(settings.beat_stale_after)))
        except redis.RedisError as e:
            if not self._failing:
                log.warning("beat's heartbeat not written (Redis failed: %s); retried every tick", type(e).__name__)
            self._failing = True
        else:
            if self._failing:
                log.info("beat's heartbeat written again")
            self._failing = False
