"""The send path's decisions, on fakeredis with a scripted in-memory gateway."""

from __future__ import annotations

from smsdispatch.dispatch import message_id_for
from smsdispatch.errors import AmbiguousError, GatewayUnavailable, RateLimited, RecipientRejected

TO = "+998901234567"


def send(dispatcher, task_id="t1", **kw):
    kwargs = {"to": TO, "text": "Salom", "gateway": "stub"} | kw
    return dispatcher.send(kwargs, task_id=task_id)


def test_accepted_once_with_the_full_result_contract(dispatcher, stub):
    out = send(dispatcher)
    assert out.retry_in is None
    assert out.result == {"message_id": "t1", "status": "accepted", "gateway": "stub",
                          "gateway_message_id": "gw-1", "attempts": 1, "idempotency_key": "t1",
                          "segments": 1, "error": None}
    assert [c.to for c in stub.calls] == [TO]
    assert stub.calls[0].message_id == "t1"


def test_redelivered_task_returns_the_record_without_a_second_send(dispatcher, stub):
    first = send(dispatcher, task_id="same")
    again = send(dispatcher, task_id="same")
    assert again.result == first.result
    assert len(stub.calls) == 1


def test_same_key_from_three_producers_sends_once_with_identical_results(dispatcher, stub):
    results = [send(dispatcher, task_id=f"t{i}", idempotency_key="order-42").result for i in range(3)]
    assert results[0] == results[1] == results[2]
    assert results[0]["message_id"] == message_id_for("order-42", "ignored")
    assert results[0]["idempotency_key"] == "order-42"
    assert len(stub.calls) == 1


def test_same_key_other_payload_is_a_conflict_and_leaves_the_original_alone(dispatcher, stub):
    original = send(dispatcher, task_id="a", idempotency_key="k").result
    out = send(dispatcher, task_id="b", idempotency_key="k", text="different").result
    assert out["status"] == "failed" and out["error"]["code"] == "idempotency_conflict"
    assert out["message_id"] == "b"
    assert original["message_id"] in out["error"]["message"]
    assert dispatcher.records.get(original["message_id"])["status"] == "accepted"
    assert len(stub.calls) == 1


def test_invalid_inputs_fail_validation_without_calling_the_gateway(dispatcher, stub):
    cases = [{"to": "+99890"}, {"text": "  "}, {"gateway": "nope"}, {"to": 998901234567},
             {"surprise": 1}, {"text": "x" * 5000}, {"callback_url": "ftp://x"}, {"to": "901234567"}]
    for i, bad in enumerate(cases):
        out = send(dispatcher, task_id=f"bad{i}", **bad)
        assert out.retry_in is None, bad
        assert out.result["status"] == "failed" and out.result["error"]["code"] == "validation", bad
        assert out.result["attempts"] == 0
    assert stub.calls == []
    reasons = [dispatcher.records.get(f"bad{i}")["error"]["message"] for i in range(len(cases))]
    assert "not a valid number" in reasons[0] and "901234567" not in reasons[0]
    assert "text: must not be empty" in reasons[1]
    assert "'nope'" in reasons[2]
    assert "surprise: unexpected argument" in reasons[4]
    assert "no country code" in reasons[7]


def test_transient_error_schedules_a_retry_then_succeeds(dispatcher, stub):
    stub.script = [GatewayUnavailable("HTTP 503", status=503)]
    first = send(dispatcher)
    assert first.result is None and 0 <= first.retry_in <= 1
    rec = dispatcher.records.get("t1")
    assert rec["status"] == "retrying" and rec["error"]["code"] == "gateway_unavailable"
    second = send(dispatcher)
    assert second.result["status"] == "accepted" and second.result["attempts"] == 2
    assert second.result["error"] is None
    assert len(stub.calls) == 2


