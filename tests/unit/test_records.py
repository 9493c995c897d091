from smsdispatch.keys import Keys
from smsdispatch.records import MessageStatus, Records


def test_create_then_update_keeps_a_history_and_typed_fields(redis_client):
    records = Records(redis_client, Keys("t"), ttl=100)
    assert records.create("m1", {"task_id": "t", "payload": {"to": "+1"}})
    records.update("m1", MessageStatus.FAILED, note="why", error={"code": "x", "message": "y"}, segments=2)
    rec = records.get("m1")
    assert rec["status"] == "failed" and rec["segments"] == 2 and rec["attempts"] == 0
    assert rec["error"] == {"code": "x", "message": "y"} and rec["payload"] == {"to": "+1"}
    assert isinstance(rec["created_at"], float)
    hist = records.history("m1")
    assert [h["status"] for h in hist] == ["queued", "failed"] and hist[1]["note"] == "why"
    assert 0 < redis_client.ttl(Keys("t").message("m1")) <= 100
    assert 0 < redis_client.ttl(Keys("t").history("m1")) <= 100


def test_create_is_a_no_op_when_the_record_exists(redis_client):
    records = Records(redis_client, Keys("t"))
    records.create("m1", {})
    records.update("m1", MessageStatus.ACCEPTED)
    assert not records.create("m1", {"task_id": "other"})
    assert records.get("m1")["status"] == "accepted" and records.get("m1").get("task_id") is None
    assert redis_client.ttl(Keys("t").message("m1")) == -1   # ttl 0 = keep


def test_result_has_exactly_the_public_fields(redis_client):
    records = Records(redis_client, Keys("t"))
    records.create("m1", {"to": "+998901234567"})
    assert set(records.result("m1")) == {"message_id", "status", "gateway", "gateway_message_id",
                                         "attempts", "idempotency_key", "segments", "error"}
    assert records.result("nope") is None


def test_terminal_statuses():
    assert {s for s in MessageStatus if s.terminal} == {MessageStatus.DELIVERED, MessageStatus.FAILED,
                                                         MessageStatus.UNKNOWN, MessageStatus.EXPIRED}


def test_accepted_messages_join_the_inflight_index_and_leave_it_when_settled(redis_client):
    keys = Keys("t")
    records = Records(redis_client, keys)
    records.update("m1", MessageStatus.ACCEPTED, gateway="eskiz", gateway_message_id="g1")
    records.update("m2", MessageStatus.ACCEPTED)
    assert set(redis_client.zrange(keys.inflight(), 0, -1)) == {b"m1", b"m2"}
    assert records.get("m1")["accepted_at"] is not None
    records.update("m2", MessageStatus.FAILED)
    assert redis_client.zrange(keys.inflight(), 0, -1) == [b"m1"]


def test_advance_only_moves_accepted_messages_forward(redis_client):
    records = Records(redis_client, Keys("t"))
    records.update("m1", MessageStatus.ACCEPTED)
    assert records.advance("m1", MessageStatus.DELIVERED, note="DELIVRD", raw_status="DELIVRD")
    assert records.get("m1")["status"] == "delivered" and records.get("m1")["raw_status"] == "DELIVRD"
    assert not records.advance("m1", MessageStatus.FAILED)          # a stale report cannot undo it
    assert not records.advance("never-accepted", MessageStatus.DELIVERED)
    assert [h["status"] for h in records.history("m1")] == ["accepted", "delivered"]
    assert redis_client.zcard(Keys("t").inflight()) == 0


def test_update_many_writes_exactly_what_update_writes(redis_client):
    """The batch path's server-side bulk update must leave the same record, history and indexes."""
    from smsdispatch.keys import Keys
    from smsdispatch.records import MessageStatus, Records
    one, many = (Records(redis_client, Keys(p), ttl=3600, queued_grace=10, active_grace=100) for p in ("a", "b"))
    steps = [(MessageStatus.SENDING, "attempt 1 via x", {"attempts": 1, "to": "+998901234567", "metadata": {"k": [1]},
                                                         "gateway": "eskiz", "segments": 2}),
             (MessageStatus.RETRYING, "retry", {"error": {"code": "transient", "message": "HTTP 503"}}),
             (MessageStatus.ACCEPTED, "", {"gateway_message_id": "g-1", "gateway": "eskiz", "error": None}),
             (MessageStatus.FAILED, "", {"error": {"code": "x", "message": "y"}})]
    for status, note, fields in steps:
        one.update("m1", status, note=note, **fields)
        many.update_many([("m1", status, note, fields), ("m2", status, note, fields)])
        a, b = one.get("m1"), many.get("m1")
        for rec in (a, b):
            for t in ("updated_at", "created_at", "accepted_at"):
                rec.pop(t, None)
        assert a == b and many.get("m2")["status"] == status.value
        assert [{k: v for k, v in h.items() if k != "at"} for h in one.history("m1")] == \
               [{k: v for k, v in h.items() if k != "at"} for h in many.history("m1")]
        assert (redis_client.zscore("a:inflight", "m1") is None) == (redis_client.zscore("b:inflight", "m1") is None)
        assert (redis_client.zscore("a:pending", "m1") is None) == (redis_client.zscore("b:pending", "m1") is None)
        assert redis_client.ttl("b:msg:m1") > 0 and redis_client.ttl("b:msg:m1:history") > 0
    assert redis_client.get("b:gwid:eskiz:g-1") == b"m2"    # both messages got id g-1; the later wins
    assert one.by_gateway_id("eskiz", "g-1") == "m1"


# --- the number index (the status page's search by the last digits of a number) ---

def test_a_message_is_found_by_the_last_digits_of_its_number_written_with_its_record(redis_client):
    records = Records(redis_client, Keys("t"), ttl=1000)
    records.create("queued-only", {"payload": {"to": "+998 90 123-45-67"}}, number="+998 90 123-45-67")
    records.update_many([("sent", MessageStatus.SENDING, "", {"to": "+998901114567", "attempts": 1}),
                         ("other", MessageStatus.SENDING, "", {"to": "+998901119999", "attempts": 1})])
    assert {r["message_id"] for r in records.by_number("4567")} == {"queued-only", "sent"}
    assert [r["message_id"] for r in records.by_number("234567")] == ["queued-only"]
    assert [r["message_id"] for r in records.by_number("+998 90 111-45-67")] == ["sent"]
    assert records.by_number("567") == [] and records.by_number("0000") == []
    found = records.by_number("1114567")[0]
    assert found["to"] == "+998901114567" and found["status"] == "sending"
    assert 0 < redis_client.ttl(Keys("t").number_index("4567")) <= 1000


def test_the_number_index_drops_what_has_expired_and_skips_records_gone(redis_client):
    records = Records(redis_client, Keys("t"), ttl=100)
    index = Keys("t").number_index("4567")
    redis_client.zadd(index, {"long-gone": 1.0})                # filed more than RECORD_TTL ago
    records.update("m1", MessageStatus.SENDING, to="+998901234567")
    assert redis_client.zrange(index, 0, -1) == [b"m1"]
    redis_client.zadd(index, {"deleted-by-hand": 2e9})
    assert [r["message_id"] for r in records.by_number("4567")] == ["m1"]


def test_an_update_without_a_number_touches_no_index(redis_client):
    records = Records(redis_client, Keys("t"))
    records.update("m1", MessageStatus.FAILED, error={"code": "x", "message": "y"})
    assert redis_client.keys("t:num:*") == []
