"""Run `celery worker` / `celery beat` subprocesses locally and wait on their log lines (demo, tests,
development)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading


class CeleryProcess:
    """A `celery -A smsdispatch.worker <command>` subprocess (another `app_module` in a subclass) with
    the given SMSDISPATCH_* settings.

    Its output is kept in memory; `wait_for` blocks on a condition variable until a log line matches,
    so callers wait for events ("ready.", "succeeded") instead of sleeping.
    """

    ready_pattern = r"."
    #: The module given to ``celery -A`` (a Django project's: smsdispatch.contrib.django.worker).
    app_module = "smsdispatch.worker"

    def __init__(self, args: list[str], settings: dict[str, str], *, start_timeout: float = 60.0,
                 env: dict[str, str] | None = None) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SMSDISPATCH_")} | settings | (env or {})
        self.proc = subprocess.Popen([sys.executable, "-m", "celery", "-A", self.app_module, *args],
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._pump, daemon=True).start()
        if not self.wait_for(self.ready_pattern, timeout=start_timeout):
            self.stop()
            raise RuntimeError(f"celery {args[0]} did not start:\n" + self.log)

    def _pump(self) -> None:
        stdout = self.proc.stdout
        assert stdout is not None       # Popen(stdout=PIPE)
        for line in stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def log(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def count(self, pattern: str) -> int:
        rx = re.compile(pattern)
        with self._cond:
            return sum(1 for line in self.lines if rx.search(line))

    def wait_for(self, pattern: str, *, count: int = 1, timeout: float = 20.0) -> bool:
        """True once `pattern` has matched `count` log lines; False on timeout or if the worker exits."""
        rx = re.compile(pattern)

        def seen() -> int:
            return sum(1 for line in self.lines if rx.search(line))
        with self._cond:
            self._cond.wait_for(lambda: seen() >= count or self.proc.poll() is not None, timeout)
            return seen() >= count

    def kill(self) -> None:
        """SIGKILL: the worker gets no chance to ack, reject or record anything."""
        self.proc.kill()
        self.proc.wait()

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()


class WorkerProcess(CeleryProcess):
    """`celery worker --pool threads`: the recommended deployment."""

    ready_pattern = r"\bready\."

    def __init__(self, settings: dict[str, str], *, concurrency: int = 8, name: str = "w1",
                 start_timeout: float = 60.0, loglevel: str = "INFO") -> None:
        super().__init__(["worker", "--pool", "threads", "--concurrency", str(concurrency), "--loglevel", loglevel,
                          "--hostname", f"{name}@%h", "--without-mingle", "--without-gossip"],
                         settings, start_timeout=start_timeout)


class BeatProcess(CeleryProcess):
    """`celery beat` with its schedule file in `schedule_dir`."""

    ready_pattern = r"beat: Starting"

    def __init__(self, settings: dict[str, str], *, schedule_dir: str, name: str = "beat",
                 start_timeout: float = 60.0, loglevel: str = "INFO") -> None:
        super().__init__(["beat", "--loglevel", loglevel, "--schedule", os.path.join(schedule_dir, f"{name}-schedule")],
                         settings, start_timeout=start_timeout)


class FlowerProcess(CeleryProcess):
    """`celery flower` on 127.0.0.1 with basic auth (its API refuses anonymous calls). The credentials
    go through the environment (FLOWER_BASIC_AUTH), never the command line, which `ps` shows anyone."""

    ready_pattern = r"Visit me at"

    def __init__(self, settings: dict[str, str], *, port: int, basic_auth: str, start_timeout: float = 60.0) -> None:
        self.port = port
        super().__init__(["flower", f"--port={port}", "--address=127.0.0.1"], settings, start_timeout=start_timeout,
                         env={"FLOWER_BASIC_AUTH": basic_auth})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"
