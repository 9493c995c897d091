"""Bad input at volume: over a thousand malformed send_sms calls thrown at a real `celery worker` (the
fake Eskiz as its gateway), plus malformed reminders, drawn by Hypothesis (strategies in
tests/unit/bad_inputs.py: every example is malformed by construction).

For each example: EITHER the producer raises a clear exception (our ValidationError, or kombu's
EncodeError when kombu cannot encode the call at all) OR the task's result is `failed` with error code
`validation` and a message, and the message's record says the same with 0 attempts. Across the run:
no request reaches the gateway, the worker logs no retry, no traceback and no error, and afterwards
it still sends a valid message.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from kombu.exceptions import EncodeError

from smsdispatch.devtools.fakes.eskiz import FakeEskiz
from smsdispatch.errors import ValidationError
from smsdispatch.tasks import SEND_SMS

from ..unit.bad_inputs import (
    VALID_DIGITS,
    VALID_TO,
    BadCall,
    bad_reminders,
    bad_send_calls,
    refusal_problems,
)

TIMEOUT = 15

# Examples per path: 600 + 500 send_sms calls reach the task boundary (1,100 >= 1,000), plus 300
# reminders refused at scheduling: 1,400 in all. Asserted below by counting the examples that ran.
THROUGH_DELAY, BY_NAME, REMINDERS = 600, 500, 300
AT_LEAST_SENDS = 1_000

SETTINGS = dict(deadline=None, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.large_base_example, HealthCheck.filter_too_much])


def check_refused(producer, result) -> None:
    problems = refusal_problems(result, producer.record(result["message_id"]) if isinstance(result, dict) else None)
    assert problems == [], problems


def test_over_a_thousand_malformed_calls_fail_cleanly_and_the_worker_keeps_serving(stack, fake):
    worker, producer = stack
    n = Counter()
    reminders_due = producer.dispatcher.keys.reminders_due()
    started = time.monotonic()

    @settings(max_examples=THROUGH_DELAY, **SETTINGS)
    @given(call=bad_send_calls())
    def through_delay(call: BadCall):
        """send_sms.apply_async / .delay: the web app's way."""
        n["delay"] += 1
        expect_producer_refusal = call.producer_refuses
        try:
            handle = producer.send_sms.apply_async(call.args, call.kwargs)
        except ValidationError as e:
            assert expect_producer_refusal, f"refused at the producer: {e}"
            assert str(e) and VALID_DIGITS not in str(e)
            n["delay: refused at the producer"] += 1
            return
        assert not expect_producer_refusal, "the producer cannot record this and should have refused it"
        check_refused(producer, handle.get(timeout=TIMEOUT))
        n["delay: failed validation in the worker"] += 1

    @settings(max_examples=BY_NAME, **SETTINGS)
    @given(call=bad_send_calls())
    def by_name(call: BadCall):
        """app.send_task("smsdispatch.send_sms", args, kwargs): any Celery client, no producer checks."""
        n["by name"] += 1
        try:
            handle = producer.app.send_task(SEND_SMS, args=list(call.args), kwargs=call.kwargs)
        except EncodeError:
            assert call.unencodable
            n["by name: kombu cannot encode it"] += 1
            return
        check_refused(producer, handle.get(timeout=TIMEOUT))
        n["by name: failed validation in the worker"] += 1

    @settings(max_examples=REMINDERS, **SETTINGS)
    @given(case=bad_reminders())
    def reminders(case):
        """Runtime.schedule_reminder(kwargs, send_at): refused at once, nothing stored."""
        kwargs, send_at, _defects = case
        n["reminders"] += 1
        with pytest.raises(ValidationError) as e:
            producer.app.runtime.schedule_reminder(kwargs, send_at)
        assert str(e.value)
        n["reminders: refused"] += 1

    through_delay()
    by_name()
    reminders()
    elapsed = time.monotonic() - started

    # every example ran, and every one ended one of the allowed ways
    assert n["delay"] >= THROUGH_DELAY and n["by name"] >= BY_NAME and n["reminders"] >= REMINDERS, n
    assert n["delay"] + n["by name"] >= AT_LEAST_SENDS, n
    assert n["delay: refused at the producer"] + n["delay: failed validation in the worker"] == n["delay"], n
    assert n["by name: kombu cannot encode it"] + n["by name: failed validation in the worker"] == n["by name"], n
    # most of them really went through the worker (not only refused at the producer)
    assert n["delay: failed validation in the worker"] + n["by name: failed validation in the worker"] >= 800, n

    # nothing reached the gateway, nothing was retried, nothing crashed, no reminder was stored
    assert [r for r in fake.requests_log if r.path == FakeEskiz.send_path] == []
    assert fake.requests_log == [], [r.path for r in fake.requests_log]
    assert worker.count(r"\] retry: |; retry in ") == 0, worker.log[-3000:]     # (not the .retry queue in the banner)
    assert worker.count(r"Traceback|\bERROR\b|CRITICAL|Logging error|UnicodeEncodeError") == 0, worker.log[-3000:]
    assert worker.proc.poll() is None
    assert producer.dispatcher.records.redis.zcard(reminders_due) == 0

    # and the same worker still sends a valid message, once
    key = f"still-serving-{uuid.uuid4()}"
    result = producer.send_sms.delay(VALID_TO, "Still here", idempotency_key=key).get(timeout=TIMEOUT)
    assert result["status"] == "accepted" and result["attempts"] == 1
    assert len(fake.sends_for(result["message_id"])) == 1
    # (the per-example check is not vacuous: it flags this accepted message)
    assert refusal_problems(result, producer.record(result["message_id"])) != []
    print(f"\n{sum(v for k, v in n.items() if ':' not in k)} malformed examples in {elapsed:.1f}s: {dict(n)}")
