"""A batch's CPU per message without Celery: its chunks run one after another in this process.

`bench.run`'s part (c) times a batch through a real worker: honest end to end, but its figures move
with the machine by ±30% between runs, and a sampling profiler of twenty threads sharing the GIL
blames whatever C call a thread was in when another wanted the GIL (JSON encoding looked like a
quarter of the worker; encoding it with orjson changed nothing). This part holds still enough to
compare two versions of the code within a few per cent:

- a batch of `--n` distinct numbers is stored (`Batches.store`) in a private redis-server (AOF on),
  then every chunk runs in this thread (`Batches.run_chunk`), its gateway calls on the fake Eskiz in
  this process with no latency: `chunk` is this thread's CPU per message, `redis` redis-server's;
- `validate` is the part of `chunk` that checks the entries and builds their messages
  (`Batches.prepare_entry` alone, on the same entries, every number parsed anew as in the chunks);
- `--rounds` rounds, the median of each printed, then one JSON line.

    python -m bench.chunk --n 20000 --rounds 3
    python -m bench.chunk --n 20000 --profile     # cProfile of one round, on this thread's CPU clock

The fake's HTTP threads and the batch's call threads are not counted in `chunk` (a few µs per message
of the worker's total in part c).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import random
import statistics
import sys
import time

import psutil

from bench.gateway import EMAIL, PASSWORD, SlowEskiz
from smsdispatch import phone
from smsdispatch.batch import Batches
from smsdispatch.config import load_settings
from smsdispatch.devtools.redis_server import EmbeddedRedis
from smsdispatch.dispatch import Dispatcher, message_id_for
from smsdispatch.redisclient import connect_to

TEXT = "Your code is 1234. Do not share it."


def entries(n: int, seed: int) -> list[dict[str, str]]:
    """`n` entries to distinct Uzbek mobile numbers (as bench.run's part c sends)."""
    picked = random.Random(seed).sample(range(10**7), n)
    return [{"to": f"+99890{x:07d}", "text": TEXT} for x in picked]


def one_round(batches: Batches, redis_ps: psutil.Process, n: int, seed: int,
              profile: cProfile.Profile | None = None) -> dict[str, float]:
    batch_id = f"chunk-bench-{seed}"
    messages = entries(n, seed)
    chunks = batches.store(batch_id, messages, gateway=None, sender=None, idempotency_key=None,
                           submission=batch_id)
    phone._normalise.cache_clear()           # a number seen in an earlier round would be a cache hit
    r0, t0 = sum(redis_ps.cpu_times()[:2]), time.thread_time()
    if profile:
        profile.enable()
    for index in range(chunks):
        outcome = batches.run_chunk(batch_id, index, submission=batch_id)
        if outcome.retry_in is not None or set(outcome.counts) != {"accepted"}:
            raise SystemExit(f"chunk {index}: not every message accepted at once ({dict(outcome.counts)}); "
                             f"not a fair measure")
    if profile:
        profile.disable()
    chunk, redis_cpu = time.thread_time() - t0, sum(redis_ps.cpu_times()[:2]) - r0
    meta, ids = {"gateway": "", "sender": ""}, [message_id_for(f"{batch_id}:{i}", "") for i in range(n)]
    phone._normalise.cache_clear()           # as the chunks met them: each number parsed for the first time
    t0 = time.thread_time()
    for entry, message_id in zip(messages, ids, strict=True):
        batches.prepare_entry(entry, meta, message_id)
    validate = time.thread_time() - t0
    return {"chunk_us": chunk / n * 1e6, "validate_us": validate / n * 1e6, "redis_us": redis_cpu / n * 1e6}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20_000, help="messages per round (distinct numbers)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="print cProfile's top functions of one round")
    args = parser.parse_args(argv)
    server = EmbeddedRedis().start()
    try:
        with SlowEskiz(latency_ms=0) as fake:
            rounds, profile = _rounds(server, fake, args)
    finally:
        server.stop()
    medians = {k: round(statistics.median(r[k] for r in rounds), 1) for k in rounds[0]}
    for name in ("chunk", "validate", "redis"):
        each = ", ".join(f"{r[f'{name}_us']:.1f}" for r in rounds)
        print(f"{name:9s} {medians[f'{name}_us']:7.1f} µs/msg  (rounds: {each})", file=sys.stderr)
    if profile:
        print("cProfile of round 1 (its clock adds ~1 µs per call: compare shares, not totals):", file=sys.stderr)
        pstats.Stats(profile, stream=sys.stderr).sort_stats("tottime").print_stats(25)
    print(json.dumps({"n": args.n, "rounds": args.rounds, "median_us_per_msg": medians,
                      "total_us_per_msg": round(medians["chunk_us"] + medians["redis_us"], 1)}))


def _rounds(server: EmbeddedRedis, fake: SlowEskiz,
            args: argparse.Namespace) -> tuple[list[dict[str, float]], cProfile.Profile | None]:
    settings = load_settings(redis_url=server.url, key_prefix="chunkbench", default_gateway="eskiz",
                             eskiz_base_url=fake.base_url, eskiz_email=EMAIL, eskiz_password=PASSWORD)
    batches = Batches(Dispatcher(settings, connect_to(settings), result_ttl=3600))
    redis_ps = psutil.Process(server.process.pid)
    one_round(batches, redis_ps, min(args.n, 2_000), seed=0)          # warm-up: token, pools, imports
    profile = cProfile.Profile(time.thread_time) if args.profile else None
    rounds = [one_round(batches, redis_ps, args.n, seed=r + 1, profile=profile if r == 0 else None)
              for r in range(args.rounds)]
    return rounds, profile


if __name__ == "__main__":
    main()
