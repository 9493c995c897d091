"""One rule for a test whose real part (Redis, Sentinel, PostgreSQL, a browser) cannot be had: with
CI=true it fails, since CI must run every test; on a developer's machine it is skipped."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)