def test_retries_exhausted_fails_and_dead_letters(dispatcher, stub):
    stub.script = [GatewayUnavailable("refused")] * 3
    outs = [send(dispatcher) for _ in range(3)]
    assert [o.retry_in is not None for o in outs] == [True, True, False]
    assert outs[-1].result["status"] == "failed"
    assert outs[-1].result["error"]["code"] == "retries_exhausted"
    assert "refused" in outs[-1].result["error"]["message"]
    assert dispatcher.records.dead_letters() == ["t1"]
    assert len(stub.calls) == 3
    assert send(dispatcher).result == outs[-1].result and len(stub.calls) == 3


def test_permanent_error_fails_after_exactly_one_call(dispatcher, stub):
    stub.script = [RecipientRejected("blacklisted", status=400)]
    out = send(dispatcher)
    assert out.retry_in is None
    assert out.result["status"] == "failed" and out.result["error"]["code"] == "recipient_rejected"
    assert len(stub.calls) == 1 and dispatcher.records.dead_letters() == []


def test_retry_after_is_a_floor_for_the_countdown(dispatcher, stub):
    stub.script = [RateLimited("429", status=429, retry_after=7)]
    assert send(dispatcher).retry_in >= 7


class AcceptThenTimeout(AmbiguousError):
    """Marker: the stub records the message as accepted, then the client sees no answer."""


def test_ambiguous_timeout_is_reconciled_not_resent_when_the_gateway_had_it(dispatcher, stub):
    original_send = stub.send

    def accept_then_timeout(sms):
        original_send(sms)
        stub.send = original_send
        raise AmbiguousError("read timeout")
    stub.send = accept_then_timeout
    first = send(dispatcher)
    assert first.retry_in is not None
    assert dispatcher.ledger.state("task:t1") == "ambiguous"
    second = send(dispatcher)
    assert second.result["status"] == "accepted" and second.result["gateway_message_id"] == "gw-1"
    assert len(stub.calls) == 1 and stub.lookups == ["t1"]
    notes = [h.get("note", "") for h in dispatcher.records.history("t1")]
    assert any("reconciled: found" in n for n in notes)


def test_ambiguous_timeout_is_resent_after_the_gateway_says_it_never_got_it(dispatcher, stub):
    stub.script = [AmbiguousError("read timeout")]
    send(dispatcher)
    out = send(dispatcher)
    assert out.result["status"] == "accepted" and out.result["attempts"] == 2
    assert stub.lookups == ["t1"] and len(stub.calls) == 2


def test_a_reconcile_asks_about_the_call_the_record_names(dispatcher, stub):
    """A gateway that sends a single message as a call of its own (Eskiz: a dispatch per message) has
    that call written in the record before the call, and the reconcile asks about exactly that call."""
    asked: list[tuple[str, str | None]] = []
    plain_lookup_batch = stub.lookup_batch
    stub.single_call_ref = lambda message_id: f"call-{message_id}"
    stub.lookup_batch = lambda messages, *, call_ref, since: (
        asked.extend((m.message_id, call_ref) for m in messages) or plain_lookup_batch(
            messages, call_ref=call_ref, since=since))
    stub.script = [AmbiguousError("read timeout")]
    send(dispatcher)
    assert dispatcher.records.get("t1")["call_ref"] == "call-t1"
    out = send(dispatcher)
    assert out.result["status"] == "accepted" and asked == [("t1", "call-t1")]


def test_a_record_without_a_call_is_looked_up_one_by_one(dispatcher, stub):
    stub.script = [AmbiguousError("read timeout")]
    send(dispatcher)
    assert dispatcher.records.get("t1")["call_ref"] is None
    assert send(dispatcher).result["status"] == "accepted" and stub.lookups == ["t1"]


def test_server_error_on_a_lookup_gateway_is_checked_before_resending(dispatcher, stub):
    stub.script = [GatewayUnavailable("HTTP 500", status=500, maybe_sent=True)]
    send(dispatcher)
    send(dispatcher)
    assert stub.lookups == ["t1"] and len(stub.calls) == 2


