"""One send policy (policy.py): its decision table, and proof that a single send and a batch entry
meeting the same error on the same kind of gateway end in the same state."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import redis

from smsdispatch.batch import Batches
from smsdispatch.dispatch import Dispatcher
from smsdispatch.errors import (
    AmbiguousError,
    AuthError,
    GatewayRejected,
    GatewayUnavailable,
    InsufficientBalance,
    RateLimited,
)
from smsdispatch.policy import Action, Health, after_failure

from .conftest import StubGateways
from .test_batch import BatchStub

LOOKUP = SimpleNamespace(name="g", can_lookup=True, can_dedupe=False)
DEDUPE = SimpleNamespace(name="g", can_lookup=False, can_dedupe=True)
NEITHER = SimpleNamespace(name="g", can_lookup=False, can_dedupe=False)

ERRORS = {
    "rejected": GatewayRejected("HTTP 400 bad sender", gateway="g"),
    "auth": AuthError("credentials refused", gateway="g"),
    "balance": InsufficientBalance("no money", gateway="g"),
    "503": GatewayUnavailable("HTTP 503", gateway="g", status=503),
    "429": RateLimited("HTTP 429", gateway="g", retry_after=1),
    "500": GatewayUnavailable("HTTP 500", gateway="g", status=500, maybe_sent=True),
    "ambiguous": AmbiguousError("no answer within 15s", gateway="g"),
    "redis": redis.ConnectionError("Error 111 connecting"),
    "bug": RuntimeError("unexpected"),       # dispatch/batch wrap it as AmbiguousError first
}


def decide(error, gw, *, attempts=1, has_next=False, pinned=False):
    if isinstance(error, RuntimeError):
        error = AmbiguousError(f"unexpected: {error!r}", gateway="g")
    d = after_failure(error, gw, attempts=attempts, max_attempts=3, has_next=has_next, pinned=pinned)
    return d.action, d.maybe_sent, d.pin


@pytest.mark.parametrize("error, gw, expected", [
    ("rejected", LOOKUP, (Action.FAIL, False, False)),
    ("auth", NEITHER, (Action.FAIL, False, False)),
    ("503", NEITHER, (Action.RETRY, False, False)),
    ("429", DEDUPE, (Action.RETRY, False, False)),
    ("500", LOOKUP, (Action.RECONCILE, True, False)),
    ("500", DEDUPE, (Action.REPEAT, True, True)),
    ("500", NEITHER, (Action.RETRY, True, True)),
    ("ambiguous", LOOKUP, (Action.RECONCILE, True, False)),
    ("ambiguous", DEDUPE, (Action.REPEAT, True, True)),
    ("ambiguous", NEITHER, (Action.UNKNOWN, True, True)),
    ("bug", NEITHER, (Action.UNKNOWN, True, True)),
    ("redis", NEITHER, (Action.RETRY, False, False)),
])
def test_the_decision_table(error, gw, expected):
    assert decide(ERRORS[error], gw) == expected


@pytest.mark.parametrize("error", ["auth", "balance", "503", "429"])
def test_what_proves_it_was_not_sent_here_fails_over_unless_pinned(error):
    assert decide(ERRORS[error], NEITHER, has_next=True)[0] is Action.FAILOVER
    assert decide(ERRORS[error], NEITHER, has_next=True, pinned=True)[0] is not Action.FAILOVER


@pytest.mark.parametrize("error", ["rejected", "500", "ambiguous", "redis"])
def test_what_may_have_been_sent_or_is_not_the_gateways_doing_never_fails_over(error):
    assert decide(ERRORS[error], NEITHER, has_next=True)[0] is not Action.FAILOVER


def test_attempts_run_out_only_where_a_resend_is_the_plan():
    assert decide(ERRORS["503"], NEITHER, attempts=3)[0] is Action.EXHAUSTED
    assert decide(ERRORS["500"], NEITHER, attempts=3)[:2] == (Action.EXHAUSTED, True)     # maybe sent
    assert decide(ERRORS["ambiguous"], DEDUPE, attempts=3)[0] is Action.EXHAUSTED
    assert decide(ERRORS["ambiguous"], LOOKUP, attempts=3)[0] is Action.RECONCILE   # bounded by its lookups
    assert decide(ERRORS["redis"], NEITHER, attempts=3)[0] is Action.RETRY          # not the gateway's doing


def test_how_each_error_counts_for_the_gateways_health():
    health = {name: after_failure(e, NEITHER, attempts=1, max_attempts=3, has_next=False, pinned=False).health
              for name, e in ERRORS.items() if name != "bug"}
    assert health == {"rejected": Health.ANSWERED, "auth": Health.ANSWERED, "balance": Health.ANSWERED,
                      "503": Health.FAILURE, "429": Health.RATE_LIMITED, "500": Health.FAILURE,
                      "ambiguous": Health.FAILURE, "redis": Health.NEUTRAL}


# ---------------------------------------------------------------- single send and batch entry agree

CAPABILITIES = {"lookup": dict(can_lookup=True), "dedupe": dict(can_dedupe=True), "neither": {}}


def outcome(d: Dispatcher, message_id: str, key: str) -> dict:
    record = d.records.get(message_id) or {}
    return {"status": record.get("status"), "error": (record.get("error") or {}).get("code"),
            "pinned": bool(record.get("pinned_gateway")), "maybe_sent": bool(record.get("maybe_sent")),
            "ledger": d.ledger.state(key), "dead_letter": message_id in d.records.dead_letters()}


@pytest.mark.parametrize("capability", sorted(CAPABILITIES))
@pytest.mark.parametrize("error", sorted(ERRORS))
@pytest.mark.parametrize("attempts_left", [2, 1], ids=["retries-left", "last-attempt"])
def test_a_single_send_and_a_batch_entry_end_alike(settings, redis_client, clock, error, capability, attempts_left):
    s = settings.model_copy(update={"max_attempts": attempts_left, "batch_chunk_size": 4})
    single_gw = BatchStub(max_batch=1, **CAPABILITIES[capability])
    batch_gw = BatchStub(max_batch=1, **CAPABILITIES[capability])
    single = Dispatcher(s, redis_client, gateways=StubGateways(single_gw), clock=clock)
    batch = Batches(Dispatcher(s, redis_client, gateways=StubGateways(batch_gw), clock=clock))
    for gw in (single_gw, batch_gw):
        gw.script = [ERRORS[error]]

    from smsdispatch.dispatch import message_id_for
    single.send({"to": "+998901234567", "text": "Hi", "gateway": "stub", "idempotency_key": "one"}, task_id="t1")
    batch.store("b1", [{"to": "+998901234567", "text": "Hi", "idempotency_key": "two"}], gateway="stub",
                sender=None, idempotency_key=None, submission="s1")
    batch.run_chunk("b1", 0, submission="s1")

    a = outcome(single, message_id_for("one", ""), "key:one")
    b = outcome(batch.d, message_id_for("two", ""), "key:two")
    assert a == b
    assert len(single_gw.calls) == len(batch_gw.calls) == 1


def test_a_batch_entry_fails_over_in_the_same_run_like_a_single_send(settings, redis_client, clock):
    """Before the shared policy a batch entry whose gateway refused the connection waited for a later
    run; a single send moved to the next gateway at once. Now both move at once."""
    from .test_failover import Pool

    first, second = BatchStub(max_batch=3), BatchStub(max_batch=3)
    first.name, second.name = "eskiz", "smscx"
    first.script = [GatewayUnavailable("cannot connect: refused", gateway="eskiz")]
    s = settings.model_copy(update={"default_gateway": "eskiz|smscx", "batch_chunk_size": 4})
    b = Batches(Dispatcher(s, redis_client, gateways=Pool(first, second), clock=clock))
    b.store("fo", [{"to": f"+99890123456{n}", "text": "Hi"} for n in range(3)], gateway=None, sender=None,
            idempotency_key=None, submission="s1")
    out = b.run_chunk("fo", 0, submission="s1")
    assert out.retry_in is None and dict(out.counts) == {"accepted": 3}
    assert len(first.calls) == 1 and len(second.calls) == 1 and len(second.accepted) == 3
    assert first.accepted == {}
