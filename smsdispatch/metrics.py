"""Metrics for Prometheus: counters kept in Redis by the scripts a message passes through anyway, read at
scrape time with the state Redis already holds (queues, balances, circuits, dead letters).

Workers are many processes on many machines, so a counter cannot live in a process's memory: each is
a field of one Redis hash, `sms:metrics` (keys.metrics), incremented inside the Lua script that writes
the change it counts, so counting costs no round trip. A scrape (`GET /metrics` on `smsdispatch
webhooks` or `smsdispatch metrics`) reads that hash and the rest in two pipelined round trips, whatever
the number of workers. The counters never expire (a TTL would look like a reset to Prometheus); the
hash holds one field per counter, gateway and status, a few hundred at most.

Fields of `sms:metrics` (`|` between a counter's name and its labels), who writes them, and what they
are exported as:

    field                              written by (smsdispatch/lua/)        exported as (smsdispatch_ ...)
    enqueued                           records_create                       messages_enqueued_total
    messages|<gw>|<status>             lib/update_record, records_advance   messages_total{gateway,status}
    attempts|<gw>                      lib/update_record                    attempts_total{gateway}
    retries|<gw>                       lib/update_record                    retries_total{gateway}
    failovers|<from>|<to>              lib/update_record                    failovers_total{gateway,to}
    latency|<gw>|<le>, latency_sum|<gw> lib/update_record                   accept_latency_seconds{gateway}
    dead_letters|<gw>                  ledger_finish, ledger_finish_many    dead_letters_total{gateway}
    circuit_opens|<gw>                 lib/circuit_record                   circuit_opens_total{gateway}
    ratelimit_waits|<gw>               ratelimit_acquire                    rate_limit_waits_total{gateway}
    ratelimit_wait_seconds|<gw>        ratelimit_acquire                    rate_limit_wait_seconds_total{gateway}

lib/update_record.lua says when each counts (`count_update`). `<gw>` is `none` for a message refused
before any gateway was chosen. The latency histogram keeps one field per bucket an observation fell
into (not cumulative: one HINCRBY per observation); the collector adds them up.

Read at scrape time, as gauges: circuit state per gateway, last polled balance (and its threshold and
age), messages in flight (accepted, awaiting a report), unsettled messages (queued, sending,
retrying), the dead-letter list's length, the length of each of the three queues (kombu's priority
lists included; on a RabbitMQ broker, its ready messages, asked of RabbitMQ at scrape time), messages
taken by workers and not yet acknowledged (kombu's `unacked` hash; absent on RabbitMQ, which tells a
passive queue.declare nothing about them: RabbitMQ's own metrics do), and beat's last tick (beat.py). Whether workers answer is /healthz's question (health.py): the heartbeats
in `sms:workers` are those of every process consuming from the broker, Flower's too.

prometheus_client is the `metrics` extra: only the process that serves /metrics imports it, on the
first scrape; workers write their counters from Lua and never need it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import redis
from amqp.exceptions import AMQPError
from kombu.exceptions import KombuError
from kombu.transport import redis as kombu_redis

from . import broker
from .config import Settings
from .keys import Keys
from .tasks import queue_names

log = logging.getLogger("smsdispatch.metrics")

PREFIX = "smsdispatch_"

#: Upper bounds (s) of the enqueue → accepted histogram's buckets; lib/update_record.lua holds the same.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)

#: Counter fields of sms:metrics: name → (exported name without _total, label names, help).
COUNTERS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "enqueued": ("messages_enqueued", (), "Messages recorded `queued` by a producer (send_sms.delay)."),
    "messages": ("messages", ("gateway", "status"),
                 "Messages that reached a status (accepted, delivered, failed, unknown, expired), by the gateway "
                 "that had them (`none`: refused before any gateway)."),
    "attempts": ("attempts", ("gateway",), "Gateway calls started, one per message (a batch call counts each)."),
    "retries": ("retries", ("gateway",), "Failed calls whose message will be tried again later."),
    "failovers": ("failovers", ("gateway", "to"),
                  "Attempts made on another gateway than the message's previous one (gateway: the one left)."),
    "dead_letters": ("dead_letters", ("gateway",),
                     "Messages put on the dead-letter list (retries exhausted, poison messages)."),
    "circuit_opens": ("circuit_opens", ("gateway",),
                      "Times a gateway's circuit breaker opened (again after a failed probe, too)."),
    "ratelimit_waits": ("rate_limit_waits", ("gateway",), "Calls that had to wait for the gateway's rate limit."),
    "ratelimit_wait_seconds": ("rate_limit_wait_seconds", ("gateway",),
                               "Seconds calls were told to wait for the gateway's rate limit."),
}

#: The label names of every field name of sms:metrics (the counters', and the latency histogram's).
LABELS = {name: labels for name, (_, labels, _) in COUNTERS.items()} | {"latency": ("gateway", "le"),
                                                                        "latency_sum": ("gateway",)}

CIRCUIT_STATES = ("closed", "open", "half_open")


@dataclass
class Snapshot:
    """What one scrape read from Redis."""
    now: float                                           # Redis's clock
    counters: dict[str, float] = field(default_factory=dict)     # raw fields of sms:metrics
    in_flight: int = 0
    unsettled: int = 0
    dead_letters: int = 0
    queues: dict[str, int] = field(default_factory=dict)
    unacked: int | None = None     # kombu's unacked hash (Redis broker); RabbitMQ does not say
    beat_tick: float | None = None
    circuits: dict[str, str] = field(default_factory=dict)        # gateway → one of CIRCUIT_STATES
    balances: dict[str, dict[str, Any]] = field(default_factory=dict)   # gateway → amount, currency, at


def gateways_counted(counters: Iterable[str]) -> set[str]:
    """The gateways the counters name (every label called `gateway` or `to`)."""
    found = set()
    for raw in counters:
        name, *values = raw.split("|")
        names = LABELS.get(name)
        if names is not None and len(names) == len(values):       # a field of another version: left out
            found |= {v for k, v in zip(names, values, strict=True) if k in ("gateway", "to") and v != "none"}
    return found


class Metrics:
    """The collector of smsdispatch's metrics (prometheus_client's collector protocol: `collect`), and
    the /metrics page. `read` does the Redis work; `collect` turns a snapshot into metric families."""

    def __init__(self, client: redis.Redis, keys: Keys, settings: Settings) -> None:
        self.redis, self.keys, self.settings = client, keys, settings

    # --- reading ------------------------------------------------------------------------------

    def read(self) -> Snapshot:
        """Two round trips: the counters and the global state, then what each gateway has (the
        gateways are those configured here and those the counters name)."""
        queues = queue_names(self.settings.queue)
        pipe = self.redis.pipeline(transaction=False)
        pipe.time()
        pipe.hgetall(self.keys.metrics())
        pipe.zcard(self.keys.inflight())
        pipe.zcard(self.keys.pending())
        pipe.llen(self.keys.dead_letters())
        pipe.get(self.keys.beat())
        on_redis = not self.settings.amqp_broker
        if on_redis:
            for queue in queues:
                for priority in kombu_redis.PRIORITY_STEPS:    # kombu's list per priority; 0 is the queue itself
                    pipe.llen(f"{queue}{kombu_redis.Channel.sep}{priority}" if priority else queue)
            pipe.hlen(kombu_redis.Channel.unacked_key)
        (seconds, micros), raw, in_flight, unsettled, dead, beat, *rest = pipe.execute()
        snap = Snapshot(now=seconds + micros / 1e6, in_flight=in_flight, unsettled=unsettled, dead_letters=dead,
                        beat_tick=float(beat) if beat else None)
        snap.counters = {k.decode(): float(v) for k, v in raw.items()}
        if on_redis:
            steps = len(kombu_redis.PRIORITY_STEPS)
            snap.queues = {q: sum(rest[i * steps:(i + 1) * steps]) for i, q in enumerate(queues)}
            snap.unacked = rest[-1]
        else:
            snap.queues = self._rabbitmq_queues(queues)

        gateways = sorted(set(self.settings.configured_gateways()) | gateways_counted(snap.counters))
        pipe = self.redis.pipeline(transaction=False)
        for gateway in gateways:
            pipe.hget(self.keys.circuit(gateway), "open_until")
            pipe.hgetall(self.keys.balance(gateway))
        replies = pipe.execute()
        for gateway, open_until, balance in zip(gateways, replies[::2], replies[1::2], strict=True):
            snap.circuits[gateway] = "closed" if open_until is None else \
                "open" if snap.now < float(open_until) else "half_open"
            if balance:
                b = {k.decode(): v.decode() for k, v in balance.items()}
                snap.balances[gateway] = {"amount": float(b["amount"]), "currency": b.get("currency") or "",
                                          "at": float(b.get("at") or 0)}
        return snap

    def _rabbitmq_queues(self, names: tuple[str, ...]) -> dict[str, int]:
        """Ready messages per queue, from RabbitMQ (broker.queue_lengths); none when it does not answer
        (the scrape still shows everything read from Redis)."""
        try:
            lengths = broker.queue_lengths(self.settings, names)
        except (OSError, KombuError, AMQPError) as e:
            log.warning("queue lengths not read from RabbitMQ: %s", type(e).__name__)
            return {}
        return {name: length for name, length in lengths.items() if length is not None}

    # --- Prometheus ---------------------------------------------------------------------------

    def collect(self) -> Iterator[Any]:
        """The metric families of one scrape (called by prometheus_client's registry)."""
        return iter(families(self.read(), self.settings))

    def exposition(self) -> bytes:
        """The metrics in Prometheus's text format (`smsdispatch metrics --once`)."""
        from prometheus_client import CollectorRegistry, generate_latest
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)         # a collector: it has collect()
        return generate_latest(registry)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        """GET /metrics (WSGI): 200 with the exposition; 503 when Redis cannot be read (Prometheus
        records the scrape as failed: `up` is 0); 501 without prometheus_client."""
        if environ.get("REQUEST_METHOD", "GET") != "GET":
            return _answer(start_response, "405 Method Not Allowed", b"GET only\n")
        try:
            from prometheus_client import CONTENT_TYPE_LATEST
        except ImportError:
            return _answer(start_response, "501 Not Implemented",
                           b"/metrics needs prometheus_client: pip install 'smsdispatch[metrics]'\n")
        try:
            body = self.exposition()
        except redis.RedisError as e:
            log.warning("metrics not read, Redis failed: %s", type(e).__name__)
            return _answer(start_response, "503 Service Unavailable", b"Redis cannot be read\n")
        return _answer(start_response, "200 OK", body, CONTENT_TYPE_LATEST)


