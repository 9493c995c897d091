"""What a worker checks of its Redis at start-up: the settings that decide whether Redis may lose data.

- ``maxmemory-policy`` must be ``noeviction``. Any other policy lets Redis delete keys when memory
  runs out: ``allkeys-*`` deletes queued task messages, records and ledger entries alike, and
  ``volatile-*`` deletes keys with a TTL first, which are exactly the idempotency ledger's entries and
  the records: a redelivered task would then find no claim and send again. With ``noeviction`` Redis
  refuses writes instead, which the code retries. Another policy stops the worker (a ConfigError),
  unless SMSDISPATCH_ALLOW_UNSAFE_REDIS=true (a throwaway Redis for tests or a demo).
- ``appendonly`` off: a restart loses whatever was written since the last snapshot (queued messages,
  claims); the worker starts, with a warning.

- fewer replicas connected than SMSDISPATCH_CLAIM_REPLICAS: no claim is durable, so no message is sent
  until enough replicas answer (ledger.py); the worker starts, with a warning saying so.

Read with ``CONFIG GET``; where CONFIG is renamed or refused (managed Redis services), from ``INFO``
(``maxmemory_policy``, ``aof_enabled``); where neither answers, with a warning and no check.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis

from .errors import ConfigError

log = logging.getLogger("smsdispatch.redischeck")

SAFE_POLICY = "noeviction"


@dataclass(frozen=True)
class RedisSafety:
    policy: str | None      # maxmemory-policy; None: could not be read
    aof: bool | None        # appendonly; None: could not be read
    source: str             # "CONFIG", "INFO" or the reason neither answered


def read_safety(client: redis.Redis) -> RedisSafety:
    try:
        policy = _text(client.config_get("maxmemory-policy").get("maxmemory-policy"))
        aof = _text(client.config_get("appendonly").get("appendonly"))
        return RedisSafety(policy, None if aof is None else aof == "yes", "CONFIG")
    except redis.ResponseError as e:        # CONFIG renamed or not allowed: INFO has both
        refused = f"CONFIG GET refused ({e})"
    try:
        info = {**client.info("memory"), **client.info("persistence")}
    except redis.ResponseError as e:
        return RedisSafety(None, None, f"{refused}; INFO refused ({e})")
    policy = info.get("maxmemory_policy")
    aof = info.get("aof_enabled")
    return RedisSafety(_text(policy), None if aof is None else str(aof) == "1", "INFO")


def check(client: redis.Redis, *, allow_unsafe: bool, claim_replicas: int = 0) -> RedisSafety:
    """Raise ConfigError for an evicting Redis (unless `allow_unsafe`); warn about AOF off, fewer replicas
    than `claim_replicas`, or settings that cannot be read. A Redis that cannot be reached at all is not
    checked (warned): the worker's broker connection retries on its own."""
    safety = _check_safety(client, allow_unsafe=allow_unsafe)
    if claim_replicas:
        _check_replicas(client, claim_replicas)
    return safety


def _check_replicas(client: redis.Redis, wanted: int) -> None:
    try:
        connected = int(client.info("replication").get("connected_slaves", 0))
    except (redis.RedisError, ValueError, TypeError) as e:
        log.warning("could not read how many replicas Redis has (%s): SMSDISPATCH_CLAIM_REPLICAS=%d not checked",
                    e, wanted)
        return
    if connected < wanted:
        log.warning("SMSDISPATCH_CLAIM_REPLICAS=%d but the primary has %d replica(s) connected: no claim is durable, "
                    "so no message is sent until enough replicas answer (each waits, without using an attempt)",
                    wanted, connected)


def _check_safety(client: redis.Redis, *, allow_unsafe: bool) -> RedisSafety:
    try:
        safety = read_safety(client)
    except redis.RedisError as e:
        log.warning("could not read Redis's maxmemory-policy and appendonly (%s: %s): not checked",
                    type(e).__name__, e)
        return RedisSafety(None, None, str(e))
    if safety.policy is None:
        log.warning("could not read Redis's maxmemory-policy (%s): not checked; it must be %s",
                    safety.source, SAFE_POLICY)
    elif safety.policy != SAFE_POLICY:
        why = (f"Redis's maxmemory-policy is {safety.policy}, not {SAFE_POLICY}: when memory runs out Redis "
               f"deletes keys instead of refusing writes, and volatile-* policies delete the keys with a TTL "
               f"first, which are the idempotency ledger's entries and the message records (a redelivered "
               f"task would then send again); allkeys-* deletes queued messages too. Set maxmemory-policy "
               f"{SAFE_POLICY} (CONFIG SET maxmemory-policy {SAFE_POLICY}, or in redis.conf)")
        if not allow_unsafe:
            raise ConfigError(f"{why}, or SMSDISPATCH_ALLOW_UNSAFE_REDIS=true to run anyway (a throwaway Redis)")
        log.warning("%s; running anyway: SMSDISPATCH_ALLOW_UNSAFE_REDIS=true", why)
    if safety.aof is False:
        log.warning("Redis's appendonly is no: a Redis restart loses queued messages, claims and records "
                    "written since its last snapshot; set appendonly yes")
    elif safety.aof is None and safety.policy is not None:
        log.warning("could not read Redis's appendonly (%s): not checked", safety.source)
    return safety


def _text(value: object) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)
