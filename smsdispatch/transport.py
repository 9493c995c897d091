"""kombu's Redis transport, with one redis-py client per channel instead of one per command.

kombu's Redis channel builds a new `redis.Redis` object for every publish, ack, task event and
unacked-bookkeeping write it is not handed a client for (`Channel.conn_or_acquire`), and redis-py 8's
constructor costs more CPU than the command it is built for (about 180 µs on an idle machine of
this kind, more under load; a PING round trip is 150 µs). A worker pays it five times per task (the
unacked entry, three task events, the ack) and a producer once per `.delay()`. A `redis.Redis` object
is a thread-safe handle on a connection pool, holding no connection of its own, so one per channel and
pool does the same work: same pool, same connections, same commands. A channel whose pools are
dropped (after a fork or a lost connection) gets a new client with the new pool.

Used by `worker.create_app` as the broker transport (``broker_transport``) for ``redis://`` URLs
(``rediss://`` and ``unix://`` keep kombu's own, which takes its TLS defaults from the scheme);
every other kombu behaviour is unchanged.
"""

from __future__ import annotations

from contextlib import contextmanager

from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    _shared_client = None

    @contextmanager
    def conn_or_acquire(self, client=None):
        if client:
            yield client
            return
        shared = self._shared_client
        if shared is None or shared.connection_pool is not self.pool:
            shared = self._shared_client = self._create_client()
        yield shared


class Transport(kombu_redis.Transport):
    Channel = Channel
