"""Failover along a route of gateways, circuit breakers and rate limits, in the dispatcher."""

from __future__ import annotations

import pytest

from smsdispatch.dispatch import Dispatcher
from smsdispatch.errors import (
    AmbiguousError,
    AuthError,
    GatewayUnavailable,
    RateLimited,
    RecipientRejected,
    UnknownGatewayError,
)

from .conftest import StubGateway

TO = "+998901234567"


class Named(StubGateway):
    def __init__(self, name: str, **kw) -> None:
        super().__init__(**kw)
        self.name = name


class Pool:
    def __init__(self, *gateways: Named) -> None:
        self.by_name = {g.name: g for g in gateways}

    def get(self, name: str):
        if name not in self.by_name:
            raise UnknownGatewayError(f"gateway {name!r} is not configured here")
        return self.by_name[name]


@pytest.fixture
def a():
    return Named("eskiz")           # can look messages up


@pytest.fixture
def b():
    return Named("smscx", can_lookup=False, can_dedupe=True)


def make(settings, redis_client, clock, *gateways, **update):
    s = settings.model_copy(update={"default_gateway": "|".join(g.name for g in gateways),
                                    "circuit_min_calls": 2, "circuit_failure_rate": 50.0, "circuit_probes": 1,
                                    "circuit_window": 60.0, "circuit_cooloff": 30.0,
                                    "max_attempts": 5, **update})
    return Dispatcher(s, redis_client, gateways=Pool(*gateways), clock=clock)


def send(d, task_id="t1", **kw):
    return d.send({"to": TO, "text": "Salom", **kw}, task_id=task_id)


def notes(d, mid):
    return " | ".join(h.get("note") or "" for h in d.records.history(mid))


def test_a_refused_connection_fails_over_at_once_and_the_history_says_why(settings, redis_client, clock, a, b):
    d = make(settings, redis_client, clock, a, b)
    a.script = [GatewayUnavailable("cannot connect: refused", gateway="eskiz")]
    out = send(d).result
    assert out["status"] == "accepted" and out["gateway"] == "smscx" and out["attempts"] == 2
    assert len(a.calls) == 1 and len(b.calls) == 1
    assert "skipped eskiz: gateway_unavailable" in notes(d, "t1") and "not sent" in notes(d, "t1")


@pytest.mark.parametrize("error", [RateLimited("HTTP 429", gateway="eskiz", retry_after=5),
                                   GatewayUnavailable("HTTP 503", gateway="eskiz", status=503),
                                   AuthError("bad credentials", gateway="eskiz")])
def test_errors_that_prove_nothing_was_sent_fail_over(settings, redis_client, clock, a, b, error):
    d = make(settings, redis_client, clock, a, b)
    a.script = [error]
    assert send(d).result["gateway"] == "smscx"
    assert len(b.calls) == 1


def test_a_permanent_refusal_of_the_message_does_not_fail_over(settings, redis_client, clock, a, b):
    d = make(settings, redis_client, clock, a, b)
    a.script = [RecipientRejected("blacklisted", gateway="eskiz")]
    out = send(d).result
    assert out["status"] == "failed" and out["error"]["code"] == "recipient_rejected"
    assert b.calls == []


def test_an_ambiguous_error_never_fails_over_it_looks_up_first(settings, redis_client, clock, a, b):
    d = make(settings, redis_client, clock, a, b)
    a.script = [AmbiguousError("read timeout", gateway="eskiz")]
    first = send(d)
    assert first.retry_in is not None and b.calls == []
    a.accepted["t1"] = "gw-late"                          # it had gone through after all
    out = send(d).result
    assert out["status"] == "accepted" and out["gateway"] == "eskiz" and a.lookups == ["t1"]
    assert b.calls == [] and len(a.calls) == 1


def test_after_a_lookup_proves_it_was_not_sent_any_gateway_may_send(settings, redis_client, clock, a, b):
    d = make(settings, redis_client, clock, a, b)
    a.script = [AmbiguousError("read timeout", gateway="eskiz"), GatewayUnavailable("refused", gateway="eskiz")]
    send(d)
    out = send(d).result                                  # lookup: not there → eskiz refused → smscx
    assert a.lookups == ["t1"] and out["gateway"] == "smscx"


def test_ambiguous_on_a_gateway_that_cannot_dedupe_or_look_up_ends_unknown(settings, redis_client, clock, b):
    blind = Named("devsms", can_lookup=False)
    d = make(settings, redis_client, clock, blind, b)
    blind.script = [AmbiguousError("connection lost after sending", gateway="devsms")]
    out = send(d).result
    assert out["status"] == "unknown" and b.calls == []