def test_a_503_proves_nothing_was_sent_so_there_is_no_lookup(dispatcher, stub):
    stub.script = [GatewayUnavailable("HTTP 503", status=503)]
    send(dispatcher)
    assert send(dispatcher).result["status"] == "accepted"
    assert stub.lookups == [] and len(stub.calls) == 2


def test_ambiguous_on_a_gateway_without_lookup_ends_unknown_and_is_never_resent(dispatcher, stub):
    stub.can_lookup = False
    stub.script = [AmbiguousError("read timeout")]
    out = send(dispatcher)
    assert out.retry_in is None and out.result["status"] == "unknown"
    assert "cannot look messages up" in out.result["error"]["message"]
    assert send(dispatcher).result == out.result and len(stub.calls) == 1


def test_duplicate_during_a_live_claim_waits_for_the_lease(dispatcher, stub, clock):
    held = dispatcher.ledger.claim("task:t2", fp=_fp(dispatcher), message_id="t2", now=clock())
    assert held.answer.value == "claimed"
    clock.t += 10
    out = send(dispatcher, task_id="t2")
    assert out.result is None and out.retry_in == 2.0
    clock.t += 49.95  # 0.05 s of the lease left
    assert abs(send(dispatcher, task_id="t2").retry_in - 0.15) < 1e-6
    assert stub.calls == [] and stub.lookups == []


def _fp(dispatcher):
    """The fingerprint a real execution of send(dispatcher) computes."""
    return dispatcher.prepare({"to": TO, "text": "Salom", "gateway": "stub"}, "any")[2]


def test_stale_claim_of_a_dead_worker_is_reconciled_through_the_gateway(dispatcher, stub, clock):
    # A worker claimed t3, the gateway accepted it, and the worker died before recording anything.
    dispatcher.ledger.claim("task:t3", fp=_fp(dispatcher), message_id="t3", now=clock())
    stub.accepted["t3"] = "gw-from-dead-worker"
    clock.t += 61  # past the 60 s lease
    out = send(dispatcher, task_id="t3")
    assert out.result["status"] == "accepted"
    assert out.result["gateway_message_id"] == "gw-from-dead-worker"
    assert stub.calls == [] and stub.lookups == ["t3"]


def test_stale_claim_without_lookup_becomes_unknown_with_a_reason(dispatcher, stub, clock):
    stub.can_lookup = False
    dispatcher.ledger.claim("task:t4", fp=_fp(dispatcher), message_id="t4", now=clock())
    clock.t += 61
    out = send(dispatcher, task_id="t4")
    assert out.result["status"] == "unknown" and "not resent" in out.result["error"]["message"]
    assert stub.calls == []


def test_failed_lookups_end_unknown_not_resent(dispatcher, stub):
    stub.script = [AmbiguousError("read timeout")]
    stub.lookup_error = GatewayUnavailable("down")
    outs = [send(dispatcher) for _ in range(4)]
    assert outs[-1].result["status"] == "unknown"
    assert "lookups" in outs[-1].result["error"]["message"]
    assert len(stub.calls) == 1


def test_producer_record_never_rewinds_a_sent_message(dispatcher, stub):
    mid = dispatcher.record_queued({"to": TO, "text": "Salom", "idempotency_key": "k9"}, task_id="p1")
    assert dispatcher.records.get(mid)["status"] == "queued"
    send(dispatcher, task_id="p1", idempotency_key="k9")
    dispatcher.record_queued({"to": TO, "text": "Salom", "idempotency_key": "k9"}, task_id="p2")
    assert dispatcher.records.get(mid)["status"] == "accepted"
    assert [h["status"] for h in dispatcher.records.history(mid)] == ["queued", "sending", "accepted"]


