"""RabbitMQ as the broker: real `celery worker` processes on an amqp:// broker, records in a private Redis.

The broker is a vhost of its own on the machine's RabbitMQ (127.0.0.1:5672; devtools/rabbitmq_server.py),
deleted after the module with every queue in it. Where RabbitMQ is not running, the module is skipped
(fails with CI=true: tests/unavailable.py). The chaos run's `rabbitmq` scenario kills and restarts a
private RabbitMQ node; here the worker is what dies.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest
from celery.result import AsyncResult

from smsdispatch.devtools.processes import WorkerProcess
from smsdispatch.devtools.rabbitmq_server import RabbitMQUnavailable, TemporaryVhost
from smsdispatch.metrics import Metrics
from smsdispatch.tasks import queue_names

from ..unavailable import unavailable
from .conftest import Producer, killed_mid_call, send_requests_for, worker_settings

TO = "+998901234567"
TIMEOUT = 60


@pytest.fixture(scope="module")
def vhost() -> Iterator[TemporaryVhost]:
    try:
        made = TemporaryVhost().start()
    except RabbitMQUnavailable as e:
        unavailable(f"no RabbitMQ for the broker tests: {e}")
    yield made
    made.stop()


def rabbit_settings(redis_url: str, vhost: TemporaryVhost, fake, **overrides: str) -> dict[str, str]:
    return worker_settings(redis_url, fake, BROKER_URL=vhost.url, **overrides)


@pytest.fixture(scope="module")
def rabbit_stack(redis_url, vhost, fake_eskiz):
    settings = rabbit_settings(redis_url, vhost, fake_eskiz)
    worker = WorkerProcess(settings, name="rabbit")
    yield worker, Producer(settings), settings
    worker.stop()


def queue_types(vhost: TemporaryVhost) -> dict[str, str]:
    out = subprocess.run(["rabbitmqctl", "list_queues", "-q", "-p", vhost.name, "name", "type"],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    return dict(line.split("\t") for line in out.splitlines() if "\t" in line)


def test_sends_and_a_batch_go_through_quorum_queues_with_records_in_redis(rabbit_stack, vhost, fake):
    worker, producer, settings = rabbit_stack
    handles = [producer.send_sms.delay(TO, f"Through RabbitMQ {n}") for n in range(5)]
    results = [h.get(timeout=TIMEOUT) for h in handles]
    assert [r["status"] for r in results] == ["accepted"] * 5
    assert all(len(send_requests_for(fake, h.id)) == 1 for h in handles)
    assert producer.record(handles[0].id)["status"] == "accepted"          # the store is Redis
    summary = producer.send_batch.delay([{"to": f"+99890{n:07d}", "text": "Batch"} for n in range(30)]).get(
        timeout=TIMEOUT)
    for task_id in summary["chunk_tasks"]:
        AsyncResult(task_id, app=producer.app).get(timeout=TIMEOUT)
    assert producer.app.runtime.batches.get(summary["batch_id"])["accepted"] == 30
    types = queue_types(vhost)
    assert all(types.get(q) == "quorum" for q in queue_names(settings["SMSDISPATCH_QUEUE"])), types


def test_a_sub_second_countdown_is_rounded_up_and_delivered_by_rabbitmq(rabbit_stack, fake):
    """kombu's native delayed delivery takes whole seconds and refuses a delay under one: unrounded,
    countdown=0.5 raises at publish (and 1.5 would be delivered after 1 s, before its time)."""
    _, producer, _ = rabbit_stack
    published = time.monotonic()
    short = producer.send_sms.apply_async((TO, "Half a second later"), countdown=0.5)
    longer = producer.send_sms.apply_async((TO, "One and a half seconds later"), countdown=1.5)
    assert short.get(timeout=TIMEOUT)["status"] == "accepted"
    assert longer.get(timeout=TIMEOUT)["status"] == "accepted"
    sent = {h.id: fake.sends_for(h.id)[0].received_at for h in (short, longer)}
    assert sent[short.id] >= published + 0.5 and sent[longer.id] >= published + 1.5, sent


def test_a_retry_waits_in_rabbitmq_and_sends_once(rabbit_stack, fake):
    _, producer, _ = rabbit_stack
    fake.fail_next(1, status=503)                     # refused: retried after BACKOFF_BASE (0.5 s → 1 s)
    result = producer.send_sms.delay(TO, "Refused once").get(timeout=TIMEOUT)
    assert result["status"] == "accepted" and result["attempts"] == 2, result
    assert len(fake.sends_for(result["message_id"])) == 1


def test_a_killed_workers_message_comes_back_at_once_and_is_sent_once(redis_url, vhost, fake):
    """RabbitMQ returns a dead consumer's unacknowledged messages when its connection closes: no
    visibility timeout (here 600 s) to wait for. The call may have gone out: reconciled, not resent."""
    settings = rabbit_settings(redis_url, vhost, fake, VISIBILITY_TIMEOUT="600")
    producer = Producer(settings)
    # Eskiz accepts; its answer is slow, and the worker dies before it arrives
    handle = killed_mid_call(settings, producer, fake, "Kill me mid-call", accept=True)
    survivor = WorkerProcess(settings, name="survivor")
    try:
        result = handle.get(timeout=TIMEOUT)
    finally:
        survivor.stop()
    assert result["status"] == "accepted"
    assert len(send_requests_for(fake, handle.id)) == 1
    notes = [h.get("note", "") for h in producer.history(handle.id)]
    assert any("reconciled: found at eskiz" in n for n in notes), notes


def test_metrics_read_queue_lengths_from_rabbitmq(redis_url, vhost, fake):
    settings = rabbit_settings(redis_url, vhost, fake)
    producer = Producer(settings)
    sends, retries, _ = queue_names(producer.settings.queue)
    metrics = Metrics(producer.app.runtime.redis, producer.dispatcher.keys, producer.settings)
    assert sends not in metrics.read().queues             # not declared yet: no length, no error
    for n in range(7):
        producer.send_sms.delay(TO, f"Waiting {n}")       # no worker: they wait (publish declares the queue)
    snap = metrics.read()
    assert snap.queues[sends] == 7 and snap.unacked is None
    worker = WorkerProcess(settings, name="drain")
    try:
        assert worker.wait_for(r"succeeded", count=7, timeout=TIMEOUT)
    finally:
        worker.stop()
    assert metrics.read().queues[sends] == 0


def test_a_publish_rabbitmq_refuses_raises_instead_of_vanishing(rabbit_stack):
    """Publisher confirms: RabbitMQ's refusal (here: no such exchange) reaches the publisher as an error.
    Without them basic.publish returns at once and the message is dropped silently."""
    _, producer, _ = rabbit_stack
    with producer.app.connection_for_write() as conn, pytest.raises(conn.channel_errors):
        conn.Producer().publish({"x": 1}, exchange="smsdispatch-no-such-exchange", routing_key="x", declare=[])