def families(snap: Snapshot, settings: Settings) -> list[Any]:
    """Prometheus metric families from a snapshot (pure: tests/unit/test_metrics.py feeds it)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

    counters = {name: CounterMetricFamily(PREFIX + exported, doc, labels=list(labels))
                for name, (exported, labels, doc) in COUNTERS.items()}
    buckets: dict[str, dict[str, float]] = {}
    sums: dict[str, float] = {}
    for raw, value in sorted(snap.counters.items()):
        name, *labels = raw.split("|")
        if name == "latency" and len(labels) == 2:
            buckets.setdefault(labels[0], {})[labels[1]] = value
        elif name == "latency_sum" and len(labels) == 1:
            sums[labels[0]] = value
        elif name in COUNTERS and len(labels) == len(COUNTERS[name][1]):
            counters[name].add_metric(labels, value)
    out: list[Any] = list(counters.values())

    latency = HistogramMetricFamily(
        PREFIX + "accept_latency_seconds", "Seconds from a message's `queued` record (the producer's .delay()) to "
        "its acceptance by the gateway; for batch entries and messages sent by name, from the worker's first "
        "record of it.", labels=["gateway"])
    bounds = [f"{b:g}" for b in LATENCY_BUCKETS] + ["+Inf"]
    for gateway in sorted(buckets.keys() | sums.keys()):
        seen, running, cumulative = buckets.get(gateway, {}), 0.0, []
        for le in bounds:
            running += seen.get(le, 0.0)
            cumulative.append((le, running))
        latency.add_metric([gateway], cumulative, sum_value=sums.get(gateway, 0.0))
    out.append(latency)

    def gauge(name: str, doc: str, value: float | None = None, labels: tuple[str, ...] = ()) -> GaugeMetricFamily:
        family = GaugeMetricFamily(PREFIX + name, doc, labels=list(labels) if labels else None)
        if value is not None:
            family.add_metric([], value)
        out.append(family)
        return family

    circuit = gauge("circuit_state", "1 for the state each gateway's circuit breaker is in (closed, open, "
                    "half_open), 0 for the others.", labels=("gateway", "state"))
    for gateway, state in sorted(snap.circuits.items()):
        for each in CIRCUIT_STATES:
            circuit.add_metric([gateway, each], 1.0 if each == state else 0.0)
    balance = gauge("gateway_balance", "The gateway's balance when beat last polled it (currency as the gateway "
                    "reports it).", labels=("gateway", "currency"))
    polled = gauge("gateway_balance_updated_timestamp_seconds", "When beat last stored the gateway's balance.",
                   labels=("gateway",))
    for gateway, b in sorted(snap.balances.items()):
        balance.add_metric([gateway, b["currency"]], b["amount"])
        polled.add_metric([gateway], b["at"])
    threshold = gauge("gateway_balance_threshold", "SMSDISPATCH_BALANCE_THRESHOLDS: below it beat logs a warning "
                      "and records an alert.", labels=("gateway",))
    for gateway, limit in sorted(settings.balance_thresholds.items()):
        threshold.add_metric([gateway], limit)
    gauge("messages_in_flight", "Accepted messages awaiting a delivery report (the inflight index).", snap.in_flight)
    gauge("messages_unsettled", "Messages queued, sending or retrying (the sweeper's pending index).", snap.unsettled)
    gauge("dead_letters_waiting", "Messages on the dead-letter list, not yet replayed "
          "(smsdispatch dead-letters --replay).", snap.dead_letters)
    queues = gauge("queue_length", "Task messages waiting in each queue (sends, retries, beat's periodic work).",
                   labels=("queue",))
    for queue, length in snap.queues.items():
        queues.add_metric([queue], length)
    gauge("queue_unacked", "Task messages taken by workers and not yet acknowledged (kombu's unacked hash, shared "
          "by every Celery app of this Redis database; absent with a RabbitMQ broker).", snap.unacked)
    gauge("beat_last_tick_timestamp_seconds", "When celery beat last ran its scheduler loop (absent: never, or "
          "not within a day).", snap.beat_tick)
    return out


def _answer(start_response: Callable, status: str, body: bytes,
            content_type: str = "text/plain; charset=utf-8") -> list[bytes]:
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]