def test_ambiguous_on_a_deduping_gateway_repeats_there_only(settings, redis_client, clock, a, b):
    d = make(settings, redis_client, clock, b, a)          # smscx first
    b.script = [AmbiguousError("read timeout", gateway="smscx")]
    assert send(d).retry_in is not None
    clock.t += 1
    for _ in range(2):                                     # open smscx's circuit meanwhile
        d.circuits.failure("smscx", now=clock())
    out = send(d)
    assert out.retry_in is not None and a.calls == []      # waits for smscx; eskiz never gets it
    clock.t += 31
    out = send(d).result
    assert out["gateway"] == "smscx" and len(b.calls) == 2 and a.calls == []
    assert b.calls[0].message_id == b.calls[1].message_id   # same reference: SMS.CX dedupes


def test_a_500_on_a_gateway_without_lookup_is_retried_on_that_gateway_only(settings, redis_client, clock, a, b):
    blind = Named("devsms", can_lookup=False)
    d = make(settings, redis_client, clock, blind, a)
    blind.script = [GatewayUnavailable("HTTP 500", gateway="devsms", status=500, maybe_sent=True)]
    assert send(d).retry_in is not None and a.calls == []
    assert d.records.get("t1")["pinned_gateway"] == "devsms"
    out = send(d).result
    assert out["gateway"] == "devsms" and a.calls == []


def test_an_open_circuit_skips_the_gateway_without_calling_it(settings, redis_client, clock, a, b):
    d = make(settings, redis_client, clock, a, b)
    a.script = [GatewayUnavailable("refused", gateway="eskiz")] * 2
    send(d, task_id="m1")
    send(d, task_id="m2")                                  # two failures: eskiz's circuit opens
    assert d.circuits.state("eskiz", now=clock()) == "open"
    out = send(d, task_id="m3").result
    assert out["gateway"] == "smscx" and len(a.calls) == 2     # m3 never reached eskiz
    assert "skipped eskiz: circuit open" in notes(d, "m3")
    clock.t += 31                                          # half-open: the next message probes eskiz
    assert send(d, task_id="m4").result["gateway"] == "eskiz"
    assert d.circuits.state("eskiz", now=clock()) == "closed"


def test_with_every_circuit_open_it_waits_for_the_probe_without_using_attempts(settings, redis_client, clock, a, b):
    d = make(settings, redis_client, clock, a, b)
    for name in ("eskiz", "smscx"):
        for _ in range(2):
            d.circuits.failure(name, now=clock())
    out = send(d)
    assert out.retry_in is not None and 0.2 <= out.retry_in <= 11      # capped by BACKOFF_MAX (10)
    assert a.calls == [] and b.calls == []
    record = d.records.get("t1")
    assert record["status"] == "retrying" and not record.get("attempts")
    assert "no gateway available" in notes(d, "t1")


def test_an_explicit_gateway_has_no_failover(settings, redis_client, clock, a, b):
    d = make(settings, redis_client, clock, a, b)
    a.script = [GatewayUnavailable("refused", gateway="eskiz")]
    assert send(d, gateway="eskiz").retry_in is not None and b.calls == []


def test_a_used_up_rate_limit_sends_the_message_back_to_the_queue(settings, redis_client, clock, a, b):
    d = make(settings, redis_client, clock, a, rate_limits={"eskiz": 1.0})
    d.max_rate_wait = 0.0
    assert send(d, task_id="m1").result["status"] == "accepted"
    out = send(d, task_id="m2")
    assert out.retry_in == pytest.approx(1.0) and len(a.calls) == 1
    assert "rate limit" in notes(d, "m2")
    clock.t += 1
    assert send(d, task_id="m2").result["status"] == "accepted"      # its claim was given back


def test_a_429_slows_the_shared_bucket(settings, redis_client, clock, a, b):
    d = make(settings, redis_client, clock, a, b, rate_limits={"eskiz": 10.0})
    a.script = [RateLimited("HTTP 429", gateway="eskiz", retry_after=3)]
    send(d)
    permit = d.limiter.acquire("eskiz", now=clock(), max_wait=100)
    assert permit.wait > 2.9                                # nobody calls eskiz before Retry-After


