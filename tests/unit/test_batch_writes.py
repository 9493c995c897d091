"""What the batch path's bulk scripts write per message, on a real redis-server (its command counts):
many record updates in one script write each metric once per field, not once per message, with the
same totals; created_at and accepted_at are set once, in the record's one HSET."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis

from smsdispatch import records as records_module
from smsdispatch import sendrequest
from smsdispatch.devtools.redis_server import EmbeddedRedis, RedisUnavailable
from smsdispatch.keys import Keys
from smsdispatch.records import MessageStatus, Records

from ..unavailable import unavailable


@pytest.fixture(scope="module")
def real_redis() -> Iterator[redis.Redis]:
    try:
        server = EmbeddedRedis().start()
    except RedisUnavailable as e:
        unavailable(f"no redis-server: {e}")
    client = redis.Redis.from_url(server.url)
    yield client
    client.close()
    server.stop()


def calls(client: redis.Redis, command: str) -> int:
    return int(client.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))


def metrics(client: redis.Redis, keys: Keys) -> dict[str, float]:
    return {k.decode(): float(v) for k, v in client.hgetall(keys.metrics()).items()}


def test_many_updates_count_each_metric_field_once_with_the_same_totals(real_redis):
    keys = Keys("many")
    recs = Records(real_redis, keys, ttl=3600)
    ids = [f"m{n}" for n in range(20)]
    for mid in ids:
        recs.create(mid, {"to": "+998901234567"})
    real_redis.config_resetstat()
    recs.update_many([(mid, MessageStatus.SENDING, "attempt 1", {"attempts": 1, "gateway": "eskiz"}) for mid in ids])
    assert calls(real_redis, "hincrby") == 1
    recs.update_many([(mid, MessageStatus.ACCEPTED, "", {"gateway": "eskiz", "gateway_message_id": f"g{mid}"})
                      for mid in ids])
    c = metrics(real_redis, keys)
    assert c["attempts|eskiz"] == 20 and c["messages|eskiz|accepted"] == 20
    assert sum(v for k, v in c.items() if k.startswith("latency|eskiz|")) == 20 and c["latency_sum|eskiz"] >= 0
    # 1 for the attempts, then one per field: the acceptances and the latency bucket(s); one float sum
    assert calls(real_redis, "hincrby") == 1 + 1 + sum(1 for k in c if k.startswith("latency|eskiz|"))
    assert calls(real_redis, "hincrbyfloat") == 1
    recs.update("m0", MessageStatus.DELIVERED)         # a single update counts at once, as before
    assert metrics(real_redis, keys)["messages|eskiz|delivered"] == 1


def test_a_dead_lettering_finish_counts_its_dead_letters_once_per_gateway(real_redis):
    from smsdispatch.ledger import Ledger
    keys = Keys("dead")
    recs = Records(real_redis, keys, ttl=3600)
    ledger = Ledger(real_redis, keys, lease=60, ttl=3600)
    ids = [f"d{n}" for n in range(5)]
    recs.update_many([(mid, MessageStatus.SENDING, "", {"attempts": 1, "gateway": "eskiz"}) for mid in ids])
    common, own = recs.prepared_many([(mid, MessageStatus.FAILED, "", {"error": {"code": "x", "message": "y"}})
                                      for mid in ids])
    real_redis.config_resetstat()
    ledger.finish_many([(f"key:{mid}", v) for mid, v in zip(ids, own, strict=True)], common, reopenable=True,
                       dead_letter=True)
    c = metrics(real_redis, keys)
    assert c["dead_letters|eskiz"] == 5 and c["messages|eskiz|failed"] == 5
    assert calls(real_redis, "hincrby") == 2
    assert recs.dead_letters() == ids


def test_created_at_and_accepted_at_are_set_once_in_the_records_hset(real_redis):
    keys = Keys("once")
    recs = Records(real_redis, keys, ttl=3600)
    recs.create("q", {"to": "+998901234567"})
    created = recs.get("q")["created_at"]
    real_redis.config_resetstat()
    recs.update_many([("q", MessageStatus.ACCEPTED, "", {"gateway": "eskiz", "gateway_message_id": "g1"}),
                      ("new", MessageStatus.ACCEPTED, "", {"gateway": "eskiz", "gateway_message_id": "g2"})])
    assert calls(real_redis, "hsetnx") == 0
    first = recs.get("q")
    assert first["created_at"] == created and first["accepted_at"] is not None
    fresh = recs.get("new")
    assert fresh["created_at"] == fresh["updated_at"] == fresh["accepted_at"]   # no record before: now
    real_redis.hset(keys.message("q"), "accepted_at", "1.5")
    recs.update("q", MessageStatus.ACCEPTED, gateway="eskiz", gateway_message_id="g1")
    recs.update("q", MessageStatus.DELIVERED)
    again = recs.get("q")
    assert again["accepted_at"] == 1.5 and again["created_at"] == created and again["status"] == "delivered"


@pytest.mark.parametrize("value", [{"note": "Распродажа", "n": 1.5, "x": [None, True]}, "ok ✓", 7, None, [1, "ü"]])
def test_the_shared_encoders_write_what_json_dumps_writes(value):
    expected = json.dumps(value, ensure_ascii=False)
    assert records_module._dumps(value) == sendrequest._dumps(value) == expected


def test_an_unconfigured_gateway_is_refused_after_others_are_built(settings, redis_client):
    from smsdispatch.errors import UnknownGatewayError
    from smsdispatch.gateways import Gateways
    gateways = Gateways(settings, redis_client, Keys("g"))
    console = gateways.get("console")
    assert gateways.get("console") is console
    with pytest.raises(UnknownGatewayError):
        gateways.get("eskiz")          # no credentials in these settings


def test_shared_fields_write_the_same_record_as_each_messages_own(redis_client):
    from smsdispatch.records import shared_fields
    one, many = Records(redis_client, Keys("own"), ttl=60), Records(redis_client, Keys("shared"), ttl=60)
    alike = {"gateway": "eskiz", "call_ref": "c-1", "options": None, "sender": "Shop", "batch_id": "b ✓"}
    own = [{"attempts": 1, "to": "+998901234567", "text": "Привет", "metadata": {"k": [1]}}, {}]
    one.update_many([(f"m{n}", MessageStatus.SENDING, "attempt 1", {**fields, **alike}) for n, fields in enumerate(own)])
    many.update_many([(f"m{n}", MessageStatus.SENDING, "attempt 1", fields) for n, fields in enumerate(own)],
                     shared=[shared_fields(alike)] * 2)
    for n in range(2):
        a, b = one.get(f"m{n}"), many.get(f"m{n}")
        for rec in (a, b):
            rec.pop("updated_at"), rec.pop("created_at")
        assert a == b and b["sender"] == "Shop" and b["batch_id"] == "b ✓" and b["options"] is None
    assert many.by_number("4567")[0]["message_id"] == "m0"
