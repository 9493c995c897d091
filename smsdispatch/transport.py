"""kombu's Redis transport, with one redis-py client per channel instead of one per command.

kombu's Redis channel builds a new `redis.Redis` object for every publish, ack, task event and
unacked-bookkeeping write it is not handed a client for (`Channel.conn_or_acquire`), and redis-py 8's
constructor costs more CPU than the command it is built for (about 180 µs on an idle machine of
this kind, more under load; a PING round trip is 150 µs). A worker pays it five times per task (the
unacked entry, three task events, the ack) and a producer once per `.delay()`. A `redis.Redis` object
is a thread-safe handle on a connection pool, holding no connection of its own, so one per channel and
pool does the same work: same pool, same connections, same commands. A channel whose pools are
dropped (after a fork or a lost connection) gets a new client with the new pool.

Messages taken but not recorded: kombu takes a message off its queue (BRPOP) and then, in a second
round trip, records it as unacknowledged (the `unacked` hash that a visibility timeout restores
from). When Redis dies between the two, the message exists only in the worker's memory, and kombu
drops it: no task runs, nothing records it, nothing restores it. Our QoS keeps such a message in
the process, and the next channel that reaches Redis puts it back at the head of its queue (marked
redelivered, as kombu marks restored messages). A duplicate is possible (the write may have
happened and only its answer been lost) and harmless: the ledger dedupes. A message whose process
ends before Redis comes back is still lost; so a channel whose connection kombu has already
released answers with a connection error (which the worker ignores) instead of kombu's AttributeError
(which stopped the worker, and with it every message it held in memory).

Used by `worker.create_app` as the broker transport (``broker_transport``) for ``redis://`` URLs
(``rediss://`` and ``unix://`` keep kombu's own, which takes its TLS defaults from the scheme);
every other kombu behaviour is unchanged.
"""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager

import redis
from kombu.transport import redis as kombu_redis

log = logging.getLogger("smsdispatch.transport")

#: (payload, exchange, routing key) of messages this process took off a queue and could not record as
#: unacknowledged, waiting for a channel that reaches Redis to put them back.
_taken_not_recorded: list[tuple[dict, str, str]] = []
_taken_lock = threading.Lock()


class QoS(kombu_redis.QoS):
    def append(self, message, delivery_tag):
        try:
            super().append(message, delivery_tag)
        except Exception:
            delivery = message.delivery_info
            with _taken_lock:
                _taken_not_recorded.append((message._raw, delivery["exchange"], delivery["routing_key"]))
            log.warning("a message taken off its queue could not be recorded as unacknowledged; kept here until "
                        "a channel reaches Redis again, then put back on its queue")
            raise


class Channel(kombu_redis.Channel):
    QoS = QoS
    _shared_client = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)       # it pings Redis: this channel reaches it
        self._put_back_taken()

    def _put_back_taken(self) -> None:
        with _taken_lock:
            taken = list(_taken_not_recorded)
            _taken_not_recorded.clear()
        if not taken:
            return
        try:
            with self.conn_or_acquire() as client:
                pipe = client.pipeline()
                for payload, exchange, routing_key in taken:
                    self._do_restore_message(payload, exchange, routing_key, pipe, leftmost=False)
                pipe.execute()
        except redis.RedisError as e:
            with _taken_lock:
                _taken_not_recorded[:0] = taken
            log.warning("could not put back %d message(s) taken but not recorded (%s); trying again with "
                        "the next channel", len(taken), e)
            return
        log.warning("put back %d message(s) taken off a queue but not recorded before Redis failed", len(taken))

    @contextmanager
    def conn_or_acquire(self, client=None):
        if client:
            yield client
            return
        if self._pool is None and self.connection.client is None:
            # The connection was released (kombu clears it before closing the channels, after a lost
            # connection): a new pool cannot be built. Say so the way a connection error does, which
            # callers expect, instead of kombu's AttributeError, which stops the worker.
            raise redis.ConnectionError("the channel's connection is closed")
        shared = self._shared_client
        if shared is None or shared.connection_pool is not self.pool:
            shared = self._shared_client = self._create_client()
        yield shared


class Transport(kombu_redis.Transport):
    Channel = Channel
