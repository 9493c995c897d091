"""How many messages one Redis primary carries, and what a durable claim (CLAIM_REPLICAS) costs.

    python -m bench.capacity                      # all parts, about 2 minutes on 2 cores
    python -m bench.capacity --only wait,e2e      # some of them

Everything on 127.0.0.1: a private primary (AOF on, everysec, as in compose) and one replica of it
(smsdispatch.devtools.redis_server.EmbeddedRedis), the fake Eskiz of bench/gateway.py (50 ms), and
`celery worker --pool threads --concurrency 20` subprocesses for the end-to-end part.

Parts:
  baseline  redis-benchmark against the primary (SET, LPUSH, RPOP; 50 clients, no pipelining): what this
            machine's Redis does with the simplest commands
  scripts   our own Redis work per message, as the send path does it (record_queued at the producer,
            then begin and finish in the worker: 3 scripts, 3 round trips), from --clients processes
            at once for --seconds: messages/s, and redis-server's CPU per message (its /proc times)
  wait      Ledger.begin alone, one thread, CLAIM_REPLICAS 0 and 1 alternating in blocks (the replica is
            attached throughout): microseconds per claim, the WAIT's cost
  e2e       single sends end to end (bench/run.py's part b: enqueue N, until N tasks succeeded), our worker
            with CLAIM_REPLICAS=0 and with CLAIM_REPLICAS=1, runs alternating; msg/s and redis-server
            CPU per message with Celery's own commands (publish, BRPOP, unacked, ack, events)

One Redis primary runs its commands on one core: the messages per second it can carry is about
1 s / (its CPU per message). The figures of `scripts` and `e2e` give that ceiling for our part and
for the whole send path; a machine shared with the clients (2 cores here) cannot show the ceiling
itself, so the report says how much of a core Redis used. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import queue
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import redis

from bench.gateway import SlowEskiz
from bench.run import Bench, log, machine_info, med, number, pctl
from bench.workers import CeleryWorker
from smsdispatch.config import load_settings
from smsdispatch.devtools.redis_server import EmbeddedRedis
from smsdispatch.dispatch import Dispatcher
from smsdispatch.ledger import Durability
from smsdispatch.records import MessageStatus
from smsdispatch.redisclient import connect
from smsdispatch.tasks import SEND_SMS

PARTS = ("baseline", "scripts", "wait", "e2e")
TEXT = "Your code is 4821"


def redis_cpu(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


# ----------------------------------------------------------------------------------------- baseline
def part_baseline(server: EmbeddedRedis, n: int) -> dict[str, Any]:
    tool = shutil.which("redis-benchmark")
    if not tool:
        return {"skipped": "no redis-benchmark on PATH"}
    out = subprocess.run([tool, "-h", "127.0.0.1", "-p", str(server.port), "-q", "-n", str(n), "-c", "50",
                          "-t", "set,lpush,rpop"], capture_output=True, text=True, timeout=300).stdout
    rates = {m.group(1).lower(): float(m.group(2)) for m in re.finditer(r"^(\w+): ([\d.]+) requests per second", out,
                                                                         re.MULTILINE)}
    return {"requests_per_s": rates, "clients": 50, "n": n, "pipelining": 1}


# ----------------------------------------------------------------------------------------- scripts
def _one_message(d: Dispatcher, run: str, i: int) -> None:
    """Our Redis work for one message, as the send path does it: the producer's `queued` record, the
    worker's begin (claim + `sending`) and finish (outcome, ledger, Celery result, circuit count)."""
    task_id = f"{run}-{i}"
    kwargs = {"to": number(i), "text": TEXT}
    mid = d.record_queued(kwargs, task_id=task_id)
    request, routes, fp = d.prepare(kwargs, mid)
    key = f"task:{task_id}"
    d._begin(request, routes, [], message_id=mid, key=key, fp=fp, task_id=task_id)
    d._write_outcome(mid, key, d.results.slot(task_id), MessageStatus.ACCEPTED, gateway_message_id=f"g-{i}",
                     gateway="console", error=None, pinned_gateway=None, call=("console", False, False))


