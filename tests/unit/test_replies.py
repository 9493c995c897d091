"""Reading Redis replies as text (redisclient.py): redis-py types them `bytes | str`, since it cannot
know whether a client decodes responses; ours answer bytes, a client made with decode_responses str."""

from __future__ import annotations

import fakeredis
import pytest

from smsdispatch.keys import Keys
from smsdispatch.records import Records
from smsdispatch.redisclient import members, text, text_fields


def test_text_reads_bytes_as_utf8_and_keeps_str():
    assert text("Ваш заказ".encode()) == "Ваш заказ" and text("Ваш заказ") == "Ваш заказ"


def test_text_fields_reads_a_hash_reply_either_way():
    assert text_fields({b"status": b"accepted", b"attempts": b"1"}) == {"status": "accepted", "attempts": "1"}
    assert text_fields({"status": "accepted"}) == {"status": "accepted"}


def test_members_reads_a_range_without_scores_and_refuses_one_with_scores():
    client = fakeredis.FakeRedis()
    client.zadd("z", {"a": 1, "b": 2})
    assert members(client.zrangebyscore("z", "-inf", "+inf")) == ["a", "b"]
    with pytest.raises(TypeError, match="read with scores"):
        members(client.zrangebyscore("z", "-inf", "+inf", withscores=True))


@pytest.mark.parametrize("decode_responses", [False, True])
def test_records_read_the_same_from_a_client_that_decodes_responses(decode_responses):
    client, keys = fakeredis.FakeRedis(decode_responses=decode_responses), Keys("t")
    records = Records(client, keys)
    client.hset(keys.message("m1"), mapping={"status": "accepted", "attempts": "2", "gateway": "eskiz"})
    client.set(keys.gateway_id("eskiz", "g1"), "m1")
    client.rpush(keys.dead_letters(), "m1")
    assert records.get("m1") == {"status": "accepted", "attempts": 2, "gateway": "eskiz"}
    assert records.by_gateway_id("eskiz", "g1") == "m1" and records.dead_letters() == ["m1"]