def test_a_deduping_gateway_repeats_an_ambiguous_call_instead_of_giving_up(dispatcher, stub):
    stub.can_lookup, stub.can_dedupe = False, True
    stub.script = [AmbiguousError("read timeout")]
    first = send(dispatcher)
    assert first.retry_in is not None and dispatcher.ledger.state("task:t1") == "pending"
    assert send(dispatcher).result["status"] == "accepted"
    assert [c.message_id for c in stub.calls] == ["t1", "t1"] and stub.lookups == []


def test_a_stale_claim_on_a_deduping_gateway_is_sent_again(dispatcher, stub, clock):
    stub.can_lookup, stub.can_dedupe = False, True
    dispatcher.ledger.claim("task:t5", fp=_fp(dispatcher), message_id="t5", now=clock())
    clock.t += 61
    assert send(dispatcher, task_id="t5").result["status"] == "accepted"
    assert len(stub.calls) == 1


def test_exhausted_message_gets_a_fresh_try_from_a_new_submission_only(dispatcher, stub):
    stub.script = [GatewayUnavailable("down")] * 3
    for _ in range(3):
        out = send(dispatcher, task_id="p1", idempotency_key="retry-later")
    assert out.result["error"]["code"] == "retries_exhausted"
    assert send(dispatcher, task_id="p1", idempotency_key="retry-later").result == out.result  # redelivery
    again = send(dispatcher, task_id="p2", idempotency_key="retry-later").result              # resubmission
    assert again["status"] == "accepted" and again["attempts"] == 1 and len(stub.calls) == 4
    assert send(dispatcher, task_id="p3", idempotency_key="retry-later").result == again       # final now


def test_the_route_picks_the_gateway_when_the_call_names_none(settings, redis_client, clock):
    from smsdispatch.dispatch import Dispatcher

    from .conftest import StubGateway
    chosen = []

    class Recording:
        def get(self, name):
            chosen.append(name)
            return StubGateway()
    routed = settings.model_copy(update={"routes": {"998": "stub-uz"}})
    d = Dispatcher(routed, redis_client, gateways=Recording(), clock=clock)
    d.send({"to": TO, "text": "x"}, task_id="r1")
    d.send({"to": "+447911123456", "text": "x"}, task_id="r2")
    d.send({"to": TO, "text": "x", "gateway": "explicit"}, task_id="r3")
    assert chosen == ["stub-uz", "console", "explicit"]


def test_options_are_refused_by_a_gateway_that_takes_none(dispatcher, stub):
    out = send(dispatcher, options={"type": "universal_otp"}).result
    assert out["status"] == "failed" and "takes no options" in out["error"]["message"]
    out = dispatcher.send({"to": TO, "gateway": "stub"}, task_id="no-text").result
    assert out["error"]["message"] == "text: required" and stub.calls == []


def test_the_balance_guard_refuses_before_calling_a_gateway_known_to_be_short(settings, redis_client, stub, clock):
    from smsdispatch.dispatch import Dispatcher

    from .conftest import StubGateways
    guarded = settings.model_copy(update={"balance_guard": True, "balance_thresholds": {"stub": 100}})
    d = Dispatcher(guarded, redis_client, gateways=StubGateways(stub), clock=clock)
    redis_client.hset(d.keys.balance("stub"), mapping={"amount": 40, "currency": "UZS", "at": 1})
    out = d.send({"to": TO, "text": "x", "gateway": "stub"}, task_id="g1").result
    assert out["status"] == "failed" and out["error"]["code"] == "insufficient_balance"
    assert "40 is below its threshold 100" in out["error"]["message"] and stub.calls == []
    d._balances.clear()                                      # (the per-process cache, skipped here)
    redis_client.hset(d.keys.balance("stub"), "amount", 500)
    assert d.send({"to": TO, "text": "x", "gateway": "stub"}, task_id="g2").result["status"] == "accepted"


