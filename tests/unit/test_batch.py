"""The batch engine's decisions, on fakeredis with a scripted batch-capable gateway."""

from __future__ import annotations

import pytest

from smsdispatch.batch import Batches
from smsdispatch.dispatch import Dispatcher
from smsdispatch.errors import AmbiguousError, GatewayUnavailable, RecipientRejected, ValidationError
from smsdispatch.gateways.base import Acceptance, Gateway, ItemResult, Lookup

from .conftest import StubGateways


class BatchStub(Gateway):
    name = "bstub"

    def __init__(self, *, max_batch=3, same_text=False, can_lookup=False, can_dedupe=False):
        self.max_batch, self.batch_same_text = max_batch, same_text
        self.can_lookup, self.can_dedupe = can_lookup, can_dedupe
        self.calls: list[tuple[str, list[str]]] = []
        self.accepted: dict[str, str] = {}
        self.by_ref: dict[str, list[ItemResult]] = {}
        self.script: list = []
        self.rejected: set[str] = set()
        self.lookups: list[str | None] = []

    def send(self, sms):
        return Acceptance(self.send_batch([sms], call_ref=sms.message_id)[0].gateway_message_id)

    def send_batch(self, messages, *, call_ref):
        self.calls.append((call_ref, [m.message_id for m in messages]))
        fault = self.script.pop(0) if self.script else None
        if isinstance(fault, Exception):
            raise fault
        if self.can_dedupe and call_ref in self.by_ref:
            return self.by_ref[call_ref]
        results = []
        for m in messages:
            if m.to in self.rejected:
                results.append(ItemResult(m.message_id, error=RecipientRejected("blacklisted")))
            else:
                self.accepted[m.message_id] = f"g-{m.message_id[:6]}"
                results.append(ItemResult(m.message_id, self.accepted[m.message_id]))
        self.by_ref[call_ref] = results
        if fault == "accept-then-timeout":
            raise AmbiguousError("read timeout")
        return results

    def lookup_batch(self, messages, *, call_ref, since):
        self.lookups.append(call_ref)
        return {m.message_id: Lookup(m.message_id in self.accepted, self.accepted.get(m.message_id))
                for m in messages}


def numbers(n):
    return [f"+99890{1000000 + i:07d}" for i in range(n)]


def entries(n, text="Hi"):
    return [{"to": to, "text": text} for to in numbers(n)]


@pytest.fixture
def batches(settings, redis_client, clock):
    def make(stub, **overrides):
        s = settings.model_copy(update={"batch_chunk_size": 4, **overrides})
        return Batches(Dispatcher(s, redis_client, gateways=StubGateways(stub), clock=clock))
    return make


def run_all(b, batch_id, submission, chunks):
    return [b.run_chunk(batch_id, n, submission=submission) for n in range(chunks)]


def test_a_batch_is_stored_in_chunks_and_sent_in_native_calls(batches):
    stub = BatchStub(max_batch=3)
    b = batches(stub)
    assert b.store("b1", entries(10), gateway="stub", sender=None, idempotency_key=None, submission="s1") == 3
    outs = run_all(b, "b1", "s1", 3)
    assert all(o.retry_in is None for o in outs)
    assert [len(mids) for _, mids in stub.calls] == [3, 1, 3, 1, 2]      # chunks of 4, calls of <= 3
    assert len(stub.accepted) == 10
    summary = b.get("b1")
    assert summary["status"] == "done" and (summary["accepted"], summary["failed"], summary["pending"]) == (10, 0, 0)
    record = b.d.records.get(next(iter(stub.accepted)))
    assert record["status"] == "accepted" and record["batch_id"] == "b1" and record["call_ref"]


def test_bad_entries_fail_one_by_one_and_the_rest_go_on(batches):
    stub = BatchStub()
    b = batches(stub)
    batch = [{"to": "+99890", "text": "x"}, "not an object", {"to": numbers(1)[0], "text": "ok"},
             {"to": numbers(2)[1], "text": "ok", "colour": "red"}]
    b.store("b2", batch, gateway="stub", sender=None, idempotency_key=None, submission="s1")
    out = b.run_chunk("b2", 0, submission="s1")
    assert dict(out.counts) == {"failed": 3, "accepted": 1}
    assert b.get("b2")["failed"] == 3 and b.get("b2")["status"] == "done"
    assert len(stub.accepted) == 1


