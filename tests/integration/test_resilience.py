"""One gateway, no failover, shipped circuit settings: sustained partial failure does not stop it, an
outage of its only gateway loses nothing and does not spin. Real worker, real Redis, the fake Eskiz."""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter

from smsdispatch.devtools.processes import WorkerProcess
from smsdispatch.dispatch import message_id_for

from .conftest import Producer, send_requests_for, worker_settings

TO = "+99890{:07d}"


def executions(worker: WorkerProcess) -> Counter[str]:
    """How often each send_sms task ran, from the worker's own log."""
    rx = re.compile(r"Task smsdispatch\.send_sms\[([0-9a-f-]+)\] received")
    return Counter(m.group(1) for line in worker.log.splitlines() if (m := rx.search(line)))


def test_a_quarter_of_the_calls_failing_never_opens_the_circuit_at_the_shipped_defaults(redis_url, fake):
    """A count-based breaker ("5 failures in 30 s") opened again and again here and stopped a gateway
    that delivered three calls in four. The rate-based one (50% of at least 20 calls) stays closed."""
    settings = worker_settings(redis_url, fake)          # no CIRCUIT_* setting: the shipped defaults
    producer = Producer(settings)
    worker = WorkerProcess(settings, name="partial")
    fake.chaos(0.25, seed=11, kinds={"http_5xx": 1}, statuses=(503,))
    try:
        keys = [f"p-{uuid.uuid4().hex[:8]}-{n}" for n in range(150)]
        handles = [producer.send_sms.delay(TO.format(n), f"Partial {n}", idempotency_key=k)
                   for n, k in enumerate(keys)]
        results = [h.get(timeout=120) for h in handles]
    finally:
        fake.calm()
        worker.stop()
    assert fake.chaos_counts["http_5xx"] >= 20                     # the faults really happened
    assert worker.count(r"circuit of eskiz opened") == 0
    exhausted = [r for r in results if r["status"] != "accepted"]
    # MAX_ATTEMPTS 4: a message fails only if 4 calls in a row meet a fault (0.25**4: 0.4%)
    assert len(exhausted) <= 3, exhausted
    for r in results:
        if r["status"] == "accepted":
            assert len(fake.sends_for(r["message_id"])) == 1


def test_the_only_gateway_down_for_a_while_loses_nothing_and_waiting_messages_do_not_spin(redis_url, fake):
    cooloff = 30.0                                        # shipped: CIRCUIT_COOLOFF
    settings = worker_settings(redis_url, fake, BACKOFF_MAX="40")   # the test's VT (60 s) allows 40 + lease 8
    producer = Producer(settings)
    worker = WorkerProcess(settings, name="outage")
    fake.fail_next(100_000, status=503)                  # down: every call answered 503 (nothing sent)
    try:
        keys = [f"o-{uuid.uuid4().hex[:8]}-{n}" for n in range(60)]
        handles = [producer.send_sms.delay(TO.format(n), f"Outage {n}", idempotency_key=k)
                   for n, k in enumerate(keys)]
        assert worker.wait_for(r"circuit of eskiz opened", timeout=30)
        calls_when_opened = len(fake.send_calls())
        down_since = time.monotonic()
        # the outage lasts past one cool-off: the first round of probes fails and it opens again
        assert worker.wait_for(r"circuit of eskiz opened", count=2, timeout=cooloff + 30)
        fake.clear_faults()                               # the gateway is back
        outage = time.monotonic() - down_since
        results = [h.get(timeout=3 * cooloff) for h in handles]
        assert worker.wait_for(r"circuit of eskiz closed", timeout=5)
    finally:
        fake.clear_faults()
        worker.stop()
    assert {r["status"] for r in results} == {"accepted"}                       # none failed or exhausted
    sends = Counter(len(fake.sends_for(message_id_for(k, ""))) for k in keys)
    assert sends == {1: 60}, sends                                                # each exactly once
    assert calls_when_opened <= 30                        # 20 calls judged (+ a few in flight), then it opened
    # while it was open only the probes reached the gateway
    per_message = executions(worker)
    assert len(per_message) == 60
    allowed = 2 + (outage + cooloff) / cooloff            # first run, about one per cool-off, the final run
    assert max(per_message.values()) <= allowed + 1, (per_message.most_common(3), outage)
    print(f"outage {outage:.0f}s: executions per message {sorted(Counter(per_message.values()).items())}, "
          f"{calls_when_opened} calls before the circuit opened")
    assert sum(len(send_requests_for(fake, message_id_for(k, ""))) for k in keys) <= calls_when_opened + 60 + 12


def test_a_retry_runs_on_time_while_a_backlog_of_sends_waits(redis_url, fake):
    """A retry goes to a queue of its own. On the send queue it waited behind the whole backlog, long
    past its countdown, and the sweeper took it for lost and published it again (the single-gateway
    chaos run: 519 such republishes for 6,000 messages, and a tail of minutes)."""
    settings = worker_settings(redis_url, fake)
    producer = Producer(settings)
    key = f"first-{uuid.uuid4().hex[:8]}"
    first = producer.send_sms.delay(TO.format(1), "Fails once, then goes", idempotency_key=key)
    for n in range(2, 1002):
        producer.send_sms.delay(TO.format(n), f"Backlog {n}")
    fake.fail_next(1, status=503)                 # the first call (the first message) is refused: retry
    fake.hang_next(10_000, seconds=0.2)           # then a slow gateway: the backlog drains slowly
    queue = settings["SMSDISPATCH_QUEUE"]
    worker = WorkerProcess(settings, name="retry-queue", concurrency=1)    # takes the first message first
    try:
        result = first.get(timeout=60)
        still_waiting = producer.app.runtime.redis.llen(queue)
    finally:
        worker.stop()
        fake.clear_faults()
        producer.app.runtime.redis.delete(queue)       # the rest of the backlog is not this test's
    assert result["status"] == "accepted" and result["attempts"] == 2, result
    assert still_waiting > 900, still_waiting               # it did not wait for the backlog
    assert len(send_requests_for(fake, message_id_for(key, ""))) == 2
