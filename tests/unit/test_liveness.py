"""transport.Liveness: heartbeats in Redis, and when a worker process may judge another one dead."""

from __future__ import annotations

from contextlib import contextmanager

import fakeredis

from smsdispatch import redis_transport as transport
from smsdispatch.keys import Keys


class StubChannel:
    """What Liveness uses of a kombu channel: a client, our keys, the limits, and qos.restore_by_tag."""

    def __init__(self, client) -> None:
        self.client = client
        self.smsdispatch_keys = Keys("t")
        self.worker_lost_after = 10.0
        self.visibility_timeout = 3600
        self.restored: list[str] = []
        self.qos = self

    @contextmanager
    def conn_or_acquire(self, client=None):
        yield self.client

    def restore_by_tag(self, tag, client=None, leftmost=False):
        self.restored.append(tag)


def test_a_silent_process_is_judged_only_after_the_judge_has_beaten_steadily_itself(monkeypatch):
    client = fakeredis.FakeRedis()
    channel, keys = StubChannel(client), Keys("t")
    client.zadd(keys.workers(), {"dead-1": 1.0})              # silent since the epoch
    client.sadd(keys.worker_unacked("dead-1"), "tag-a", "tag-b")
    clock = [1000.0]
    monkeypatch.setattr(transport.time, "monotonic", lambda: clock[0])
    live = transport.Liveness()
    assert live.beat(channel) == []                           # first beat: no judging yet
    clock[0] += 5
    assert live.beat(channel) == [] and channel.restored == []
    live.steady_since = None                                   # a failed beat (Redis away) starts over
    clock[0] += 20
    assert live.beat(channel) == [] and channel.restored == []
    clock[0] += 10
    assert live.beat(channel) == ["dead-1"]                    # steady for 10 s: it judges
    assert sorted(channel.restored) == ["tag-a", "tag-b"]
    assert client.zscore(keys.workers(), "dead-1") is None and not client.exists(keys.worker_unacked("dead-1"))
    assert client.zscore(keys.workers(), live.owner) is not None          # itself, alive
    assert client.ttl(keys.worker_unacked(live.owner)) in (-2, *range(1, 3601))
