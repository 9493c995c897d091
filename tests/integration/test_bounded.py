"""Bounded Redis, against a real Redis and a real worker: what a producer may store, and which Redis a
worker accepts to run on."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
import redis

from smsdispatch.devtools.processes import WorkerProcess
from smsdispatch.devtools.redis_server import EmbeddedRedis
from smsdispatch.errors import ValidationError
from smsdispatch.tasks import SEND_SMS

from .conftest import Producer, worker_settings

TO = "+998901234567"
FIVE_MB = "x" * (5 * 1024 * 1024)


def _stored(client: redis.Redis) -> tuple[int, int]:
    return client.dbsize(), client.info("memory")["used_memory"]


def test_a_five_megabyte_text_is_refused_by_delay_and_stores_nothing(redis_url, fake_eskiz):
    """Before: `.delay()` stored the text in a `queued` record (5.3 MB for RECORD_TTL) and published it."""
    producer = Producer(worker_settings(redis_url, fake_eskiz))
    client = redis.Redis.from_url(redis_url)
    producer.send_sms.delay(TO, "warm-up")       # the client's connection and scripts, not counted below
    keys_before, memory_before = _stored(client)
    for call in (lambda: producer.send_sms.delay(TO, FIVE_MB),
                 lambda: producer.send_sms.delay(TO, "hi", metadata={"blob": "y" * 5000}),
                 lambda: producer.send_sms.delay(TO, "hi", callback_url="https://user:pw@example.com/cb"),
                 lambda: producer.send_sms.delay(TO, "hi", idempotency_key="k" * 201),
                 lambda: producer.send_sms.apply_async((TO, "hi"), task_id="a:history"),
                 lambda: producer.send_batch.delay([{"to": TO, "text": "hi"}], batch_id="b:chunks"),
                 lambda: producer.send_batch.delay([{"to": TO, "text": FIVE_MB}])):
        with pytest.raises(ValidationError):
            call()
    keys_after, memory_after = _stored(client)
    assert keys_after == keys_before
    assert memory_after - memory_before < 100_000, (memory_before, memory_after)


def test_a_five_megabyte_text_sent_by_name_fails_validation_in_the_worker(stack):
    worker, producer = stack
    handle = producer.app.send_task(SEND_SMS, args=[TO, FIVE_MB], kwargs={"idempotency_key": "k" * 5000})
    result = handle.get(timeout=30)
    assert result["status"] == "failed" and result["error"]["code"] == "validation"
    assert "SMSDISPATCH_MAX_TEXT_CHARS" in result["error"]["message"]
    record = producer.record(result["message_id"])
    assert record["status"] == "failed" and "text" not in record
    assert record["idempotency_key"] == handle.id          # the oversized key is not kept either


def _worker_args(name: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "smsdispatch.worker", "worker", "--pool", "threads",
            "--concurrency", "2", "--loglevel", "INFO", "--hostname", f"{name}@%h", "--without-mingle",
            "--without-gossip"]


def test_a_worker_refuses_to_start_on_an_evicting_redis_unless_allowed(fake_eskiz):
    with EmbeddedRedis(maxmemory_policy="allkeys-lru", appendonly=False) as lru:
        settings = worker_settings(lru.url, fake_eskiz)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SMSDISPATCH_")} | settings
        done = subprocess.run(_worker_args(f"lru{uuid.uuid4().hex[:6]}"), env=env, capture_output=True, text=True,
                              timeout=60)
        output = done.stdout + done.stderr
        assert done.returncode != 0, output
        assert "maxmemory-policy is allkeys-lru" in output and "SMSDISPATCH_ALLOW_UNSAFE_REDIS" in output
        assert " ready." not in output

        allowed = WorkerProcess(settings | {"SMSDISPATCH_ALLOW_UNSAFE_REDIS": "true"}, concurrency=2)
        try:
            assert "running anyway: SMSDISPATCH_ALLOW_UNSAFE_REDIS=true" in allowed.log
            assert "appendonly is no" in allowed.log
        finally:
            allowed.stop()
