"""Replaying dead letters (deadletters.py), the one decision the CLI and the status page share."""

from __future__ import annotations

import pytest

from smsdispatch.deadletters import GONE, MAYBE_SENT, NOTHING_TO_SEND, DeadLetters
from smsdispatch.dispatch import message_id_for
from smsdispatch.keys import Keys
from smsdispatch.ledger import Ledger
from smsdispatch.records import MessageStatus, Records

TO = "+998901234567"


@pytest.fixture
def dead(redis_client):
    keys = Keys("t")
    published: list[dict] = []

    def publish(**kwargs):
        published.append(kwargs)
        return f"task-{len(published)}"

    letters = DeadLetters(Records(redis_client, keys), Ledger(redis_client, keys, lease=60, ttl=600), publish)
    letters.published = published
    return letters


def dead_letter(dead, mid, *, maybe_sent=0, status=MessageStatus.FAILED, **fields):
    key = f"key-{mid}"
    dead.records.update(mid, status, to=TO, text="Hello", idempotency_key=key, requested_gateway="eskiz",
                        maybe_sent=maybe_sent, error={"code": "retries_exhausted", "message": "5 attempts"}, **fields)
    dead.redis.hset(dead.records.keys.idempotency(f"key:{key}"), mapping={"state": "done", "reopenable": 0})
    dead.redis.rpush(dead.key, mid)


def test_a_provably_unsent_one_is_submitted_again_with_what_was_asked_and_leaves_the_list(dead):
    dead_letter(dead, "m1", sender="Shop", metadata={"order": 7})
    done = dead.replay("m1")
    assert done.replayed and done.message_id == message_id_for("key-m1", "task-1")
    assert dead.published == [{"to": TO, "text": "Hello", "gateway": "eskiz", "sender": "Shop",
                               "idempotency_key": "key-m1", "metadata": {"order": 7}}]
    assert dead.count() == 0
    assert dead.replay("m1").reason == GONE and len(dead.published) == 1      # a second click sends nothing


def test_a_maybe_sent_one_is_refused_unless_forced_then_its_key_may_send_again(dead):
    dead_letter(dead, "m2", maybe_sent=1)
    refused = dead.replay("m2")
    assert not refused.replayed and refused.reason == MAYBE_SENT and dead.published == [] and dead.count() == 1
    assert dead.redis.hget(dead.records.keys.idempotency("key:key-m2"), "reopenable") == b"0"
    assert dead.replay("m2", force=True).replayed
    assert dead.redis.hget(dead.records.keys.idempotency("key:key-m2"), "reopenable") == b"1"
    assert len(dead.published) == 1 and dead.count() == 0


def test_what_is_not_a_failed_message_with_a_number_is_not_sent(dead):
    dead_letter(dead, "m3", status=MessageStatus.ACCEPTED)
    dead.redis.rpush(dead.key, "no-record")
    assert dead.replay("m3").reason == dead.replay("no-record").reason == NOTHING_TO_SEND
    assert dead.published == [] and dead.count() == 2


def test_a_failed_publish_puts_it_back_on_the_list(dead):
    dead_letter(dead, "m4")

    def down(**kwargs):
        raise ConnectionError("broker down")
    dead.publish = down
    with pytest.raises(ConnectionError):
        dead.replay("m4")
    assert dead.records.dead_letters() == ["m4"]


def test_the_listing_masks_numbers(dead):
    dead_letter(dead, "m5", maybe_sent=1)
    [item] = dead.listing()
    assert item["to"] == "+998*******67" and item["maybe_sent"] is True and item["message_id"] == "m5"
    assert TO not in repr(dead.listing(limit=1))