def test_same_text_gateways_get_one_text_and_each_number_once_per_call(batches):
    stub = BatchStub(max_batch=10, same_text=True)
    b = batches(stub, batch_chunk_size=10)
    to = numbers(2)
    batch = [{"to": to[0], "text": "A"}, {"to": to[1], "text": "A"}, {"to": to[0], "text": "A"},
             {"to": to[0], "text": "B"}]
    b.store("b3", batch, gateway="stub", sender=None, idempotency_key=None, submission="s1")
    b.run_chunk("b3", 0, submission="s1")
    texts = {mid: b.d.records.get(mid)["text"] for _, mids in stub.calls for mid in mids}
    for _, mids in stub.calls:
        assert len({texts[m] for m in mids}) == 1
        assert len({b.d.records.get(m)["to"] for m in mids}) == len(mids)
    assert sorted(len(m) for _, m in stub.calls) == [1, 1, 2] and len(stub.accepted) == 4


def test_refused_numbers_fail_alone(batches):
    stub = BatchStub()
    stub.rejected.add(numbers(3)[1])
    b = batches(stub)
    b.store("b4", entries(3), gateway="stub", sender=None, idempotency_key=None, submission="s1")
    out = b.run_chunk("b4", 0, submission="s1")
    assert dict(out.counts) == {"accepted": 2, "failed": 1}


def test_a_chunk_run_twice_sends_and_counts_once(batches):
    stub = BatchStub()
    b = batches(stub)
    b.store("b5", entries(3), gateway="stub", sender=None, idempotency_key=None, submission="s1")
    b.run_chunk("b5", 0, submission="s1")
    b.run_chunk("b5", 0, submission="s1")
    assert len(stub.calls) == 1 and b.get("b5")["accepted"] == 3


def test_resubmitting_a_batch_sends_only_what_was_not_accepted(batches):
    stub = BatchStub()
    b = batches(stub)
    b.store("b6", entries(3), gateway="stub", sender=None, idempotency_key="campaign-7", submission="s1")
    b.run_chunk("b6", 0, submission="s1")
    b.store("b6", entries(4), gateway="stub", sender=None, idempotency_key="campaign-7", submission="s2")
    b.run_chunk("b6", 0, submission="s2")
    assert [len(m) for _, m in stub.calls] == [3, 1]
    assert b.get("b6")["accepted"] == 4 and b.get("b6")["status"] == "done"
    assert b.run_chunk("b6", 0, submission="s1").counts == {}   # the old submission's chunks stand down


def test_a_transient_call_failure_retries_the_chunk_then_exhausts(batches):
    stub = BatchStub()
    stub.script = [GatewayUnavailable("down")] * 3
    b = batches(stub)
    b.store("b7", entries(3), gateway="stub", sender=None, idempotency_key=None, submission="s1")
    outs = [b.run_chunk("b7", 0, submission="s1") for _ in range(3)]
    assert [o.retry_in is not None for o in outs] == [True, True, False]
    assert b.get("b7")["failed"] == 3
    mid = stub.calls[0][1][0]
    assert b.d.records.get(mid)["error"]["code"] == "retries_exhausted"
    assert len(b.d.records.dead_letters()) == 3
    # a new submission gives them a fresh try
    b.store("b7", entries(3), gateway="stub", sender=None, idempotency_key=None, submission="s2")
    assert dict(b.run_chunk("b7", 0, submission="s2").counts) == {"accepted": 3}


def test_an_ambiguous_call_is_replayed_with_the_same_reference_on_a_deduping_gateway(batches):
    stub = BatchStub(can_dedupe=True)
    stub.script = ["accept-then-timeout"]
    b = batches(stub)
    b.store("b8", entries(3), gateway="stub", sender=None, idempotency_key=None, submission="s1")
    assert b.run_chunk("b8", 0, submission="s1").retry_in is not None
    assert dict(b.run_chunk("b8", 0, submission="s1").counts) == {"accepted": 3}
    assert stub.calls[0] == stub.calls[1]            # same call_ref, same members
    assert len(stub.accepted) == 3


