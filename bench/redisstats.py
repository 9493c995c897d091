"""Redis commands and round trips per message.

Server side: one `INFO all` per snapshot gives `commandstats` (calls per command) and `stats`
(`total_commands_processed`, `total_reads_processed`, `total_net_input_bytes`). The difference of two
snapshots, minus what the server does while everything is idle (measured just before, as a rate, and
scaled to the window), divided by the number of messages, is commands per message.

Round trips: Redis counts one "read" (`total_reads_processed`, Redis >= 6) each time it reads a
client socket that has data. A client that sends one command and waits for its answer causes one
read; a pipeline (MULTI/EXEC or not) or a Lua script sent in one write causes one read, however
many commands it holds. So the difference in reads per message estimates the round trips per message
(a large pipeline, over 16 KB, is read in several pieces and counts more than once: not the case on the
single-send path). The INFO of the closing snapshot is one read and one command, taken off.

Client side (a cross-check, in the driver process only): `ClientRoundTrips` counts calls of redis-py's
`send_packed_command` (one per command sent alone, one per pipeline), for every redis-py connection in
the process, kombu's and Celery's result backend's included.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import redis
from redis.connection import AbstractConnection


def snapshot(client: redis.Redis) -> dict[str, Any]:
    info = client.info("all")
    commands = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items() if k.startswith("cmdstat_")}
    return {"t": time.monotonic(), "commands": commands,
            "reads": int(info.get("total_reads_processed", 0)),
            "processed": int(info.get("total_commands_processed", 0)),
            "net_in": int(info.get("total_net_input_bytes", 0))}


def delta(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    names = set(a["commands"]) | set(b["commands"])
    commands = {n: b["commands"].get(n, 0) - a["commands"].get(n, 0) for n in names if n != "info"}
    return {"seconds": b["t"] - a["t"], "commands": {n: c for n, c in commands.items() if c},
            "reads": b["reads"] - a["reads"] - 1, "net_in": b["net_in"] - a["net_in"]}


def per_message(window: dict[str, Any], n: int, idle: dict[str, Any] | None = None, top: int = 12) -> dict[str, Any]:
    """Commands and reads per message in `window`, less the idle rate of `idle` over the same time."""
    scale = window["seconds"] / idle["seconds"] if idle and idle["seconds"] > 0 else 0.0
    idle_cmds = idle["commands"] if idle else {}
    commands = {k: (v - scale * idle_cmds.get(k, 0)) / n for k, v in window["commands"].items()}
    commands = {k: v for k, v in commands.items() if v > 0.005}
    reads = (window["reads"] - scale * (idle["reads"] if idle else 0)) / n
    ordered = sorted(commands.items(), key=lambda kv: -kv[1])
    return {"messages": n, "commands_per_msg": round(sum(commands.values()), 2),
            "round_trips_per_msg": round(reads, 2),
            "bytes_in_per_msg": round((window["net_in"] - scale * (idle["net_in"] if idle else 0)) / n),
            "top_commands": {k: round(v, 2) for k, v in ordered[:top]},
            "idle_subtracted": {"commands": round(scale * sum(idle_cmds.values()), 1),
                                "reads": round(scale * (idle["reads"] if idle else 0), 1)}}


class ClientRoundTrips:
    """Count redis-py writes (one per command or pipeline) made by this process while inside `with`."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()
        self._original = None

    def __enter__(self) -> ClientRoundTrips:
        original = self._original = AbstractConnection.send_packed_command
        counter = self

        def counting(conn, command, check_health=True):
            with counter._lock:
                counter.count += 1
            return original(conn, command, check_health)

        AbstractConnection.send_packed_command = counting
        return self

    def __exit__(self, *exc: object) -> None:
        AbstractConnection.send_packed_command = self._original


class Trace:
    """Every command Redis runs between start() and stop(), from MONITOR (for one message, in order)."""

    END = "bench-trace-end"

    def __init__(self, url: str) -> None:
        self.url = url
        self.commands: list[dict[str, Any]] = []
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="bench-monitor")

    def _run(self) -> None:
        with redis.Redis.from_url(self.url).monitor() as monitor:
            self._ready.set()
            for c in monitor.listen():
                if c["command"] == f"ECHO {self.END}":
                    return
                self.commands.append(c)

    def start(self) -> Trace:
        self._thread.start()
        self._ready.wait(5)
        time.sleep(0.2)
        return self

    def stop(self, client: redis.Redis) -> None:
        client.echo(self.END)
        self._thread.join(10)

    def render(self, producer_ports: set[str], own_ports: set[str] = frozenset()) -> dict[str, Any]:
        """The commands in order, per connection: P1, P2... are the driver's (the producer), W1, W2... the
        worker's, named in order of appearance. A MULTI..EXEC block is shown as [..], a script with the
        commands it ran as EVALSHA{..}, and n equal neighbours as WORD*n. `own_ports`: the connections
        of smsdispatch's own client (named CLIENT_NAME); their top-level calls are counted apart."""
        names: dict[str, str] = {}
        own: set[str] = set()
        groups: list[tuple[str, list[Any]]] = []      # (connection, items); an item is a word or [word, inner]
        open_multi: dict[str, list[Any]] = {}
        script: list[Any] | None = None
        for c in self.commands:
            word = c["command"].split(" ", 1)[0].upper()
            if c["client_type"] == "lua":
                if script is not None:
                    script[1].append(word)
                continue
            port = c["client_port"]
            if port not in names:
                side = "P" if port in producer_ports else "W"
                names[port] = f"{side}{sum(1 for n in names.values() if n[0] == side) + 1}"
                if port in own_ports:
                    own.add(names[port])
            who = names[port]
            item: Any = [word, []] if word in ("EVAL", "EVALSHA") else word
            script = item if isinstance(item, list) else None
            if word == "MULTI":
                open_multi[who] = []
                groups.append((who, open_multi[who]))
            elif who in open_multi:
                if word == "EXEC":
                    del open_multi[who]
                else:
                    open_multi[who].append(item)
            else:
                groups.append((who, [item]))
        rendered = [f"{who}:{_render(items)}" if len(items) == 1 else f"{who}:[{_render(items)}]"
                    for who, items in groups]
        return {"sequence": rendered, "commands": len(self.commands),
                "calls": {side: sum(1 for who, _ in groups if who[0] == side) for side in ("P", "W")},
                "own_calls": {side: sum(1 for who, _ in groups if who[0] == side and who in own) for side in ("P", "W")},
                "connections": sorted(set(names.values())), "own_connections": sorted(own)}


def ports_named(client: redis.Redis, name: str) -> set[str]:
    """The client ports of the connections that called themselves `name` (CLIENT SETNAME)."""
    return {c["addr"].rsplit(":", 1)[1] for c in client.client_list() if c.get("name") == name}


def _render(items: list[Any]) -> str:
    words = [f"{i[0]}{{{_render(i[1])}}}" if isinstance(i, list) else i for i in items]
    out: list[list[Any]] = []
    for w in words:
        if out and out[-1][0] == w:
            out[-1][1] += 1
        else:
            out.append([w, 1])
    return " ".join(w if n == 1 else f"{w}*{n}" for w, n in out)
