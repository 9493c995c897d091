"""Circuit breakers in Redis: open on a failure rate over a minimum of calls, probes after the cool-off."""

from __future__ import annotations

import random

import pytest

from smsdispatch.circuit import Circuits
from smsdispatch.config import load_settings
from smsdispatch.errors import ConfigError
from smsdispatch.keys import Keys

T = 1_800_000_000.0


@pytest.fixture
def circuits(redis_client):
    return Circuits(redis_client, Keys("t"), failure_rate=50, min_calls=4, window=10, cooloff=30, probes=2,
                    probe_ttl=5)


def calls(circuits, *, ok: int, failed: int, at: float = T, gateway: str = "eskiz") -> list[str]:
    events = [circuits.record(gateway, now=at, failed=False).event for _ in range(ok)]
    return events + [circuits.record(gateway, now=at, failed=True).event for _ in range(failed)]


def open_it(circuits, at: float = T) -> None:
    assert "opened" in calls(circuits, ok=0, failed=4, at=at)


def test_a_closed_circuit_lets_calls_through(circuits):
    assert circuits.allow("eskiz", now=T).allowed
    assert circuits.state("eskiz", now=T) == "closed"


def test_failures_below_the_minimum_of_calls_never_open_it(circuits):
    assert calls(circuits, ok=0, failed=3) == ["", "", ""]           # 100% of 3 calls, but fewer than 4
    assert circuits.allow("eskiz", now=T).allowed
    assert circuits.record("eskiz", now=T, failed=True).event == "opened"   # the 4th


def test_it_opens_on_the_rate_not_on_a_count(circuits):
    # many failures, but a small share of a busy gateway's calls: stays closed
    assert "opened" not in calls(circuits, ok=300, failed=100)
    assert circuits.state("eskiz", now=T) == "closed"
    recorded = circuits.record("eskiz", now=T, failed=True)
    assert recorded.event == "" and (recorded.failures, recorded.calls) == (101, 401)
    # once half the window's calls failed, it opens
    assert "opened" in calls(circuits, ok=0, failed=200)
    assert not circuits.allow("eskiz", now=T + 1).allowed
    assert circuits.allow("smscx", now=T + 1).allowed                # per gateway


def test_calls_older_than_the_window_leave_it(circuits):
    calls(circuits, ok=0, failed=3, at=T)
    assert calls(circuits, ok=1, failed=1, at=T + 11) == ["", ""]    # the three left: 1 of 2
    assert circuits.state("eskiz", now=T + 11) == "closed"
    assert calls(circuits, ok=0, failed=2, at=T + 12) == ["", "opened"]   # 3 of 4 within 10 s


def test_after_the_cooloff_the_probes_go_and_others_wait(circuits):
    open_it(circuits)
    assert not circuits.allow("eskiz", now=T + 29).allowed
    first, second, third = (circuits.allow("eskiz", now=T + 31) for _ in range(3))
    assert first.probe and second.probe and not third.allowed
    assert third.open_until == T + 31 + 5                           # look again when the probes have answered
    assert circuits.state("eskiz", now=T + 31) == "half-open"


def test_the_probes_close_it_only_when_all_succeed(circuits):
    open_it(circuits)
    assert circuits.allow("eskiz", now=T + 31).probe and circuits.allow("eskiz", now=T + 31).probe
    assert circuits.success("eskiz", now=T + 32, probe=True) is False
    assert circuits.state("eskiz", now=T + 32) == "half-open"
    assert circuits.success("eskiz", now=T + 32, probe=True) is True
    assert circuits.state("eskiz", now=T + 32) == "closed"
    assert circuits.allow("eskiz", now=T + 32).allowed and not circuits.allow("eskiz", now=T + 32).probe
    assert calls(circuits, ok=0, failed=3, at=T + 33) == ["", "", ""]   # counting starts from zero


def test_a_failed_probe_opens_it_for_another_cooloff(circuits):
    open_it(circuits)
    assert circuits.allow("eskiz", now=T + 31).probe
    assert circuits.failure("eskiz", now=T + 32, probe=True) is True
    assert not circuits.allow("eskiz", now=T + 61).allowed
    assert circuits.allow("eskiz", now=T + 63).probe