def test_a_poison_message_is_dead_lettered_unless_it_has_an_outcome_or_a_live_claim(dispatcher, clock, stub):
    kwargs = {"to": "+998901234567", "text": "Hi", "idempotency_key": "px"}
    assert dispatcher.send(kwargs, task_id="t1").result["status"] == "accepted"
    assert dispatcher.poisoned(kwargs, task_id="t1", deliveries=11) is None          # done: answered as before
    live = {"to": "+998901234567", "text": "Hi", "idempotency_key": "live"}
    dispatcher.ledger.claim("key:live", fp="f", message_id="m-live", now=clock())
    assert dispatcher.poisoned(live, task_id="t2", deliveries=11) is None            # someone is sending it
    clock.t += dispatcher.settings.claim_lease + 1                                    # ... and died doing so
    out = dispatcher.poisoned(live, task_id="t2", deliveries=11).result
    assert out["status"] == "failed" and out["error"]["code"] == "poison_message"
    record = dispatcher.records.get(out["message_id"])
    assert record["maybe_sent"] == 1 and out["message_id"] in dispatcher.records.dead_letters()
    assert dispatcher.ledger.state("key:live") == "done"
    fresh = {"to": "+998901234567", "text": "Hi", "idempotency_key": "fresh"}
    out = dispatcher.poisoned(fresh, task_id="t3", deliveries=11).result               # never claimed
    assert out["status"] == "failed" and dispatcher.records.get(out["message_id"])["maybe_sent"] == 0
    assert len(stub.calls) == 1


def test_an_expired_ledger_entry_does_not_resend_a_settled_message(dispatcher, stub, redis_client):
    """IDEMPOTENCY_TTL ran out after an accepted send; the task comes back (redelivery, sweeper): the
    record wins, nothing is sent again and the recorded result is returned."""
    first = send(dispatcher, task_id="same", idempotency_key="order-7")
    redis_client.delete(dispatcher.keys.idempotency("key:order-7"))
    again = send(dispatcher, task_id="same", idempotency_key="order-7")
    other_producer = send(dispatcher, task_id="t-other", idempotency_key="order-7")
    assert len(stub.calls) == 1
    assert again.result == first.result == other_producer.result and first.result["status"] == "accepted"



def test_an_expired_ledger_entry_answers_a_dead_letter_with_its_record(dispatcher, stub, redis_client):
    """Retries ran out, then the entry expired: the same task again gets the recorded failure, with no
    call and no second dead letter."""
    stub.script = [GatewayUnavailable("down")] * 3
    for _ in range(3):
        out = send(dispatcher, task_id="t1", idempotency_key="k-9")
    assert out.result["error"]["code"] == "retries_exhausted"
    redis_client.delete(dispatcher.keys.idempotency("key:k-9"))
    assert send(dispatcher, task_id="t1", idempotency_key="k-9").result == out.result
    assert len(stub.calls) == 3 and redis_client.llen(dispatcher.keys.dead_letters()) == 1


def test_a_dead_letter_replayed_after_its_ledger_entry_expired_is_sent(dispatcher, stub, redis_client):
    """A provably unsent failure (retries ran out, maybe_sent 0) replayed by an operator after the entry
    expired: a new submission, so it sends (the CLI had removed it from the dead letters, and a DONE
    here would have dropped it silently). A possibly sent one is not."""
    stub.script = [GatewayUnavailable("down")] * 3
    for _ in range(3):
        send(dispatcher, task_id="t1", idempotency_key="k-10")
    redis_client.delete(dispatcher.keys.idempotency("key:k-10"))
    replay = send(dispatcher, task_id="replay-1", idempotency_key="k-10")
    assert replay.result["status"] == "accepted" and len(stub.calls) == 4
    stub.script = [AmbiguousError("read timeout")]
    stub.can_lookup = False                      # cannot be asked: ends unknown, maybe sent
    unknown = send(dispatcher, task_id="t2", idempotency_key="k-11").result
    assert unknown["status"] == "unknown"
    redis_client.delete(dispatcher.keys.idempotency("key:k-11"))
    assert send(dispatcher, task_id="replay-2", idempotency_key="k-11").result == unknown
    assert len(stub.calls) == 5
