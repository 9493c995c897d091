"""SMSDISPATCH_CLAIM_REPLICAS: a claim fewer replicas acknowledged is never followed by a gateway call.

fakeredis has no replication (and no WAIT): `Replicas` answers WAIT's question with a number given by
the test, in the claim's pipeline as the real one would (tests/integration/test_sentinel.py runs the
real WAIT against a primary with replicas)."""

from __future__ import annotations

import pytest

from smsdispatch.batch import Batches
from smsdispatch.config import load_settings
from smsdispatch.dispatch import Dispatcher, message_id_for
from smsdispatch.errors import AmbiguousError, ConfigError, GatewayUnavailable
from smsdispatch.keys import Keys
from smsdispatch.ledger import Claim, Durability, Ledger
from smsdispatch.records import MessageStatus, Records

from .conftest import StubGateways
from .test_batch import BatchStub, entries

TO = "+998901234567"


class Replicas(Durability):
    """Durability whose WAIT is answered by the test: `acked` replicas hold every write."""

    acked = 0

    def ask(self, pipe) -> None:
        pipe.execute_command("ECHO", str(self.acked))

    def answer(self, acked: int) -> None:
        object.__setattr__(self, "acked", acked)      # frozen like Durability; the test plays the replicas


def durable(replicas: int = 1, acked: int = 0) -> Replicas:
    d = Replicas(replicas, 0.2)
    d.answer(acked)
    return d


@pytest.fixture
def dispatcher(settings, redis_client, stub, clock):
    d = Dispatcher(settings.model_copy(update={"claim_replicas": 1}), redis_client, gateways=StubGateways(stub),
                   clock=clock)
    d.ledger.durability = durable(1, acked=0)
    return d


def send(d: Dispatcher, task_id: str = "t1", **kwargs):
    return d.send({"to": TO, "text": "Salom", **kwargs}, task_id=task_id)


def test_claim_replicas_and_their_timeout_are_bounded():
    s = load_settings(claim_replicas=2, claim_replica_timeout=0.25)
    assert (s.claim_replicas, s.claim_replica_timeout) == (2, 0.25)
    assert (load_settings().claim_replicas, load_settings().claim_replica_timeout) == (0, 0.5)
    for bad in ({"claim_replicas": -1}, {"claim_replica_timeout": 0}, {"claim_replica_timeout": 11}):
        with pytest.raises(ConfigError):
            load_settings(**bad)


def test_the_ledger_says_whether_a_taken_claim_reached_enough_replicas(redis_client):
    replicas = durable(2, acked=1)
    ledger = Ledger(redis_client, Keys("t"), lease=30, ttl=3600, durability=replicas)
    records = Records(redis_client, ledger.keys)

    def begin(key, mid, now):
        start = records.prepared(mid, MessageStatus.SENDING, note="attempt 1 via stub", attempts=1, gateway="stub")
        return ledger.begin(key, fp="a", message_id=mid, now=now, submission="s", start=start, write_start=True,
                            circuits=[], fields=("attempts",))
    first = begin("k", "m", 100.0)
    assert first.claim.answer is Claim.CLAIMED and not first.claim.durable and first.claim.replicas_acked == 1
    busy = begin("k", "m", 101.0)                         # nothing taken: nothing that needs replicas
    assert busy.claim.answer is Claim.BUSY and busy.claim.durable
    replicas.answer(2)
    assert begin("k2", "m2", 100.0).claim.durable
    many = ledger.claim_many([("k3", "a", "m3"), ("k", "a", "m")], now=102.0, submission="s")
    assert [(c.answer, c.durable) for c, _ in many] == [(Claim.CLAIMED, True), (Claim.BUSY, True)]
    replicas.answer(0)
    many = ledger.claim_many([("k4", "a", "m4")], now=102.0, submission="s")
    assert [(c.answer, c.durable) for c, _ in many] == [(Claim.CLAIMED, False)]


def test_without_claim_replicas_no_wait_is_sent(redis_client):
    """CLAIM_REPLICAS=0 (the default): the claim alone, as before (fakeredis would refuse a WAIT)."""
    ledger = Ledger(redis_client, Keys("t"), lease=30, ttl=3600)
    claim = ledger.claim_many([("k", "a", "m")], now=1.0, submission="s")[0][0]
    assert claim.durable and claim.replicas_acked is None


