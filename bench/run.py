"""The benchmark driver: `python -m bench.run` (or `make bench`). Prints a table, then one JSON line.

Everything runs on 127.0.0.1: a private redis-server (smsdispatch.devtools.redis_server.EmbeddedRedis, AOF on like
compose), the fake Eskiz with a 50 ms latency in this process (bench/gateway.py), and `celery worker`
subprocesses (bench/workers.py), one at a time, all with `--pool threads --concurrency 20 --loglevel
INFO` (compose's command) unless told otherwise. "ours" is smsdispatch's default deployment
(idempotency ledger, records, results, events: all on); "plain" is bench/plain.py: Celery defaults,
JSON, a Redis result backend, one `requests.post` per message over a pooled session.

Parts (all in one run, each bounded in count and time):
  cap  the fake gateway's own capacity (a load client in another process)
  a    producer rate: our `send_sms.delay()` vs a plain `.delay()` of a no-op task (median of 3)
  b    single sends end to end: enqueue N, until N tasks succeeded; msgs/s and worker CPU per message
       (median of 3), ours vs plain on the same pool and concurrency
  bb   the same with a backlog: each run enqueues its N while the worker does not consume its queue
       (remote control cancel_consumer), then lets it take them (add_consumer); timed from then
  e    Redis commands and round trips per message on the send path (bench/redisstats.py)
  d    latency enqueue -> gateway (p50/p99) with the producer paced at 20 msg/s
  c    a 100,000-recipient batch through Eskiz's send-batch, from `.delay()` until the batch is done

--broker rabbitmq: the broker is RabbitMQ (a throwaway vhost on the machine's RabbitMQ, 127.0.0.1:5672) for
ours (SMSDISPATCH_BROKER_URL) and plain (a quorum queue and publisher confirms, as ours), the store and
results still in the private Redis; (b) then adds RabbitMQ's CPU per message. Parts a and b.

Options: --only a,b,bb,c,d,e,cap; sizes (--single N, --batch N, ...); --profile DIR attaches py-spy to both
workers during (b) and (bb), ours during (c), and adds where their time goes (bench/spy.py). Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import textwrap
import time
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import psutil
import redis

from bench import plain
from bench.gateway import EMAIL, PASSWORD, SlowEskiz, capacity
from bench.redisstats import ClientRoundTrips, Trace, delta, per_message, ports_named, snapshot
from bench.spy import Spy, find_py_spy, summarize
from bench.workers import CeleryWorker, WorkerGroup
from smsdispatch.config import load_settings
from smsdispatch.devtools.rabbitmq_server import TemporaryVhost
from smsdispatch.devtools.redis_server import EmbeddedRedis
from smsdispatch.redisclient import CLIENT_NAME
from smsdispatch.tasks import SEND_BATCH, SEND_SMS

TEXT = "Your code is 4821"
PARTS = ("cap", "a", "b", "bb", "e", "d", "c")
TARGETS = {"a": 0.9, "b": 1.0, "bb": 1.2, "c": 10_000, "e": 3.0}
REFERENCE = {"plain_bare_delay_per_s": 782, "plain_threads_c50_pooled_session_msgs_per_s": 149,
             "plain_noop_prefork_c2_per_s": 451, "machine": "2 cores, 50 ms gateway (issue 6)"}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def number(i: int) -> str:
    return f"+99890{i % 10_000_000:07d}"


def pctl(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[max(0, min(len(s) - 1, math.ceil(q * len(s)) - 1))]


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# ----------------------------------------------------------------------------------------- machine
def machine_info(redis_url: str) -> dict[str, Any]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "-"
    server = redis.Redis.from_url(redis_url).info("server")
    return {"cpus": os.cpu_count(), "cpu_model": model, "python": platform.python_version(),
            "celery": version("celery"), "kombu": version("kombu"), "redis_py": version("redis"),
            "requests": version("requests"), "redis_server": server.get("redis_version"),
            "platform": platform.platform(), "loadavg_start": [round(x, 2) for x in os.getloadavg()]}


def wait_quiet(max_wait: float, busy_pct: float = 20.0) -> float:
    """Wait (at most max_wait s) until the machine's CPU use over 2 s is under busy_pct; return it."""
    deadline = time.monotonic() + max_wait
    while True:
        used = psutil.cpu_percent(interval=2.0)
        if used < busy_pct or time.monotonic() > deadline:
            return used
        log(f"machine busy ({used:.0f}% CPU by other processes); waiting for it to calm down")


def _rabbitmq_process() -> psutil.Process | None:
    """The RabbitMQ node listening on 127.0.0.1:5672 (its Erlang VM), for its CPU time."""
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] == "beam.smp":
            try:
                if any(c.laddr and c.laddr.port == 5672 for c in proc.net_connections(kind="tcp")):
                    return proc
            except psutil.Error:
                continue
    return None


# ----------------------------------------------------------------------------------------- bench
class Hold:
    """(bb) One worker's consuming of its send queue stopped and started again (Celery's remote control
    `cancel_consumer` / `add_consumer`), so that a backlog can be enqueued before it takes any of it."""

    def __init__(self, app, queue: str, hostname: str) -> None:
        self.app, self.queue, self.hostname = app, queue, hostname

    def pause(self) -> None:
        if not self.app.control.cancel_consumer(self.queue, destination=[self.hostname], reply=True, timeout=5):
            raise RuntimeError(f"{self.hostname} did not answer cancel_consumer({self.queue})")

    def resume(self) -> None:
        if not self.app.control.add_consumer(self.queue, destination=[self.hostname], reply=True, timeout=5):
            raise RuntimeError(f"{self.hostname} did not answer add_consumer({self.queue})")


