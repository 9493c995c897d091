"""Failover and global rate limits with real workers, real Redis and fake gateways on 127.0.0.1."""

from __future__ import annotations

import uuid

import pytest

from smsdispatch.devtools.fakes.smscx import FakeSmsCx
from smsdispatch.devtools.processes import WorkerProcess
from smsdispatch.dispatch import message_id_for

from .conftest import Producer, worker_settings

TO = "+998901234567"


@pytest.fixture
def smscx():
    with FakeSmsCx(api_key="cx-failover-key") as fake:
        yield fake


def test_a_route_of_two_with_the_first_down_sends_everything_through_the_second(redis_url, fake, smscx):
    settings = worker_settings(redis_url, fake, DEFAULT_GATEWAY="eskiz|smscx", SMSCX_API_KEY="cx-failover-key",
                               SMSCX_BASE_URL=smscx.base_url, CIRCUIT_MIN_CALLS="3", CIRCUIT_WINDOW="30",
                               CIRCUIT_COOLOFF="30")
    fake.refuse_connections()                 # Eskiz is down: connections refused
    producer = Producer(settings)
    worker = WorkerProcess(settings, name="failover")
    try:
        keys = [f"fo-{uuid.uuid4().hex[:8]}-{n}" for n in range(30)]
        handles = [producer.send_sms.delay(TO, f"Failover {n}", idempotency_key=k) for n, k in enumerate(keys)]
        results = [h.get(timeout=60) for h in handles]
    finally:
        worker.stop()
        fake.accept_connections()
    assert {r["status"] for r in results} == {"accepted"}
    assert {r["gateway"] for r in results} == {"smscx"}
    mids = {message_id_for(k, "") for k in keys}
    at_cx = [s for s in smscx.sent if s.text.startswith("Failover")]
    assert len(at_cx) == 30                                   # each accepted once by the second ...
    assert fake.accepted == []                                # ... and none by the first
    assert {r["message_id"] for r in results} == mids
    notes = [" ".join(h.get("note") or "" for h in producer.history(m)) for m in mids]
    assert all("skipped eskiz" in n for n in notes)
    # three calls, all refused (100% >= 50%): the circuit opened; later messages did not even try Eskiz
    assert sum("circuit open" in n for n in notes) >= 20
    assert worker.count(r"circuit of eskiz opened") >= 1


def test_two_workers_together_keep_to_the_gateways_rate_limit(redis_url, fake):
    settings = worker_settings(redis_url, fake, RATE_LIMITS="eskiz=10")
    producer = Producer(settings)
    workers = [WorkerProcess(settings, name=f"rate{i}") for i in (1, 2)]
    try:
        n = 70
        handles = [producer.send_sms.delay(TO, f"Rate {k}", idempotency_key=f"rl-{uuid.uuid4()}")
                   for k in range(n)]
        results = [h.get(timeout=90) for h in handles]
    finally:
        for w in workers:
            w.stop()
    assert {r["status"] for r in results} == {"accepted"}
    both = [w.count(r"send_sms\[.*\] succeeded") for w in workers]
    assert all(c > 0 for c in both), both                      # both workers really sent
    times = sorted(s.received_at for s in fake.sent if s.message.startswith("Rate"))
    assert len(times) == n
    # the first 10 are the bucket's burst; after that the fake sees 10 per second
    steady = times[10:]
    rate = (len(steady) - 1) / (steady[-1] - steady[0])
    print(f"observed {rate:.2f} msg/s for a limit of 10")
    assert 9.0 <= rate <= 11.0, rate
