"""The producer's publish of send_sms against a real Redis: with the broker on the store's own Redis, the
`queued` record and the task message are written by one script in one round trip (records_create.lua,
redis_transport.recording_publish); with the broker elsewhere, the record is written first, on its own.
No worker: the message is read off its queue."""

from __future__ import annotations

import json

import pytest
import redis
from kombu.exceptions import OperationalError

from smsdispatch.devtools.redis_server import EmbeddedRedis
from smsdispatch.polling import QUEUED_AT_HEADER

from .conftest import Producer, round_trips, worker_settings

TO = "+998901234567"


def queued_messages(client: redis.Redis, queue: str) -> list[dict]:
    return [json.loads(raw) for raw in client.lrange(queue, 0, -1)]


@pytest.fixture
def producer(redis_url, fake_eskiz):
    return Producer(worker_settings(redis_url, fake_eskiz))


def test_a_delay_writes_the_record_and_the_message_in_one_round_trip(producer, redis_url):
    producer.send_sms.delay(TO, "warm-up")      # connections made, the script loaded (EVALSHA from now on)
    with round_trips() as sent:
        result = producer.send_sms.delay(TO, "Salom")
    assert len(sent) == 1, sent
    assert b"EVALSHA" in sent[0]
    record = producer.record(result.id)
    assert record is not None and record["status"] == "queued" and record["task_id"] == result.id
    assert record["payload"] == {"to": TO, "text": "Salom"}
    client = redis.Redis.from_url(redis_url)
    messages = queued_messages(client, producer.settings.queue)
    assert len(messages) == 2 and messages[0]["headers"]["id"] == result.id          # LPUSH: newest first
    assert QUEUED_AT_HEADER in messages[0]["headers"]
    assert TO not in messages[0]["headers"]["kwargsrepr"]                             # masked for Flower
    assert client.hget(producer.dispatcher.keys.metrics(), "enqueued") == b"2"


def test_a_republished_message_is_pushed_again_and_its_record_kept(producer, redis_url):
    first = producer.send_sms.apply_async(kwargs={"to": TO, "text": "Once"}, task_id="t-again-1")
    before = producer.record(first.id)
    producer.send_sms.apply_async(kwargs={"to": TO, "text": "Once"}, task_id="t-again-1")      # the sweeper's way
    assert producer.record(first.id) == before
    ids = [m["headers"]["id"] for m in queued_messages(redis.Redis.from_url(redis_url), producer.settings.queue)]
    assert ids == ["t-again-1", "t-again-1"]


def test_with_the_broker_on_another_redis_db_the_record_is_written_first(redis_url, fake_eskiz):
    broker_url = redis_url.rsplit("/", 1)[0] + "/1"
    producer = Producer(worker_settings(redis_url, fake_eskiz, BROKER_URL=broker_url))
    assert not producer.app.runtime.records_with_publish
    producer.send_sms.delay(TO, "warm-up")
    with round_trips() as sent:
        result = producer.send_sms.delay(TO, "Salom")
    assert len(sent) == 2 and b"EVALSHA" in sent[0] and b"LPUSH" in sent[1], sent
    assert producer.record(result.id)["status"] == "queued"
    broker = redis.Redis.from_url(broker_url)
    assert queued_messages(broker, producer.settings.queue)[0]["headers"]["id"] == result.id
    assert redis.Redis.from_url(redis_url).llen(producer.settings.queue) == 0
    broker.delete(producer.settings.queue)


def test_a_publish_redis_refuses_raises_and_leaves_neither_record_nor_message(fake_eskiz):
    server = EmbeddedRedis().start()
    try:
        producer = Producer(worker_settings(server.url, fake_eskiz))
        producer.send_sms.delay(TO, "warm-up")
        client = redis.Redis.from_url(server.url)
        client.config_set("maxmemory", 1)        # noeviction: every write refused (OOM)
        with pytest.raises((redis.RedisError, OperationalError)):     # kombu's, after its retry of the publish
            producer.send_sms.apply_async(kwargs={"to": TO, "text": "Refused"}, task_id="t-refused")
        client.config_set("maxmemory", 0)
        assert producer.record("t-refused") is None
        assert "t-refused" not in [m["headers"]["id"] for m in queued_messages(client, producer.settings.queue)]
    finally:
        server.stop()


def test_a_publish_that_does_not_reach_our_transport_still_records(producer, redis_url, monkeypatch, caplog):
    from smsdispatch.redis_transport import Channel
    monkeypatch.setattr(Channel, "_put", lambda self, queue, message, **kw: None)     # published elsewhere
    result = producer.send_sms.delay(TO, "Lost track")
    assert producer.record(result.id)["status"] == "queued"
    assert "published without its record being written with it" in caplog.text
