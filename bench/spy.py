"""py-spy on a worker while it runs (optional: `python -m bench.run --profile DIR`).

`Spy` runs `py-spy record --format raw --gil --nonblocking` on a pid and stops it with SIGINT (py-spy
then writes its file). With --gil a sample is taken only when some thread holds the GIL, and it is
that thread's stack: for a threads-pool worker (one process, one GIL) the samples are where its Python
time goes, and samples / (rate x seconds) is the share of wall time the GIL was busy.

`summarize` turns the collapsed stacks into self time per function, inclusive time per function, and
self time per package (the first component of the file path: smsdispatch, celery, kombu, redis,
requests, urllib3, json, logging, http, ...).
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<fn>.*) \((?P<path>[^()]*?)(?::\d+)?\)$")


def find_py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


class Spy:
    def __init__(self, pid: int, out: Path, *, rate: int = 100, gil: bool = True) -> None:
        exe = find_py_spy()
        if exe is None:
            raise RuntimeError("py-spy not found: .venv/bin/pip install py-spy")
        self.out, self.rate = out, rate
        cmd = [exe, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw", "--nonblocking",
               "--output", str(out), *(["--gil"] if gil else [])]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.started = time.monotonic()
        self.seconds = 0.0

    def stop(self, timeout: float = 30.0) -> None:
        self.seconds = time.monotonic() - self.started
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _frame(raw: str) -> tuple[str, str]:
    m = _FRAME.match(raw)
    if not m:
        return raw, ""
    return m["fn"], m["path"]


def _package(path: str) -> str:
    path = path.replace("\\", "/")
    for marker in ("site-packages/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker.startswith("/lib"):
                path = path.split("/", 1)[1] if "/" in path else path
    first = path.split("/", 1)[0]
    return first.removesuffix(".py") or "?"


def summarize(raw_file: Path, *, seconds: float, rate: int, top: int = 15) -> dict[str, Any]:
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = 0
    if raw_file.exists():
        for line in raw_file.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            total += n
            frames = [_frame(f) for f in stack.split(";") if f]
            frames = [f for f in frames if not f[0].startswith("thread (")] or frames
            if not frames:
                continue
            fn, path = frames[-1]
            self_time[f"{fn} ({path})"] += n
            packages[_package(path)] += n
            for name in {f"{f} ({p})" for f, p in frames}:
                inclusive[name] += n

    def pct(counter: Counter[str], k: int) -> list[list[Any]]:
        return [[name, round(100 * c / total, 1)] for name, c in counter.most_common(k)] if total else []

    ours = Counter({k: v for k, v in inclusive.items() if "smsdispatch/" in k})
    return {"samples": total, "seconds": round(seconds, 1),
            "gil_busy_pct": round(100 * total / (rate * seconds), 1) if seconds else None,
            "self_by_package": pct(packages, 12), "self_top": pct(self_time, top),
            "inclusive_top": pct(inclusive, top), "inclusive_smsdispatch": pct(ours, top)}