def _hammer(url: str, prefix: str, seconds: float, start_at: float, out: Any) -> None:
    d = Dispatcher(load_settings(redis_url=url, key_prefix=prefix), connect(url), result_ttl=600)
    run = uuid.uuid4().hex[:8]
    for i in range(20):                         # connections and scripts
        _one_message(d, run + "w", i)
    while time.time() < start_at:
        time.sleep(0.005)                       # all clients start together (another process's clock)
    done, deadline = 0, start_at + seconds
    while time.time() < deadline:
        _one_message(d, run, done)
        done += 1
    out.put(done)


def part_scripts(server: EmbeddedRedis, *, clients: int, seconds: float) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    start_at = time.time() + 3.0 + clients * 0.5     # time for the clients to import and warm up
    procs = [ctx.Process(target=_hammer, args=(server.url, f"cap{n}", seconds, start_at, out)) for n in range(clients)]
    for p in procs:
        p.start()
    while time.time() < start_at:
        time.sleep(0.005)
    c0, t0 = redis_cpu(server.process.pid), time.monotonic()
    time.sleep(seconds)                         # the clients stop at start_at + seconds
    c1, t1 = redis_cpu(server.process.pid), time.monotonic()
    done = 0
    for _ in procs:
        while True:
            try:
                done += out.get(timeout=1.0)
                break
            except queue.Empty:
                if any(p.exitcode not in (None, 0) for p in procs):
                    raise RuntimeError("a client process failed (its traceback is above)") from None
    for p in procs:
        p.join(30)
    cpu_us = 1e6 * (c1 - c0) / max(1, done)
    return {"clients": clients, "seconds": round(t1 - t0, 1), "messages": done,
            "messages_per_s": round(done / (t1 - t0)), "redis_cpu_us_per_msg": round(cpu_us, 1),
            "redis_core_used_pct": round(100 * (c1 - c0) / (t1 - t0)),
            "ceiling_messages_per_s": round(1e6 / cpu_us) if cpu_us else None}


# ----------------------------------------------------------------------------------------- wait
def part_wait(server: EmbeddedRedis, *, n: int, block: int) -> dict[str, Any]:
    settings = load_settings(redis_url=server.url, key_prefix="capwait", claim_replicas=1)
    d = Dispatcher(settings, connect(server.url))
    modes = {"claim_replicas_0": Durability(0), "claim_replicas_1": Durability(1, settings.claim_replica_timeout)}
    timings: dict[str, list[float]] = {m: [] for m in modes}
    not_durable = 0
    run = uuid.uuid4().hex[:8]
    kwargs = {"to": number(1), "text": TEXT}
    request, routes, fp = d.prepare(kwargs, "m")
    i = 0
    for _ in range(50):             # warm-up, both modes
        for durability in modes.values():
            d.ledger.durability = durability
            i += 1
            d._begin(request, routes, [], message_id=f"{run}-{i}", key=f"task:{run}-{i}", fp=fp, task_id=f"{run}-{i}")
    while min(len(t) for t in timings.values()) < n:
        for mode, durability in modes.items():
            d.ledger.durability = durability
            for _ in range(block):
                i += 1
                t0 = time.perf_counter()
                begun = d._begin(request, routes, [], message_id=f"{run}-{i}", key=f"task:{run}-{i}", fp=fp,
                                 task_id=f"{run}-{i}")
                timings[mode].append(1e6 * (time.perf_counter() - t0))
                not_durable += not begun.claim.durable
    out: dict[str, Any] = {m: {"median_us": round(med(t)), "mean_us": round(statistics.fmean(t)),
                               "p99_us": round(pctl(t, 0.99))} for m, t in timings.items()}
    out["wait_cost_median_us"] = out["claim_replicas_1"]["median_us"] - out["claim_replicas_0"]["median_us"]
    out.update(n=n, block=block, not_durable=not_durable)
    return out


