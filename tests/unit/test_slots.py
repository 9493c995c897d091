"""GatewaySlots (smsdispatch/slots.py): a per-process cap on the calls in flight to each gateway."""

from __future__ import annotations

import threading

import pytest

from smsdispatch.config import load_settings
from smsdispatch.slots import GatewaySlots


def test_a_capped_gateway_gives_out_at_most_its_slots_and_takes_them_back():
    slots = GatewaySlots({"eskiz": 2})
    assert slots.try_acquire("eskiz") and slots.try_acquire("eskiz")
    assert not slots.try_acquire("eskiz") and slots.in_use("eskiz") == 2
    slots.release("eskiz")
    assert slots.try_acquire("eskiz") and not slots.try_acquire("eskiz")


def test_gateways_are_capped_apart_and_unlisted_ones_follow_the_default():
    slots = GatewaySlots({"eskiz": 1}, default=3)
    assert slots.limit("eskiz") == 1 and slots.limit("smscx") == 3
    assert slots.try_acquire("eskiz") and not slots.try_acquire("eskiz")
    assert all(slots.try_acquire("smscx") for _ in range(3)) and not slots.try_acquire("smscx")
    assert slots.try_acquire("smspm") and slots.in_use("eskiz") == 1     # each gateway its own count


@pytest.mark.parametrize("default", [None, 0])
def test_without_a_default_unlisted_gateways_have_no_cap_but_are_counted(default):
    slots = GatewaySlots({"eskiz": 1}, default=default)
    assert slots.limit("smscx") is None
    assert all(slots.try_acquire("smscx") for _ in range(1000))
    assert slots.in_use("smscx") == 1000


def test_a_release_without_a_slot_is_an_error_not_a_bigger_cap():
    slots = GatewaySlots({"eskiz": 1})
    with pytest.raises(RuntimeError, match="without a slot"):
        slots.release("eskiz")
    assert slots.try_acquire("eskiz") and not slots.try_acquire("eskiz")


def test_the_context_manager_releases_only_what_it_took_however_the_block_ends():
    slots = GatewaySlots({"eskiz": 1})
    with pytest.raises(KeyError, match="the call failed"):
        with slots.slot("eskiz") as got:
            assert got
            with slots.slot("eskiz") as again:
                assert not again                 # full: nothing taken, nothing given back below
            assert slots.in_use("eskiz") == 1
            raise KeyError("the call failed")
    assert slots.in_use("eskiz") == 0


@pytest.mark.parametrize("limits, default, words", [
    ({"eskiz": 0}, None, "eskiz: a concurrency cap must be at least 1"),
    ({}, -1, r"0 \(none\) or more"),
])
def test_bad_caps_are_refused(limits, default, words):
    with pytest.raises(ValueError, match=words):
        GatewaySlots(limits, default)


def test_from_settings():
    s = load_settings(gateway_concurrency="eskiz=4,smscx=8", gateway_concurrency_default=2)
    slots = GatewaySlots.from_settings(s)
    assert (slots.limit("eskiz"), slots.limit("smscx"), slots.limit("smspm")) == (4, 8, 2)
    assert GatewaySlots.from_settings(load_settings()).limit("eskiz") is None


def test_threads_racing_for_slots_never_get_more_than_the_cap():
    slots = GatewaySlots({"eskiz": 3})
    start, tried = threading.Barrier(16), threading.Barrier(16)
    got: list[bool] = []
    lock = threading.Lock()

    def worker() -> None:
        start.wait(10)
        took = slots.try_acquire("eskiz")
        with lock:
            got.append(took)
        tried.wait(10)                           # nobody gives a slot back before everyone has tried
        if took:
            slots.release("eskiz")

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(got) == 16 and got.count(True) == 3 and slots.in_use("eskiz") == 0
