"""Subprocesses as a user starts them, read without ever blocking the suite.

`user_env` is the environment of a user's shell: none of the PYTHON* variables this machine or a CI
runner may set (PYTHONUNBUFFERED above all: without it a piped stdout is block-buffered), and no
SMSDISPATCH_* of ours unless given. `Lines` reads a process's output on a thread, so every wait for a
line has a timeout and a failure shows what the process printed instead of hanging.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading


def user_env(settings: dict[str, str] | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SMSDISPATCH_", "PYTHON"))}
    return env | (settings or {}) | extra


class Lines:
    """The output lines of `proc` (started with stdout=PIPE, text=True), pumped by a daemon thread."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)          # end of output: the process closed its stdout

    def next(self, timeout: float = 60.0) -> str:
        """The next line; AssertionError (with everything printed so far) if none comes in time."""
        try:
            line = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no output line within {timeout:g}s; printed so far:\n"
                                 + "\n".join(self.seen)) from None
        if line is None:
            self._queue.put(None)
            raise AssertionError(f"the process closed its output (exit {self.proc.poll()}); printed:\n"
                                 + "\n".join(self.seen))
        self.seen.append(line)
        return line

    def rest(self, timeout: float = 10.0) -> str:
        """Everything printed until the process closes its output (after it was told to stop)."""
        self._thread.join(timeout)
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.seen.append(line)
        return "\n".join(self.seen)


class Receiver:
    """`smsdispatch webhooks` as a user starts it, a subprocess; its output is collected."""

    def __init__(self, settings: dict[str, str], port: int, *args: str) -> None:
        self.port, self.base = port, f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "smsdispatch.cli", "webhooks", "--port", str(port), *args],
                                     env=user_env(settings), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        self.lines = Lines(self.proc)
        assert "listening on" in self.lines.next(timeout=60)

    def stop(self) -> str:
        self.proc.terminate()
        self.proc.wait(10)
        return self.lines.rest()