# ----------------------------------------------------------------------------------------- e2e
class ClaimReplicasBench(Bench):
    """bench/run.py's Bench, our worker's settings taking CLAIM_REPLICAS from the queue's name."""

    def our_settings(self, queue: str) -> dict[str, str]:
        replicas = queue.rsplit("-r", 1)[-1] if "-r" in queue else "0"
        return super().our_settings(queue) | {"SMSDISPATCH_CLAIM_REPLICAS": replicas}


def part_e2e(args: argparse.Namespace, server: EmbeddedRedis, fake: SlowEskiz, log_dir: Path) -> dict[str, Any]:
    bench_args = argparse.Namespace(single=args.single, runs=args.runs, warmup=100, concurrency=20, worker_args="")
    bench = ClaimReplicasBench(bench_args, server, fake, log_dir)
    sides: dict[str, tuple[CeleryWorker, Any]] = {}
    try:
        for replicas in (0, 1):
            queue = f"bench-cap-r{replicas}"
            sides[f"claim_replicas_{replicas}"] = (bench.start_worker("ours", queue), bench.our_app(queue))
        result = bench.throughput({k: (w, app.tasks[SEND_SMS].delay) for k, (w, app) in sides.items()}, None)
    finally:
        for worker, app in sides.values():
            worker.stop()
            app.close()
    out: dict[str, Any] = {}
    for label, side in result.items():
        ms = side["redis_cpu_ms_per_msg"]
        out[label] = {k: side[k] for k in ("msgs_per_s", "worker_cpu_ms_per_msg", "redis_cpu_ms_per_msg",
                                           "foreign_cpu_pct_max", "exactly_n_sends", "all_completed")}
        out[label]["runs_msgs_per_s"] = [r["msgs_per_s"] for r in side["runs"]]
        out[label]["ceiling_messages_per_s"] = round(1000 / ms) if ms else None
    out["throughput_ratio"] = round(out["claim_replicas_1"]["msgs_per_s"] / out["claim_replicas_0"]["msgs_per_s"], 3)
    return out


