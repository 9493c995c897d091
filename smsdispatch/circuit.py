"""Circuit breakers, one per gateway, shared by every worker through Redis; they open on a failure *rate*.

    closed ──(≥ CIRCUIT_FAILURE_RATE % of the calls within CIRCUIT_WINDOW s failed,
              and there were ≥ CIRCUIT_MIN_CALLS of them)──▶ open
    open ──(CIRCUIT_COOLOFF s later)──▶ half-open: CIRCUIT_PROBES callers get a probe call
    half-open ──every probe succeeds──▶ closed       half-open ──a probe fails──▶ open again

Why a rate: a count ("5 failures in 30 s") opens on a healthy gateway at volume (at 150 calls a second a
1% error rate is 1.5 failures a second) and stops every message for a cool-off each time. Counting every
call and opening on the share that failed, over a minimum number of calls, is what resilience4j does
(its defaults are 50% over 100 calls; ours 50% over 20, for smaller deployments).

What counts: a call that ended in a transient or ambiguous error (the gateway is unwell) is a failure;
so is a call slower than CIRCUIT_SLOW_CALL, even when the gateway took the message. A call the gateway
answered, even with a refusal (a bad number, bad credentials), is a success: it says the gateway is up.
A 429 is neither (it slows the rate limit instead, ratelimit.py), nor is a failure of our own Redis.

Calls are counted in ten time buckets per window (a hash of `c<bucket>` / `f<bucket>` counters), so a
success costs two commands and the rate is summed only when a failure could open the circuit. Results
of calls that were let through before the circuit opened are not counted while it is open; in
half-open only the probes' results count. A round of probes whose callers never report (their worker
died) is handed out again after `probe_ttl`.

Every step is one Lua script, lua/circuit_*.lua (the count, lua/lib/circuit_record.lua, is also part
of the ledger's `finish`, so the success of a single send is counted in the round trip that records
it): two workers never both take the last probe, and the rate is exact under concurrency.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from . import scripts
from .keys import Keys
from .redisclient import text, text_fields


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    probe: bool = False           # one of the calls that decide whether a half-open circuit closes
    open_until: float = 0.0       # when skipped: when to look again


@dataclass(frozen=True)
class Recorded:
    """What one call's result did: `event` is "opened", "closed" or ""; with the window's counts."""
    event: str
    failures: int = 0
    calls: int = 0


@dataclass(frozen=True)
class Snapshot:
    """A circuit as `Circuits.snapshot` read it."""
    state: str                    # "closed", "open" or "half-open"
    open_until: float | None      # open or half-open: when it opened for probes
    probes: int                   # half-open: probe calls handed out, and how many succeeded
    probes_ok: int
    calls: int                    # closed: calls and failures counted within the window
    failures: int


class Circuits:
    def __init__(self, client: redis.Redis, keys: Keys, *, failure_rate: float, min_calls: int, window: float,
                 cooloff: float, probes: int, probe_ttl: float | None = None) -> None:
        """`probe_ttl`: how long a round of probes may take to report before it is handed out again
        (the longest a gateway call can last; the cool-off by default)."""
        self.redis, self.keys = client, keys
        self.rate, self.min_calls, self.window, self.cooloff = failure_rate, min_calls, window, cooloff
        self.probes = probes
        self.probe_ttl = probe_ttl if probe_ttl is not None else cooloff
        self._allow = scripts.register(client, "circuit_allow")
        self._record = scripts.register(client, "circuit_record")

    def allow(self, gateway: str, *, now: float) -> Verdict:
        verdict, until = self._allow(keys=[self.keys.circuit(gateway)], args=[now, self.probes, self.probe_ttl])
        verdict = verdict.decode() if isinstance(verdict, bytes) else verdict
        return Verdict(verdict != "open", verdict == "probe", float(until))

    def record_args(self, gateway: str, *, now: float, failed: bool, probe: bool) -> tuple[list[str], list]:
        """KEYS and ARGV of one result, for a script that calls circuit_record (lua/lib/circuit_record.lua;
        the ledger's finish)."""
        return ([self.keys.circuit(gateway), self.keys.circuit_calls(gateway)],
                [repr(now), int(failed), int(probe), self.window, self.min_calls, self.rate, self.cooloff,
                 self.probes, gateway])

    def record(self, gateway: str, *, now: float, failed: bool, probe: bool = False) -> Recorded:
        keys, args = self.record_args(gateway, now=now, failed=failed, probe=probe)
        return parse_recorded(self._record(keys=[*keys, self.keys.metrics()], args=args))

    def failure(self, gateway: str, *, now: float, probe: bool = False) -> bool:
        """Count a failed call; True if it opened the circuit."""
        return self.record(gateway, now=now, failed=True, probe=probe).event == "opened"

    def success(self, gateway: str, *, now: float, probe: bool = False) -> bool:
        """Count a call that went through; True if it closed a half-open circuit."""
        return self.record(gateway, now=now, failed=False, probe=probe).event == "closed"

    def state(self, gateway: str, *, now: float) -> str:
        """"closed", "open" or "half-open" (for status output; no side effects)."""
        raw = self.redis.hget(self.keys.circuit(gateway), "open_until")
        if raw is None:
            return "closed"
        return "open" if now < float(raw) else "half-open"

    def snapshot(self, gateway: str, *, now: float) -> Snapshot:
        """The circuit as it stands, read only (the status page): its state, until when it is open, the
        probes handed out, and the calls and failures counted within the window (closed circuits only:
        an open one counts nothing)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self.keys.circuit(gateway))
        pipe.hgetall(self.keys.circuit_calls(gateway))
        circuit, counts = pipe.execute()
        c = text_fields(circuit)
        bucket = int(now // (self.window / 10))
        calls = failures = 0
        for name, value in counts.items():
            kind, number = text(name)[:1], text(name)[1:]
            if number.lstrip("-").isdigit() and int(number) > bucket - 10:
                calls += int(value) if kind == "c" else 0
                failures += int(value) if kind == "f" else 0
        open_until = float(c["open_until"]) if c.get("open_until") else None
        state = "closed" if open_until is None else "open" if now < open_until else "half-open"
        return Snapshot(state, open_until, int(c.get("probes") or 0), int(c.get("probe_ok") or 0), calls, failures)

    def wait(self, open_until: float, *, now: float, cap: float, rng) -> float:
        """How long a message that found every gateway open waits before it runs again: until the
        circuit is due to be probed (or the probes are due to have reported), spread over a further
        quarter of that so that thousands of waiting messages do not all come back at one instant.
        A waiting message uses no attempt; with the defaults it runs about once per cool-off."""
        until = max(0.2, open_until - now)
        return min(until + rng.uniform(0, max(0.5, until / 4)), cap)


def parse_recorded(reply: list) -> Recorded:
    event = reply[0].decode() if isinstance(reply[0], bytes) else reply[0]
    return Recorded(event, int(reply[1]), int(reply[2]))


def describe(recorded: Recorded, window: float) -> str:
    return f"{recorded.failures} of {recorded.calls} calls failed within {window:g}s"