class Bench:
    def __init__(self, args: argparse.Namespace, redis_server: EmbeddedRedis, fake: SlowEskiz, log_dir: Path,
                 broker_url: str | None = None):
        self.args, self.redis_server, self.fake, self.log_dir = args, redis_server, fake, log_dir
        self.url = redis_server.url
        self.broker_url = broker_url       # None: the Redis above is the broker too
        self.broker_ps = _rabbitmq_process() if broker_url else None
        self.r = redis.Redis.from_url(self.url)
        self.me = psutil.Process()
        self.redis_ps = psutil.Process(redis_server.process.pid)
        self.seq = 0

    # --- plumbing ---------------------------------------------------------------------------
    def our_settings(self, queue: str) -> dict[str, str]:
        return {"SMSDISPATCH_REDIS_URL": self.url, "SMSDISPATCH_KEY_PREFIX": "bench", "SMSDISPATCH_QUEUE": queue,
                "SMSDISPATCH_DEFAULT_GATEWAY": "eskiz", "SMSDISPATCH_ESKIZ_BASE_URL": self.fake.base_url,
                "SMSDISPATCH_ESKIZ_EMAIL": EMAIL, "SMSDISPATCH_ESKIZ_PASSWORD": PASSWORD} \
            | ({"SMSDISPATCH_BROKER_URL": self.broker_url} if self.broker_url else {})

    def plain_app(self, queue: str, *, backend: bool = True):
        return plain.make_app(self.url, queue, backend=backend, broker_url=self.broker_url)

    def our_app(self, queue: str):
        from smsdispatch.worker import create_app  # noqa: PLC0415 - imported late: it builds an app from env
        values = {k.removeprefix("SMSDISPATCH_").lower(): v for k, v in self.our_settings(queue).items()}
        return create_app(load_settings(**values))

    def plain_env(self, queue: str) -> dict[str, str]:
        return {"BENCH_REDIS_URL": self.url, "BENCH_QUEUE": queue, "BENCH_GATEWAY_URL": self.fake.base_url,
                "BENCH_ESKIZ_EMAIL": EMAIL, "BENCH_ESKIZ_PASSWORD": PASSWORD} \
            | ({"BENCH_BROKER_URL": self.broker_url} if self.broker_url else {})

    def start_worker(self, kind: str, queue: str, *, concurrency: int | None = None) -> CeleryWorker:
        self.seq += 1
        extra = self.args.worker_args.split() if self.args.worker_args else []
        c = concurrency or self.args.concurrency
        if kind == "ours":
            w = CeleryWorker("smsdispatch.worker", env=self.our_settings(queue), concurrency=c,
                             name=f"ours{self.seq}", log_dir=self.log_dir, extra_args=extra)
        else:
            w = CeleryWorker("bench.plain", env=self.plain_env(queue), concurrency=c,
                             name=f"plain{self.seq}", log_dir=self.log_dir, extra_args=extra)
        w.wait_ready(timeout=90)
        log(f"worker {w.name} ready (pid {w.pid}, {' '.join(w.cmd[3:])})")
        return w

    def usage(self, worker: CeleryWorker | None = None) -> tuple[float, float, float]:
        """(wall, machine busy CPU s, CPU s of our processes: driver, redis-server, worker) for foreign_pct."""
        t = psutil.cpu_times()
        busy = sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "steal", 0.0) - getattr(t, "guest", 0.0) \
            - getattr(t, "guest_nice", 0.0)
        mine = sum(self.cpu()) + (worker.cpu_seconds() if worker else 0.0)
        return time.monotonic(), busy, mine

    @staticmethod
    def foreign_pct(before: tuple[float, float, float], after: tuple[float, float, float]) -> float:
        """CPU used by processes other than ours (and the load client), in % of the whole machine."""
        wall = max(1e-6, after[0] - before[0])
        other = (after[1] - before[1]) - (after[2] - before[2])
        return round(max(0.0, 100 * other / (wall * (os.cpu_count() or 1))), 1)

    def broker_cpu(self) -> float:
        """CPU seconds of the RabbitMQ node (with --broker rabbitmq; 0 otherwise). Shared with whatever
        else uses that node: nothing else here, but read it as an upper bound."""
        if self.broker_ps is None:
            return 0.0
        t = self.broker_ps.cpu_times()
        return t.user + t.system

    def cpu(self) -> tuple[float, float]:
        r, me = self.redis_ps.cpu_times(), self.me.cpu_times()
        return r.user + r.system, me.user + me.system

    def settle(self, seconds: float = 1.0) -> None:
        time.sleep(seconds)

    # --- parts ------------------------------------------------------------------------------
    def part_cap(self) -> dict[str, Any]:
        log("gateway capacity (load client in a subprocess)")
        out: dict[str, Any] = {}
        for label, kw in [("send_0ms_16threads", dict(threads=16, seconds=3, latency_ms=0)),
                          ("send_latency_100threads", dict(threads=100, seconds=3)),
                          ("send_batch500_latency_8threads", dict(threads=8, seconds=3, batch=500))]:
            c0 = self.cpu()[1]
            res = capacity(self.fake, **kw)
            res["fake_cpu_ms_per_request"] = round(1000 * (self.cpu()[1] - c0) / max(1, res["requests"]), 3)
            out[label] = res
        return out

    def part_a(self, spy_dir: Path | None) -> dict[str, Any]:
        n, runs = self.args.producer, self.args.runs
        ours_app = self.our_app("bench-a-ours")
        plain_app = self.plain_app("bench-a-plain")
        bare_app = self.plain_app("bench-a-plain-nobackend", backend=False)
        variants: list[tuple[str, Callable]] = [("ours", ours_app.tasks[SEND_SMS].delay),
                                                 ("plain", plain_app.tasks[plain.NOOP].delay),
                                                 ("plain_no_result_backend", bare_app.tasks[plain.NOOP].delay)]
        for _, delay in variants:   # connections, scripts, pools
            for i in range(50):
                delay(number(i), TEXT)
        rates: dict[str, list[float]] = {k: [] for k, _ in variants}
        cpu_us: dict[str, list[float]] = {k: [] for k, _ in variants}
        spies: dict[str, Spy] = {}
        foreign: list[float] = []
        for run in range(runs):
            for name, delay in variants:
                spy = Spy(os.getpid(), spy_dir / f"a-{name}-{run}.raw") if spy_dir and name != "plain_no_result_backend" \
                    and run == 0 else None
                if spy:
                    time.sleep(0.5)         # py-spy attaches
                c0, u0 = self.cpu()[1], self.usage()
                t0 = time.perf_counter()
                for i in range(n):
                    delay(number(i), TEXT)
                dt = time.perf_counter() - t0
                foreign.append(self.foreign_pct(u0, self.usage()))
                if spy:
                    spy.stop()
                    spies[name] = spy
                rates[name].append(n / dt)
                cpu_us[name].append(1e6 * (self.cpu()[1] - c0) / n)
                log(f"(a) run {run + 1}: {name} {n / dt:.0f} .delay()/s")
        self.r.delete("bench-a-ours", "bench-a-plain", "bench-a-plain-nobackend")
        for app in (ours_app, plain_app, bare_app):
            app.close()
        out = {k: {"per_s": round(med(v)), "runs": [round(x) for x in v],
                   "producer_cpu_us_per_msg": round(med(cpu_us[k]))} for k, v in rates.items()}
        for name, spy in spies.items():   # the driver's own .delay() (the first run of each, profiled)
            out[name]["profile"] = summarize(spy.out, seconds=spy.seconds, rate=spy.rate)
        out["n"] = n
        out["foreign_cpu_pct_max"] = max(foreign)
        out["ratio"] = round(out["ours"]["per_s"] / out["plain"]["per_s"], 2)
        return out

    def throughput(self, sides: dict[str, tuple[CeleryWorker, Callable]], spy_dir: Path | None, *,
                   holds: dict[str, Hold] | None = None) -> dict[str, Any]:
        """(b) for every side ({kind: (worker, delay)}), its runs interleaved (ours, plain, ours, ...) so
        that a drift of the machine's speed falls on both alike; medians per side. With `holds` (bb, the
        backlog variant): each run enqueues its N messages while the side's worker does not consume its
        queue, then lets it consume them all at once; timed from that moment."""
        n, runs = self.args.single, self.args.runs
        for label, (worker, delay) in sides.items():
            base = worker.succeeded
            for i in range(self.args.warmup):
                delay(number(i), TEXT)
            if not worker.wait_succeeded(base + self.args.warmup, timeout=60):
                raise TimeoutError(f"{label}: warm-up did not finish; log {worker.log_path}")
        part = "bb" if holds else "b"
        spies = {label: Spy(worker.pid, spy_dir / f"{part}-{label}.raw")
                 for label, (worker, _) in sides.items() if spy_dir}
        results: dict[str, list[dict[str, Any]]] = {label: [] for label in sides}
        try:
            for run in range(runs):
                for label, (worker, delay) in sides.items():
                    res = self.throughput_run(worker, delay, n, hold=holds[label] if holds else None)
                    results[label].append(res)
                    log(f"({part}) {label} run {run + 1}: {res['msgs_per_s']} msg/s, worker {res['worker_cpu_ms_per_msg']} "
                        f"ms CPU/msg, {res['gateway_sends']} gateway sends{'' if res['completed'] else ' (TIMED OUT)'}")
        finally:
            for spy in spies.values():
                spy.stop()
        out: dict[str, Any] = {}
        for label, (worker, _) in sides.items():
            rs = results[label]
            side: dict[str, Any] = {k: round(med([r[k] for r in rs]), 3) for k in
                                    ("msgs_per_s", "worker_cpu_ms_per_msg", "worker_system_cpu_ms_per_msg",
                                     "redis_cpu_ms_per_msg", "rabbitmq_cpu_ms_per_msg",
                                     "driver_cpu_ms_per_msg", "worker_cpu_busy_pct")}
            side.update(n=n, runs=rs, problems=worker.problems(), all_completed=all(r["completed"] for r in rs),
                        foreign_cpu_pct_max=max(r["foreign_cpu_pct"] for r in rs),
                        exactly_n_sends=all(r["gateway_sends"] == n for r in rs))
            if label in spies:
                side["profile"] = summarize(spies[label].out, seconds=spies[label].seconds, rate=spies[label].rate)
            out[label] = side
        return out

    def throughput_run(self, worker: CeleryWorker, delay: Callable, n: int, *, hold: Hold | None = None
                       ) -> dict[str, Any]:
        """Enqueue n single sends, wait until the worker has finished n more tasks. With `hold`, the
        n are enqueued while the worker does not consume, and the run starts when it consumes again."""
        self.fake.reset()
        self.settle(0.5)
        base = worker.succeeded
        if hold is not None:
            hold.pause()
            for i in range(n):
                delay(number(i), TEXT)
            self.settle(0.5)
        u0 = self.usage(worker)
        w0, k0, (r0, d0), b0 = worker.cpu_seconds(), worker.system_seconds(), self.cpu(), self.broker_cpu()
        t0 = time.perf_counter()
        if hold is not None:
            hold.resume()
        else:
            for i in range(n):
                delay(number(i), TEXT)
        t_enq = time.perf_counter()
        ok = worker.wait_succeeded(base + n, timeout=max(60.0, n / 10))
        t1 = time.perf_counter()
        w1, k1, (r1, d1), b1 = worker.cpu_seconds(), worker.system_seconds(), self.cpu(), self.broker_cpu()
        sends = len(self.fake.send_calls())
        return {"msgs_per_s": round(n / (t1 - t0), 1), "seconds": round(t1 - t0, 2),
                "enqueue_seconds": round(t_enq - t0, 2), "completed": ok,
                "worker_cpu_ms_per_msg": round(1000 * (w1 - w0) / n, 3),
                "worker_system_cpu_ms_per_msg": round(1000 * (k1 - k0) / n, 3),
                "redis_cpu_ms_per_msg": round(1000 * (r1 - r0) / n, 3),
                "rabbitmq_cpu_ms_per_msg": round(1000 * (b1 - b0) / n, 3),
                "driver_cpu_ms_per_msg": round(1000 * (d1 - d0) / n, 3),
                "worker_cpu_busy_pct": round(100 * (w1 - w0) / (t1 - t0)),
                "gateway_sends": sends, "foreign_cpu_pct": self.foreign_pct(u0, self.usage(worker))}

    def latency(self, worker: CeleryWorker, task, label: str) -> dict[str, Any]:
        rate, seconds = self.args.pace, self.args.pace_seconds
        n = int(rate * seconds)
        self.fake.reset()
        self.settle(0.5)
        base = worker.succeeded
        enqueued: dict[str, float] = {}
        call_ms: list[float] = []
        u0 = self.usage(worker)
        start = time.monotonic()
        for i in range(n):
            pause = start + i / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            tid = str(uuid.uuid4())
            t0 = time.monotonic()
            task.apply_async((number(i), TEXT), task_id=tid)
            call_ms.append(1000 * (time.monotonic() - t0))
            enqueued[tid] = t0
        ok = worker.wait_succeeded(base + n, timeout=60)
        foreign = self.foreign_pct(u0, self.usage(worker))
        lat = [1000 * (rec.received_at - enqueued[ref])
               for rec in self.fake.send_calls() for ref in self.fake.carried(rec) if ref in enqueued]
        out = {"rate_per_s": rate, "messages": n, "seconds": round(time.monotonic() - start, 1), "completed": ok,
               "measured": len(lat), "p50_ms": round(pctl(lat, 0.5), 1) if lat else None,
               "p90_ms": round(pctl(lat, 0.9), 1) if lat else None,
               "p99_ms": round(pctl(lat, 0.99), 1) if lat else None, "max_ms": round(max(lat), 1) if lat else None,
               "enqueue_call_p50_ms": round(pctl(call_ms, 0.5), 2), "enqueue_call_p99_ms": round(pctl(call_ms, 0.99), 2),
               "foreign_cpu_pct": foreign}
        log(f"(d) {label}: enqueue->gateway p50 {out['p50_ms']} ms, p99 {out['p99_ms']} ms ({len(lat)}/{n})")
        return out

    def redis_cost(self, worker: CeleryWorker, task, label: str) -> dict[str, Any]:
        n = self.args.redis_n
        void = f"bench-e-void-{label}"
        self.settle(1.0)
        s0 = snapshot(self.r)
        time.sleep(self.args.idle_seconds)
        idle = delta(s0, snapshot(self.r))
        # the producer alone: published to a queue nobody consumes
        s1 = snapshot(self.r)
        with ClientRoundTrips() as client_p:
            for i in range(n):
                task.apply_async((number(i), TEXT), queue=void)
        producer = per_message(delta(s1, snapshot(self.r)), n, idle)
        producer["client_side_round_trips_per_msg"] = round(client_p.count / n, 2)
        self.r.delete(void)
        # the whole send path: .delay() until the worker's task succeeded
        self.settle(1.0)
        base = worker.succeeded
        s2 = snapshot(self.r)
        with ClientRoundTrips() as client_t:
            for i in range(n):
                task.delay(number(i), TEXT)
        ok = worker.wait_succeeded(base + n, timeout=max(60.0, n / 10))
        total = per_message(delta(s2, snapshot(self.r)), n, idle)
        total["producer_client_side_round_trips_per_msg"] = round(client_t.count / n, 2)
        total["completed"] = ok
        # one message, command by command (MONITOR), with the worker otherwise idle
        self.settle(1.0)
        trace = Trace(self.url).start()
        base = worker.succeeded
        task.delay(number(0), TEXT)
        worker.wait_succeeded(base + 1, timeout=30)
        time.sleep(0.3)
        trace.stop(self.r)
        ports = {str(c.laddr.port) for c in self.me.net_connections(kind="tcp")
                 if c.raddr and c.raddr.port == self.redis_server.port}
        one = trace.render(ports, ports_named(self.r, CLIENT_NAME))
        worker_side = {"commands_per_msg": round(total["commands_per_msg"] - producer["commands_per_msg"], 2),
                       "round_trips_per_msg": round(total["round_trips_per_msg"] - producer["round_trips_per_msg"], 2)}
        log(f"(e) {label}: {total['commands_per_msg']} commands, ~{total['round_trips_per_msg']} round trips per message "
            f"(producer {producer['round_trips_per_msg']}, client-side count {producer['client_side_round_trips_per_msg']})")
        own = {"producer": one["own_calls"]["P"], "worker": one["own_calls"]["W"],
               "total": one["own_calls"]["P"] + one["own_calls"]["W"]}
        return {"send_path": total, "producer": producer, "worker": worker_side, "one_message": one, "own": own,
                "idle_per_s": {"commands": round(sum(idle["commands"].values()) / idle["seconds"], 1),
                               "reads": round(idle["reads"] / idle["seconds"], 1)}}

    def batch(self, worker: WorkerGroup, app, spy_dir: Path | None) -> dict[str, Any]:
        n = self.args.batch
        messages = [{"to": number(i), "text": f"Batch message {i % 10}"} for i in range(n)]
        self.fake.reset()
        self.settle(1.0)
        batches = app.runtime.batches
        spy = Spy(worker.pid, spy_dir / "c-batch.raw") if spy_dir else None
        u0 = self.usage(worker)
        s0 = snapshot(self.r)
        w0, (r0, d0) = worker.cpu_seconds(), self.cpu()
        t0, m0 = time.perf_counter(), time.monotonic()
        handle = app.tasks[SEND_BATCH].delay(messages)
        t_stored = time.perf_counter()
        deadline = time.monotonic() + self.args.batch_timeout
        state = None
        try:
            while time.monotonic() < deadline:
                state = batches.get(handle.id)
                if state and (state["status"] == "done" or state["pending"] == 0):
                    break
                time.sleep(0.05)
            t1 = time.perf_counter()
        finally:
            if spy:
                spy.stop()
        w1, (r1, d1) = worker.cpu_seconds(), self.cpu()
        foreign = self.foreign_pct(u0, self.usage(worker))
        redis_cost = per_message(delta(s0, snapshot(self.r)), n)   # includes the driver's polling (~20/s)
        calls = [rec for rec in self.fake.requests_log if rec.path == "/message/sms/send-batch"]
        accepted = len(self.fake.accepted)
        done = bool(state and (state["status"] == "done" or state["pending"] == 0))
        out = {"n": n, "msgs_per_s": round(n / (t1 - t0)), "seconds": round(t1 - t0, 2), "completed": done,
               "store_and_publish_seconds": round(t_stored - t0, 2),
               "first_gateway_call_after_seconds": round(calls[0].received_at - m0, 2) if calls else None,
               "gateway_window_seconds": round(calls[-1].received_at - calls[0].received_at, 2) if calls else None,
               "batch_state": {k: state.get(k) for k in ("status", "accepted", "failed", "unknown", "pending")}
               if state else None,
               "gateway_calls": len(calls), "gateway_accepted": accepted,
               "worker_cpu_seconds": round(w1 - w0, 2), "worker_cpu_ms_per_1000_msgs": round(1e6 * (w1 - w0) / n, 1),
               "worker_cpu_busy_pct": round(100 * (w1 - w0) / (t1 - t0)), "redis": redis_cost,
               "redis_cpu_seconds": round(r1 - r0, 2), "driver_cpu_seconds": round(d1 - d0, 2),
               "worker_cpu_us_per_msg": round(1e6 * (w1 - w0) / n), "redis_cpu_us_per_msg": round(1e6 * (r1 - r0) / n),
               "total_cpu_us_per_msg": round(1e6 * ((w1 - w0) + (r1 - r0)) / n),
               "problems": worker.problems(), "concurrency": worker.concurrency, "workers": len(worker.workers),
               "foreign_cpu_pct": foreign}
        if spy:
            out["profile"] = summarize(spy.out, seconds=spy.seconds, rate=spy.rate)
        log(f"(c) batch of {n:,}: {out['msgs_per_s']} msg/s in {out['seconds']} s "
            f"({len(calls)} send-batch calls, {accepted} accepted){'' if done else ' (TIMED OUT)'}")
        return out