def test_a_claim_no_replica_acknowledged_calls_no_gateway_and_runs_again_without_an_attempt(dispatcher, stub):
    out = send(dispatcher)
    assert out.retry_in is not None and 1.0 <= out.retry_in <= 3.0
    assert stub.calls == []
    record = dispatcher.records.get("t1")
    assert record["status"] == "retrying" and record["attempts"] == 0       # the claim's `sending` undone
    note = dispatcher.records.history("t1")[-1]["note"]
    assert note.startswith("claim not durable: 0 of 1 replicas acknowledged it within 0.2s (SMSDISPATCH_CLAIM_REPLICAS)")
    assert dispatcher.ledger.state("task:t1") == "pending"
    dispatcher.ledger.durability.answer(1)           # the replica is back
    done = send(dispatcher)
    assert done.result["status"] == "accepted" and done.result["attempts"] == 1 and len(stub.calls) == 1


def test_a_reconcile_that_is_not_durable_stays_to_be_done(dispatcher, stub):
    """An ambiguous call is still ambiguous after a non-durable claim: no lookup, no call, and the next
    durable claim reconciles first."""
    dispatcher.ledger.durability.answer(1)
    original_send = stub.send

    def accept_then_timeout(sms):
        original_send(sms)
        stub.send = original_send
        raise AmbiguousError("read timeout")
    stub.send = accept_then_timeout
    assert send(dispatcher).retry_in is not None and dispatcher.ledger.state("task:t1") == "ambiguous"
    dispatcher.ledger.durability.answer(0)
    assert send(dispatcher).retry_in is not None
    assert stub.lookups == [] and len(stub.calls) == 1 and dispatcher.ledger.state("task:t1") == "ambiguous"
    dispatcher.ledger.durability.answer(1)
    out = send(dispatcher)
    assert out.result["status"] == "accepted" and stub.lookups == ["t1"] and len(stub.calls) == 1


def test_a_reopened_key_that_is_not_durable_keeps_its_fresh_start(dispatcher, stub):
    """Retries ran out; a new submission reopens the key but its claim is not durable: the next durable
    run still has all its attempts."""
    dispatcher.ledger.durability.answer(1)
    stub.script = [GatewayUnavailable("down")] * 3
    for _ in range(3):
        out = send(dispatcher, task_id="p1", idempotency_key="again")
    assert out.result["error"]["code"] == "retries_exhausted"
    dispatcher.ledger.durability.answer(0)
    assert send(dispatcher, task_id="p2", idempotency_key="again").retry_in is not None
    dispatcher.ledger.durability.answer(1)
    again = send(dispatcher, task_id="p2", idempotency_key="again").result
    assert again["status"] == "accepted" and again["attempts"] == 1 and len(stub.calls) == 4


def test_a_batch_chunk_whose_claims_are_not_durable_calls_no_gateway(settings, redis_client, clock):
    stub = BatchStub(max_batch=3)
    s = settings.model_copy(update={"batch_chunk_size": 4, "claim_replicas": 1})
    batches = Batches(Dispatcher(s, redis_client, gateways=StubGateways(stub), clock=clock))
    batches.d.ledger.durability = durable(1, acked=0)
    batches.store("b1", entries(4), gateway="stub", sender=None, idempotency_key=None, submission="s1")
    out = batches.run_chunk("b1", 0, submission="s1")
    assert out.retry_in is not None and 1.0 <= out.retry_in <= 3.0 and stub.calls == []
    assert {batches.d.ledger.state(f"key:b1:{n}") for n in range(4)} == {"pending"}
    mids = [message_id_for(f"b1:{n}", "") for n in range(4)]
    assert all(batches.d.records.get(m)["status"] == "retrying" for m in mids)
    assert all("claim not durable: 0 of 1 replicas" in batches.d.records.history(m)[-1]["note"] for m in mids)
    batches.d.ledger.durability.answer(1)
    done = batches.run_chunk("b1", 0, submission="s1")
    assert done.retry_in is None and dict(done.counts) == {"accepted": 4} and len(stub.accepted) == 4
