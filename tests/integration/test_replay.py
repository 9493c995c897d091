"""Replaying dead letters never resends, unasked, what may have been sent: a real worker, real Redis,
the fake DevSMS (which can neither look a message up nor dedupe) and the `smsdispatch` command."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest

from smsdispatch.devtools.fakes.devsms import FakeDevSms
from smsdispatch.devtools.processes import WorkerProcess
from smsdispatch.dispatch import message_id_for

from ..procs import user_env
from .conftest import Producer, worker_settings

TO = "+998901234567"


@pytest.fixture(scope="module")
def devsms():
    with FakeDevSms(token="replay-token") as fake:
        yield fake


@pytest.fixture(scope="module")
def setup(redis_url, fake_eskiz, devsms):
    settings = worker_settings(redis_url, fake_eskiz, DEFAULT_GATEWAY="devsms", DEVSMS_TOKEN="replay-token",
                               DEVSMS_BASE_URL=devsms.base_url, MAX_ATTEMPTS="2")
    worker = WorkerProcess(settings, name="replay")
    yield settings, Producer(settings)
    worker.stop()


def cli(settings, *args) -> list[dict]:
    p = subprocess.run([sys.executable, "-m", "smsdispatch.cli", *args], env=user_env(settings),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def sends_of(devsms, text: str) -> int:
    return sum(1 for s in devsms.sent if s.text == text)


def test_replay_resends_the_provably_unsent_and_lists_the_maybe_sent_until_forced(setup, devsms):
    settings, producer = setup
    unsent_key, maybe_key = f"unsent-{uuid.uuid4().hex[:6]}", f"maybe-{uuid.uuid4().hex[:6]}"
    devsms.fail_next(2, status=503)                  # says "not processed": provably unsent
    unsent = producer.send_sms.delay(TO, "Provably unsent", idempotency_key=unsent_key).get(timeout=60)
    devsms.fail_next(2, status=500)                  # "may have been processed", and DevSMS cannot be asked
    maybe = producer.send_sms.delay(TO, "Maybe sent", idempotency_key=maybe_key).get(timeout=60)
    assert unsent["error"]["code"] == maybe["error"]["code"] == "retries_exhausted"
    assert producer.record(unsent["message_id"])["maybe_sent"] == 0
    assert producer.record(maybe["message_id"])["maybe_sent"] == 1

    # a re-submission of the maybe-sent key is answered from its record: nothing is sent
    again = producer.send_sms.delay(TO, "Maybe sent", idempotency_key=maybe_key).get(timeout=60)
    assert again["status"] == "failed" and again["message_id"] == maybe["message_id"]
    assert sends_of(devsms, "Maybe sent") == 0

    listing = {d["message_id"]: d for d in cli(settings, "dead-letters", "--replay")}
    assert listing[unsent["message_id"]]["replayed"] is True
    assert listing[maybe["message_id"]]["replayed"] is False
    assert "may have been sent" in listing[maybe["message_id"]]["reason"]
    assert devsms.wait_for(lambda f: sends_of(f, "Provably unsent") == 1, timeout=30)
    assert sends_of(devsms, "Maybe sent") == 0

    forced = {d["message_id"]: d for d in cli(settings, "dead-letters", "--replay", "--force")}
    assert forced[maybe["message_id"]]["replayed"] is True
    assert devsms.wait_for(lambda f: sends_of(f, "Maybe sent") == 1, timeout=30)
    remaining = {d["message_id"] for d in cli(settings, "dead-letters")}
    assert not remaining & {unsent["message_id"], maybe["message_id"]}
    assert producer.record(message_id_for(maybe_key, ""))["status"] == "accepted"
