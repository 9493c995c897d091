"""The benchmark's gateway: the fake Eskiz (real protocol, send and native send-batch) with a latency.

`SlowEskiz` is smsdispatch.devtools.fakes.eskiz.FakeEskiz plus a fixed delay (default 50 ms) before every
request is routed, slept in the request's own thread: the fake is a ThreadingHTTPServer (a thread per
keep-alive connection), so concurrent requests overlap their delays and the latency alone never makes
it the bottleneck. `received_at` (time.monotonic(), stamped when a request arrives, before the delay)
is what the latency benchmark compares with the enqueue time.

`capacity()` measures the fake itself: a load client in a separate process (so it does not share the
GIL of the process that hosts the fake) posts as fast as it can from many threads over one pooled
session, for a few seconds.

    python -m bench.gateway --port 8765 --latency-ms 50          # serve in the foreground
    python -m bench.gateway load --url http://127.0.0.1:8765/api --threads 50 --seconds 3 [--batch 500]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from smsdispatch.devtools.fakes.base import Reply, Request, run_cli
from smsdispatch.devtools.fakes.eskiz import FakeEskiz

EMAIL, PASSWORD = "bench@example.com", "bench-password"
ROOT = Path(__file__).resolve().parent.parent
MAX_LOAD_SECONDS = 30.0


class SlowEskiz(FakeEskiz):
    """FakeEskiz that answers every request `latency_ms` after it arrived (plus its own work)."""

    def __init__(self, *, latency_ms: float = 50.0, email: str = EMAIL, password: str = PASSWORD,
                 balance: int = 10**15, **kwargs: Any) -> None:
        super().__init__(email=email, password=password, balance=balance, **kwargs)
        self.latency = float(latency_ms) / 1000.0     # may be changed between runs

    def route(self, req: Request) -> Reply:
        if self.latency > 0:
            time.sleep(self.latency)
        return super().route(req)


# --------------------------------------------------------------------------------------------- load
def load(url: str, *, threads: int, seconds: float, batch: int = 0, email: str = EMAIL,
         password: str = PASSWORD) -> dict[str, Any]:
    """Post sends (or send-batch calls of `batch` messages) from `threads` threads for `seconds`."""
    seconds = min(seconds, MAX_LOAD_SECONDS)
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=1, pool_maxsize=threads, max_retries=0)
    session.mount("http://", adapter)
    login = session.post(f"{url}/auth/login", data={"email": email, "password": password}, timeout=(5, 15))
    login.raise_for_status()
    headers = {"Authorization": f"Bearer {login.json()['data']['token']}"}
    lock = threading.Lock()
    latencies: list[float] = []
    counts = {"requests": 0, "messages": 0, "errors": 0}
    start = time.perf_counter()
    deadline = start + seconds
    ends: list[float] = []

    def run(k: int) -> None:
        mine, i, errors, msgs = [], 0, 0, 0
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            try:
                if batch:
                    body = {"messages": [{"user_sms_id": f"load-{k}-{i}-{j}", "to": "998901234567", "text": "load"}
                                         for j in range(batch)], "from": "4546", "dispatch_id": k * 1_000_000 + i + 1}
                    r = session.post(f"{url}/message/sms/send-batch", json=body, headers=headers, timeout=(5, 15))
                else:
                    form = {"mobile_phone": "998901234567", "message": "load", "from": "4546",
                            "user_sms_id": f"load-{k}-{i}"}
                    r = session.post(f"{url}/message/sms/send", data=form, headers=headers, timeout=(5, 15))
                ok = r.status_code == 200
            except requests.RequestException:
                ok = False
            mine.append(time.perf_counter() - t)
            if ok:
                msgs += batch or 1
            else:
                errors += 1
            i += 1
        with lock:
            latencies.extend(mine)
            counts["requests"] += len(mine)
            counts["messages"] += msgs
            counts["errors"] += errors
            ends.append(time.perf_counter())

    pool = [threading.Thread(target=run, args=(k,), daemon=True) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(seconds + 20)
    elapsed = (max(ends) if ends else time.perf_counter()) - start
    latencies.sort()
    return {"threads": threads, "batch": batch, "seconds": round(elapsed, 3), **counts,
            "requests_per_s": round(counts["requests"] / elapsed, 1),
            "messages_per_s": round(counts["messages"] / elapsed, 1),
            "p50_ms": round(1000 * statistics.median(latencies), 1) if latencies else None,
            "p99_ms": round(1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 1)
            if latencies else None}


def capacity(fake: SlowEskiz, *, threads: int, seconds: float, batch: int = 0,
             latency_ms: float | None = None) -> dict[str, Any]:
    """Run `load` against `fake` from a subprocess; the fake's latency is set for the run, then restored."""
    saved = fake.latency
    if latency_ms is not None:
        fake.latency = latency_ms / 1000.0
    try:
        cmd = [sys.executable, "-m", "bench.gateway", "load", "--url", fake.base_url, "--threads", str(threads),
               "--seconds", str(seconds), "--batch", str(batch)]
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=seconds + 60)
        if done.returncode != 0:
            raise RuntimeError(f"load client failed: {done.stderr[-2000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        fake.latency = saved
        fake.reset()
    result["latency_ms"] = round(1000 * (fake.latency if latency_ms is None else latency_ms), 1)
    return result


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["load"]:
        p = argparse.ArgumentParser(prog="python -m bench.gateway load")
        p.add_argument("--url", required=True)
        p.add_argument("--threads", type=int, default=50)
        p.add_argument("--seconds", type=float, default=3.0)
        p.add_argument("--batch", type=int, default=0)
        a = p.parse_args(argv[1:])
        print(json.dumps(load(a.url, threads=a.threads, seconds=a.seconds, batch=a.batch)), flush=True)
        return
    run_cli(SlowEskiz, "The fake Eskiz with a per-request latency, for benchmarks.", argv=argv,
            port=8765, balance=10**15, email=EMAIL, password=PASSWORD, latency_ms=50.0)


if __name__ == "__main__":
    main()