def test_an_ambiguous_call_is_looked_up_by_call_on_a_lookup_gateway(batches):
    stub = BatchStub(can_lookup=True)
    stub.script = ["accept-then-timeout"]
    b = batches(stub)
    b.store("b9", entries(3), gateway="stub", sender=None, idempotency_key=None, submission="s1")
    b.run_chunk("b9", 0, submission="s1")
    assert dict(b.run_chunk("b9", 0, submission="s1").counts) == {"accepted": 3}
    assert len(stub.calls) == 1 and stub.lookups == [stub.calls[0][0]]


def test_an_ambiguous_call_without_lookup_or_dedupe_ends_unknown(batches):
    stub = BatchStub()
    stub.script = ["accept-then-timeout"]
    b = batches(stub)
    b.store("b10", entries(3), gateway="stub", sender=None, idempotency_key=None, submission="s1")
    out = b.run_chunk("b10", 0, submission="s1")
    assert out.retry_in is None and dict(out.counts) == {"unknown": 3}
    assert b.get("b10")["unknown"] == 3 and b.get("b10")["status"] == "done"


@pytest.mark.parametrize("bad", [[], "x", {"to": "+1"}, None])
def test_a_malformed_batch_is_refused_at_once(batches, bad):
    with pytest.raises(ValidationError, match="messages"):
        batches(BatchStub()).store("bad", bad, gateway=None, sender=None, idempotency_key=None, submission="s")


def test_a_chunk_for_a_gateway_with_an_open_circuit_waits_without_calling(batches, clock):
    stub = BatchStub(max_batch=3)
    b = batches(stub, circuit_min_calls=1, circuit_probes=1)
    b.d.circuits.failure("bstub", now=clock())
    b.store("b9", entries(4), gateway="stub", sender=None, idempotency_key=None, submission="s1")
    out = b.run_chunk("b9", 0, submission="s1")
    assert stub.calls == [] and out.retry_in is not None and out.retry_in <= b.settings.backoff_max + 0.5
    record = b.d.records.get(next(iter(b.d.records.redis.scan_iter("sms:msg:*"))).decode().split(":")[-1])
    assert record["status"] == "retrying" and not record.get("attempts")      # no attempt used up
    clock.t += b.settings.circuit_cooloff + 1                                 # the probe is due
    probe = b.run_chunk("b9", 0, submission="s1")
    assert len(stub.calls) == 1 and probe.retry_in is not None     # one call probes, the other waits
    assert b.d.circuits.state("bstub", now=clock()) == "closed"    # the probe went through
    assert b.run_chunk("b9", 0, submission="s1").retry_in is None
    assert len(stub.accepted) == 4 and len(stub.calls) == 2


def test_batch_calls_are_sized_to_the_rate_limit_and_take_one_token_per_message(batches):
    stub = BatchStub(max_batch=100)
    b = batches(stub, rate_limits={"bstub": 2.0}, batch_chunk_size=4)
    b.d.max_rate_wait = 0.0
    b.store("b10", entries(4), gateway="stub", sender=None, idempotency_key=None, submission="s1")
    out = b.run_chunk("b10", 0, submission="s1")
    assert [len(m) for _, m in stub.calls] == [2]          # calls of at most 2 (the bucket), 1 admitted
    assert out.retry_in == pytest.approx(1.0, abs=0.5)    # the second call waits for 2 more tokens


def test_batch_call_limits_cap_the_call_size(batches):
    stub = BatchStub(max_batch=100)
    b = batches(stub, batch_call_limits={"bstub": 3}, batch_chunk_size=7)
    b.store("b11", entries(7), gateway="stub", sender=None, idempotency_key=None, submission="s1")
    b.run_chunk("b11", 0, submission="s1")
    assert sorted(len(m) for _, m in stub.calls) == [1, 3, 3]


def test_a_lone_surrogate_in_an_entry_is_refused_at_the_producer(batches):
    b = batches(BatchStub())
    with pytest.raises(ValidationError, match="not plain JSON text"):
        b.store("b12", [{"to": numbers(1)[0], "text": "bad \ud800"}], gateway="stub", sender=None,
                idempotency_key=None, submission="s1")


