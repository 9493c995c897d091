"""`smsdispatch dev`: Redis, a worker, beat and Flower for local development, in one command.

Redis is the one in SMSDISPATCH_REDIS_URL, or a private redis-server started here (AOF on, data in a
temporary directory). Every other SMSDISPATCH_* variable (gateway credentials, ...) passes through to
the processes. Ctrl-C (or SIGTERM) stops everything this command started. Flower's password reaches it
through its environment (FLOWER_BASIC_AUTH), never its command line; a password you set yourself (in
FLOWER_BASIC_AUTH, or in SMSDISPATCH_REDIS_URL) is not printed.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import signal
import threading
from collections.abc import Callable
from contextlib import ExitStack

from .processes import BeatProcess, FlowerProcess, WorkerProcess
from .redis_server import EmbeddedRedis, free_port


def run(out: Callable[[str], None] = print, *, flower_port: int | None = None) -> int:
    if not _flower_installed():          # an extra: a producer-only install has no Flower
        out("smsdispatch dev runs Flower, which is not installed: pip install 'smsdispatch[flower]'")
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with ExitStack() as stack:
        url = os.environ.get("SMSDISPATCH_REDIS_URL")
        shown_url = "$SMSDISPATCH_REDIS_URL (as set)" if url else None     # it may carry a password
        if not url:
            url = shown_url = stack.enter_context(EmbeddedRedis()).url
        settings = {k: v for k, v in os.environ.items() if k.startswith("SMSDISPATCH_")} | {"SMSDISPATCH_REDIS_URL": url}
        given = os.environ.get("FLOWER_BASIC_AUTH")
        auth = given or f"dev:{secrets.token_urlsafe(9)}"
        worker = WorkerProcess(settings, name="dev")
        stack.callback(worker.stop)
        beat_dir = stack.enter_context(_tempdir())
        beat = BeatProcess(settings, schedule_dir=beat_dir)
        stack.callback(beat.stop)
        flower = FlowerProcess(settings, port=flower_port or free_port(), basic_auth=auth)
        stack.callback(flower.stop)
        user, password = auth.split(":", 1)
        out(f"Redis for your web app:  export SMSDISPATCH_REDIS_URL={shown_url}")
        out(f"Flower:                  {flower.url}  (user {user}, "
            + ("password from FLOWER_BASIC_AUTH)" if given else f"password {password})"))
        out("Worker (threads) and beat are running. Ctrl-C stops everything.")
        while not stop.wait(0.5):          # the signal handler sets it; nothing else to wait on
            for name, p in (("worker", worker), ("beat", beat), ("flower", flower)):
                if p.proc.poll() is not None:
                    out(f"{name} exited ({p.proc.returncode}):\n" + "\n".join(p.lines[-20:]))
                    return 1
        out("Stopping.")
    return 0


def _flower_installed() -> bool:
    try:
        return importlib.util.find_spec("flower") is not None
    except ImportError:
        return False


def _tempdir():
    import tempfile
    return tempfile.TemporaryDirectory(prefix="smsdispatch-beat-")