def test_results_of_calls_that_are_not_probes_do_not_count_while_open(circuits):
    open_it(circuits)
    assert circuits.success("eskiz", now=T + 1) is False             # a straggler let through earlier
    assert circuits.failure("eskiz", now=T + 31) is False            # not a probe: no re-opening
    assert circuits.success("eskiz", now=T + 31) is False
    assert circuits.state("eskiz", now=T + 31) == "half-open"


def test_probes_that_never_report_are_handed_out_again(circuits):
    open_it(circuits)
    assert circuits.allow("eskiz", now=T + 31).probe and circuits.allow("eskiz", now=T + 31).probe
    assert not circuits.allow("eskiz", now=T + 35).allowed           # their workers died: no report
    assert circuits.allow("eskiz", now=T + 36.5).probe                 # a new round after probe_ttl


def test_a_waiting_message_comes_back_once_per_cooloff_spread_out(circuits):
    rng = random.Random(7)
    waits = [circuits.wait(T + 30, now=T, cap=300, rng=rng) for _ in range(1000)]
    assert min(waits) >= 30 and max(waits) <= 30 * 1.25
    assert max(waits) - min(waits) > 5                              # not all at one instant
    assert circuits.wait(T + 30, now=T, cap=10, rng=rng) == 10       # never past BACKOFF_MAX


def test_one_percent_errors_at_volume_never_open_it_at_the_shipped_defaults(redis_client):
    """The production failure this design answers: 150 calls a second, 1% of them failing."""
    s = load_settings(redis_url="redis://unused:6379/0")
    c = Circuits(redis_client, Keys("d"), failure_rate=s.circuit_failure_rate, min_calls=s.circuit_min_calls,
                 window=s.circuit_window, cooloff=s.circuit_cooloff, probes=s.circuit_probes)
    rng = random.Random(1)
    events = [c.record("eskiz", now=T + n / 150, failed=rng.random() < 0.01).event for n in range(150 * 60)]
    assert "opened" not in events and c.state("eskiz", now=T + 60) == "closed"
    # ... while a gateway that fails every call is cut off after the minimum of calls
    assert [c.record("smscx", now=T, failed=True).event for _ in range(s.circuit_min_calls)][-1] == "opened"


@pytest.mark.parametrize("name, value, words", [
    ("circuit_failure_rate", 0, "CIRCUIT_FAILURE_RATE"),
    ("circuit_failure_rate", 100.5, "CIRCUIT_FAILURE_RATE"),
    ("circuit_probes", 0, "CIRCUIT_PROBES"),
    ("circuit_min_calls", 0, "CIRCUIT_MIN_CALLS"),
    ("circuit_slow_call", 0, "CIRCUIT_SLOW_CALL"),
])
def test_bad_circuit_settings_stop_start_up_naming_the_variable(name, value, words):
    with pytest.raises(ConfigError, match=f"SMSDISPATCH_{words}"):
        load_settings(redis_url="redis://unused:6379/0", **{name: value})


def test_the_retired_count_setting_is_refused_with_what_replaced_it(monkeypatch):
    monkeypatch.setenv("SMSDISPATCH_CIRCUIT_FAILURES", "5")
    with pytest.raises(ConfigError, match="SMSDISPATCH_CIRCUIT_FAILURES is no longer read.*CIRCUIT_FAILURE_RATE"):
        load_settings(redis_url="redis://unused:6379/0")


def test_a_snapshot_reads_the_window_and_the_state_without_changing_them(circuits):
    calls(circuits, ok=3, failed=1, at=T - 20)                 # two windows ago: no longer counted
    calls(circuits, ok=5, failed=2, at=T)
    snap = circuits.snapshot("eskiz", now=T + 1)
    assert (snap.state, snap.calls, snap.failures, snap.open_until) == ("closed", 7, 2, None)
    assert circuits.snapshot("eskiz", now=T + 1) == snap
    open_it(circuits, at=T + 2)
    assert circuits.snapshot("eskiz", now=T + 3).state == "open"
    assert circuits.snapshot("eskiz", now=T + 3).open_until == T + 2 + 30
    assert circuits.allow("eskiz", now=T + 40).probe
    half = circuits.snapshot("eskiz", now=T + 40)
    assert (half.state, half.probes) == ("half-open", 1)
    assert circuits.snapshot("never-called", now=T) == circuits.snapshot("never-called", now=T + 1)