def test_a_poisoned_chunk_dead_letters_what_it_has_not_settled_without_calling(batches, clock):
    stub = BatchStub(max_batch=3)
    b = batches(stub)
    b.store("bp", entries(4), gateway="stub", sender=None, idempotency_key=None, submission="s1")
    stub.script = [GatewayUnavailable("HTTP 503", gateway="bstub", status=503)]   # 3 of 4 wait for a retry
    assert b.run_chunk("bp", 0, submission="s1").retry_in is not None
    calls = len(stub.calls)
    out = b.run_chunk("bp", 0, submission="s1", poisoned=11)
    assert len(stub.calls) == calls                  # no gateway call
    records = [b.d.records.get(m.decode().split(":")[-1]) for m in b.redis.scan_iter("sms:msg:*")
               if not m.endswith(b":history")]
    poisoned = [r for r in records if (r.get("error") or {}).get("code") == "poison_message"]
    assert len(poisoned) == 3 and all(r["status"] == "failed" for r in poisoned)
    assert set(b.d.records.dead_letters()) >= {r["message_id"] for r in poisoned}
    assert b.get("bp")["status"] == "done" and dict(out.counts) == {"accepted": 1, "failed": 3}   # DONE counted too


def test_a_chunk_whose_gateway_is_at_its_concurrency_cap_waits_without_calling(batches):
    from smsdispatch.slots import GatewaySlots
    stub = BatchStub(max_batch=3)
    b = batches(stub)
    b.d.slots = GatewaySlots({"bstub": 1})
    assert b.d.slots.try_acquire("bstub")                   # another chunk's call holds the one slot
    b.store("bc", entries(2), gateway="stub", sender=None, idempotency_key=None, submission="s1")
    out = b.run_chunk("bc", 0, submission="s1")
    assert stub.calls == [] and out.retry_in is not None
    b.d.slots.release("bstub")
    assert b.run_chunk("bc", 0, submission="s1").retry_in is None and len(stub.accepted) == 2
    assert b.d.slots.in_use("bstub") == 0


def test_a_redis_failure_before_the_calls_gives_back_the_gateway_slots(batches, monkeypatch):
    import redis as redis_lib

    from smsdispatch.slots import GatewaySlots
    stub = BatchStub(max_batch=3)
    b = batches(stub)
    b.d.slots = GatewaySlots({"bstub": 2})
    b.store("bs", entries(2), gateway="stub", sender=None, idempotency_key=None, submission="s1")

    def down(*_a, **_k):
        raise redis_lib.ConnectionError("Redis went away")
    monkeypatch.setattr(b, "_mark_sending", down)
    with pytest.raises(redis_lib.ConnectionError):
        b.run_chunk("bs", 0, submission="s1")
    assert b.d.slots.in_use("bstub") == 0 and stub.calls == []


def test_stored_batches_are_listed_newest_first_and_their_entries_read_back_with_message_ids(batches, redis_client):
    stub = BatchStub(max_batch=3)
    b = batches(stub)
    b.store("older", entries(2), gateway="stub", sender=None, idempotency_key=None, submission="s0")
    batch = entries(10)
    batch[5]["idempotency_key"] = "own-key"
    chunks = b.store("newer", batch, gateway="stub", sender=None, idempotency_key="nk", submission="s1")
    redis_client.zadd(b.keys.batches(), {"expired-since": 1.0})       # listed, its hash gone
    assert [x["batch_id"] for x in b.recent()] == ["newer", "older"]
    assert [x["batch_id"] for x in b.recent(limit=1)] == ["newer"]

    run_all(b, "newer", "s1", chunks)
    read = b.entries("newer", 3, 4)                  # across the first two chunks (4 entries each)
    assert [n for n, _, _ in read] == [3, 4, 5, 6]
    assert read[2][2] == batch[5]
    for _, message_id, entry in read:
        assert b.d.records.get(message_id)["to"] == entry["to"]       # the ids run_chunk gave them
    assert [n for n, _, _ in b.entries("newer", 8, 50)] == [8, 9]           # the last chunk, short
    assert b.entries("newer", 10, 5) == [] and b.entries("nope", 0, 5) == []
    assert 0 < redis_client.ttl(b.keys.batches()) <= b.settings.record_ttl
