"""Batches through a real worker, real Redis and the fake Eskiz's native send-batch endpoint."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest
from celery.result import AsyncResult

from smsdispatch.errors import ValidationError
from smsdispatch.tasks import SEND_BATCH

TIMEOUT = 120


@pytest.fixture
def producer(stack):
    return stack[1]


def wait_for_batch(producer, summary, timeout=TIMEOUT):
    """Every chunk task's final result (retries included), awaited through the result backend."""
    for task_id in summary["chunk_tasks"]:
        AsyncResult(task_id, app=producer.app).get(timeout=timeout)
    return producer.app.runtime.batches.get(summary["batch_id"])


def numbers(n, start=0):
    return [f"+99890{start + i:07d}" for i in range(n)]


def test_a_100000_message_batch_goes_through_native_batch_calls_exactly_once(producer, fake):
    messages = [{"to": to, "text": f"Batch message {i % 10}"} for i, to in enumerate(numbers(100_000))]
    summary = producer.send_batch.delay(messages).get(timeout=TIMEOUT)
    assert summary["total"] == 100_000 and summary["chunks"] == 100     # 1,000 entries per chunk task
    final = wait_for_batch(producer, summary, timeout=600)
    assert (final["status"], final["accepted"], final["failed"], final["pending"]) == ("done", 100_000, 0, 0)
    accepted = fake.accepted
    per_message = Counter(a.client_ref for a in accepted)
    assert len(accepted) == 100_000 and len(per_message) == 100_000      # each message once
    calls = fake.send_calls()
    assert len(calls) == 200 and all(len(fake.carried(c)) == 500 for c in calls)     # native calls of 500


def test_bad_entries_fail_alone_and_the_records_say_why(producer, fake):
    batch_id = f"mixed-{uuid.uuid4().hex[:6]}"
    messages = [{"to": "+998901111111", "text": "ok"}, {"to": "+99890", "text": "bad number"},
                {"to": "+998902222222", "text": ""}, {"to": "+998903333333", "text": "ok", "colour": "x"}]
    final = wait_for_batch(producer, producer.send_batch.delay(messages, batch_id=batch_id).get(timeout=TIMEOUT))
    assert (final["accepted"], final["failed"], final["status"]) == (1, 3, "done")
    assert len(fake.accepted) == 1


def test_resubmitting_a_batch_sends_only_what_was_not_accepted(producer, fake):
    key = f"campaign-{uuid.uuid4().hex[:6]}"
    old = [{"to": to, "text": "Sale!"} for to in numbers(20, start=5000)]
    new = [{"to": to, "text": "Sale!"} for to in numbers(10, start=6000)]

    def submit(messages):
        return wait_for_batch(producer, producer.send_batch.delay(messages, idempotency_key=key).get(timeout=TIMEOUT))

    assert submit(old)["accepted"] == 20
    fake.fail_next(4, status=503, path="/message/sms/send-batch")   # every attempt for the new ten fails
    second = submit(old + new)
    assert (second["accepted"], second["failed"]) == (20, 10)       # the old twenty were not resent
    assert len(fake.accepted) == 20
    third = submit(old + new)                                        # retries_exhausted reopen for a new submission
    assert (third["accepted"], third["failed"], third["status"]) == (30, 0, "done")
    calls = [r for r in fake.requests_log if r.path == "/message/sms/send-batch"]
    assert len(calls[-1].fields["messages"]) == 10                   # only the ten that had not gone out
    assert len(fake.accepted) == 30 and len({a.client_ref for a in fake.accepted}) == 30


def test_a_batch_sent_by_name_with_inline_messages(producer, fake):
    messages = [{"to": to, "text": "By name"} for to in numbers(3, start=7000)]
    summary = producer.app.send_task(SEND_BATCH, kwargs={"messages": messages}).get(timeout=TIMEOUT)
    final = wait_for_batch(producer, summary)
    assert final["accepted"] == 3 and len(fake.accepted) == 3


def test_a_malformed_batch_is_refused_at_the_producer_and_by_name(producer):
    with pytest.raises(ValidationError, match="messages: must be a non-empty list"):
        producer.send_batch.delay("not a list")
    result = producer.app.send_task(SEND_BATCH, kwargs={"messages": []}).get(timeout=TIMEOUT)
    assert result["status"] == "failed" and result["error"]["code"] == "validation"
