"""Producer-side limits (message.check_bounds / check_id) and the worker's Redis check (redischeck.py)."""

from __future__ import annotations

import logging

import pytest
import redis

from smsdispatch import redischeck
from smsdispatch.errors import ConfigError, ValidationError
from smsdispatch.sendrequest import check_bounds, check_id


@pytest.mark.parametrize("kwargs, words", [
    ({"text": "x" * 1531}, "text: at most 1530 characters"),
    ({"metadata": {"a": "ж" * 2100}}, "metadata: must encode to at most 4096 bytes"),     # 4,200 bytes, 2,100 chars
    ({"options": {"a": "x" * 5000}}, "options: must encode"),
    ({"callback_url": "http://example.com/cb"}, "https://"),
    ({"callback_url": "https://user:secret@example.com/cb"}, "user name or password"),
    ({"callback_url": "https://example.com/" + "p" * 2100}, "at most 2048"),
    ({"idempotency_key": "k" * 201}, "at most 200"),
    ({"idempotency_key": "a\nb"}, "control"),
    ({"unexpected": "z" * 40_000}, "32768 bytes"),
])
def test_oversized_or_unsafe_arguments_are_refused(kwargs, words):
    with pytest.raises(ValidationError, match=words):
        check_bounds({"to": "+998901234567", "text": "hi"} | kwargs)


def test_the_text_limit_is_a_setting():
    check_bounds({"text": "x" * 2000}, max_text_chars=2000)
    check_bounds({"text": "x" * 1530, "callback_url": "https://example.com/cb", "idempotency_key": "order:42"})


@pytest.mark.parametrize("value", ["", "a:b", "x" * 129, "a b", "ü", 5])
def test_ids_that_would_reach_into_other_keys_are_refused(value):
    with pytest.raises(ValidationError, match="batch_id"):
        check_id("batch_id", value)


class _ManagedRedis:
    """A managed Redis: CONFIG renamed away, INFO answers."""

    def __init__(self, policy: str, aof: int) -> None:
        self.policy, self.aof = policy, aof

    def config_get(self, name):
        raise redis.ResponseError("unknown command 'CONFIG'")

    def info(self, section):
        return {"maxmemory_policy": self.policy} if section == "memory" else {"aof_enabled": self.aof}


def test_the_redis_check_reads_info_when_config_is_refused(caplog):
    with pytest.raises(ConfigError, match="maxmemory-policy is volatile-lru.*ledger"):
        redischeck.check(_ManagedRedis("volatile-lru", 1), allow_unsafe=False)
    with caplog.at_level(logging.WARNING, "smsdispatch.redischeck"):
        safety = redischeck.check(_ManagedRedis("noeviction", 0), allow_unsafe=False)
    assert safety == redischeck.RedisSafety("noeviction", False, "INFO") and "appendonly is no" in caplog.text


def test_a_redis_that_answers_neither_is_warned_about_not_refused(caplog):
    class Locked(_ManagedRedis):
        def info(self, section):
            raise redis.ResponseError("NOPERM")
    with caplog.at_level(logging.WARNING, "smsdispatch.redischeck"):
        assert redischeck.check(Locked("x", 0), allow_unsafe=False).policy is None
    assert "not checked" in caplog.text


def test_fewer_replicas_than_claim_replicas_is_warned_about(caplog):
    class WithReplicas(_ManagedRedis):
        def info(self, section):
            return {"connected_slaves": 1} if section == "replication" else super().info(section)
    with caplog.at_level(logging.WARNING, "smsdispatch.redischeck"):
        redischeck.check(WithReplicas("noeviction", 1), allow_unsafe=False, claim_replicas=1)
        assert "CLAIM_REPLICAS" not in caplog.text
        redischeck.check(WithReplicas("noeviction", 1), allow_unsafe=False, claim_replicas=2)
    assert "SMSDISPATCH_CLAIM_REPLICAS=2 but the primary has 1 replica(s) connected" in caplog.text