# ----------------------------------------------------------------------------------------- report
def table(r: dict[str, Any]) -> str:
    lines = [f"bench.capacity on {r['machine']['cpus']} cores ({r['machine']['cpu_model']}), redis "
             f"{r['machine']['redis_server']}; other processes used {r['machine']['cpu_busy_pct_before']}% of the CPU "
             f"before, load {r['machine']['loadavg_start']} -> {r['machine'].get('loadavg_end')}"]
    if "baseline" in r and "requests_per_s" in r["baseline"]:
        lines.append("baseline   redis-benchmark, 50 clients: " + ", ".join(
            f"{k} {v:,.0f}/s" for k, v in r["baseline"]["requests_per_s"].items()))
    if "scripts" in r:
        s = r["scripts"]
        lines.append(f"scripts    our 3 scripts per message, {s['clients']} client processes: {s['messages_per_s']:,} msg/s, "
                     f"redis {s['redis_cpu_us_per_msg']} us CPU/msg ({s['redis_core_used_pct']}% of a core) -> "
                     f"ceiling ~{s['ceiling_messages_per_s']:,} msg/s")
    if "wait" in r:
        w = r["wait"]
        lines.append(f"wait       begin, median (p99): {w['claim_replicas_0']['median_us']} us "
                     f"({w['claim_replicas_0']['p99_us']}) without, {w['claim_replicas_1']['median_us']} us "
                     f"({w['claim_replicas_1']['p99_us']}) with WAIT 1 -> +{w['wait_cost_median_us']} us per claim "
                     f"({w['not_durable']} not durable)")
    if "e2e" in r:
        e = r["e2e"]
        for label in ("claim_replicas_0", "claim_replicas_1"):
            x = e[label]
            lines.append(f"e2e        {label}: {x['msgs_per_s']} msg/s (runs {x['runs_msgs_per_s']}), worker "
                         f"{x['worker_cpu_ms_per_msg']} ms CPU/msg, redis {x['redis_cpu_ms_per_msg']} ms CPU/msg -> "
                         f"ceiling ~{x['ceiling_messages_per_s']:,} msg/s")
        lines.append(f"e2e        throughput with / without durable claims: {e['throughput_ratio']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict[str, Any]:
    parts = set(args.only.split(",")) if args.only else set(PARTS)
    if parts - set(PARTS):
        raise SystemExit(f"--only: unknown parts {sorted(parts - set(PARTS))}; known: {','.join(PARTS)}")
    busy = psutil.cpu_percent(interval=1.0)
    log_dir = Path(tempfile.mkdtemp(prefix="smsdispatch-capacity-"))
    result: dict[str, Any] = {}
    with EmbeddedRedis() as primary, EmbeddedRedis(replicaof=primary.port) as replica, \
            SlowEskiz(latency_ms=args.latency_ms) as fake:
        deadline = time.monotonic() + 30
        while redis.Redis(port=primary.port).info("replication").get("connected_slaves", 0) < 1:
            if time.monotonic() > deadline:
                raise SystemExit("the replica did not connect")
            time.sleep(0.1)
        result["machine"] = machine_info(primary.url) | {"cpu_busy_pct_before": round(busy, 1)}
        result["replica"] = f"127.0.0.1:{replica.port} (AOF on), attached to the primary throughout"
        log(f"primary {primary.url}, replica port {replica.port}, logs in {log_dir}")
        if "baseline" in parts:
            log("baseline: redis-benchmark")
            result["baseline"] = part_baseline(primary, args.baseline_n)
        if "scripts" in parts:
            log(f"scripts: {args.clients} client processes for {args.seconds:g}s")
            result["scripts"] = part_scripts(primary, clients=args.clients, seconds=args.seconds)
        if "wait" in parts:
            log(f"wait: {args.claims} claims per mode")
            result["wait"] = part_wait(primary, n=args.claims, block=args.block)
        if "e2e" in parts:
            log(f"e2e: {args.runs} runs of {args.single} single sends per mode")
            result["e2e"] = part_e2e(args, primary, fake, log_dir)
        result["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.capacity", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", help=f"comma-separated parts ({','.join(PARTS)}); default all")
    p.add_argument("--clients", type=int, default=4, help="scripts: client processes")
    p.add_argument("--seconds", type=float, default=10.0, help="scripts: seconds of load")
    p.add_argument("--claims", type=int, default=2000, help="wait: claims per mode")
    p.add_argument("--block", type=int, default=200, help="wait: claims in a row before switching modes")
    p.add_argument("--single", type=int, default=1000, help="e2e: messages per run")
    p.add_argument("--runs", type=int, default=3, help="e2e: runs per mode (alternating)")
    p.add_argument("--latency-ms", type=float, default=50.0, help="e2e: fake gateway latency")
    p.add_argument("--baseline-n", type=int, default=200_000, help="baseline: requests per command")
    a = p.parse_args(argv)
    if not (1 <= a.clients <= 16 and 0 < a.seconds <= 120 and 1 <= a.claims <= 100_000 and 1 <= a.single <= 20_000
            and 1 <= a.runs <= 10 and 1 <= a.baseline_n <= 2_000_000):
        p.error("sizes are bounded: --clients 1..16, --seconds <= 120, --claims <= 100000, --single <= 20000, "
                "--runs <= 10, --baseline-n <= 2000000")
    return a


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result = run(args)
    print(table(result))
    print(json.dumps({"capacity": result}, separators=(",", ":")), flush=True)


if __name__ == "__main__":
    sys.exit(main())
