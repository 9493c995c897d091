"""The chaos run: "no SMS lost, none sent twice" under faults, against real parts only.

    python -m chaos.run                         # scenario failover, 10,000 messages (make chaos runs both)
    python -m chaos.run --ci                    # failover, 800 messages, well under 3 minutes on 2 cores
    python -m chaos.run --scenario single --ci  # single: a baseline run, then the faulty run (make chaos-ci)
    python -m chaos.run --scenario sentinel --ci  # sentinel: Redis behind Sentinel, the primary killed halfway
    python -m chaos.run --scenario rabbitmq --ci  # rabbitmq: RabbitMQ as the broker, killed and restarted

Four scenarios. ``--scenario failover`` (the default) is described below. ``--scenario single`` is what
production met: Eskiz the ONLY gateway (``DEFAULT_GATEWAY=eskiz``, no routes, no failover), a quarter of
its send calls failing (HTTP 500, a reset before or after it took the SMS, a 429 with Retry-After 1 s,
an answer after 2 s), with the circuit breaker as shipped (no CIRCUIT_* set), MAX_ATTEMPTS as
shipped (5) and the workers as shipped (threads x20: a 2 s answer holds a thread, so the pool size
is part of what production meets). It first sends the same number of messages through the same set-up with no faults, no
kills and no Redis restart (the baseline), then the faulty run; the producer publishes as fast as it
can (4 threads), so throughput (accepted messages per second from the first publish to the moment the
last message got its final record) measures the workers. The five worker kills and the Redis restart
come at shares of the messages that have a final record, or at the same shares of the time a run at
the throughput floor would take, whichever is first: while messages are being worked off, in the
first third of the work (SINGLE_KILL_AT). Besides the checks below it exits 1 when the faulty
throughput is below 40% of the baseline's (--no-throughput-check skips that).

``--scenario sentinel`` (SentinelChaosRun, sentinel_scenario) is failover's gateways and faults with
Redis behind Sentinel (a primary, two replicas, three Sentinels; workers, beat and the producer reach it
through the Sentinels only; CLAIM_REPLICAS=1) and no worker kills: at half the messages published the
primary is killed with SIGKILL and a replica is promoted; the old primary is started again once that
happened, and rejoins as a replica. Besides the verdict below it prints the failover's times (kill to
promotion, kill to the first write through the Sentinels, the gap in acceptances around the kill).

``--scenario rabbitmq`` (RabbitMQChaosRun, rabbitmq_scenario) is failover's gateways, faults, five
worker kills and ETAs with RabbitMQ as the broker (SMSDISPATCH_BROKER_URL: a private RabbitMQ node of
its own, smsdispatch.devtools.rabbitmq_server.PrivateRabbitMQ; quorum queues, native delayed delivery,
publisher confirms) and the records in the private Redis. Instead of Redis, RabbitMQ is killed
(SIGKILL) at a third of the messages published and started again from its data directory
--redis-down seconds later. A publish that fails meanwhile finds its `queued` record and is left to the
sweeper. Besides the verdict it prints the outage's times (kill to RabbitMQ taking connections again,
the gap in acceptances around the kill). The queues exist (workers declare them) well before the kill:
RabbitMQ 3.10's single node was seen to lose the messages of a quorum queue created moments before a
SIGKILL.

Everything runs on 127.0.0.1 and is started here, nothing is mocked:

- a private ``redis-server`` with AOF on (smsdispatch.devtools.redis_server.EmbeddedRedis);
- two fake gateways that are real HTTP servers: Eskiz (can look messages up by our id) for numbers
  routed by ``SMSDISPATCH_ROUTES=998=eskiz|smscx``, and SMS.CX (dedupes by ``idempotencyId``) as
  ``DEFAULT_GATEWAY=smscx|eskiz``: each the other's fallback, so failover happens under the faults
  too; a tenth of the messages name their gateway per call instead (no failover);
- two real ``celery worker`` subprocesses (threads pool) and one ``celery beat`` (the sweeper
  republishes stuck messages), each under a supervisor thread that restarts it when it exits, like
  compose's ``restart: unless-stopped``; exits nobody asked for are counted and shown;
- the producer: this process publishes ``send_sms.apply_async`` with an explicit idempotency key per
  message (unique per run), paced so the faults below happen *while* it sends.

Faults during the run:

- every send call to a gateway meets the fakes' seeded chaos mode (FakeGateway.chaos): with
  probability ``--fault-rate`` a 5xx without acceptance, a reset before acceptance, a reset AFTER
  acceptance (the ambiguous case), or a brief refusal of connections;
- some recipients are refused by the gateway (a permanent error: must fail after one call);
- a worker is killed with SIGKILL five times, at spread-out moments (and restarted);
- Redis is killed (SIGKILL) once and restarted on the same port, from its AOF, a few seconds later;
  the producer keeps publishing through it (a failed publish is retried once Redis is back, unless
  its ``queued`` record already exists: then the sweeper must republish it);
- a few sends are published with an ETA longer than the visibility timeout (redelivered by Redis).

Then it waits, with a deadline, until every message has a final record (accepted, delivered, failed,
unknown, expired) and the broker holds no more send tasks, and judges from the fakes' OWN logs (what
each gateway accepted and every call it got) and our records. It prints a table and one JSON line, and
exits 1 on any violation, printing each violating message id with its record history and gateway calls.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from importlib.metadata import version
from typing import Any

import redis

from smsdispatch.config import Settings, load_settings
from smsdispatch.devtools.fakes.base import RequestRecord
from smsdispatch.devtools.fakes.eskiz import FakeEskiz
from smsdispatch.devtools.fakes.smscx import FakeSmsCx
from smsdispatch.devtools.processes import BeatProcess, CeleryProcess, WorkerProcess
from smsdispatch.devtools.rabbitmq_server import PrivateRabbitMQ
from smsdispatch.devtools.redis_server import EmbeddedRedis, find_redis_server
from smsdispatch.devtools.sentinel import SentinelCluster
from smsdispatch.dispatch import message_id_for
from smsdispatch.gateways.smscx import idempotency_id
from smsdispatch.tasks import SEND_SMS, queue_names
from smsdispatch.worker import create_app

ESKIZ_EMAIL, ESKIZ_PASSWORD = "chaos@example.com", "chaos-password-never-logged"
SMSCX_API_KEY = "chaos-smscx-key"
TERMINAL = {"accepted", "delivered", "failed", "unknown", "expired"}
SCENARIOS = ("failover", "single", "sentinel", "rabbitmq")
#: How often each kind of chaos fault is drawn, relative to the others. A refusal closes the port for
#: 0.2-0.5 s and so fails every call in that window: it is drawn less often.
FAULT_WEIGHTS = {"http_5xx": 0.35, "reset_before": 0.25, "reset_after": 0.35, "refuse": 0.05}
#: Moments (as a share of the messages published) of the five worker kills and of the Redis restart.
KILL_AT = (0.10, 0.27, 0.45, 0.65, 0.85)
REDIS_RESTART_AT = 0.33
#: Scenario "single": production's Eskiz, faults spread evenly over 500s, resets before and after it
#: took the SMS, 429s (Retry-After 1 s) and answers after SLOW_SECONDS.
SINGLE_FAULT_WEIGHTS = {"http_5xx": 0.2, "reset_before": 0.2, "reset_after": 0.2, "http_429": 0.2, "slow": 0.2}
SINGLE_STATUSES = (500,)
SLOW_SECONDS = 2.0
#: Scenario "single": moments of the five worker kills and of the Redis restart, as a share of the
#: messages that have a final record, or the same share of the time a run exactly at THROUGHPUT_FLOOR
#: would take (the baseline's time / THROUGHPUT_FLOOR), whichever comes first: so they happen while
#: messages are worked off even in a run that hardly progresses. All in the first third: a killed
#: worker's messages come back only after the visibility timeout (~30 s here), and that wait should
#: overlap work still to do rather than be the run's tail (then it would measure the VT, not the faults).
SINGLE_KILL_AT = (0.05, 0.12, 0.19, 0.26, 0.33)
SINGLE_REDIS_RESTART_AT = 0.15
#: Scenario "single": threads per worker, as the shipped worker command has it (Dockerfile, compose).
SHIPPED_CONCURRENCY = 20
#: Scenario "single" fails when the faulty run's throughput is below this share of the baseline's.
THROUGHPUT_FLOOR = 0.40
#: Recipients each gateway refuses (a permanent error): a small fixed pool per gateway.
REJECTED = {"eskiz": [f"+99899{k:07d}" for k in range(1, 6)], "smscx": [f"+49152{k:08d}" for k in range(1, 6)]}


def settings_for(redis_url: str, eskiz: FakeEskiz, smscx: FakeSmsCx, run: str, *, visibility: int,
                 scenario: str = "failover") -> dict[str, str]:
    """SMSDISPATCH_* for workers, beat and the producer: short timings so the run is short, within
    config.py's cross-checks (lease >= 4 x HTTP total timeout, unset here: connect + read = 2 s; lease +
    backoff max < VT; ...)."""
    if scenario == "single":
        return single_settings_for(redis_url, eskiz, run, visibility=visibility)
    env = {
        "REDIS_URL": redis_url, "KEY_PREFIX": f"chaos{run}", "QUEUE": f"chaos{run}",
        # Failover on: a message moves to the other gateway after a provably-unsent error (503, refused)
        # or while a circuit is open; the judge counts acceptances across both gateways together.
        "ROUTES": "998=eskiz|smscx", "DEFAULT_GATEWAY": "smscx|eskiz",
        "ESKIZ_BASE_URL": eskiz.base_url, "ESKIZ_EMAIL": ESKIZ_EMAIL, "ESKIZ_PASSWORD": ESKIZ_PASSWORD,
        "SMSCX_BASE_URL": smscx.base_url, "SMSCX_API_KEY": SMSCX_API_KEY,
        "HTTP_CONNECT_TIMEOUT": "1", "HTTP_READ_TIMEOUT": "1", "CLAIM_LEASE": "8",
        "VISIBILITY_TIMEOUT": str(visibility), "MAX_ATTEMPTS": "8",
        "BACKOFF_BASE": "0.5", "BACKOFF_MAX": "5", "BACKOFF_JITTER": "full",
        "QUEUED_GRACE": "10", "SWEEP_INTERVAL": "1",
        "REMINDER_HORIZON": "5", "REMINDER_POLL_INTERVAL": "1",
        "STATUS_POLL_INTERVAL": "20", "BALANCE_POLL_INTERVAL": "30",
        # Circuit breakers stay on, but tuned so that 20% random faults do not keep them open: only
        # a burst (a refusal window, a dead Redis) opens one, for 2 s.
        "CIRCUIT_MIN_CALLS": "50", "CIRCUIT_WINDOW": "5", "CIRCUIT_COOLOFF": "2",
    }
    return {f"SMSDISPATCH_{k}": v for k, v in env.items()}


def single_settings_for(redis_url: str, eskiz: FakeEskiz, run: str, *, visibility: int) -> dict[str, str]:
    """Scenario "single": Eskiz alone, the circuit breaker and MAX_ATTEMPTS as shipped (no CIRCUIT_*,
    no MAX_ATTEMPTS: the defaults production ran with); everything else short for a CI run. The read
    timeout is above the fakes' 2 s slow answers (a slow answer is heard, not ambiguous)."""
    connect, read = 1.0, 3.0
    env = {
        "REDIS_URL": redis_url, "KEY_PREFIX": f"chaos{run}", "QUEUE": f"chaos{run}",
        "DEFAULT_GATEWAY": "eskiz",
        "ESKIZ_BASE_URL": eskiz.base_url, "ESKIZ_EMAIL": ESKIZ_EMAIL, "ESKIZ_PASSWORD": ESKIZ_PASSWORD,
        "HTTP_CONNECT_TIMEOUT": f"{connect:g}", "HTTP_READ_TIMEOUT": f"{read:g}",
        "CLAIM_LEASE": f"{4 * (connect + read):g}",          # config.py: >= 4 x (connect + read)
        "VISIBILITY_TIMEOUT": str(visibility),
        "BACKOFF_BASE": "0.5", "BACKOFF_MAX": "5", "BACKOFF_JITTER": "full",
        "QUEUED_GRACE": "10", "SWEEP_INTERVAL": "1",
        "REMINDER_HORIZON": "5", "REMINDER_POLL_INTERVAL": "1",
        "STATUS_POLL_INTERVAL": "20", "BALANCE_POLL_INTERVAL": "30",
    }
    if "http_total_timeout" in Settings.model_fields:     # a newer setting: one call's whole budget
        env["HTTP_TOTAL_TIMEOUT"] = f"{connect + read:g}"    # (CLAIM_LEASE >= 4 x HTTP_TOTAL_TIMEOUT)
    return {f"SMSDISPATCH_{k}": v for k, v in env.items()}


