"""The worker's Redis client (redisclient.py) against a private redis-server: a pipeline holding a
script costs no SCRIPT EXISTS, and the scripts are there again after a Redis restart or a SCRIPT FLUSH."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from smsdispatch.devtools.redis_server import EmbeddedRedis, RedisUnavailable
from smsdispatch.keys import Keys
from smsdispatch.ledger import Ledger
from smsdispatch.redisclient import connect

from ..unavailable import unavailable


@pytest.fixture
def server() -> Iterator[EmbeddedRedis]:
    try:
        s = EmbeddedRedis(appendonly=False).start()
    except RedisUnavailable as e:
        unavailable(f"no Redis: {e}")
    yield s
    s.stop()


def script_commands(admin: redis.Redis) -> dict[str, int]:
    stats = admin.info("commandstats")
    return {name: stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("script|exists", "evalsha")}


def claim_in_pipeline(client: redis.Redis, ledger: Ledger, key: str) -> str:
    pipe = client.pipeline(transaction=False)
    owner = ledger.claim(key, fp="fp", message_id=key, now=1000.0, pipe=pipe)
    pipe.get("nothing")
    reply, _ = pipe.execute()
    return ledger.parse(reply, owner).answer.value


def test_a_pipeline_with_a_script_sends_no_script_exists(server):
    admin = redis.Redis.from_url(server.url)
    ours, plain = connect(server.url), redis.Redis.from_url(server.url)
    ledger_ours, ledger_plain = Ledger(ours, Keys("a"), lease=10, ttl=60), Ledger(plain, Keys("b"), lease=10, ttl=60)
    claim_in_pipeline(ours, ledger_ours, "warm")
    before = script_commands(admin)
    assert [claim_in_pipeline(ours, ledger_ours, f"k{i}") for i in range(5)] == ["claimed"] * 5
    after = script_commands(admin)
    assert after["evalsha"] - before["evalsha"] == 5
    assert after["script|exists"] == before["script|exists"]
    claim_in_pipeline(plain, ledger_plain, "k")           # redis-py's own pipeline asks every time
    assert script_commands(admin)["script|exists"] == after["script|exists"] + 1


def test_scripts_are_back_after_a_redis_restart(server):
    client = connect(server.url)
    ledger = Ledger(client, Keys("r"), lease=10, ttl=60)
    assert claim_in_pipeline(client, ledger, "before") == "claimed"
    server.restart()                  # an empty script cache; every connection is gone
    assert redis.Redis.from_url(server.url).script_exists(ledger._claim.sha) == [False]
    assert claim_in_pipeline(client, ledger, "after") == "claimed"


def test_a_script_flush_fails_one_pipeline_then_the_scripts_are_reloaded(server):
    client = connect(server.url)
    ledger = Ledger(client, Keys("f"), lease=10, ttl=60)
    assert claim_in_pipeline(client, ledger, "one") == "claimed"
    redis.Redis.from_url(server.url).script_flush()
    with pytest.raises(redis.exceptions.NoScriptError):
        claim_in_pipeline(client, ledger, "two")
    assert claim_in_pipeline(client, ledger, "two") == "claimed"
