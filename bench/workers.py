"""`celery worker` subprocesses for the benchmark, and how we tell when they are done.

The worker's output goes to a log file; completion is counted from Celery's own INFO line
"Task <name>[<id>] succeeded in ..." by reading only what is new in the file (so waiting costs the
driver almost nothing and sends no Redis command that would pollute the command counts). CPU time is
read from psutil (i.e. /proc/<pid>/stat): with the threads pool the worker is one process.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent

SUCCEEDED = b" succeeded in "
RETRY = b"] retry: "
FAILED = b"] raised unexpected"
ERROR = b"ERROR/"


class WorkerDied(RuntimeError):
    pass


class CeleryWorker:
    def __init__(self, app: str, *, env: dict[str, str], concurrency: int, name: str, log_dir: Path,
                 pool: str = "threads", extra_args: list[str] | None = None) -> None:
        self.name, self.concurrency = name, concurrency
        self.log_path = log_dir / f"{name}.log"
        self.cmd = [sys.executable, "-m", "celery", "-A", app, "worker", "--pool", pool, "--concurrency",
                    str(concurrency), "--loglevel", "INFO", "--hostname", f"{name}@%h", *(extra_args or [])]
        base = {k: v for k, v in os.environ.items() if not k.startswith(("SMSDISPATCH_", "BENCH_"))}
        base["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.cmd, env=base | env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT)
        self.ps = psutil.Process(self.proc.pid)
        self._reader = open(self.log_path, "rb")  # noqa: SIM115
        self._rest = b""
        self.counts = {SUCCEEDED: 0, RETRY: 0, FAILED: 0, ERROR: 0, b"ready.": 0}

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def hostname(self) -> str:
        """The worker's node name, as remote control commands address it (`--hostname name@%h`)."""
        return f"{self.name}@{socket.gethostname()}"

    def scan(self) -> None:
        data = self._reader.read()
        if not data:
            return
        data = self._rest + data
        cut = data.rfind(b"\n") + 1
        complete, self._rest = data[:cut], data[cut:]
        for pattern in self.counts:
            self.counts[pattern] += complete.count(pattern)

    @property
    def succeeded(self) -> int:
        self.scan()
        return self.counts[SUCCEEDED]

    def problems(self) -> dict[str, int]:
        self.scan()
        return {"retries": self.counts[RETRY], "failures": self.counts[FAILED], "error_lines": self.counts[ERROR]}

    def _check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise WorkerDied(f"worker {self.name} exited with {self.proc.returncode}; log: {self.log_path}\n"
                             + self.tail())

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.scan()
            if self.counts[b"ready."]:
                return
            self._check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker {self.name} not ready after {timeout:.0f}s; log: {self.log_path}")
            time.sleep(0.05)

    def wait_succeeded(self, total: int, timeout: float, poll: float = 0.01) -> bool:
        """True once `total` tasks have succeeded since start (not reset between runs); False on timeout."""
        deadline = time.monotonic() + timeout
        while self.succeeded < total:
            self._check_alive()
            if time.monotonic() > deadline:
                return False
            time.sleep(poll)
        return True

    def cpu_seconds(self) -> float:
        t = self.ps.cpu_times()
        return t.user + t.system + t.children_user + t.children_system

    def system_seconds(self) -> float:
        """CPU time in the kernel (system calls: sockets, futexes of the threads' GIL hand-offs)."""
        t = self.ps.cpu_times()
        return t.system + t.children_system

    def tail(self, n: int = 40) -> str:
        with open(self.log_path, "rb") as f:
            return b"\n".join(f.read().splitlines()[-n:]).decode("utf-8", "replace")

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        self._reader.close()


def process_cpu_seconds(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


class WorkerGroup:
    """Several `celery worker` processes on one queue, measured as one (part c with --batch-workers):
    CPU is their sum, problems are summed, py-spy follows the first."""

    def __init__(self, workers: list[CeleryWorker]) -> None:
        self.workers = workers
        self.concurrency = workers[0].concurrency

    @property
    def pid(self) -> int:
        return self.workers[0].pid

    def cpu_seconds(self) -> float:
        return sum(w.cpu_seconds() for w in self.workers)

    def problems(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for w in self.workers:
            for k, v in w.problems().items():
                total[k] = total.get(k, 0) + v
        return total

    def stop(self) -> None:
        for w in self.workers:
            w.stop()
