"""The shared token bucket: reservations in order, a cap on waiting, 429s slow it down."""

from __future__ import annotations

import pytest

from smsdispatch.keys import Keys
from smsdispatch.ratelimit import RateLimiter

T = 1_800_000_000.0


@pytest.fixture
def limiter(redis_client):
    return RateLimiter(redis_client, Keys("t"), {"eskiz": 10.0, "smspm": 0.5})


def test_a_gateway_without_a_limit_is_never_held_back(limiter):
    for _ in range(1000):
        assert limiter.acquire("smscx", now=T, max_wait=0).wait == 0
    assert not limiter.limited("smscx") and limiter.limited("eskiz")


def test_a_full_bucket_gives_one_seconds_worth_then_reservations_queue_up(limiter):
    waits = [limiter.acquire("eskiz", now=T, max_wait=5).wait for _ in range(15)]
    assert waits[:10] == [0.0] * 10                       # the burst: one second's worth
    assert waits[10:] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])   # then one every 1/rate, in order


def test_over_the_wait_cap_nothing_is_reserved(limiter):
    for _ in range(10):
        limiter.acquire("eskiz", now=T, max_wait=0)
    refused = limiter.acquire("eskiz", now=T, max_wait=0.05)
    assert not refused.granted and refused.wait == pytest.approx(0.1)
    # the refusal took nothing: the next caller still gets the first free slot
    assert limiter.acquire("eskiz", now=T, max_wait=1).wait == pytest.approx(0.1)


def test_tokens_come_back_at_the_rate_and_never_beyond_the_burst(limiter):
    for _ in range(10):
        limiter.acquire("eskiz", now=T, max_wait=0)
    assert limiter.acquire("eskiz", now=T + 0.5, max_wait=0).wait == 0      # 5 back after 0.5 s
    waits = [limiter.acquire("eskiz", now=T + 100, max_wait=5).wait for _ in range(11)]
    assert waits.count(0.0) == 10                                           # capped at one second's worth


def test_a_batch_call_takes_one_token_per_message(limiter):
    assert limiter.acquire("eskiz", 10, now=T, max_wait=0).wait == 0
    assert limiter.acquire("eskiz", 5, now=T, max_wait=1).wait == pytest.approx(0.5)
    assert limiter.burst("eskiz") == 10 and limiter.burst("smspm") == 1


def test_a_429_halves_the_rate_and_empties_the_bucket_for_retry_after(limiter):
    assert limiter.slow_down("eskiz", now=T, retry_after=2) == 0.5
    permit = limiter.acquire("eskiz", now=T, max_wait=10)
    # 2 s of Retry-After at the halved rate (5/s) is 10 tokens owed, plus this one
    assert permit.wait == pytest.approx(2.2)
    assert limiter.slow_down("eskiz", now=T + 1, retry_after=None) == 0.25
    # the slow-down lasts 30 s after the last 429, then the full rate is back
    for _ in range(10):
        limiter.acquire("eskiz", now=T + 200, max_wait=10)
    assert limiter.acquire("eskiz", now=T + 200, max_wait=10).wait == pytest.approx(0.1)


def test_the_slow_down_has_a_floor(limiter):
    for k in range(10):
        factor = limiter.slow_down("eskiz", now=T + k, retry_after=None)
    assert factor == pytest.approx(0.1)