def test_a_redis_error_inside_the_adapter_is_not_taken_for_a_possible_send(settings, redis_client, clock, a, b):
    """Adapters touch Redis only for their token, before the HTTP call: the message was not sent,
    so the claim is given back (not left to reconcile), the gateway is not blamed, and it runs again
    (policy.py: the same answer a batch entry gets)."""
    import redis as redis_lib
    d = make(settings, redis_client, clock, a, b)
    a.script = [redis_lib.ConnectionError("reset by peer")] * 3
    for _ in range(3):
        assert send(d).retry_in is not None
    assert d.circuits.state("eskiz", now=clock()) == "closed" and b.calls == []
    assert d.records.get("t1")["error"]["code"] == "store_unavailable" and not d.records.get("t1")["maybe_sent"]
    out = send(d).result                                    # the retry: a fresh claim, no lookup
    assert out["status"] == "accepted" and a.lookups == [] and out["gateway"] == "eskiz"


def test_a_pin_survives_a_later_provably_unsent_error(settings, redis_client, clock, a, b):
    """Found by the chaos run: reset after sending (pinned to smscx), then a 503 from smscx. The 503
    proves only that *that* call was not sent; the earlier one may have been. It must stay pinned."""
    d = make(settings, redis_client, clock, b, a)                 # smscx first, eskiz second
    b.accepted["t1"] = "accepted-before-the-reset"
    b.script = [AmbiguousError("connection lost after sending", gateway="smscx"),
                GatewayUnavailable("HTTP 503", gateway="smscx", status=503)]
    assert send(d).retry_in is not None                          # reset: pinned to smscx
    assert send(d).retry_in is not None                          # 503 from smscx: still pinned
    assert d.records.get("t1")["pinned_gateway"] == "smscx"
    assert send(d).retry_in is not None and a.calls == []        # smscx's circuit opened (2 failures): waits
    clock.t += 31                                                 # the probe is due
    out = send(d).result
    assert out["gateway"] == "smscx" and a.calls == []           # eskiz never got it


def test_messages_waiting_for_a_rate_limit_run_once_more_at_their_reserved_turn(settings, redis_client, clock, a):
    """Before: every message refused by the bucket came back at the same moment and most were refused
    again (a waiting message ran many times). Now each reserves its turn and runs once more, at it."""
    d = make(settings, redis_client, clock, a, rate_limits={"eskiz": 2.0})
    d.max_rate_wait = 0.0
    start = clock.t
    outs = {f"m{n}": send(d, task_id=f"m{n}") for n in range(10)}
    waiting = {mid: o.retry_in for mid, o in outs.items() if o.retry_in is not None}
    assert len(waiting) == 8 and len(a.calls) == 2                   # the bucket's burst went at once
    assert sorted(waiting.values()) == pytest.approx([0.5 * k for k in range(1, 9)])
    assert "its turn is reserved" in notes(d, "m9")
    for mid, delay in sorted(waiting.items(), key=lambda kv: kv[1]):
        clock.t = start + delay
        assert send(d, task_id=mid).result["status"] == "accepted"   # one more run each, no asking again
    assert len(a.calls) == 10 and d.records.get("m9")["rate_slot"] is None


def test_a_run_before_its_reserved_turn_waits_for_it_without_a_new_reservation(settings, redis_client, clock, a):
    d = make(settings, redis_client, clock, a, rate_limits={"eskiz": 1.0})
    d.max_rate_wait = 0.0
    send(d, task_id="m1")
    first = send(d, task_id="m2").retry_in
    clock.t += 0.25                                   # a duplicate delivery, early
    assert send(d, task_id="m2").retry_in == pytest.approx(first - 0.25)
    clock.t += first
    assert send(d, task_id="m2").result["status"] == "accepted"
    assert send(d, task_id="m3").retry_in == pytest.approx(1.0, abs=0.3)   # the bucket was not charged twice


def test_a_gateway_at_its_concurrency_cap_is_passed_over_without_a_call(settings, redis_client, clock, a, b):
    """GATEWAY_CONCURRENCY: a slow gateway holding its share of this worker's threads does not get more."""
    d = make(settings, redis_client, clock, a, b, gateway_concurrency={"eskiz": 1})
    from smsdispatch.slots import GatewaySlots
    d.slots = GatewaySlots.from_settings(d.settings)
    assert d.slots.try_acquire("eskiz")                     # a slow call to eskiz holds its one slot
    out = send(d, task_id="m1").result
    assert out["gateway"] == "smscx" and a.calls == [] and out["attempts"] == 1
    assert "eskiz: 1 calls in flight here" in notes(d, "m1")
    alone = send(d, task_id="m2", gateway="eskiz")           # no other gateway: it waits, no attempt used
    assert alone.retry_in is not None and a.calls == [] and d.records.get("m2")["attempts"] == 0
    d.slots.release("eskiz")
    assert send(d, task_id="m2", gateway="eskiz").result["status"] == "accepted"
    assert d.slots.in_use("eskiz") == 0 and d.slots.in_use("smscx") == 0     # every slot given back