# --------------------------------------------------------------------------- supervision


class Supervised:
    """One celery process kept running by a thread: started, awaited (it blocks on the process's exit,
    no polling), and restarted whenever it exits, like compose's `restart: unless-stopped`. An exit
    that `kill()` did not cause is a self-exit: counted, and its log kept for the report."""

    def __init__(self, name: str, factory: Callable[[], CeleryProcess], timeline: Timeline) -> None:
        self.name, self.factory, self.timeline = name, factory, timeline
        self.generations: list[CeleryProcess] = []
        self.self_exits: list[dict[str, Any]] = []
        self.start_failures: list[str] = []
        self.kills = 0
        self.ready = threading.Event()
        self._lock = threading.Lock()
        self._current: CeleryProcess | None = None
        self._deliberate = False
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"supervise-{name}", daemon=True)

    def start(self, timeout: float = 120.0) -> Supervised:
        self._thread.start()
        if not self.ready.wait(timeout):
            raise RuntimeError(f"{self.name} did not become ready:\n" + "\n".join(self.start_failures[-1:]))
        return self

    def _run(self) -> None:
        while not self._stopping:
            try:
                proc = self.factory()       # blocks until the process logs that it is ready
            except RuntimeError as e:       # it exited or never got ready: try again, as compose would
                self.start_failures.append(str(e)[-3000:])
                self.timeline.add(f"{self.name}: start failed; starting again")
                time.sleep(1.0)             # compose's restart back-off; nothing to wait on
                continue
            with self._lock:
                self._current, self._deliberate = proc, False
                self.generations.append(proc)
            if self._stopping:
                proc.stop()
                return
            self.ready.set()
            code = proc.proc.wait()
            self.ready.clear()
            with self._lock:
                deliberate = self._deliberate
            if self._stopping:
                return
            if not deliberate:
                self.self_exits.append({"name": self.name, "at": self.timeline.now(), "code": code, "proc": proc})
                self.timeline.add(f"{self.name}: EXITED by itself (exit code {code}); restarting")
            else:
                self.timeline.add(f"{self.name}: restarting after SIGKILL")

    def kill(self) -> bool:
        """SIGKILL the running process once it is up (a kill asked for during a restart waits for the
        new process); the supervisor restarts it."""
        deadline = time.monotonic() + 120
        while self.ready.wait(max(0.0, deadline - time.monotonic())):
            with self._lock:
                proc = self._current
                alive = self.ready.is_set() and proc is not None and proc.proc.poll() is None
                if alive:
                    self.ready.clear()          # a second kill waits for the next process
                    self._deliberate = True
                    self.kills += 1
            if not alive:                       # it exited on its own a moment ago: let the supervisor see it
                time.sleep(0.05)
                continue
            assert proc is not None
            self.timeline.add(f"{self.name}: killing with SIGKILL (pid {proc.proc.pid})")
            proc.kill()
            return True
        return False

    def stop(self) -> None:
        self._stopping = True
        with self._lock:
            proc = self._current
        if proc is not None:
            proc.stop(timeout=20)
        self._thread.join(timeout=90)

    def lines(self) -> list[str]:
        return [line for proc in self.generations for line in proc.lines]


class Timeline:
    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.events: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 1)

    def add(self, what: str) -> None:
        with self._lock:
            self.events.append((self.now(), what))
        print(f"  [{self.now():7.1f}s] {what}", flush=True)


# --------------------------------------------------------------------------- the messages


@dataclass
class Message:
    index: int
    key: str
    message_id: str
    gateway: str                 # where it must go: by route, or named per call
    kwargs: dict[str, Any]
    rejected: bool = False       # to a recipient the gateway refuses: must end failed after one call
    eta_delay: float | None = None   # published with an ETA this many seconds ahead (> visibility timeout)
    task_id: str | None = None

    @property
    def ref(self) -> str:
        """How SMS.CX's own log knows this message: its idempotencyId (Eskiz knows it by our id, as
        user_sms_id). With failover a message of either route may reach either gateway."""
        return idempotency_id("sms:" + self.message_id)


def plan_messages(n: int, run: str, rng: random.Random, *, reject_share: float, eta_share: float,
                  visibility: int, scenario: str = "failover") -> list[Message]:
    out = []
    for i in range(n):
        gateway = "eskiz" if i % 2 == 0 or scenario == "single" else "smscx"
        rejected = rng.random() < reject_share
        if rejected:
            to = rng.choice(REJECTED[gateway])
        else:
            to = f"+99890{i:07d}" if gateway == "eskiz" else f"+49151{i:08d}"
        key = f"chaos-{run}-{i}"
        kwargs: dict[str, Any] = {"to": to, "text": f"chaos {run} message {i}", "idempotency_key": key}
        if i % 10 == 5:            # named per call rather than routed
            kwargs["gateway"] = gateway
        eta = visibility + rng.uniform(5, 15) if rng.random() < eta_share else None
        out.append(Message(i, key, message_id_for(key, ""), gateway, kwargs, rejected, eta))
    return out


# --------------------------------------------------------------------------- the run


@dataclass
class Stats:
    publish_failures: int = 0          # apply_async raised (Redis down)
    publish_retried: int = 0           # ... and had no record: published again once Redis was back
    left_to_sweeper: int = 0           # ... but its `queued` record existed: the sweeper must republish
    publish_errors: Counter = field(default_factory=Counter)
    redis_restarts: int = 0
    redis_down_seconds: float = 0.0
    sending_seconds: float = 0.0
    draining_seconds: float = 0.0
    drained: bool = False
    first_publish_at: float = 0.0      # time.time() of the first publish (records use time.time() too)
    ended_at: float = 0.0              # time.time() when the wait for final records ended


