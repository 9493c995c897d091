"""A status page to test: a real worker, the real receiver (`smsdispatch webhooks`, which serves the
page under /status) and a producer, all on one key prefix, against a real Redis and the fake Eskiz."""

from __future__ import annotations

import re

import requests

from smsdispatch.devtools.fakes.eskiz import FakeEskiz
from smsdispatch.devtools.processes import WorkerProcess
from smsdispatch.devtools.redis_server import free_port

from ..procs import Receiver
from .conftest import Producer, wait_until, worker_settings

USER, PASSWORD = "ops", "status-page-password-for-tests"
TO = "+998901234567"
HOSTILE = '"><script>alert(1)</script><img src=x onerror=alert(2)>'


def settings_for(redis_url: str, fake: FakeEskiz, **extra: str) -> dict[str, str]:
    return worker_settings(redis_url, fake, STATUS_USER=USER, STATUS_PASSWORD=PASSWORD, STATUS_ACTIONS="true",
                           MAX_ATTEMPTS="2", **extra)


class Stack:
    """Worker, receiver and producer for one set of settings; `page(path)` reads the page."""

    def __init__(self, settings: dict[str, str], *, worker: bool = True) -> None:
        self.settings = settings
        self.worker = WorkerProcess(settings, name="status") if worker else None
        self.receiver = Receiver(settings, free_port())
        self.base = f"{self.receiver.base}/status"
        self.producer = Producer(settings)

    def page(self, path: str, *, auth: tuple[str, str] | None = (USER, PASSWORD), **kwargs) -> requests.Response:
        return requests.get(f"{self.base}{path}", auth=auth, timeout=10, **kwargs)

    def post(self, path: str, data: dict, *, auth: tuple[str, str] | None = (USER, PASSWORD),
             headers: dict | None = None) -> requests.Response:
        return requests.post(f"{self.base}{path}", data=data, auth=auth, timeout=10, headers=headers)

    def stop(self) -> str:
        output = self.receiver.stop()
        if self.worker is not None:
            self.worker.stop()
        return output

    # --- data, made by real sends --------------------------------------------------------------

    def dead_letter(self, fake: FakeEskiz, text: str) -> str:
        """A provably unsent dead letter: every attempt answered 503 (MAX_ATTEMPTS=2)."""
        fake.fail_next(2, status=503)
        result = self.producer.send_sms.delay(TO, text).get(timeout=60)
        assert result["error"]["code"] == "retries_exhausted", result
        assert self.producer.record(result["message_id"])["maybe_sent"] == 0
        return result["message_id"]

    def dead_letters(self) -> list[str]:
        return self.producer.dispatcher.records.dead_letters()

    def wait_status(self, message_id: str, status: str, timeout: float = 30.0) -> bool:
        return wait_until(lambda: (self.producer.record(message_id) or {}).get("status") == status, timeout)


def token_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)
