"""A private Redis Sentinel deployment on 127.0.0.1, for the tests, the chaos run and the benchmark.

One primary and its replicas (redis_server.EmbeddedRedis, AOF on) and three Sentinels (`redis-server
--sentinel`, the same binary), each a process of its own on a free port, in temporary directories,
stopped (only they) when done. The Sentinels judge the primary down after `down_after_ms` and need
two of three to agree; a failover then takes about another second. 2 s, not less: a Sentinel pings
every second, and with `down-after-milliseconds` at 1000 a primary promoted a moment ago could be
judged down before its first ping was even sent, and failed over again (seen on a loaded 2-core
machine: the writes it took in between were lost).

    with SentinelCluster(replicas=1) as cluster:
        url = cluster.url                 # sentinel://127.0.0.1:p1/0;sentinel://127.0.0.1:p2;...
        old = cluster.kill_primary()      # SIGKILL: a crash
        new = cluster.wait_for_failover(old)
        old.start()                       # back from its AOF; the Sentinels make it a replica of `new`
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import redis

from .redis_server import EmbeddedRedis, RedisUnavailable, find_redis_server, free_port

MASTER = "smsdispatch"


class EmbeddedSentinel:
    def __init__(self, *, master: str, primary_port: int, quorum: int, down_after_ms: int,
                 failover_timeout_ms: int) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="smsdispatch-sentinel-"))
        self.config = self.dir / "sentinel.conf"     # Sentinel rewrites it: it must be a file of its own
        self.config.write_text("\n".join([
            f"port {self.port}", "bind 127.0.0.1", f"dir {self.dir}", "logfile sentinel.log",
            f"sentinel monitor {master} 127.0.0.1 {primary_port} {quorum}",
            f"sentinel down-after-milliseconds {master} {down_after_ms}",
            f"sentinel failover-timeout {master} {failover_timeout_ms}",
            f"sentinel parallel-syncs {master} 1", ""]))
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> EmbeddedSentinel:
        self.process = subprocess.Popen([find_redis_server(), str(self.config), "--sentinel"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = self.client()
        deadline = time.monotonic() + timeout
        while True:  # a readiness poll: no event to wait on for another process's socket
            try:
                if client.ping():
                    return self
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RedisUnavailable(f"redis-server --sentinel did not start on port {self.port}") from None
                time.sleep(0.05)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_connect_timeout=0.5, socket_timeout=2)

    def primary_port(self, master: str) -> int:
        """The port of the primary this Sentinel names (SENTINEL GET-MASTER-ADDR-BY-NAME)."""
        _, port = cast(Any, self.client()).sentinel_get_master_addr_by_name(master)
        return int(port)

    def view(self, master: str) -> dict[str, Any]:
        """What this Sentinel knows of the primary (SENTINEL MASTER)."""
        return cast(dict[str, Any], self.client().sentinel_master(master))

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class SentinelCluster:
    def __init__(self, *, replicas: int = 1, sentinels: int = 3, master: str = MASTER, down_after_ms: int = 2000,
                 failover_timeout_ms: int = 6000, appendfsync: str | None = None) -> None:
        self.master = master
        self.primary = EmbeddedRedis(appendfsync=appendfsync)
        self.nodes = [self.primary] + [EmbeddedRedis(appendfsync=appendfsync, replicaof=self.primary.port)
                                       for _ in range(replicas)]
        self.sentinels = [EmbeddedSentinel(master=master, primary_port=self.primary.port,
                                           quorum=sentinels // 2 + 1, down_after_ms=down_after_ms,
                                           failover_timeout_ms=failover_timeout_ms) for _ in range(sentinels)]

    @property
    def url(self) -> str:
        """kombu's and Celery's form: every Sentinel, ';' between them, the database on the first."""
        first, *rest = self.sentinels
        return ";".join([f"sentinel://127.0.0.1:{first.port}/0", *(f"sentinel://127.0.0.1:{s.port}" for s in rest)])

    def start(self, timeout: float = 30.0) -> SentinelCluster:
        try:
            for node in self.nodes:
                node.start()
            deadline = time.monotonic() + timeout
            self.wait_for_replicas(len(self.nodes) - 1, deadline=deadline)
            for sentinel in self.sentinels:
                sentinel.start()
            self._wait_for_sentinels(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def primary_port(self) -> int:
        """The primary's port, as the first Sentinel that answers names it."""
        for sentinel in self.sentinels:
            try:
                return sentinel.primary_port(self.master)
            except (redis.RedisError, TypeError):
                continue
        raise RedisUnavailable("no Sentinel answers")

    def node(self, port: int) -> EmbeddedRedis:
        return next(n for n in self.nodes if n.port == port)

    def current_primary(self) -> EmbeddedRedis:
        return self.node(self.primary_port())

    def kill_primary(self) -> EmbeddedRedis:
        """SIGKILL the primary (a crash: no shutdown, no final write); returns it (start() restarts it)."""
        node = self.current_primary()
        node.kill()
        return node

    def wait_for_failover(self, old: EmbeddedRedis, timeout: float = 30.0) -> EmbeddedRedis:
        """Wait until every Sentinel names another primary and that one takes writes; return it."""
        deadline = time.monotonic() + timeout
        while True:  # Sentinels and Redis live in other processes: polled, with a deadline
            try:
                ports = {s.primary_port(self.master) for s in self.sentinels}
                if len(ports) == 1 and old.port not in ports:
                    new = self.node(ports.pop())
                    redis.Redis(port=new.port, socket_timeout=2).set("smsdispatch:failover-probe", "1", ex=60)
                    return new
            except (redis.RedisError, TypeError):
                pass            # a Sentinel restarting its view, or the new primary still read-only
            if time.monotonic() > deadline:
                raise RedisUnavailable(f"no failover from port {old.port} within {timeout:g}s")
            time.sleep(0.05)

    def rejoin(self, old: EmbeddedRedis, *, replicas: int | None = None, timeout: float = 30.0) -> None:
        """Start a killed node again as a replica of the current primary (what Sentinel would make of it,
        a few seconds sooner), and wait until the primary has `replicas` (default: every other node)."""
        old.replicaof = self.primary_port()
        old.start()
        self.wait_for_replicas(len(self.nodes) - 1 if replicas is None else replicas, timeout=timeout)

    def isolate_replicas(self) -> None:
        """Cut every replica off the primary, all processes up: a replica lagging behind, or a network
        partition. The primary drops their links and they cannot come back (a wrong `masterauth`), so
        what the primary takes from now on reaches no replica. `reconnect_replicas` ends it."""
        primary = self.primary_port()
        for node in self.nodes:
            if node.port != primary and node.process and node.process.poll() is None:
                redis.Redis(port=node.port, socket_timeout=2).config_set("masterauth", "not-the-password")
        redis.Redis(port=primary, socket_timeout=2).execute_command("CLIENT", "KILL", "TYPE", "replica")
        deadline = time.monotonic() + 10
        while redis.Redis(port=primary, socket_timeout=2).info("replication")["connected_slaves"]:
            if time.monotonic() > deadline:
                raise RedisUnavailable("the replicas did not stay away")
            time.sleep(0.05)

    def reconnect_replicas(self) -> None:
        """Let every live replica sync with the primary again (`isolate_replicas` undone)."""
        for node in self.nodes:
            if node.process and node.process.poll() is None:
                redis.Redis(port=node.port, socket_timeout=2).config_set("masterauth", "")

    def wait_for_replicas(self, count: int, *, deadline: float | None = None, timeout: float = 30.0) -> None:
        """Wait until the primary has `count` replicas online (their link up, in sync)."""
        deadline = deadline or time.monotonic() + timeout
        while True:
            try:
                port = self.primary.port if not any(s.process for s in self.sentinels) else self.primary_port()
                info = redis.Redis(port=port, socket_timeout=2).info("replication")
                online = sum(1 for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)
                             and v.get("state") == "online")
                if online >= count:
                    return
            except (redis.RedisError, RedisUnavailable):
                pass
            if time.monotonic() > deadline:
                raise RedisUnavailable(f"the primary did not get {count} replica(s) online")
            time.sleep(0.05)

    def _wait_for_sentinels(self, deadline: float) -> None:
        """Each Sentinel sees the primary, every replica and the other Sentinels: a failover can happen."""
        want_replicas, want_others = len(self.nodes) - 1, len(self.sentinels) - 1
        while True:
            try:
                ready = True
                for sentinel in self.sentinels:
                    state = sentinel.view(self.master)
                    ready &= int(state["num-slaves"]) >= want_replicas and \
                        int(state["num-other-sentinels"]) >= want_others
                if ready:
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise RedisUnavailable("the Sentinels did not find each other and the replicas in time")
            time.sleep(0.1)

    def stop(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> SentinelCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
