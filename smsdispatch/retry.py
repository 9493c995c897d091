"""Backoff as a pure function: how long to wait before attempt n+1.

    ceiling(n) = min(cap, base * 2 ** (n - 1))       n = attempts made so far, 1-based
    full jitter:   uniform(0, ceiling)               (the default: spreads a thundering herd best)
    equal jitter:  uniform(ceiling / 2, ceiling)     (gaps never shrink from one attempt to the next)
    none:          ceiling

A gateway's Retry-After is a floor, never shortened by jitter; everything is capped at `cap`, which
config.py keeps below the visibility timeout so a retry countdown never triggers a redelivery.
"""

from __future__ import annotations

import random
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Literal

Jitter = Literal["full", "equal", "none"]


def compute_backoff(
    attempts: int,
    *,
    base: float,
    cap: float,
    jitter: Jitter = "full",
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    if attempts < 1:
        raise ValueError("attempts is 1-based")
    uniform = rng.uniform if rng else random.uniform
    ceiling = min(cap, base * 2 ** min(attempts - 1, 62))
    if jitter == "full":
        delay = uniform(0, ceiling)
    elif jitter == "equal":
        delay = uniform(ceiling / 2, ceiling)
    else:
        delay = ceiling
    if retry_after is not None:
        delay = max(delay, retry_after)
    return min(delay, cap)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())
