from smsdispatch.keys import Keys
from smsdispatch.ledger import Claim, Ledger, fingerprint


def make(redis_client, lease=30):
    return Ledger(redis_client, Keys("t"), lease=lease, ttl=3600)


def test_first_claim_wins_and_a_second_is_busy_until_the_lease_ends(redis_client):
    ledger = make(redis_client)
    first = ledger.claim("k", fp="a", message_id="m", now=100.0)
    second = ledger.claim("k", fp="a", message_id="m", now=101.0)
    assert first.answer is Claim.CLAIMED and second.answer is Claim.BUSY
    assert second.lease_until == 130.0
    third = ledger.claim("k", fp="a", message_id="m", now=131.0)
    assert third.answer is Claim.RECONCILE and third.first_claimed_at == 100.0


def test_other_fingerprint_is_a_conflict_in_every_state(redis_client):
    ledger = make(redis_client)
    c = ledger.claim("k", fp="a", message_id="m", now=0)
    assert ledger.claim("k", fp="b", message_id="m", now=1).answer is Claim.CONFLICT
    ledger.release("k", c.owner, ambiguous=False)
    assert ledger.claim("k", fp="b", message_id="m", now=2).answer is Claim.CONFLICT
    ledger.complete("k")
    assert ledger.claim("k", fp="b", message_id="m", now=3).answer is Claim.CONFLICT


def test_pending_is_claimable_again_ambiguous_must_reconcile_done_is_final(redis_client):
    ledger = make(redis_client)
    c = ledger.claim("k", fp="a", message_id="m", now=0)
    assert ledger.release("k", c.owner, ambiguous=False)
    c = ledger.claim("k", fp="a", message_id="m", now=1)
    assert c.answer is Claim.CLAIMED and c.first_claimed_at == 0
    assert ledger.release("k", c.owner, ambiguous=True)
    c = ledger.claim("k", fp="a", message_id="m", now=2)
    assert c.answer is Claim.RECONCILE
    ledger.complete("k")
    assert ledger.claim("k", fp="a", message_id="m", now=3).answer is Claim.DONE


def test_only_the_holder_can_release(redis_client):
    ledger = make(redis_client)
    ledger.claim("k", fp="a", message_id="m", now=0)
    assert not ledger.release("k", "someone-else", ambiguous=False)
    assert ledger.state("k") == "claimed"


def test_entries_expire_after_the_ttl(redis_client):
    ledger = make(redis_client)
    ledger.claim("k", fp="a", message_id="m", now=0)
    assert 3500 < redis_client.ttl(Keys("t").idempotency("k")) <= 3600