class ChaosRun:
    """One run: set-up, producing, the faults, the wait for the end. `faults=False` is scenario
    single's baseline: the same set-up and messages with no chaos, no kills and no Redis restart."""

    def __init__(self, args: argparse.Namespace, *, faults: bool = True, label: str = "",
                 budget_seconds: float | None = None) -> None:
        self.args = args
        self.faults = faults
        self.budget_seconds = budget_seconds   # single: the faulty run's time at THROUGHPUT_FLOOR
        self.label = label or args.scenario
        self.run = uuid.uuid4().hex[:8]
        self.rng = random.Random(args.seed)
        self.timeline = Timeline()
        self.stats = Stats()
        self.redis_up = threading.Event()
        self.redis_up.set()
        self.tmp = tempfile.mkdtemp(prefix="smsdispatch-chaos-")
        self.redis: EmbeddedRedis | None = None
        self.eskiz: FakeEskiz | None = None
        self.smscx: FakeSmsCx | None = None
        self.procs: list[Supervised] = []
        self.messages: list[Message] = []
        self.background: list[threading.Thread] = []
        self.calls: dict[str, list[tuple[float, str, str]]] = {}
        self.done = threading.Event()      # the wait for the end is over: the progress watch stops
        self._stats_lock = threading.Lock()   # producer threads share the publish counters
        self._locations: dict[str, str] | None = None

    # --- set-up and tear-down -----------------------------------------------------------------

    def start(self) -> None:
        a = self.args
        redis_url = self.start_redis()
        self.eskiz = FakeEskiz(email=ESKIZ_EMAIL, password=ESKIZ_PASSWORD, balance=10**12).start()
        self.smscx = FakeSmsCx(api_key=SMSCX_API_KEY, balance=10**9).start()
        for gateway, fake in (("eskiz", self.eskiz), ("smscx", self.smscx)):
            # both gateways refuse every refused recipient: with failover either may get it
            fake.reject_recipients(*REJECTED["eskiz"], *REJECTED["smscx"])
            if not self.faults:
                continue
            if a.scenario == "single":      # SMS.CX is started but configured nowhere: it must get no call
                fake.chaos(a.fault_rate, seed=f"{a.seed}-{gateway}", kinds=SINGLE_FAULT_WEIGHTS,
                           statuses=SINGLE_STATUSES, slow_seconds=SLOW_SECONDS)
            else:
                fake.chaos(a.fault_rate, seed=f"{a.seed}-{gateway}", kinds=FAULT_WEIGHTS)
        self.settings = settings_for(redis_url, self.eskiz, self.smscx, self.run, visibility=a.visibility,
                                     scenario=a.scenario) | self.more_settings()
        values = {k.removeprefix("SMSDISPATCH_").lower(): v for k, v in self.settings.items()}
        self.app = create_app(load_settings(**values))
        self.send_sms = self.app.tasks[SEND_SMS]
        self.dispatcher = self.app.runtime.dispatcher
        self.messages = plan_messages(a.messages, self.run, self.rng, reject_share=a.reject_share,
                                      eta_share=a.eta_share, visibility=a.visibility, scenario=a.scenario)
        workers = [Supervised(f"w{n}", lambda n=n: WorkerProcess(self.settings, concurrency=a.concurrency,
                                                                 name=f"w{n}", start_timeout=90),
                              self.timeline) for n in (1, 2)]
        beat = Supervised("beat", lambda: BeatProcess(self.settings, schedule_dir=self.tmp, start_timeout=90),
                          self.timeline)
        self.workers, self.beat = workers, beat
        for proc in [*workers, beat]:
            self.procs.append(proc.start())
        smscx = "unused" if a.scenario == "single" else self.smscx.base_url
        self.timeline.add(f"{self.label}: redis {redis_url} (AOF on), eskiz {self.eskiz.base_url}, smscx {smscx}, "
                          f"workers w1 w2 (threads x{a.concurrency}), beat: up")

    def start_redis(self) -> str:
        """The Redis of the run; returns its URL (scenario sentinel starts a Sentinel deployment instead)."""
        self.redis = EmbeddedRedis(appendonly=True).start()
        return self.redis.url

    def more_settings(self) -> dict[str, str]:
        """SMSDISPATCH_* a scenario adds to settings_for's."""
        return {}

    def stop_processes(self) -> None:
        """Stop workers and beat (SIGTERM, as compose does): their logs are then complete for the judge."""
        for proc in self.procs:
            proc.stop()

    def stop(self) -> None:
        self.stop_processes()
        for fake in (self.eskiz, self.smscx):
            if fake is not None:
                fake.stop()
        if self.redis is not None:
            self.redis.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # --- faults -------------------------------------------------------------------------------

    def in_background(self, target: Callable[[], Any], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self.background.append(thread)

    def kill_worker(self, n: int) -> None:
        self.in_background(lambda: self.workers[n % 2].kill(), f"kill-{n}")

    def restart_redis(self) -> None:
        def restart() -> None:
            assert self.redis is not None and self.redis.process is not None
            self.redis_up.clear()
            self.redis.process.kill()          # SIGKILL: no shutdown, no final AOF rewrite
            self.redis.process.wait()
            down = time.monotonic()
            self.timeline.add(f"redis: killed with SIGKILL; down for {self.args.redis_down:g}s")
            time.sleep(self.args.redis_down)   # the outage's length (nothing to wait for)
            self.redis.start(timeout=30)       # same port, same directory: it loads its AOF
            self.stats.redis_down_seconds = round(time.monotonic() - down, 1)
            self.stats.redis_restarts += 1
            self.redis_up.set()
            self.timeline.add(f"redis: restarted on port {self.redis.port} from its AOF "
                              f"(down {self.stats.redis_down_seconds}s)")
        self.in_background(restart, "redis-restart")

    # --- producing ----------------------------------------------------------------------------

    def publish(self, m: Message) -> None:
        """apply_async, surviving a dead Redis: on failure wait until Redis is back; then a message
        whose `queued` record exists is left to the sweeper (that is what it is for), one without a
        record is published again."""
        while True:
            try:
                eta = datetime.now(timezone.utc) + timedelta(seconds=m.eta_delay) if m.eta_delay else None
                m.task_id = self.send_sms.apply_async(kwargs=m.kwargs, eta=eta).id
                return
            except Exception as e:  # redis.RedisError, kombu.exceptions.OperationalError, ...
                with self._stats_lock:
                    self.stats.publish_failures += 1
                    self.stats.publish_errors[type(e).__name__] += 1
            self.redis_up.wait(timeout=60)
            record = self._record_after_outage(m.message_id)
            if record is not None:
                with self._stats_lock:
                    self.stats.left_to_sweeper += 1
                self.timeline.add(f"publish of {m.message_id} failed after its record was written: "
                                  f"left to the sweeper (record {record.get('status')})")
                return
            with self._stats_lock:
                self.stats.publish_retried += 1
            time.sleep(0.2)  # Redis may still be refusing (a restart in progress): a short back-off

    def _record_after_outage(self, message_id: str) -> dict | None:
        for _ in range(50):
            try:
                return self.dispatcher.records.get(message_id)
            except redis.RedisError:
                self.redis_up.wait(timeout=60)
                time.sleep(0.2)
        raise RuntimeError("Redis did not come back")

    def produce(self) -> None:
        """Publish every message: paced at --per-second, or (0) as fast as --producers threads can, each
        publishing every k-th message in order. Scenario failover kills workers and restarts Redis at
        shares of the messages PUBLISHED (here); scenario single at shares of the messages that have a
        FINAL record (watch_progress, in a thread)."""
        a, n = self.args, len(self.messages)
        by_publish = self.faults and a.scenario in ("failover", "rabbitmq")
        kills = {max(1, int(n * share)): k for k, share in enumerate(KILL_AT)} if by_publish else {}
        restart_at = max(1, int(n * REDIS_RESTART_AT)) if by_publish else -1
        started = time.monotonic()
        threads = 1 if a.per_second > 0 else max(1, a.producers)
        pace = f"at {a.per_second:g}/s" if a.per_second > 0 else f"as fast as {threads} producer threads can"
        self.timeline.add(f"{self.label}: sending {n} messages {pace} "
                          f"({sum(1 for m in self.messages if m.eta_delay)} with an ETA beyond the visibility "
                          f"timeout, {sum(1 for m in self.messages if m.rejected)} to refused recipients)")
        self.stats.first_publish_at = time.time()
        if self.faults and a.scenario == "single":
            self.in_background(self.watch_progress, "progress-faults")
        published = 0

        def publish_every(first: int) -> None:
            nonlocal published
            for i in range(first, n, threads):
                due = started + i / a.per_second if a.per_second > 0 else 0.0
                if due > time.monotonic():
                    time.sleep(due - time.monotonic())   # pacing, not synchronisation
                if i in kills:
                    self.kill_worker(kills[i])
                if i == restart_at:
                    self.restart_redis()
                self.publish(self.messages[i])
                with self._stats_lock:
                    published += 1
                    done = published
                if done < n and done % max(1, n // 10) == 0:
                    self.timeline.add(f"published {done}/{n}")
        producers = [threading.Thread(target=publish_every, args=(k,), name=f"producer-{k}", daemon=True)
                     for k in range(threads)]
        for thread in producers:
            thread.start()
        for thread in producers:
            thread.join()
        self.stats.sending_seconds = round(time.monotonic() - started, 1)
        self.timeline.add(f"published {n}/{n} in {self.stats.sending_seconds}s")
        if by_publish:
            for thread in self.background:   # the kills and the restart have all happened
                thread.join()

    def watch_progress(self) -> None:
        """Scenario single: kill a worker, or restart Redis, once the share of messages with a final
        record reaches each moment of SINGLE_KILL_AT / SINGLE_REDIS_RESTART_AT, or once that share of
        `budget_seconds` has passed since the first publish, whichever comes first. The progress lives
        in Redis, with no event to wait on: this polls twice a second, until every moment has come or
        the wait for the end is over."""
        n, budget = len(self.messages), self.budget_seconds
        due: list[tuple[float, str, Callable[[], None]]] = sorted(
            [(share, f"kill {k + 1}", lambda k=k: self.kill_worker(k)) for k, share in enumerate(SINGLE_KILL_AT)]
            + [(SINGLE_REDIS_RESTART_AT, "Redis restart", self.restart_redis)], key=lambda d: d[0])
        while due and not self.done.is_set():
            try:
                final = sum(1 for s in self.statuses().values() if s in TERMINAL)
            except redis.RedisError:          # Redis is being restarted: wait until it is back
                self.redis_up.wait(timeout=60)
                continue
            since = time.time() - self.stats.first_publish_at
            while due and (final >= due[0][0] * n or (budget is not None and since >= due[0][0] * budget)):
                share, what, action = due.pop(0)
                why = f">= {share:.0%} of the messages" if final >= share * n else \
                    f"{since:.0f}s after the first publish: {share:.0%} of {budget:.0f}s, the time at the floor"
                self.timeline.add(f"{final}/{n} messages final ({why}): {what}")
                action()
            self.done.wait(0.5)

    # --- waiting for the end ------------------------------------------------------------------

    def statuses(self) -> dict[str, str | None]:
        r, keys = self.dispatcher.records.redis, self.dispatcher.keys
        out: dict[str, str | None] = {}
        for start in range(0, len(self.messages), 2000):
            chunk = self.messages[start:start + 2000]
            pipe = r.pipeline(transaction=False)
            for m in chunk:
                pipe.hget(keys.message(m.message_id), "status")
            for m, status in zip(chunk, pipe.execute(), strict=True):
                out[m.message_id] = status.decode() if status else None
        return out

    def send_tasks_in_broker(self) -> tuple[int, int]:
        """(queued, unacknowledged) send_sms task messages in the broker: ETA copies held by workers,
        redeliveries and retries still to run. Zero of both: nothing can call a gateway any more."""
        r, queue = self.dispatcher.records.redis, self.settings["SMSDISPATCH_QUEUE"]
        queued = 0
        for name in _broker_lists(queue):
            queued += sum(1 for raw in r.lrange(name, 0, -1) if _task_name(raw) == SEND_SMS)
        unacked = sum(1 for raw in r.hvals("unacked") if _task_name(raw, wrapped=True) == SEND_SMS)
        return queued, unacked

    def broker_locations(self) -> dict[str, str]:
        """Task id -> where its send_sms message is in the broker ("queued", "unacked"), read once (for
        the report on violations, after the workers stopped and gave back what they held)."""
        if self._locations is None:
            r, queue = self.dispatcher.records.redis, self.settings["SMSDISPATCH_QUEUE"]
            found: dict[str, str] = {}
            for name in _broker_lists(queue):
                for raw in r.lrange(name, 0, -1):
                    found[_task_id(raw) or "?"] = "queued"
            for raw in r.hvals("unacked"):
                found[_task_id(raw, wrapped=True) or "?"] = "unacked"
            self._locations = found
        return self._locations

    def drain(self) -> dict[str, str | None]:
        """Wait (bounded) until every record is final and the broker holds no send task. State lives in
        another process (Redis) with no event to wait on, so this polls once a second."""
        started = time.monotonic()
        deadline = started + self.args.deadline
        last_report = 0.0
        while True:
            try:
                statuses = self.statuses()
                open_ = sum(1 for s in statuses.values() if s not in TERMINAL)
                queued, unacked = self.send_tasks_in_broker() if open_ == 0 else (-1, -1)
            except redis.RedisError:           # scenario single restarts Redis while this waits
                if time.monotonic() > deadline:
                    raise
                self.redis_up.wait(timeout=60)
                continue
            if open_ == 0 and queued == 0 and unacked == 0:
                self.stats.drained = True
                break
            if time.monotonic() > deadline:
                self.timeline.add(f"deadline: {open_} records not final, {queued} queued / {unacked} unacked "
                                  f"send tasks")
                break
            if time.monotonic() - last_report >= 10:
                last_report = time.monotonic()
                hist = Counter(s or "none" for s in statuses.values())
                self.timeline.add(f"waiting: {open_} not final {dict(hist)}"
                                  + (f"; broker: {queued} queued, {unacked} unacked send tasks" if open_ == 0 else ""))
            time.sleep(1.0)
        self.stats.ended_at = time.time()
        self.done.set()
        for thread in self.background:        # a kill or restart still under way finishes first
            thread.join()
        statuses = self.statuses()
        self.stats.draining_seconds = round(time.monotonic() - started, 1)
        self.timeline.add(f"drained in {self.stats.draining_seconds}s" if self.stats.drained
                          else "NOT drained before the deadline")
        return statuses


def _broker_lists(queue: str) -> list[str]:
    """Every Redis list a send_sms message can wait in: the send and retry queues, each with kombu's
    lists per priority step."""
    return [f"{q}{suffix}" for q in queue_names(queue)[:2] for suffix in ("", *(f"\x06\x16{p}" for p in (3, 6, 9)))]


def _header(raw: bytes, name: str, *, wrapped: bool = False) -> str | None:
    """A header of a kombu message as Redis holds it (`wrapped`: kombu's unacked entry, [message, ...])."""
    try:
        payload = json.loads(raw)
        message = payload[0] if wrapped else payload
        if isinstance(message, str):
            message = json.loads(message)
        return message.get("headers", {}).get(name)
    except (ValueError, TypeError, AttributeError, IndexError, KeyError):
        return None


def _task_id(raw: bytes, *, wrapped: bool = False) -> str | None:
    return _header(raw, "id", wrapped=wrapped)


def _task_name(raw: bytes, *, wrapped: bool = False) -> str | None:
    return _header(raw, "task", wrapped=wrapped)


# --------------------------------------------------------------------------- the verdict


@dataclass
class Verdict:
    rows: list[tuple[str, Any, bool]]       # (label, value, must be 0)
    violations: dict[str, list[str]]        # kind -> message ids
    summary: dict[str, Any]
    details: dict[str, Any] = field(default_factory=dict)   # for the report, not the JSON line


def _permanent(status: int | None) -> bool:
    return status is not None and 400 <= status < 500 and status not in (401, 408, 429)


def _heard(r: RequestRecord, answer_within: float) -> bool:
    """The client got this answer: it went out whole (no reset; a "refuse" fault answers normally and
    only then closes the port) well within the time the client waits for one (the read timeout, or the
    total deadline if shorter; an answer written after the client gave up was never heard: a later call
    is no retry of a permanent error). Answers written between 0.8 and 1 x that time count as not heard."""
    return r.fault in (None, "refuse", "slow") and r.answered_at is not None and \
        r.answered_at - r.received_at < 0.8 * answer_within


@dataclass
class Finals:
    """What the records say beyond the status, per run: when each message got its final record (the
    first history entry accepted/delivered/failed/unknown/expired), how often it waited for an open
    circuit, and how it failed."""
    final_at: dict[str, float]           # message id -> time.time() of its first final entry
    circuit_waits: int = 0               # history entries "... circuit open ..." (runs skipped for it)
    circuit_wait_messages: int = 0       # messages with at least one
    errors: Counter = field(default_factory=Counter)   # error code of failed/unknown messages
    attempts: int = 0                    # gateway send attempts, all messages (record `attempts`)


def read_finals(run: ChaosRun) -> Finals:
    r, keys = run.dispatcher.records.redis, run.dispatcher.keys
    out = Finals({})
    for start in range(0, len(run.messages), 1000):
        chunk = run.messages[start:start + 1000]
        pipe = r.pipeline(transaction=False)
        for m in chunk:
            pipe.lrange(keys.history(m.message_id), 0, -1)
            pipe.hmget(keys.message(m.message_id), "status", "error", "attempts")
        answers = pipe.execute()
        for k, m in enumerate(chunk):
            history = [json.loads(x) for x in answers[2 * k]]
            status, error, attempts = (v.decode() if v else None for v in answers[2 * k + 1])
            final = next((h["at"] for h in history if h.get("status") in TERMINAL), None)
            if final is not None:
                out.final_at[m.message_id] = float(final)
            waits = sum(1 for h in history if "circuit open" in str(h.get("note", "")))
            out.circuit_waits += waits
            out.circuit_wait_messages += waits > 0
            if status in ("failed", "unknown"):
                out.errors[json.loads(error).get("code", "?") if error else "?"] += 1
            out.attempts += int(attempts or 0)
    return out


def throughput(run: ChaosRun, accepted_messages: int, finals: Finals) -> tuple[float, float]:
    """(accepted messages per second, seconds) from the first publish to the moment every message had
    a final record; for a run that did not drain, the rate so far (to the end of its wait)."""
    end = max(finals.final_at.values(), default=run.stats.ended_at) if run.stats.drained else run.stats.ended_at
    seconds = max(1e-3, end - run.stats.first_publish_at)
    return accepted_messages / seconds, seconds


#: A process that exits by itself more often than this in one run is in a crash loop (beat, under
#: Sentinel, once exited at every tick, restarted 87 times, and the run still passed): the run fails.
CRASH_LOOP = 3


def judge(run: ChaosRun, statuses: dict[str, str | None], elapsed: float) -> Verdict:
    eskiz, smscx = run.eskiz, run.smscx
    s = run.dispatcher.settings
    answer_within = min(s.http_read_timeout, s.http_total_timeout or s.http_read_timeout)
    assert eskiz is not None and smscx is not None
    by_id = {m.message_id: m for m in run.messages}
    by_ref = {m.ref: m for m in run.messages}

    # What the gateways themselves say they accepted.
    accepted: Counter[str] = Counter()
    unattributed: list[str] = []
    for gateway, found in [("eskiz", [(by_id.get(a.client_ref or ""), a.client_ref) for a in eskiz.accepted]),
                           ("smscx", [(by_ref.get(a.call_ref or ""), a.call_ref) for a in smscx.accepted])]:
        for m, ref in found:
            if m is None:
                unattributed.append(f"{gateway}:{ref}")
            else:
                accepted[m.message_id] += 1

    # Every send call each gateway got, per message, in order, and whether it answered a permanent error.
    calls: dict[str, list[tuple[float, str, str]]] = defaultdict(list)
    for r in eskiz.send_calls():
        for ref in eskiz.carried(r):
            m = by_id.get(ref)
            if m:
                perm = _heard(r, answer_within) and _permanent(r.status)
                calls[m.message_id].append((r.received_at, "eskiz", _call_word(r, perm)))
    for r in smscx.requests_log:
        if r.method == "POST" and r.path == smscx.send_path:
            m = by_ref.get(str(r.fields.get("idempotencyId")))
            if m:
                refused = r.status == 200 and any(str(n).lstrip("+") in smscx.rejected for n in r.fields.get("to") or [])
                perm = _heard(r, answer_within) and (_permanent(r.status) or refused)
                calls[m.message_id].append((r.received_at, "smscx", _call_word(r, perm)))
    retries_after_permanent: dict[str, int] = {}
    permanent_answered = unheard = 0
    for mid, seq in calls.items():
        seq.sort()
        words = [w for _, _, w in seq]
        first = next((k for k, w in enumerate(words) if w.startswith("PERMANENT")), None)
        permanent_answered += first is not None
        unheard += any(w.startswith("fault reset_after") for w in words)
        if first is not None and first + 1 < len(words):
            retries_after_permanent[mid] = len(words) - first - 1

    # Not final, the rarest statuses first: the report shows 10 per kind, and a lone `queued` among
    # thousands of `retrying` is the one worth reading.
    open_counts = Counter(s for s in statuses.values() if s not in TERMINAL)
    violations: dict[str, list[str]] = {
        "not final": sorted((mid for mid, s in statuses.items() if s not in TERMINAL),
                            key=lambda mid: open_counts[statuses[mid]]),
        "duplicates": [mid for mid, k in accepted.items() if k > 1],
        "lost": [m.message_id for m in run.messages
                 if accepted[m.message_id] == 0 and statuses.get(m.message_id) not in ("failed", "unknown")],
        "failed but sent": [m.message_id for m in run.messages
                            if accepted[m.message_id] >= 1 and statuses.get(m.message_id) == "failed"],
        "refused recipient accepted": [m.message_id for m in run.messages if m.rejected and accepted[m.message_id]],
        "retries of permanent errors": sorted(retries_after_permanent),
    }
    per_message = Counter(accepted[m.message_id] for m in run.messages)
    exactly_once_violations = sum(1 for m in run.messages if statuses.get(m.message_id) not in ("failed", "unknown")
                                  and accepted[m.message_id] != 1)
    status_hist = Counter(statuses.get(m.message_id) or "none" for m in run.messages)
    faults = {"eskiz": eskiz.chaos_counts, "smscx": smscx.chaos_counts}
    send_calls = {"eskiz": len(eskiz.send_calls()), "smscx": smscx.count(smscx.send_path, "POST")}
    worker_lines = [line for w in run.workers for line in w.lines()]
    sweeps = sum(1 for line in worker_lines if "stuck in" in line and "published again" in line)
    # Beat's tasks carry an expiry; one that waited longer than that in the queue is discarded unrun.
    expired = Counter(hit.group(1) for line in worker_lines
                      if (hit := re.search(r"Discarding revoked task: smsdispatch\.(\w+)", line)))
    reconciled = sum(1 for line in worker_lines if "reconciled: eskiz had accepted it" in line)
    failovers = sum(1 for line in worker_lines if "failing over to" in line)
    eta_ids = {m.task_id for m in run.messages if m.eta_delay and m.task_id}
    rx = re.compile(r"Task smsdispatch\.send_sms\[([0-9a-f-]+)\] received")
    received = [hit.group(1) for line in worker_lines if (hit := rx.search(line))]
    eta_deliveries = sum(1 for task_id in received if task_id in eta_ids)
    # Every execution of send_sms starts with a "received" line (a retry is a new delivery of the same
    # task id): executions per message show how often a message ran without being sent (spinning).
    retries = sum(1 for line in worker_lines if re.search(r"Task smsdispatch\.send_sms\[[0-9a-f-]+\] retry:", line))
    circuit_opened = sum(1 for line in worker_lines if "circuit of " in line and " opened" in line)
    finals = read_finals(run)
    accepted_messages = sum(1 for m in run.messages if accepted[m.message_id] >= 1)
    per_second, measured = throughput(run, accepted_messages, finals)
    per_message_runs = Counter(received)
    n = max(1, len(run.messages))
    self_exits = [e for p in run.procs for e in p.self_exits]
    s = run.stats
    rows: list[tuple[str, Any, bool]] = [
        ("scenario", f"{run.args.scenario}, {run.label}" if run.label != run.args.scenario else run.args.scenario,
         False),
        ("messages", len(run.messages), False),
        ("messages without a final record (accepted/delivered/failed/unknown/expired)",
         len(violations["not final"]), True),
        ("duplicates (messages accepted more than once, both gateways together)", len(violations["duplicates"]), True),
        ("acceptances per message: max (must be <= 1)", max(per_message) if per_message else 0, False),
        ("messages not failed/unknown without exactly 1 acceptance", exactly_once_violations, True),
        ("  of which lost (no acceptance, record says sent or not final)", len(violations["lost"]), True),
        ("messages recorded failed that a gateway accepted", len(violations["failed but sent"]), True),
        ("refused recipients accepted", len(violations["refused recipient accepted"]), True),
        ("acceptances no message of this run explains", len(unattributed), True),
        ("retries of permanent errors (calls after the gateway refused it)", sum(retries_after_permanent.values()),
         True),
        ("acceptances per message (histogram)", dict(sorted(per_message.items())), False),
        ("statuses", dict(status_hist.most_common()), False),
        ("messages to refused recipients / that got a permanent error answered",
         f"{sum(1 for m in run.messages if m.rejected)} / {permanent_answered}", False),
        ("messages accepted without the client hearing it (reset after accepting)", unheard, False),
        ("  reconciled by an Eskiz lookup: found, not resent (worker log)", reconciled, False),
        ("failovers to the other gateway after a provably-unsent error (worker log)", failovers, False),
        ("gateway send calls", send_calls, False),
        ("faults injected (eskiz)", faults["eskiz"], False),
        ("faults injected (smscx)", faults["smscx"], False),
        ("worker kills (SIGKILL), each restarted", sum(w.kills for w in run.workers), False),
        ("self-exits restarted (exits nobody asked for)", len(self_exits), False),
        ("  by process", dict(Counter(e["name"] for e in self_exits)), False),
        (f"  processes in a crash loop (more than {CRASH_LOOP} exits nobody asked for)",
         sum(1 for c in Counter(e["name"] for e in self_exits).values() if c > CRASH_LOOP), True),
        ("RabbitMQ restarts (SIGKILL)" if run.args.scenario == "rabbitmq" else "Redis restarts (SIGKILL, AOF on)", s.redis_restarts, False),
        ("RabbitMQ down: kill -> takes connections again (s)" if run.args.scenario == "rabbitmq"
         else "Redis down (s)", s.redis_down_seconds, False),
        ("publish failures (retried / left to the sweeper)",
         f"{s.publish_failures} ({s.publish_retried} / {s.left_to_sweeper})", False),
        ("sweeper republishes (worker log)", sweeps, False),
        ("beat tasks discarded unrun, expired in the queue (worker log)", dict(expired), False),
        ("ETA sends beyond the visibility timeout / their deliveries",
         f"{len(eta_ids)} / {eta_deliveries}", False),
        ("failed with retries_exhausted / unknown (record error codes)",
         f"{finals.errors.get('retries_exhausted', 0)} / {status_hist.get('unknown', 0)}", False),
        ("send_sms executions per message (worker log 'received' lines): mean / max",
         f"{len(received) / n:.2f} / {max(per_message_runs.values(), default=0)}", False),
        ("  retries (worker log 'retry:' lines)", retries, False),
        ("gateway send attempts per message (records)", f"{finals.attempts / n:.2f}", False),
        ("circuit opened (worker log) / runs skipped for an open circuit (record history, messages)",
         f"{circuit_opened} / {finals.circuit_waits} ({finals.circuit_wait_messages})", False),
        ("throughput: accepted messages/s, first publish to the last final record"
         + ("" if s.drained else " (NOT drained: up to the deadline)"),
         f"{per_second:.1f} ({accepted_messages} in {measured:.1f}s)", False),
        ("elapsed (s): total / sending / draining", f"{elapsed:.1f} / {s.sending_seconds} / {s.draining_seconds}",
         False),
    ]
    summary = {
        "messages": len(run.messages), "not_final": len(violations["not final"]),
        "duplicates": len(violations["duplicates"]), "max_acceptances": max(per_message) if per_message else 0,
        "exactly_once_violations": exactly_once_violations, "lost": len(violations["lost"]),
        "failed_but_sent": len(violations["failed but sent"]),
        "refused_recipient_accepted": len(violations["refused recipient accepted"]),
        "unattributed_acceptances": len(unattributed),
        "retries_of_permanent_errors": sum(retries_after_permanent.values()),
        "acceptances_histogram": {str(k): v for k, v in sorted(per_message.items())},
        "statuses": dict(status_hist), "rejected_recipients": sum(1 for m in run.messages if m.rejected),
        "permanent_errors_answered": permanent_answered, "accepted_unheard": unheard,
        "reconciled_by_lookup": reconciled, "failovers": failovers,
        "send_calls": send_calls, "faults": faults,
        "worker_kills": sum(w.kills for w in run.workers), "self_exits_restarted": len(self_exits),
        "self_exits_by_process": dict(Counter(e["name"] for e in self_exits)),
        "redis_restarts": s.redis_restarts, "redis_down_seconds": s.redis_down_seconds,
        "publish_failures": s.publish_failures, "publish_retried": s.publish_retried,
        "publish_left_to_sweeper": s.left_to_sweeper, "sweeper_republishes": sweeps,
        "beat_tasks_expired": dict(expired),
        "eta_sends": len(eta_ids), "eta_deliveries": eta_deliveries, "drained": s.drained,
        "elapsed_s": round(elapsed, 1), "sending_s": s.sending_seconds, "draining_s": s.draining_seconds,
        "seed": run.args.seed, "fault_rate": run.args.fault_rate if run.faults else 0.0,
        "visibility_timeout": run.args.visibility,
        "scenario": run.args.scenario, "phase": run.label,
        "retries_exhausted": finals.errors.get("retries_exhausted", 0), "unknown": status_hist.get("unknown", 0),
        "failure_codes": dict(finals.errors),
        "executions": len(received), "executions_per_message": round(len(received) / n, 2),
        "max_executions_of_a_message": max(per_message_runs.values(), default=0), "task_retries": retries,
        "attempts_per_message": round(finals.attempts / n, 2), "circuit_opened": circuit_opened,
        "circuit_waits": finals.circuit_waits, "circuit_wait_messages": finals.circuit_wait_messages,
        "accepted_messages": accepted_messages, "throughput_per_s": round(per_second, 2),
        "throughput_seconds": round(measured, 1),
    }
    summary_private = {"final_statuses": {m.message_id: statuses.get(m.message_id) for m in run.messages
                                          if m.rejected}}
    if unattributed:
        violations["unattributed acceptances"] = unattributed
    run.calls = calls
    return Verdict(rows, violations, summary, summary_private)


def _call_word(r: RequestRecord, permanent: bool) -> str:
    took = f" answered in {r.answered_at - r.received_at:.3f}s" if r.answered_at is not None else " not answered"
    if permanent:
        return f"PERMANENT {r.status}{took}"
    if r.fault:
        return f"fault {r.fault}" + (f" {r.status}" if r.status else "") + took
    return f"{r.status}{took}"


# --------------------------------------------------------------------------- report


def print_report(run: ChaosRun, verdict: Verdict) -> bool:
    ok = all(value == 0 for _, value, must in verdict.rows if must) and not any(verdict.violations.values()) \
        and run.stats.drained
    width = max(len(label) for label, _, _ in verdict.rows) + 2
    print()
    print(f"chaos run {run.run} ({run.label}): {'PASS' if ok else 'FAIL'}  (celery {version('celery')}, kombu {version('kombu')}, "
          f"redis-py {version('redis')}, {_redis_version()})")
    print("-" * (width + 40))
    for label, value, must in verdict.rows:
        mark = ("ok " if value == 0 else "BAD") if must else "   "
        shown = json.dumps(value) if isinstance(value, dict) else str(value)
        print(f"{mark} {label:<{width}} {shown}")
    print("-" * (width + 40))
    self_exits = [e for p in run.procs for e in p.self_exits]
    if self_exits:
        print("self-exits (the last lines each process logged before it exited):")
        for e in self_exits:
            print(f"  {e['name']} at {e['at']}s, exit code {e['code']}:")
            for line in _evidence(e["proc"].lines):
                print(f"    | {line[:220]}")
    if not run.stats.drained:
        print("the run did not drain before the deadline (see 'not final' below)")
    unheard = [m for m in run.messages if m.rejected and not any(
        w.startswith("PERMANENT") for _, _, w in run.calls.get(m.message_id, []))]
    for m in unheard[:5]:
        print(f"note: refused recipient, no refusal heard by the client in the gateway log: {m.message_id} "
              f"(status {verdict.details['final_statuses'].get(m.message_id)})")
        for at, gateway, word in run.calls.get(m.message_id, []):
            print(f"  gateway call: {gateway} at +{at - run.timeline.t0:.2f}s -> {word}")
    shown = 0
    for kind, ids in verdict.violations.items():
        for mid in ids[:10]:
            shown += 1
            _print_violation(run, kind, mid)
    if shown:
        print(f"({shown} violating messages shown, at most 10 per kind)")
    print(json.dumps({"chaos": verdict.summary | {"pass": ok}}, sort_keys=True))
    return ok


_NOTABLE = re.compile(r"CRITICAL/|Unrecoverable|Connection to broker lost|Restoring \d+ unacknowledged|"
                      r"Cannot connect to redis|consumer: ")


def _evidence(lines: list[str]) -> list[str]:
    """What an exited process logged last: its critical lines and what kombu said about the broker
    connection (not the traceback's frames), then its very last lines."""
    recent = lines[-3000:]
    notable = [line for line in recent[:-4] if _NOTABLE.search(line)][-8:]
    return notable + ["..."] + recent[-4:] if notable else recent[-12:]


def _print_violation(run: ChaosRun, kind: str, mid: str) -> None:
    records = run.dispatcher.records
    m = next((m for m in run.messages if m.message_id == mid), None)
    print(f"VIOLATION {kind}: message {mid}" + (f" (key {m.key}, {m.gateway}, rejected={m.rejected}, "
                                                 f"eta={m.eta_delay}, task {m.task_id})" if m else ""))
    try:
        record = records.get(mid) or {}
        print(f"  record: {json.dumps({k: record.get(k) for k in ('status', 'attempts', 'lookups', 'gateway', 'gateway_message_id', 'error', 'pinned_gateway', 'task_id')}, default=str)}")
        keys = run.dispatcher.keys
        claim = records.redis.hgetall(keys.idempotency(f"key:{m.key}")) if m else {}
        task_id = record.get("task_id")
        where = run.broker_locations().get(task_id, "not in the broker") if task_id else "-"
        print(f"  sweeper deadline: {records.redis.zscore(keys.pending(), mid)}; ledger: "
              f"{json.dumps({k.decode(): v.decode() for k, v in claim.items()})}; its task message: {where}")
        for h in records.history(mid):
            print(f"  history: {json.dumps(h, ensure_ascii=False)}")
    except redis.RedisError as e:
        print(f"  record unreadable: {e}")
    for at, gateway, word in run.calls.get(mid, []):
        print(f"  gateway call: {gateway} at +{at - run.timeline.t0:.2f}s -> {word}")


def _redis_version() -> str:
    try:
        out = subprocess.run([find_redis_server(), "--version"], capture_output=True, text=True, timeout=10).stdout
        return out.split()[2] if out else "redis ?"
    except Exception:
        return "redis ?"


def save_logs(run: ChaosRun, directory: str) -> None:
    os.makedirs(directory, exist_ok=True)
    for proc in run.procs:
        for n, gen in enumerate(proc.generations):
            with open(os.path.join(directory, f"{proc.name}.{n}.log"), "w") as f:
                f.write("\n".join(gen.lines) + "\n")
    if run.redis is not None:
        src = os.path.join(run.redis.dir, "redis.log")
        if os.path.exists(src):
            shutil.copy(src, os.path.join(directory, "redis.log"))
    with open(os.path.join(directory, "timeline.log"), "w") as f:
        f.write("\n".join(f"{t:7.1f}s {what}" for t, what in run.timeline.events) + "\n")
    print(f"logs written to {directory}")


# --------------------------------------------------------------------------- scenario sentinel

#: Scenario "sentinel": the primary is killed once this share of the messages has been published.
SENTINEL_KILL_AT = 0.50
#: ... with this many replicas, of which CLAIM_REPLICAS must hold every claim: one replica may be the
#: promoted one and the other still acknowledges, so sends need not wait for the old primary to rejoin.
SENTINEL_REPLICAS, SENTINEL_CLAIM_REPLICAS = 2, 1


class SentinelChaosRun(ChaosRun):
    """Scenario sentinel: Redis behind Sentinel (smsdispatch.devtools.sentinel.SentinelCluster: a primary,
    two replicas, three Sentinels), every worker, beat and the producer reaching it through the Sentinels
    only, claims durable on a replica (CLAIM_REPLICAS=1). The gateways and their faults are failover's;
    no worker is killed. At SENTINEL_KILL_AT of the messages published the primary is killed (SIGKILL)
    and not restarted until the Sentinels promoted a replica; then it is started again from its AOF, as
    a restart policy would, and the Sentinels make it a replica of the new primary."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.cluster: SentinelCluster | None = None
        self.kill_index = max(1, int(args.messages * SENTINEL_KILL_AT))
        self.failover: dict[str, float] = {}

    def start_redis(self) -> str:
        self.cluster = SentinelCluster(replicas=SENTINEL_REPLICAS).start()
        self.redis = self.cluster.primary
        return self.cluster.url

    def more_settings(self) -> dict[str, str]:
        assert self.cluster is not None
        return {"SMSDISPATCH_SENTINEL_MASTER": self.cluster.master,
                "SMSDISPATCH_CLAIM_REPLICAS": str(SENTINEL_CLAIM_REPLICAS)}

    def publish(self, m: Message) -> None:
        if m.index == self.kill_index and self.faults:
            self.in_background(self.fail_over, "sentinel-failover")
        super().publish(m)

    def fail_over(self) -> None:
        """Kill the primary; time the Sentinels' promotion and the first write a client of ours gets
        through; start the old primary again and time its return as a replica."""
        assert self.cluster is not None
        client = self.dispatcher.records.redis       # ours: finds the primary through the Sentinels
        self.redis_up.clear()
        old = self.cluster.kill_primary()
        killed = time.monotonic()
        self.failover["killed_at"] = killed
        self.timeline.add(f"redis: primary on port {old.port} killed with SIGKILL ({self.kill_index} of "
                          f"{len(self.messages)} messages published)")
        new = self.cluster.wait_for_failover(old, timeout=90)
        self.failover["promoted_s"] = time.monotonic() - killed
        while True:  # the first write through the Sentinels: polled, nothing to wait on
            try:
                client.set(f"chaos:{self.run}:failover-probe", "1", ex=600)
                break
            except redis.RedisError:
                if time.monotonic() - killed > 120:
                    raise
                time.sleep(0.01)
        self.failover["first_write_s"] = time.monotonic() - killed
        self.stats.redis_down_seconds = round(self.failover["first_write_s"], 1)
        self.stats.redis_restarts += 1
        self.redis_up.set()
        self.timeline.add(f"redis: the Sentinels promoted port {new.port} after {self.failover['promoted_s']:.1f}s; "
                          f"first write through them {self.failover['first_write_s']:.1f}s after the kill")
        old.start()                     # a restart policy: back from its AOF, a primary until the Sentinels say
        self.cluster.wait_for_replicas(SENTINEL_REPLICAS, timeout=120)
        self.failover["rejoined_s"] = time.monotonic() - killed
        self.timeline.add(f"redis: the old primary (port {old.port}) is a replica of port {new.port} again, "
                          f"{self.failover['rejoined_s']:.1f}s after the kill")

    def send_gap(self) -> tuple[float, float]:
        return _send_gap(self, self.failover.get("killed_at"))

    def stop(self) -> None:
        super().stop()
        if self.cluster is not None:
            self.cluster.stop()


def outage_scenario(run: SentinelChaosRun | RabbitMQChaosRun, name: str, figures: Callable[[float, float], tuple[bool, list, dict]],
                    node_logs: Callable[[str], None]) -> int:
    """A scenario with one outage (sentinel, rabbitmq) end to end: the run, the judge's verdict (as every
    scenario's) with the outage's own `figures(send gap, longest gap)` → (it happened, rows, summary)
    added; fails when the outage did not happen or any message was lost or sent twice. With --logs, or
    on failure, the processes' logs are saved and `node_logs(dir)` adds the broken part's own."""
    ok = False
    try:
        run.start()
        run.produce()
        statuses = run.drain()
        elapsed = time.monotonic() - run.timeline.t0
        run.stop_processes()
        verdict = judge(run, statuses, elapsed)
        happened, rows, summary = figures(*run.send_gap())
        verdict.rows[1:1] = rows
        verdict.summary |= summary
        ok = print_report(run, verdict) and happened
        if run.args.logs or not ok:
            logs = run.args.logs or tempfile.mkdtemp(prefix=f"smsdispatch-chaos-{name}-logs-")
            save_logs(run, logs)
            node_logs(logs)
    finally:
        run.stop()
    return 0 if ok else 1


def sentinel_scenario(args: argparse.Namespace) -> int:
    """Scenario sentinel: fails when no failover happened or any message was lost or sent twice."""
    run = SentinelChaosRun(args)

    def figures(around: float, longest: float) -> tuple[bool, list, dict]:
        f = run.failover
        not_durable = sum(1 for w in run.workers for line in w.lines() if "claim not durable" in line)
        failed_over = "first_write_s" in f
        rows = [
            ("Redis failover: primary killed (SIGKILL), a replica promoted (must be 1)", int(failed_over), False),
            ("  failovers that did not happen", 0 if failed_over else 1, True),
            ("  kill -> the Sentinels name a new primary that takes writes (s)", round(f.get("promoted_s", -1), 2), False),
            ("  kill -> first write through the Sentinels, our client (s)", round(f.get("first_write_s", -1), 2), False),
            ("  send gap: last acceptance before the kill -> first after (s)", round(around, 2), False),
            ("  longest gap between two acceptances after the kill (s)", round(longest, 2), False),
            ("  old primary back as a replica after (s)", round(f.get("rejoined_s", -1), 1), False),
            (f"  claims not durable (CLAIM_REPLICAS={SENTINEL_CLAIM_REPLICAS}; worker log)", not_durable, False),
        ]
        summary = {"failover_promoted_s": round(f.get("promoted_s", -1), 2),
                   "failover_first_write_s": round(f.get("first_write_s", -1), 2),
                   "send_gap_s": round(around, 2), "longest_gap_after_kill_s": round(longest, 2),
                   "old_primary_rejoined_s": round(f.get("rejoined_s", -1), 1),
                   "claims_not_durable": not_durable, "claim_replicas": SENTINEL_CLAIM_REPLICAS,
                   "replicas": SENTINEL_REPLICAS}
        return failed_over, rows, summary

    def node_logs(logs: str) -> None:
        assert run.cluster is not None
        for node in run.cluster.nodes:          # every node's and Sentinel's own log
            if (node.dir / "redis.log").exists():
                shutil.copy(node.dir / "redis.log", os.path.join(logs, f"redis-{node.port}.log"))
        for sentinel in run.cluster.sentinels:
            if (sentinel.dir / "sentinel.log").exists():
                shutil.copy(sentinel.dir / "sentinel.log", os.path.join(logs, f"sentinel-{sentinel.port}.log"))

    return outage_scenario(run, "sentinel", figures, node_logs)


# --------------------------------------------------------------------------- scenario rabbitmq


class RabbitMQChaosRun(ChaosRun):
    """Scenario rabbitmq: failover's run with a private RabbitMQ node as the broker; the Redis restart
    becomes a RabbitMQ restart (SIGKILL, then started again from its data). `redis_up` stands for "the
    broker is up" here: the producer waits on it after a failed publish."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.rabbit: PrivateRabbitMQ | None = None
        self.outage: dict[str, float] = {}

    def start_redis(self) -> str:
        self.rabbit = PrivateRabbitMQ().start()
        return super().start_redis()

    def more_settings(self) -> dict[str, str]:
        assert self.rabbit is not None
        return {"SMSDISPATCH_BROKER_URL": self.rabbit.url}

    def restart_redis(self) -> None:
        def restart() -> None:
            assert self.rabbit is not None
            self.redis_up.clear()
            self.rabbit.kill()                      # SIGKILL to the whole node
            killed = time.monotonic()
            self.outage["killed_at"] = killed
            self.timeline.add(f"rabbitmq: killed with SIGKILL; down for {self.args.redis_down:g}s")
            time.sleep(self.args.redis_down)        # the outage's length (nothing to wait for)
            self.rabbit.start()                     # same ports, same data directory
            self.outage["back_s"] = time.monotonic() - killed
            self.stats.redis_down_seconds = round(self.outage["back_s"], 1)
            self.stats.redis_restarts += 1
            self.redis_up.set()
            self.timeline.add(f"rabbitmq: restarted on port {self.rabbit.port} (takes connections "
                              f"{self.outage['back_s']:.1f}s after the kill)")
        self.in_background(restart, "rabbitmq-restart")

    def broker_counts(self) -> dict[str, tuple[int, int]]:
        """(ready, unacknowledged) of the send and retry queues and of the native delayed delivery's
        queues (where countdowns, ETAs and retries wait), from rabbitmqctl."""
        assert self.rabbit is not None
        sends, retries, _ = queue_names(self.settings["SMSDISPATCH_QUEUE"])
        return {name: counts for name, counts in self.rabbit.queue_counts().items()
                if name in (sends, retries) or name.startswith("celery_delayed_")}

    def send_tasks_in_broker(self) -> tuple[int, int]:
        """As ChaosRun's, from RabbitMQ. Its queue statistics lag by up to 5 s (a quorum queue reports
        them on its own tick): empty means empty twice, 6 s apart."""
        for attempt in range(2):
            counts = self.broker_counts().values()
            queued, unacked = sum(c[0] for c in counts), sum(c[1] for c in counts)
            if queued or unacked or attempt:
                return queued, unacked
            time.sleep(6)       # the statistics' lag; nothing to wait on
        return 0, 0

    def broker_locations(self) -> dict[str, str]:
        return {}       # RabbitMQ offers no per-message view: the counts are in the report

    def send_gap(self) -> tuple[float, float]:
        return _send_gap(self, self.outage.get("killed_at"))

    def stop(self) -> None:
        super().stop()
        if self.rabbit is not None:
            self.rabbit.stop()


def _send_gap(run: ChaosRun, killed: float | None) -> tuple[float, float]:
    """(seconds between the last acceptance before `killed` and the first after it, the longest gap
    between two acceptances from then to the end), from the fakes' own logs."""
    assert run.eskiz is not None and run.smscx is not None
    times = sorted(a.received_at for a in [*run.eskiz.accepted, *run.smscx.accepted])
    if killed is None or not times:
        return 0.0, 0.0
    before = [t for t in times if t <= killed]
    after = [t for t in times if t > killed]
    around = (after[0] - before[-1]) if before and after else float("inf")
    longest = max((b - a for a, b in zip(after, after[1:], strict=False)), default=0.0)
    return around, max(around, longest)


def rabbitmq_scenario(args: argparse.Namespace) -> int:
    """Scenario rabbitmq: fails when RabbitMQ was not restarted or any message was lost or sent twice."""
    run = RabbitMQChaosRun(args)

    def figures(around: float, longest: float) -> tuple[bool, list, dict]:
        restarted = "back_s" in run.outage
        rabbit_version = _rabbitmq_version(run)
        rows = [
            (f"RabbitMQ broker ({rabbit_version}): killed (SIGKILL) and restarted (must be 1)", int(restarted), False),
            ("  restarts that did not happen", 0 if restarted else 1, True),
            ("  kill -> RabbitMQ takes connections again (s)", round(run.outage.get("back_s", -1), 2), False),
            ("  send gap: last acceptance before the kill -> first after (s)", round(around, 2), False),
            ("  longest gap between two acceptances after the kill (s)", round(longest, 2), False),
        ]
        summary = {"broker": "rabbitmq", "rabbitmq_version": rabbit_version,
                   "rabbitmq_back_s": round(run.outage.get("back_s", -1), 2),
                   "send_gap_s": round(around, 2), "longest_gap_after_kill_s": round(longest, 2)}
        return restarted, rows, summary

    def node_logs(logs: str) -> None:
        assert run.rabbit is not None
        if (run.rabbit.dir / "log" / "node.log").exists():
            shutil.copy(run.rabbit.dir / "log" / "node.log", os.path.join(logs, "rabbitmq.log"))

    return outage_scenario(run, "rabbitmq", figures, node_logs)

def _rabbitmq_version(run: RabbitMQChaosRun) -> str:
    try:
        assert run.rabbit is not None
        return "RabbitMQ " + run.rabbit.ctl("version").strip()
    except Exception:       # noqa: BLE001 - a figure for the report only
        return "RabbitMQ ?"


# --------------------------------------------------------------------------- main



#: Messages per scenario: (full size, CI size).
SIZES = {"failover": (10_000, 800), "single": (6_000, 800), "sentinel": (4_000, 800), "rabbitmq": (4_000, 800)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m chaos.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--scenario", choices=SCENARIOS, default="failover",
                   help="failover: two gateways, each the other's fallback, circuit tuned (the default); single: "
                        "Eskiz alone, shipped circuit settings, a fault-free baseline first, then the faulty run; "
                        "sentinel: Redis behind Sentinel, the primary killed halfway and a replica promoted; "
                        "rabbitmq: RabbitMQ as the broker, worker kills and RabbitMQ killed and restarted")
    p.add_argument("--messages", type=int, default=None,
                   help="messages to send (failover: default 10000, 800 with --ci; single: 6000, 800 with --ci; "
                        "sentinel and rabbitmq: 4000, 800 with --ci; "
                        "single sends them twice, baseline then faulty)")
    p.add_argument("--ci", action="store_true", help="the CI size: a few minutes on 2 cores")
    p.add_argument("--per-second", type=float, default=None,
                   help="publishing pace (failover: default 40, 16 with --ci; single: 0 = as fast as it can)")
    p.add_argument("--producers", type=int, default=4,
                   help="publishing threads when --per-second is 0 (default 4)")
    p.add_argument("--seed", type=int, default=None, help="seed of the message plan and the fakes' faults")
    p.add_argument("--fault-rate", type=float, default=None,
                   help="share of send calls that meet a fault (failover: default 0.2; single: 0.25)")
    p.add_argument("--reject-share", type=float, default=0.01, help="share of messages to refused recipients")
    p.add_argument("--eta-share", type=float, default=None,
                   help="share of messages sent with an ETA > VT (failover: default 0.03; single: 0, since such "
                        "a message waits longer than the run and would measure its ETA, not the workers)")
    p.add_argument("--visibility", type=int, default=25, help="SMSDISPATCH_VISIBILITY_TIMEOUT (s)")
    p.add_argument("--concurrency", type=int, default=None,
                   help="threads per worker (failover: 8; single: 20, the worker command that Dockerfile and "
                        "docker-compose.yml ship)")
    p.add_argument("--redis-down", type=float, default=4.0, help="seconds Redis (scenario rabbitmq: RabbitMQ) "
                   "stays dead")
    p.add_argument("--deadline", type=float, default=None,
                   help="seconds to wait after sending for every record to be final (failover: default 240, "
                        "150 with --ci; single: 240, 120 with --ci, for each of its two runs)")
    p.add_argument("--no-throughput-check", action="store_true",
                   help=f"single: do not fail when the faulty throughput is below {THROUGHPUT_FLOOR * 100:.0f}%% of the "
                        "baseline's (still printed)")
    p.add_argument("--logs", default=None, help="write every process's log here (always done on failure)")
    args = p.parse_args(argv)
    single = args.scenario == "single"
    full, ci = SIZES[args.scenario]
    args.messages = args.messages or (ci if args.ci else full)
    if args.per_second is None:
        args.per_second = 0.0 if single else (16.0 if args.ci else 40.0)
    if args.concurrency is None:
        args.concurrency = SHIPPED_CONCURRENCY if single else 8
    if args.fault_rate is None:
        args.fault_rate = 0.25 if single else 0.2
    if args.eta_share is None:
        args.eta_share = 0.0 if single else 0.03
    args.deadline = args.deadline or ((120.0 if single else 150.0) if args.ci else 240.0)
    args.seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1_000_000)
    if args.messages < 20:
        p.error("--messages must be at least 20 (five kills and a Redis restart happen while sending)")
    if args.per_second < 0:
        p.error("--per-second must be 0 (as fast as possible) or more")
    return args


def run_once(args: argparse.Namespace, *, faults: bool = True, label: str = "",
             budget_seconds: float | None = None) -> tuple[bool, Verdict, ChaosRun]:
    """Start everything, send, wait for the end, judge, report, stop. Logs go to --logs (a `label`
    subdirectory in scenario single) and, on failure, to a temporary directory."""
    run = ChaosRun(args, faults=faults, label=label, budget_seconds=budget_seconds)
    try:
        run.start()
        run.produce()
        statuses = run.drain()
        elapsed = time.monotonic() - run.timeline.t0
        run.stop_processes()
        verdict = judge(run, statuses, elapsed)
        ok = print_report(run, verdict)
        if args.logs or not ok:
            logs = os.path.join(args.logs, label) if args.logs and label else args.logs
            save_logs(run, logs or tempfile.mkdtemp(prefix=f"smsdispatch-chaos-{label + '-' if label else ''}logs-"))
        verdict.summary["wall_s"] = round(time.monotonic() - run.timeline.t0, 1)
        verdict.summary["pass"] = ok
    finally:
        run.stop()
    return ok, verdict, run


def compare(args: argparse.Namespace, baseline: Verdict, faulty: Verdict, runs_ok: bool) -> bool:
    """Scenario single's last word: both throughputs, their ratio against THROUGHPUT_FLOOR, and the
    figures that say where the time went. Returns whether the scenario passes."""
    b, f = baseline.summary, faulty.summary
    ratio = f["throughput_per_s"] / b["throughput_per_s"] if b["throughput_per_s"] else 0.0
    fast_enough = ratio >= THROUGHPUT_FLOOR
    checked = not args.no_throughput_check
    ok = runs_ok and (fast_enough or not checked)
    print()
    print(f"scenario single: {'PASS' if ok else 'FAIL'}  (Eskiz alone, {args.fault_rate:g} of send calls faulty: "
          f"{', '.join(SINGLE_FAULT_WEIGHTS)}; shipped circuit settings; MAX_ATTEMPTS as shipped)")
    rows = [("throughput (accepted/s, first publish to last final record)", "throughput_per_s"),
            ("  accepted messages", "accepted_messages"), ("  measured over (s)", "throughput_seconds"),
            ("duplicates", "duplicates"), ("lost (not accepted, not failed/unknown; not final too)", "lost"),
            ("not final", "not_final"),
            ("failed: retries_exhausted", "retries_exhausted"), ("unknown", "unknown"),
            ("send_sms executions per message (worker log)", "executions_per_message"),
            ("  most executions of one message", "max_executions_of_a_message"),
            ("gateway send attempts per message (records)", "attempts_per_message"),
            ("circuit opened (worker log)", "circuit_opened"),
            ("runs skipped for an open circuit (record history)", "circuit_waits"),
            ("worker kills / Redis restarts", None), ("drained before the deadline", "drained"),
            ("wall time of the run (s)", "wall_s")]
    print(f"    {'':<58} {'baseline':>12} {'faulty':>12}")
    for label, key in rows:
        if key is None:
            shown = [f"{v['worker_kills']} / {v['redis_restarts']}" for v in (b, f)]
        else:
            shown = [str(v.get(key)) for v in (b, f)]
        print(f"    {label:<58} {shown[0]:>12} {shown[1]:>12}")
    verdict = "ok" if fast_enough else "BELOW"
    print(f"    throughput ratio faulty / baseline: {ratio:.2f}  (floor {THROUGHPUT_FLOOR:.2f}: {verdict}"
          f"{'' if checked else '; not checked (--no-throughput-check)'})")
    keys = ("throughput_per_s", "throughput_seconds", "accepted_messages", "duplicates", "lost", "not_final",
            "retries_exhausted", "unknown", "executions_per_message", "max_executions_of_a_message",
            "attempts_per_message", "circuit_opened", "circuit_waits", "drained", "wall_s", "pass")
    print(json.dumps({"chaos_single": {"pass": ok, "ratio": round(ratio, 3), "floor": THROUGHPUT_FLOOR,
                                       "throughput_checked": checked, "seed": args.seed, "messages": args.messages,
                                       "fault_rate": args.fault_rate,
                                       "baseline": {k: b.get(k) for k in keys},
                                       "faulty": {k: f.get(k) for k in keys}}}, sort_keys=True))
    return ok


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    single = args.scenario == "single"
    weights = SINGLE_FAULT_WEIGHTS if single else FAULT_WEIGHTS
    pace = f"at {args.per_second:g}/s" if args.per_second > 0 else f"as fast as {args.producers} threads can publish"
    print(f"chaos ({args.scenario}): {args.messages} messages {pace}, seed {args.seed}, fault rate "
          f"{args.fault_rate:g} ({', '.join(f'{k} {w:g}' for k, w in weights.items())}), visibility timeout "
          f"{args.visibility}s, 2 workers x {args.concurrency} threads + beat"
          + ("; a fault-free baseline run first" if single else ""), flush=True)
    if args.scenario == "sentinel":
        return sentinel_scenario(args)
    if args.scenario == "rabbitmq":
        return rabbitmq_scenario(args)
    if not single:
        ok, _, _ = run_once(args)
        return 0 if ok else 1
    base_ok, baseline, _ = run_once(args, faults=False, label="baseline")
    faulty_ok, faulty, _ = run_once(args, faults=True, label="faulty",
                                    budget_seconds=baseline.summary["throughput_seconds"] / THROUGHPUT_FLOOR)
    return 0 if compare(args, baseline, faulty, base_ok and faulty_ok) else 1


if __name__ == "__main__":
    sys.exit(main())