# ----------------------------------------------------------------------------------------- main
def run(args: argparse.Namespace) -> dict[str, Any]:
    vhost = TemporaryVhost().start() if args.broker == "rabbitmq" else None
    try:
        return _run(args, vhost)
    finally:
        if vhost is not None:
            vhost.stop()


def _run(args: argparse.Namespace, vhost: TemporaryVhost | None) -> dict[str, Any]:
    parts = set(args.only.split(",")) if args.only else set(PARTS)
    unknown = parts - set(PARTS)
    if unknown:
        raise SystemExit(f"--only: unknown parts {sorted(unknown)}; known: {','.join(PARTS)}")
    spy_dir = Path(args.profile) if args.profile else None
    if spy_dir:
        if not find_py_spy():
            raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
        spy_dir.mkdir(parents=True, exist_ok=True)
    busy = wait_quiet(args.wait_quiet) if args.wait_quiet else psutil.cpu_percent(interval=1.0)
    log_dir = Path(tempfile.mkdtemp(prefix="smsdispatch-bench-"))
    started = time.monotonic()
    result: dict[str, Any] = {"config": {"concurrency": args.concurrency, "pool": "threads", "latency_ms": args.latency_ms,
                                         "worker_args": args.worker_args or "(compose's: none beyond pool, concurrency, "
                                                                             "loglevel INFO)",
                                         "runs": args.runs, "log_dir": str(log_dir), "profiled": bool(spy_dir)},
                              "targets": TARGETS, "reference_issue6": REFERENCE}
    result["config"]["broker"] = args.broker
    with EmbeddedRedis() as server, SlowEskiz(latency_ms=args.latency_ms) as fake:
        result["machine"] = machine_info(server.url) | {"cpu_busy_pct_before": round(busy, 1)}
        log(f"redis {server.url}, fake gateway {fake.base_url} ({args.latency_ms:g} ms), logs in {log_dir}"
            + (f", broker RabbitMQ vhost {vhost.name}" if vhost else ""))
        bench = Bench(args, server, fake, log_dir, broker_url=vhost.url if vhost else None)
        if "cap" in parts:
            result["gateway_capacity"] = bench.part_cap()
        if "a" in parts:
            result["a_producer"] = bench.part_a(spy_dir)
        if parts & {"b", "bb", "d", "e"}:
            # Both workers run side by side (each idle while the other is measured), so the runs of
            # (b) can alternate between them.
            sides: dict[str, tuple[CeleryWorker, Any, Any]] = {}
            try:
                for kind in ("ours", "plain"):
                    queue = f"bench-{kind}"
                    worker = bench.start_worker(kind, queue)
                    app = bench.our_app(queue) if kind == "ours" else bench.plain_app(queue)
                    sides[kind] = (worker, app, app.tasks[SEND_SMS] if kind == "ours" else app.tasks[plain.SEND])
                if "b" in parts:
                    result["b_single"] = bench.throughput({k: (w, t.delay) for k, (w, _, t) in sides.items()}, spy_dir)
                if "bb" in parts:
                    result["bb_backlog"] = bench.throughput(
                        {k: (w, t.delay) for k, (w, _, t) in sides.items()}, spy_dir,
                        holds={k: Hold(a, f"bench-{k}", w.hostname) for k, (w, a, _) in sides.items()})
                for kind, (worker, _, task) in sides.items():
                    if "e" in parts:
                        result.setdefault("e_redis", {})[kind] = bench.redis_cost(worker, task, kind)
                    if "d" in parts:
                        result.setdefault("d_latency", {})[kind] = bench.latency(worker, task, kind)
            finally:
                for worker, app, _ in sides.values():
                    worker.stop()
                    app.close()
            for key in ("b_single", "bb_backlog"):
                if key not in result:
                    continue
                b = result[key]
                b["ratio"] = round(b["ours"]["msgs_per_s"] / b["plain"]["msgs_per_s"], 2)
                b["cpu_ratio"] = round(b["ours"]["worker_cpu_ms_per_msg"] / b["plain"]["worker_cpu_ms_per_msg"], 2)
                # each run of ours against the run of plain just after it (the machine's speed drifts)
                b["pair_ratios"] = [round(o["msgs_per_s"] / p["msgs_per_s"], 2)
                                    for o, p in zip(b["ours"]["runs"], b["plain"]["runs"], strict=True)]
            if "e" in parts:
                e = result["e_redis"]
                e["ours_minus_plain_round_trips_per_msg"] = round(
                    e["ours"]["send_path"]["round_trips_per_msg"] - e["plain"]["send_path"]["round_trips_per_msg"], 2)
        if "c" in parts:
            worker = WorkerGroup([bench.start_worker("ours", "bench-batch", concurrency=args.batch_concurrency)
                                  for _ in range(args.batch_workers)])
            app = bench.our_app("bench-batch")
            try:
                result["c_batch"] = bench.batch(worker, app, spy_dir)
            finally:
                worker.stop()
                app.close()
        result["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    result["elapsed_seconds"] = round(time.monotonic() - started, 1)
    result["verdict"] = verdict(result)
    return result


def verdict(r: dict[str, Any]) -> dict[str, Any]:
    v: dict[str, Any] = {}
    if "a_producer" in r:
        v["a_producer_ratio_ge_0.9"] = r["a_producer"]["ratio"] >= TARGETS["a"]
    if "b_single" in r and "ratio" in r["b_single"]:
        v["b_single_ratio_ge_1.0"] = r["b_single"]["ratio"] >= TARGETS["b"]
    if "bb_backlog" in r and "ratio" in r["bb_backlog"]:
        v["bb_backlog_ratio_ge_1.2"] = r["bb_backlog"]["ratio"] >= TARGETS["bb"]
    if "c_batch" in r:
        v["c_batch_ge_10000_per_s"] = bool(r["c_batch"]["completed"]) and r["c_batch"]["msgs_per_s"] >= TARGETS["c"]
    if "e_redis" in r and "ours" in r["e_redis"]:
        v["e_own_round_trips_le_3"] = r["e_redis"]["ours"]["own"]["total"] <= TARGETS["e"]
    return v


# ----------------------------------------------------------------------------------------- table
def table(r: dict[str, Any]) -> str:
    m = r["machine"]
    cfg = r["config"]
    lines = [f"smsdispatch benchmark: {m['cpus']} x {m['cpu_model']}, Python {m['python']}, celery {m['celery']}, "
             f"kombu {m['kombu']}, redis-py {m['redis_py']}, redis-server {m['redis_server']}",
             f"load avg {m['loadavg_start']} -> {m.get('loadavg_end')}, CPU busy before start "
             f"{m['cpu_busy_pct_before']}%; workers: --pool threads --concurrency {cfg['concurrency']}; "
             f"gateway latency {cfg['latency_ms']:g} ms; medians of {cfg['runs']}; {r['elapsed_seconds']} s"
             + ("; PROFILED (py-spy attached)" if cfg["profiled"] else "")]
    foreign = {"a": r.get("a_producer", {}).get("foreign_cpu_pct_max"),
               "b ours": r.get("b_single", {}).get("ours", {}).get("foreign_cpu_pct_max"),
               "b plain": r.get("b_single", {}).get("plain", {}).get("foreign_cpu_pct_max"),
               "bb ours": r.get("bb_backlog", {}).get("ours", {}).get("foreign_cpu_pct_max"),
               "bb plain": r.get("bb_backlog", {}).get("plain", {}).get("foreign_cpu_pct_max"),
               "c": r.get("c_batch", {}).get("foreign_cpu_pct"),
               "d ours": r.get("d_latency", {}).get("ours", {}).get("foreign_cpu_pct"),
               "d plain": r.get("d_latency", {}).get("plain", {}).get("foreign_cpu_pct")}
    shown = {k: x for k, x in foreign.items() if x is not None}
    if shown:
        lines.append("CPU used by other processes during the parts (% of the machine; ~0 = clean): "
                     + ", ".join(f"{k} {x}%" for k, x in shown.items()))
    lines.append("")
    rows: list[tuple[str, str, str, str, str]] = []

    def mark(ok: bool | None) -> str:
        return "" if ok is None else ("PASS" if ok else "FAIL")

    def row(part: str, what: str, ours: Any, plain_: Any, ratio: Any = "", target: str = "") -> None:
        rows.append((part, what, str(ours), str(plain_), f"{ratio}" + (f"  {target}" if target else "")))
    v = r["verdict"]
    if "gateway_capacity" in r:
        g = r["gateway_capacity"]
        for k, x in g.items():
            row("cap", f"fake: {k}", f"{x['requests_per_s']} req/s, {x['messages_per_s']} msg/s",
                f"p50 {x['p50_ms']} ms", "", f"fake CPU {x['fake_cpu_ms_per_request']} ms/req")
    if "a_producer" in r:
        a = r["a_producer"]
        row("a", ".delay() per s (one thread)", a["ours"]["per_s"], a["plain"]["per_s"], f"{a['ratio']}x",
            f">= 0.9x {mark(v.get('a_producer_ratio_ge_0.9'))}")
        row("a", "producer CPU us/msg", a["ours"]["producer_cpu_us_per_msg"], a["plain"]["producer_cpu_us_per_msg"])
        row("a", "plain without result backend", "", a["plain_no_result_backend"]["per_s"], "",
            f"ref: bare .delay() {REFERENCE['plain_bare_delay_per_s']}/s")
    for key, part, what, check in (("b_single", "b", "single sends e2e msg/s", "b_single_ratio_ge_1.0"),
                                   ("bb_backlog", "bb", "backlog of single sends msg/s", "bb_backlog_ratio_ge_1.2")):
        if key not in r:
            continue
        b = r[key]
        o, p = b.get("ours", {}), b.get("plain", {})
        row(part, f"{what} (N={o.get('n')})", o.get("msgs_per_s"), p.get("msgs_per_s"),
            f"{b.get('ratio')}x", f">= {TARGETS[part]}x {mark(v.get(check))}")
        row(part, "  ratio of each run to plain's next run", "", "",
            " ".join(f"{x}x" for x in b.get("pair_ratios", [])))
        row(part, "worker CPU ms/msg", o.get("worker_cpu_ms_per_msg"), p.get("worker_cpu_ms_per_msg"),
            f"{b.get('cpu_ratio')}x")
        row(part, "  of which in the kernel (system calls)", o.get("worker_system_cpu_ms_per_msg"),
            p.get("worker_system_cpu_ms_per_msg"))
        row(part, "worker CPU busy % of one core", o.get("worker_cpu_busy_pct"), p.get("worker_cpu_busy_pct"))
        row(part, "redis-server CPU ms/msg", o.get("redis_cpu_ms_per_msg"), p.get("redis_cpu_ms_per_msg"))
        row(part, "driver (producer+fake) CPU ms/msg", o.get("driver_cpu_ms_per_msg"), p.get("driver_cpu_ms_per_msg"),
            "", f"ref: plain threads c=50 {REFERENCE['plain_threads_c50_pooled_session_msgs_per_s']}/s")
    if "c_batch" in r:
        c = r["c_batch"]
        row("c", f"batch of {c['n']:,} via send-batch msg/s ({c.get('workers', 1)} x c={c['concurrency']})",
            c["msgs_per_s"], "-", "",
            f">= 10,000 {mark(v.get('c_batch_ge_10000_per_s'))}")
        row("c", "  s: total / store+publish / 1st call / calls window",
            f"{c['seconds']} / {c['store_and_publish_seconds']} / {c['first_gateway_call_after_seconds']} / "
            f"{c['gateway_window_seconds']}", "-")
        row("c", "  gateway calls / accepted; worker CPU s (busy %)", f"{c['gateway_calls']} / {c['gateway_accepted']}; "
            f"{c['worker_cpu_seconds']} ({c.get('worker_cpu_busy_pct')}%)", "-")
        row("c", "  CPU us/msg: worker + redis-server = total", f"{c.get('worker_cpu_us_per_msg')} + "
            f"{c.get('redis_cpu_us_per_msg')} = {c.get('total_cpu_us_per_msg')}", "-", "", "<= 100 (2nd target)")
        row("c", "  Redis commands / round trips per message", f"{c['redis']['commands_per_msg']} / "
            f"{c['redis']['round_trips_per_msg']}", "-")
    if "d_latency" in r:
        d = r["d_latency"]
        o, p = d.get("ours", {}), d.get("plain", {})
        row("d", f"enqueue->gateway p50 / p99 ms @{o.get('rate_per_s')}/s", f"{o.get('p50_ms')} / {o.get('p99_ms')}",
            f"{p.get('p50_ms')} / {p.get('p99_ms')}")
        row("d", "  .delay() call p50 / p99 ms", f"{o.get('enqueue_call_p50_ms')} / {o.get('enqueue_call_p99_ms')}",
            f"{p.get('enqueue_call_p50_ms')} / {p.get('enqueue_call_p99_ms')}")
    if "e_redis" in r:
        e = r["e_redis"]
        o, p = e.get("ours", {}), e.get("plain", {})
        if o and p:
            row("e", "smsdispatch's own round trips/msg (producer + worker)",
                f"{o['own']['total']} ({o['own']['producer']} + {o['own']['worker']})", "-", "",
                f"<= 3 {mark(v.get('e_own_round_trips_le_3'))}")
            row("e", "Redis round trips/msg, send path, with Celery's", o["send_path"]["round_trips_per_msg"],
                p["send_path"]["round_trips_per_msg"], f"+{e['ours_minus_plain_round_trips_per_msg']}")
            row("e", "  of which producer (client-side count)",
                f"{o['producer']['round_trips_per_msg']} ({o['producer']['client_side_round_trips_per_msg']})",
                f"{p['producer']['round_trips_per_msg']} ({p['producer']['client_side_round_trips_per_msg']})")
            row("e", "  of which worker", o["worker"]["round_trips_per_msg"], p["worker"]["round_trips_per_msg"])
            row("e", "Redis commands/msg, send path", o["send_path"]["commands_per_msg"],
                p["send_path"]["commands_per_msg"])
    widths = [max(len(x[i]) for x in rows + [("part", "measure", "ours", "plain", "ratio / target")]) for i in range(5)]
    head = ("part", "measure", "ours", "plain", "ratio / target")
    lines.append("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(x, widths, strict=True)) for x in rows]
    if "e_redis" in r:
        for kind in ("ours", "plain"):
            if kind in r["e_redis"]:
                top = r["e_redis"][kind]["send_path"]["top_commands"]
                lines.append(f"(e) {kind} top commands per message: " + ", ".join(f"{k} {x}" for k, x in top.items()))
        for kind in ("ours", "plain"):
            one = r["e_redis"].get(kind, {}).get("one_message")
            if one:
                own = (f"; smsdispatch's own: {', '.join(one['own_connections'])}" if one.get("own_connections")
                       else "")
                head = (f"(e) {kind}, one message as MONITOR saw it ({one['commands']} commands; top-level calls: "
                        f"producer {one['calls']['P']}, worker {one['calls']['W']}{own}): ")
                lines += textwrap.wrap(head + " ".join(one["sequence"]), width=140, subsequent_indent="      ",
                                       break_long_words=False, break_on_hyphens=False)
    profiles = [("a: producer ours (driver)", r.get("a_producer", {}).get("ours", {}).get("profile")),
                ("a: producer plain (driver)", r.get("a_producer", {}).get("plain", {}).get("profile")),
                ("b: our worker, single sends", r.get("b_single", {}).get("ours", {}).get("profile")),
                ("b: plain's worker, single sends", r.get("b_single", {}).get("plain", {}).get("profile")),
                ("bb: our worker, a backlog of single sends", r.get("bb_backlog", {}).get("ours", {}).get("profile")),
                ("bb: plain's worker, a backlog of single sends", r.get("bb_backlog", {}).get("plain", {}).get("profile")),
                ("c: our worker, batch", r.get("c_batch", {}).get("profile"))]
    for label, prof in profiles:
        if prof:
            lines.append(f"py-spy {label} (GIL busy {prof['gil_busy_pct']}% of {prof['seconds']} s): by package "
                         + ", ".join(f"{k} {x}%" for k, x in prof["self_by_package"]))
            lines.append("  self: " + "; ".join(f"{k} {x}%" for k, x in prof["self_top"][:10]))
            lines.append("  inclusive smsdispatch: " + "; ".join(f"{k} {x}%" for k, x in prof["inclusive_smsdispatch"][:8]))
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--broker", choices=("redis", "rabbitmq"), default="redis",
                   help="the broker of ours and plain: the private Redis (default), or RabbitMQ (a throwaway vhost "
                        "on 127.0.0.1:5672; parts a and b)")
    p.add_argument("--only", help=f"comma-separated parts to run ({','.join(PARTS)}); default all")
    p.add_argument("--concurrency", type=int, default=20, help="worker threads, ours and plain (compose: 20)")
    p.add_argument("--worker-args", default="", help="extra `celery worker` arguments for both workers")
    p.add_argument("--latency-ms", type=float, default=50.0, help="fake gateway latency per request")
    p.add_argument("--runs", type=int, default=3, help="runs of (a) and (b) (the median is reported)")
    p.add_argument("--producer", type=int, default=2000, help="(a) .delay() calls per run")
    p.add_argument("--single", type=int, default=2000, help="(b) messages per run")
    p.add_argument("--warmup", type=int, default=100, help="(b) messages before the measured runs")
    p.add_argument("--batch", type=int, default=100_000, help="(c) recipients in the batch")
    p.add_argument("--batch-workers", type=int, default=1,
                   help="(c) worker processes on the batch queue (one per core uses every core)")
    p.add_argument("--batch-concurrency", type=int, default=None,
                   help="(c) worker threads for the batch (default: --concurrency)")
    p.add_argument("--batch-timeout", type=float, default=300.0, help="(c) seconds to wait for the batch")
    p.add_argument("--pace", type=float, default=20.0, help="(d) messages per second")
    p.add_argument("--pace-seconds", type=float, default=12.0, help="(d) seconds of paced sending")
    p.add_argument("--redis-n", type=int, default=500, help="(e) messages counted")
    p.add_argument("--idle-seconds", type=float, default=5.0, help="(e) idle window for the background rate")
    p.add_argument("--wait-quiet", type=float, default=0.0,
                   help="wait up to this many seconds for other processes to leave the CPU before starting")
    p.add_argument("--profile", metavar="DIR", help="attach py-spy to the workers during (b), (bb) and (c); raw stacks in DIR")
    p.add_argument("--json-out", metavar="FILE", help="also write the JSON result to FILE")
    a = p.parse_args(argv)
    for name in ("producer", "single", "batch", "redis_n", "runs", "concurrency", "batch_workers"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if a.batch_workers > 8:
        p.error("--batch-workers is bounded: at most 8")
    if a.batch > 1_000_000 or a.single > 100_000 or a.producer > 100_000 or a.pace_seconds > 120:
        p.error("counts are bounded: --batch <= 1,000,000, --single/--producer <= 100,000, --pace-seconds <= 120")
    return a


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result = run(args)
    print(table(result))
    line = json.dumps(result, separators=(",", ":"))
    print(line, flush=True)
    if args.json_out:
        Path(args.json_out).write_text(line + "\n")


if __name__ == "__main__":
    main()