def test_fingerprint_is_stable_and_order_independent():
    assert fingerprint({"a": 1, "b": "é"}) == fingerprint({"b": "é", "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})


def test_exhausted_keys_reopen_for_a_new_submission_only(redis_client):
    ledger = make(redis_client)
    ledger.claim("k", fp="a", message_id="m", now=0, submission="s1")
    ledger.complete("k", reopenable=True)
    assert ledger.claim("k", fp="a", message_id="m", now=1, submission="s1").answer is Claim.DONE
    again = ledger.claim("k", fp="a", message_id="m", now=2, submission="s2")
    assert again.answer is Claim.REOPENED
    ledger.complete("k")                      # this time it was accepted: final for everyone
    assert ledger.claim("k", fp="a", message_id="m", now=3, submission="s3").answer is Claim.DONE


def test_claims_can_be_pipelined(redis_client):
    ledger = make(redis_client)
    pipe = redis_client.pipeline(transaction=False)
    owners = [ledger.claim(k, fp="a", message_id=k, now=0, pipe=pipe) for k in ("x", "y", "x")]
    results = [ledger.parse(reply, owner) for reply, owner in zip(pipe.execute(), owners, strict=True)]
    assert [r.answer for r in results] == [Claim.CLAIMED, Claim.CLAIMED, Claim.BUSY]


def test_a_first_claim_writes_the_sending_update_with_it_unless_the_circuit_is_open(redis_client):
    from smsdispatch.records import MessageStatus, Records
    records = Records(redis_client, Keys("t"))
    ledger = make(redis_client)

    def begin(key, mid, now, write_start=True):
        start = records.prepared(mid, MessageStatus.SENDING, note="attempt 1 via stub", attempts=1, gateway="stub")
        return ledger.begin(key, fp="a", message_id=mid, now=now, submission="s", start=start,
                            write_start=write_start,
                            circuits=["t:circuit:stub", "t:circuit:other"], fields=("status", "attempts"))
    first = begin("k1", "m1", 100.0)
    assert first.claim.answer is Claim.CLAIMED and first.claim.started
    assert first.record == {b"status": b"sending", b"attempts": b"1"}       # read after the write
    assert first.open_until == [None, None]
    assert records.get("m1")["attempts"] == 1
    assert [h["note"] for h in records.history("m1")] == ["attempt 1 via stub"]
    ledger.release("k1", first.claim.owner, ambiguous=False)   # a retry is not a first claim: the caller writes
    again = begin("k1", "m1", 101.0)
    assert again.claim.answer is Claim.CLAIMED and not again.claim.started and len(records.history("m1")) == 1
    assert not begin("k3", "m3", 100.0, write_start=False).claim.started and records.get("m3") is None
    redis_client.hset("t:circuit:stub", "open_until", 200)
    blocked = begin("k2", "m2", 100.0)
    assert blocked.claim.answer is Claim.CLAIMED and not blocked.claim.started and records.get("m2") is None
    assert blocked.record == {} and blocked.open_until == [b"200", None]
    assert begin("k2", "m2", 101.0).claim.answer is Claim.BUSY


def test_finish_records_completes_and_stores_the_result_in_celerys_format(redis_client):
    from celery import Celery

    from smsdispatch.celery_results import Results, encode
    from smsdispatch.records import MessageStatus, Records
    records, results = Records(redis_client, Keys("t")), Results(redis_client, Keys("t"), ttl=600)
    ledger = make(redis_client)
    c = ledger.claim("k", fp="a", message_id="m", now=100.0)
    records.update("m", MessageStatus.SENDING, attempts=1, gateway="stub", segments=1, idempotency_key="k")
    update = records.prepared("m", MessageStatus.ACCEPTED, gateway="stub", gateway_message_id="g-1", error=None)
    values, event = ledger.finish("k", update, result=results.slot("task-1"))
    assert event == ""
    result = records.result_from_fields(values)
    assert result == records.result("m") == {"message_id": "m", "status": "accepted", "gateway": "stub",
                                             "gateway_message_id": "g-1", "attempts": 1, "idempotency_key": "k",
                                             "segments": 1, "error": None}
    assert ledger.claim("k", fp="a", message_id="m", now=101.0).answer is Claim.DONE and c.owner
    raw = redis_client.get("celery-task-meta-task-1")
    assert 0 < redis_client.ttl("celery-task-meta-task-1") <= 600
    backend = Celery(backend="redis://127.0.0.1:1/0", set_as_current=False).backend
    meta, python = backend.decode_result(raw), backend.decode_result(encode("task-1", result))
    assert meta["status"] == "SUCCESS" and meta["result"] == result and meta["task_id"] == "task-1"
    assert {k: v for k, v in meta.items() if k != "date_done"} == {k: v for k, v in python.items() if k != "date_done"}


def test_a_record_with_attempts_is_not_started_by_a_claim_even_without_an_entry(redis_client):
    """The ledger entry expired (IDEMPOTENCY_TTL) but the record kept its attempts: the caller counts on."""
    from smsdispatch.records import MessageStatus, Records
    records = Records(redis_client, Keys("t"))
    records.update("m", MessageStatus.RETRYING, attempts=2)
    start = records.prepared("m", MessageStatus.SENDING, note="attempt 1 via stub", attempts=1)
    begun = make(redis_client).begin("k", fp="a", message_id="m", now=100.0, submission="s", start=start,
                                     write_start=True, circuits=[], fields=("attempts",))
    assert begun.claim.answer is Claim.CLAIMED and not begun.claim.started and records.get("m")["attempts"] == 2


def test_claim_many_reads_each_records_state_and_finish_many_completes_them(redis_client):
    from smsdispatch.records import MessageStatus, Records
    records, ledger = Records(redis_client, Keys("t")), make(redis_client)
    records.update("m2", MessageStatus.RETRYING, attempts=2, pinned_gateway="eskiz")
    ledger.claim("k3", fp="a", message_id="m3", now=90.0)            # someone else holds k3
    claimed = ledger.claim_many([("k1", "a", "m1"), ("k2", "a", "m2"), ("k3", "a", "m3")], now=100.0,
                                submission="s", fields=("attempts", "pinned_gateway"))
    assert [c.answer for c, _ in claimed] == [Claim.CLAIMED, Claim.CLAIMED, Claim.BUSY]
    assert [state for _, state in claimed] == [{"attempts": None, "pinned_gateway": None},
                                              {"attempts": b"2", "pinned_gateway": b"eskiz"},
                                              {"attempts": None, "pinned_gateway": None}]
    common, values = records.prepared_many([("m1", MessageStatus.ACCEPTED, "", {"gateway_message_id": "g1", "gateway": "eskiz"}),
                                            ("m2", MessageStatus.FAILED, "", {"error": {"code": "x", "message": "y"}})])
    ledger.finish_many([("k1", values[0]), ("k2", values[1])], common, dead_letter=True, reopenable=True)
    assert records.get("m1")["status"] == "accepted" and records.get("m2")["status"] == "failed"
    assert records.by_gateway_id("eskiz", "g1") == "m1" and records.dead_letters() == ["m1", "m2"]
    assert ledger.state("k1") == ledger.state("k2") == "done"
    again = ledger.claim_many([("k2", "a", "m2")], now=101.0, submission="s2")      # reopenable, new submission
    assert again[0][0].answer is Claim.REOPENED and again[0][1] == {}
