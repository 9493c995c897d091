"""The cost of HTTP_TOTAL_TIMEOUT's deadline per gateway call (smsdispatch/gateways/deadline.py).

Times `HttpGateway.request` against a local fake (in this process, on 127.0.0.1, keep-alive): `rounds`
runs of `calls` calls after a warm-up, and prints one JSON line with µs per call (min and median of
the rounds). Where the deadline exists it also times the watchdog's part alone (begin, claim, end on a
stand-in connection, no network).

    python -m bench.deadline --calls 2000 --rounds 7 [--json]

`--json` sends the body as `json=`, as every gateway's send does: that call is prepared by
`HttpGateway._prepared` rather than `Session.request` (form data still goes through the latter).

It uses only HttpGateway(base_url, connect_timeout=, read_timeout=), so it runs unchanged on the code
before the deadline: run both, alternating, with PYTHONPATH pointing at each checkout, and compare
the medians of one sitting (the machine's speed drifts between sittings, see README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from smsdispatch.devtools.fakes.base import FakeGateway, Reply, Request
from smsdispatch.gateways.base import HttpGateway


class Echo(FakeGateway):
    prefix = "/api"
    send_path = "/send"
    name = "echo"

    def route(self, req: Request) -> Reply:
        return Reply(200, {"id": "1", "status": "waiting"})


class Probe(HttpGateway):
    name = "probe"
    send = status = balance = None


def http_rounds(calls: int, rounds: int, *, as_json: bool = False) -> tuple[list[float], list[float]]:
    """µs per call of each round: wall time, and this thread's CPU (the fake answers in its own threads).
    `as_json`: the body as `json=` (every gateway's send), else as form data."""
    with Echo() as fake:
        gw = Probe(fake.base_url, connect_timeout=5, read_timeout=15)
        body = {"mobile_phone": "998901234567", "message": "bench", "from": "4546"}
        arguments = {"json": body} if as_json else {"data": body}
        for _ in range(200):
            gw.request("POST", "/send", **arguments)
        wall, cpu = [], []
        for _ in range(rounds):
            started, cpu_started = time.perf_counter(), time.thread_time()
            for _ in range(calls):
                gw.request("POST", "/send", **arguments)
            wall.append((time.perf_counter() - started) / calls * 1e6)
            cpu.append((time.thread_time() - cpu_started) / calls * 1e6)
        return wall, cpu


def watchdog_rounds(calls: int, rounds: int) -> list[float] | None:
    try:
        from smsdispatch.gateways.deadline import WATCHDOG
    except ImportError:     # the code before the deadline
        return None

    class Conn:
        sock = None

    conn, out = Conn(), []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(calls):
            call = WATCHDOG.begin(20.0)
            WATCHDOG.claim(call, conn, sending=True)
            WATCHDOG.end(call)
        out.append((time.perf_counter() - started) / calls * 1e6)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--label", default="")
    parser.add_argument("--json", action="store_true", help="send the body as json= (a send), not form data")
    a = parser.parse_args(argv)
    http, cpu = http_rounds(a.calls, a.rounds, as_json=a.json)
    alone = watchdog_rounds(a.calls * 10, a.rounds)
    result = {"label": a.label, "calls": a.calls, "rounds": a.rounds, "load": os.getloadavg()[0],
              "body": "json" if a.json else "form",
              "http_us_per_call": {"min": round(min(http), 1), "median": round(statistics.median(http), 1)},
              "http_cpu_us_per_call": {"min": round(min(cpu), 1), "median": round(statistics.median(cpu), 1)}}
    if alone is not None:
        result["watchdog_us_per_call"] = {"min": round(min(alone), 2), "median": round(statistics.median(alone), 2)}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
