"""Circuit breakers in Redis: open after N failures in a window, one probe after the cool-off."""

from __future__ import annotations

import pytest

from smsdispatch.circuit import Circuits
from smsdispatch.keys import Keys

T = 1_800_000_000.0


@pytest.fixture
def circuits(redis_client):
    return Circuits(redis_client, Keys("t"), failures=3, window=10, cooloff=30)


def test_a_closed_circuit_lets_calls_through(circuits):
    assert circuits.allow("eskiz", now=T).allowed
    assert circuits.state("eskiz", now=T) == "closed"


def test_failures_inside_the_window_open_it_and_old_ones_do_not_count(circuits):
    assert circuits.failure("eskiz", now=T) is False
    assert circuits.failure("eskiz", now=T + 11) is False     # the first one left the window
    assert circuits.failure("eskiz", now=T + 12) is False
    assert circuits.allow("eskiz", now=T + 12).allowed
    assert circuits.failure("eskiz", now=T + 13) is True       # 3 within 10 s
    verdict = circuits.allow("eskiz", now=T + 14)
    assert not verdict.allowed and verdict.open_until == T + 13 + 30
    assert circuits.allow("smscx", now=T + 14).allowed          # per gateway


def test_after_the_cooloff_exactly_one_caller_probes(circuits):
    for k in range(3):
        circuits.failure("eskiz", now=T + k)
    assert not circuits.allow("eskiz", now=T + 31).allowed
    first = circuits.allow("eskiz", now=T + 33)
    second = circuits.allow("eskiz", now=T + 33)
    assert first.allowed and first.probe
    assert not second.allowed
    assert circuits.state("eskiz", now=T + 33) == "half-open"


def test_a_successful_probe_closes_it(circuits):
    for k in range(3):
        circuits.failure("eskiz", now=T + k)
    assert circuits.allow("eskiz", now=T + 40).probe
    assert circuits.success("eskiz", now=T + 40) is True
    assert circuits.state("eskiz", now=T + 40) == "closed"
    assert circuits.allow("eskiz", now=T + 40).allowed and circuits.allow("eskiz", now=T + 40).allowed
    # and it starts counting from zero again
    assert circuits.failure("eskiz", now=T + 41) is False


def test_a_failed_probe_opens_it_for_another_cooloff(circuits):
    for k in range(3):
        circuits.failure("eskiz", now=T + k)
    assert circuits.allow("eskiz", now=T + 40).probe
    assert circuits.failure("eskiz", now=T + 41) is True
    assert not circuits.allow("eskiz", now=T + 60).allowed
    assert circuits.allow("eskiz", now=T + 72).probe


def test_a_probe_that_never_reports_frees_the_slot_after_a_cooloff(circuits):
    for k in range(3):
        circuits.failure("eskiz", now=T + k)
    assert circuits.allow("eskiz", now=T + 40).probe            # its worker dies: no report
    assert not circuits.allow("eskiz", now=T + 60).allowed
    assert circuits.allow("eskiz", now=T + 71).probe


def test_success_while_closed_changes_nothing(circuits):
    circuits.failure("eskiz", now=T)
    circuits.failure("eskiz", now=T + 1)
    assert circuits.success("eskiz", now=T + 2) is False
    assert circuits.failure("eskiz", now=T + 3) is True          # failures in the window still count
