"""Health checks: is Redis taking writes, does a worker answer, is beat ticking?

    check     healthy when                                                       what it costs
    redis     a SET (sms:health, 60 s TTL) succeeds: Redis is reachable, and     one round trip
              takes writes (not out of memory under noeviction, not a replica)
    workers   a worker answers Celery's control ping within the timeout          a broadcast; returns at the
              (`node`: that worker, e.g. celery@$HOSTNAME in its container)      first answer, else after it
    beat      beat's last tick (sms:beat, beat.py) is still there: beat writes    one GET
              it on every pass of its scheduler loop with BEAT_STALE_AFTER as
              its TTL, so a beat that stopped, hangs or never started leaves
              none (no clocks compared across machines)

`GET /healthz` (webhooks.py mounts it; `smsdispatch metrics` serves it too) runs every check, or those
named in `?check=redis,workers`; `smsdispatch health [CHECK ...]` runs them from the command line for
container health checks. Answers: 200 / exit 0 when every check asked passed, 503 / exit 1 when one
failed, with a JSON body naming each check's result; 400 for an unknown check name. A check never
takes longer than its timeout (Redis: the client's socket timeout; workers: the ping's).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import redis
from celery import Celery

from .config import Settings
from .keys import Keys
from .redact import redact

log = logging.getLogger("smsdispatch.health")

CHECKS = ("redis", "workers", "beat")
#: Seconds a worker has to answer the ping.
PING_TIMEOUT = 1.0
#: The health key's TTL: it only proves a write went through.
PROBE_TTL = 60


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


class Health:
    def __init__(self, client: redis.Redis, keys: Keys, settings: Settings, *,
                 ping: Callable[..., list] | None = None) -> None:
        """`ping`: Celery's control ping (`celery_ping`), which the workers check needs."""
        self.redis, self.keys, self.settings, self.ping = client, keys, settings, ping

    def redis_check(self) -> Check:
        started = time.monotonic()
        try:
            self.redis.set(self.keys.health(), repr(time.time()), ex=PROBE_TTL)
        except redis.RedisError as e:
            return Check("redis", False, f"cannot write: {type(e).__name__}: {redact(str(e))}"[:300])
        return Check("redis", True, f"took a write in {1000 * (time.monotonic() - started):.1f} ms")

    def workers_check(self, *, node: str | None = None, timeout: float = PING_TIMEOUT) -> Check:
        if self.ping is None:
            return Check("workers", False, "no Celery app to ping workers with")
        try:
            replies = self.ping(destination=[node] if node else None, timeout=timeout, limit=1)
        except Exception as e:      # kombu and redis errors alike: the broker cannot be reached
            return Check("workers", False, f"ping failed: {type(e).__name__}: {redact(str(e))}"[:300])
        names = sorted(name for reply in replies or [] for name in reply)
        if not names:
            who = f"worker {node}" if node else "no worker"
            return Check("workers", False, f"{who} answered a ping within {timeout:g}s")
        return Check("workers", True, f"{', '.join(names)} answered")

    def beat_check(self) -> Check:
        try:
            tick = self.redis.get(self.keys.beat())
        except redis.RedisError as e:
            return Check("beat", False, f"cannot read its tick: {type(e).__name__}")
        if tick is None:
            return Check("beat", False, f"no tick within SMSDISPATCH_BEAT_STALE_AFTER "
                                        f"({self.settings.beat_stale_after:g}s): beat stopped, hangs or never started")
        return Check("beat", True, f"ticked at {float(tick):.0f}")

    def run(self, names: Iterable[str] = CHECKS, *, node: str | None = None,
            timeout: float = PING_TIMEOUT) -> tuple[bool, dict[str, Any]]:
        """(healthy, the JSON answer) for the checks `names`."""
        checks = {"redis": self.redis_check, "beat": self.beat_check,
                  "workers": lambda: self.workers_check(node=node, timeout=timeout)}
        results = [checks[name]() for name in names]
        healthy = all(c.ok for c in results)
        for c in results:
            if not c.ok:
                log.warning("health: %s unhealthy: %s", c.name, c.detail)
        return healthy, {"healthy": healthy, "checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in results}}

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        """GET /healthz[?check=redis,workers,beat] (WSGI)."""
        if environ.get("REQUEST_METHOD", "GET") != "GET":
            return _json(start_response, "405 Method Not Allowed", {"error": "GET only"})
        asked = parse_qs(environ.get("QUERY_STRING", "")).get("check")
        names = [n for value in asked for n in value.split(",") if n] if asked else list(CHECKS)
        unknown = [n for n in names if n not in CHECKS]
        if unknown or not names:
            return _json(start_response, "400 Bad Request",
                         {"error": f"unknown check {', '.join(unknown)!s}; known: {', '.join(CHECKS)}"})
        healthy, body = self.run(dict.fromkeys(names))
        return _json(start_response, "200 OK" if healthy else "503 Service Unavailable", body)


#: Seconds the ping may spend reaching the broker (one retry), on top of the answers' timeout.
CONNECT_TIMEOUT = 2.0


def celery_ping(app: Celery) -> Callable[..., list]:
    """`app.control.ping` over kombu's own Redis transport, giving up on an unreachable broker within
    CONNECT_TIMEOUT (Celery's connection would keep trying for several seconds). Ours (redis_transport.py)
    takes a process that consumes (the ping's answers) for a worker: the receiver would beat a heart in
    `sms:workers` and judge the workers for as long as it runs, and each `smsdispatch health` would be
    taken for a dead worker."""
    transport = "redis" if app.conf.broker_transport else None      # rediss:// and unix:// use kombu's already
    bounded = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2,
               "connect_retries_timeout": CONNECT_TIMEOUT}

    def ping(**kwargs: Any) -> list:
        with app.connection_for_write(transport=transport, connect_timeout=CONNECT_TIMEOUT,
                                      transport_options=bounded) as connection:
            return app.control.ping(connection=connection, **kwargs)
    return ping


def _json(start_response: Callable, status: str, body: dict) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data))),
                            ("Cache-Control", "no-store")])
    return [data]
