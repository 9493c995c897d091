import random
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from smsdispatch.retry import compute_backoff, parse_retry_after


def test_full_jitter_stays_within_the_exponential_ceiling():
    rng = random.Random(1)
    for attempt, ceiling in [(1, 2), (2, 4), (3, 8), (4, 16), (9, 100)]:
        samples = [compute_backoff(attempt, base=2, cap=100, rng=rng) for _ in range(500)]
        assert 0 <= min(samples) and max(samples) <= ceiling
        assert max(samples) > ceiling * 0.9 and min(samples) < ceiling * 0.1  # really full range


def test_equal_jitter_gaps_never_shrink():
    rng = random.Random(2)
    for _ in range(200):
        gaps = [compute_backoff(n, base=1, cap=1000, jitter="equal", rng=rng) for n in range(1, 8)]
        assert gaps == sorted(gaps)


def test_no_jitter_is_the_capped_exponential():
    assert [compute_backoff(n, base=0.5, cap=3, jitter="none") for n in (1, 2, 3, 4, 5)] == [0.5, 1, 2, 3, 3]


def test_retry_after_is_a_floor_but_never_beyond_the_cap():
    assert compute_backoff(1, base=1, cap=60, retry_after=30, rng=random.Random(0)) >= 30
    assert compute_backoff(1, base=1, cap=60, retry_after=3600) == 60


def test_huge_attempt_numbers_do_not_overflow():
    assert compute_backoff(10_000, base=2, cap=5, jitter="none") == 5


def test_attempts_are_one_based():
    with pytest.raises(ValueError):
        compute_backoff(0, base=1, cap=1)


def test_parse_retry_after_seconds_dates_and_garbage():
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert parse_retry_after("120") == 120
    assert parse_retry_after(format_datetime(now + timedelta(seconds=90), usegmt=True), now=now) == 90
    assert parse_retry_after(format_datetime(now - timedelta(seconds=90), usegmt=True), now=now) == 0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
    assert parse_retry_after("-5") == 0
