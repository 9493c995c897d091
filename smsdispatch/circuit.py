"""Circuit breakers, one per gateway, shared by every worker through Redis.

    closed ──(CIRCUIT_FAILURES failures within CIRCUIT_WINDOW s)──▶ open
    open ──(CIRCUIT_COOLOFF s later)──▶ half-open: exactly one caller gets a probe
    half-open ──probe succeeds──▶ closed          half-open ──probe fails──▶ open again

A failure is a gateway call that ended in a transient or ambiguous error (the gateway is unwell); a
permanent error (bad number, bad credentials) says nothing about the gateway's health and is not
counted. While a circuit is open the dispatcher skips the gateway: it fails over to the next one of
the route, or, with none left, waits until the probe is due. Every change is one Lua script, so two
workers never both take the probe.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from .keys import Keys

# KEYS: circuit hash. ARGV: now, probe_ttl. Returns {verdict, open_until}: verdict "closed",
# "probe" (half-open and this caller takes the probe) or "open" (skip; open_until says until when).
_ALLOW = """
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until'))
if not open_until then return {'closed', '0'} end
local now = tonumber(ARGV[1])
if now < open_until then return {'open', tostring(open_until)} end
local probe_until = tonumber(redis.call('HGET', KEYS[1], 'probe_until')) or 0
if now < probe_until then return {'open', tostring(probe_until)} end
redis.call('HSET', KEYS[1], 'probe_until', now + tonumber(ARGV[2]))
return {'probe', tostring(open_until)}
"""

# KEYS: circuit hash, failures zset. ARGV: now, window, threshold, cooloff, member.
# Returns 1 if this failure (re)opened the circuit, else 0.
_FAILURE = """
local now = tonumber(ARGV[1])
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until'))
if open_until and now >= open_until then
  -- half-open: the probe (or a straggler) failed: open again for a full cool-off
  redis.call('HSET', KEYS[1], 'open_until', now + tonumber(ARGV[4]), 'probe_until', 0)
  redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[4]) * 4 + 60))
  return 1
end
if open_until then return 0 end
redis.call('ZADD', KEYS[2], now, ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[2]))
redis.call('EXPIRE', KEYS[2], math.ceil(tonumber(ARGV[2])) + 1)
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[1], 'open_until', now + tonumber(ARGV[4]), 'probe_until', 0)
  redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[4]) * 4 + 60))
  redis.call('DEL', KEYS[2])
  return 1
end
return 0
"""

# KEYS: circuit hash, failures zset. ARGV: now. A success closes an open-but-due (half-open) circuit.
_SUCCESS = """
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until'))
if open_until and tonumber(ARGV[1]) >= open_until then
  redis.call('DEL', KEYS[1], KEYS[2])
  return 1
end
return 0
"""


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    probe: bool = False           # the one call that decides whether a half-open circuit closes
    open_until: float = 0.0       # when skipped: when to look again


class Circuits:
    def __init__(self, client: redis.Redis, keys: Keys, *, failures: int, window: float, cooloff: float) -> None:
        self.redis, self.keys = client, keys
        self.threshold, self.window, self.cooloff = failures, window, cooloff
        self._allow = client.register_script(_ALLOW)
        self._failure = client.register_script(_FAILURE)
        self._success = client.register_script(_SUCCESS)
        self._seq = 0

    def allow(self, gateway: str, *, now: float) -> Verdict:
        # A probe that never reports back (its worker died) frees the slot after one cool-off.
        verdict, until = self._allow(keys=[self.keys.circuit(gateway)], args=[now, self.cooloff])
        verdict = verdict.decode() if isinstance(verdict, bytes) else verdict
        return Verdict(verdict != "open", verdict == "probe", float(until))

    def failure(self, gateway: str, *, now: float) -> bool:
        """Count a failed call; True if it opened the circuit."""
        self._seq += 1
        member = f"{now!r}:{id(self)}:{self._seq}"
        return bool(self._failure(keys=[self.keys.circuit(gateway), self.keys.circuit_failures(gateway)],
                                  args=[now, self.window, self.threshold, self.cooloff, member]))

    def success(self, gateway: str, *, now: float) -> bool:
        """A call went through; True if it closed a half-open circuit."""
        return bool(self._success(keys=[self.keys.circuit(gateway), self.keys.circuit_failures(gateway)],
                                  args=[now]))

    def state(self, gateway: str, *, now: float) -> str:
        """"closed", "open" or "half-open" (for status output; no side effects)."""
        raw = self.redis.hget(self.keys.circuit(gateway), "open_until")
        if raw is None:
            return "closed"
        return "open" if now < float(raw) else "half-open"
