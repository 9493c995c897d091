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

Messages held when the connection died: a channel that closes (its connection lost) gives back the
messages it took and did not finish (prefetched, not yet started), by tag from the unacked hash, and
a task that hands its message back (a reject with requeue) does the same. With Redis gone (killed,
restarting, or a primary being replaced) that fails, and kombu left them in the unacked hash for the
visibility timeout: an hour by default, for messages nobody works on. Our QoS remembers their tags
instead, and the next channel that reaches Redis gives them back the same way (kombu's transactional
restore: a no-op for a tag already acknowledged or restored).

A dead worker's messages come back in seconds. kombu puts a message that a worker took and never
acknowledged back on its queue only after the visibility timeout (an hour by default): a worker
killed by the OOM killer, a lost node or `docker kill` held its running and prefetched messages
hostage that long (the sweeper republished some after its grace, minutes). Here every consuming
process beats its heart in Redis (`sms:workers`, Redis's own clock, every WORKER_LOST_AFTER / 5 s)
and keeps the delivery tags it holds in a set of its own (written in the same pipeline as kombu's
unacked entry, removed with it: no extra round trip). A process that finds another one silent for
WORKER_LOST_AFTER puts that one's messages back at the head of their queues, once (kombu's own
transactional restore), and forgets it. A process only judges others once its own heart has beaten
for that long without a gap, so after a Redis outage nobody is taken for dead before it could beat
again. Taking a live but silent process for dead (a partition) hands its messages out twice: the
ledger makes that safe, as it does for the visibility timeout.

A send_sms publish writes its `queued` record in the same round trip. `SendSms.apply_async` hands the
record's prepared script (records.RecordCreate) to `recording_publish` for the length of its publish,
and `Channel._put`, finding it waiting for the message's task id, runs it with the queue key and the
serialized message exactly as kombu's own `_put` would LPUSH them: records_create.lua writes the
record, then pushes the message, in one script (one round trip instead of two, the record still
first). Only a plain publish takes this way; one kombu would pipeline with expiries or batch, or a
channel with a global key prefix (which would prefix the record's key too), writes the record first on
its own and then publishes as kombu does. The prepared call is taken only once its script succeeded:
when kombu retries a publish after a connection error, the retried `_put` runs the script again, the
record part a no-op the second time; a message pushed twice (the first push happened, its answer was
lost) is the same hazard as kombu's own retried LPUSH, and the ledger makes it safe.

Used by `worker.create_app` as the broker transport (``broker_transport``) for ``redis://`` URLs
(``rediss://`` and ``unix://`` keep kombu's own, which takes its TLS defaults from the scheme);
every other kombu behaviour is unchanged.

Behind Sentinel (``sentinel://`` URLs, sentinel.py), `SentinelTransport` is kombu's Sentinel transport
with the same channel: kombu's SentinelChannel finds the primary through the Sentinels, ours adds the
above. All of it matters more during a failover than at any other time: the BRPOP that took a message
from the primary that then died is the "taken, not recorded" case, and every worker that loses its
connection at once must not stop for kombu's AttributeError. Messages a dead worker held come back in
seconds as above; the heartbeats and the per-process tag sets live on the new primary as soon as it
takes writes (what the old one had not passed on is beaten again within a fifth of WORKER_LOST_AFTER).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import TYPE_CHECKING

import redis
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.json import dumps

from . import scripts
from .keys import Keys
from .redisclient import text

if TYPE_CHECKING:
    from .records import RecordCreate

log = logging.getLogger("smsdispatch.redis_transport")

#: (payload, exchange, routing key) of messages this process took off a queue and could not record as
#: unacknowledged, waiting for a channel that reaches Redis to put them back.
_taken_not_recorded: list[tuple[dict, str, str]] = []
#: Delivery tags of messages a channel held when its connection died and could not give back then.
_held_when_lost: list[str] = []
_taken_lock = threading.Lock()
#: The `queued` record a send_sms publish in this thread writes with its message (recording_publish).
_recording = threading.local()
#: What a Redis that cannot be reached raises (MasterNotFoundError, behind Sentinel, is a ConnectionError).
_UNREACHABLE = (redis.ConnectionError, redis.TimeoutError)


class RecordingPublish:
    """The record of one publish, waiting for `Channel._put` (recording_publish)."""

    def __init__(self, task_id: str, record: RecordCreate) -> None:
        self.task_id, self.record = task_id, record
        self.done = False


@contextmanager
def recording_publish(task_id: str, record: RecordCreate) -> Iterator[RecordingPublish]:
    """While in it, the publish of task `task_id` in this thread (Channel._put) also runs `record`, in
    the same script; `.done` says whether it did. Always cleared on the way out."""
    pending = _recording.pending = RecordingPublish(task_id, record)
    try:
        yield pending
    finally:
        _recording.pending = None


class Liveness:
    """This process's heartbeat, and the recovery of dead processes' unacknowledged messages (see the
    module's docstring). One per process, started when it starts consuming; a forked child starts its
    own."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.owner = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.channel: Channel | None = None
        self.steady_since: float | None = None     # monotonic start of the current run of good beats
        self.started = False
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def attach(self, channel: Channel) -> None:
        """Called as `channel` starts consuming: the first beat now, before any message is taken (a
        process killed a moment later is still known, and its messages found), then a beat every
        interval in a thread."""
        self.channel = channel
        if not self.started:
            with self.lock:
                if not self.started:
                    self.started = True
                    self._beat_once()
                    threading.Thread(target=self._run, name="smsdispatch-liveness", daemon=True).start()

    def _run(self) -> None:
        while not self.stop.wait(self.interval()):
            self._beat_once()

    def _beat_once(self) -> None:
        channel = self.channel
        if channel is None:
            return
        try:
            self.beat(channel)
        except Exception as e:      # Redis away, a channel closing: judge nobody until steady again
            self.steady_since = None
            log.debug("heartbeat failed: %s", e)

    def interval(self) -> float:
        channel = self.channel
        return max(0.5, float(getattr(channel, "worker_lost_after", None) or 10.0) / 5)

    def beat(self, channel: Channel) -> list[str]:
        """One heartbeat; puts back the messages of every process found dead. Returns their owners.
        The heartbeat and the judgement are one Lua step (lua/transport_beat.lua), run with EVAL on
        kombu's client."""
        keys, lost_after = channel.smsdispatch_keys, float(channel.worker_lost_after)
        with channel.conn_or_acquire() as client:
            dead = [d.decode() for d in client.eval(
                scripts.source("transport_beat"), 2, keys.workers(), keys.worker_unacked(self.owner), self.owner, lost_after,
                int(max(channel.visibility_timeout, lost_after * 10)))]
            now = time.monotonic()
            if self.steady_since is None:
                self.steady_since = now
            if now - self.steady_since < lost_after:
                return []
            for owner in dead:
                if owner != self.owner:
                    self.recover(channel, client, owner, lost_after)
        return dead

    @staticmethod
    def recover(channel: Channel, client: redis.Redis, owner: str, lost_after: float) -> int:
        keys = channel.smsdispatch_keys
        tags = [text(t) for t in client.smembers(keys.worker_unacked(owner))]
        for tag in tags:    # kombu's restore: a transaction, a no-op for a tag already acked or restored
            channel.qos.restore_by_tag(tag, client, leftmost=True)
        pipe = client.pipeline()
        pipe.delete(keys.worker_unacked(owner))
        pipe.zrem(keys.workers(), owner)
        pipe.execute()
        if tags:
            log.warning("worker process %s has been silent for over %gs (WORKER_LOST_AFTER): put back the %d "
                        "message(s) it held unacknowledged, at the head of their queues", owner, lost_after, len(tags))
        return len(tags)


_liveness: Liveness | None = None
_liveness_lock = threading.Lock()


def liveness() -> Liveness:
    """This process's Liveness (a new one after a fork). Asked on every append and ack: the lock only
    when there is none yet for this process."""
    global _liveness
    current = _liveness
    if current is not None and current.pid == os.getpid():
        return current
    with _liveness_lock:
        if _liveness is None or _liveness.pid != os.getpid():
            _liveness = Liveness()
        return _liveness


class QoS(kombu_redis.QoS):
    def append(self, message, delivery_tag):
        try:
            self._append(message, delivery_tag)
        except Exception:
            delivery = message.delivery_info
            with _taken_lock:
                _taken_not_recorded.append((message._raw, delivery["exchange"], delivery["routing_key"]))
            log.warning("a message taken off its queue could not be recorded as unacknowledged; kept here until "
                        "a channel reaches Redis again, then put back on its queue")
            raise

    def restore_unacked(self, client=None):
        """kombu's give-back of the messages this channel holds unfinished (when it closes); if Redis
        cannot be reached, their tags wait for the next channel that reaches it (see the module's
        docstring) instead of the visibility timeout."""
        try:
            return super().restore_unacked(client)
        except _UNREACHABLE as e:
            tags = [str(tag) for tag in self._delivered]
            self._delivered.clear()
            with _taken_lock:
                _held_when_lost.extend(tags)
            log.warning("could not give back %d unfinished message(s) as the connection closed (%s); a channel that "
                        "reaches Redis again gives them back", len(tags), e)

    def reject(self, delivery_tag, requeue=False):
        """kombu's reject; a requeue that cannot reach Redis (a task handing its message back while Redis
        is away) is given back by the next channel that reaches Redis, as restore_unacked's are."""
        try:
            return super().reject(delivery_tag, requeue=requeue)
        except _UNREACHABLE as e:
            if not requeue:
                raise
            virtual.QoS.ack(self, delivery_tag)       # no longer held by this channel
            with _taken_lock:
                _held_when_lost.append(str(delivery_tag))
            log.warning("could not put a message back on its queue (%s); a channel that reaches Redis again "
                        "does", e)

    def _append(self, message, delivery_tag) -> None:
        """kombu's append (the unacked entry and its index, one pipeline), with the tag also in this
        process's own set, in the same pipeline."""
        delivery = message.delivery_info
        owner = liveness()
        with self.pipe_or_acquire() as pipe:
            pipe.zadd(self.unacked_index_key, {delivery_tag: time.time()})
            pipe.hset(self.unacked_key, delivery_tag, dumps([message._raw, delivery["exchange"], delivery["routing_key"]]))
            pipe.sadd(self.channel.smsdispatch_keys.worker_unacked(owner.owner), delivery_tag)
            pipe.execute()
        virtual.QoS.append(self, message, delivery_tag)

    def _remove_from_indices(self, delivery_tag, pipe=None):
        """kombu's removal (ack, reject, restore), and the tag out of this process's set."""
        pipe = super()._remove_from_indices(delivery_tag, pipe)
        return pipe.srem(self.channel.smsdispatch_keys.worker_unacked(liveness().owner), delivery_tag)


class Channel(kombu_redis.Channel):
    QoS = QoS
    _shared_client = None
    #: Ours, from broker_transport_options (worker.create_app): the key prefix and WORKER_LOST_AFTER.
    smsdispatch_key_prefix = "sms"
    worker_lost_after = 10.0
    # mypy reads kombu's tuple of option names as one of exactly that length; ours is two longer
    from_transport_options = kombu_redis.Channel.from_transport_options + (  # type: ignore[assignment]
        "smsdispatch_key_prefix", "worker_lost_after")

    @cached_property
    def smsdispatch_keys(self) -> Keys:
        return Keys(self.smsdispatch_key_prefix)

    def basic_consume(self, *args, **kwargs):
        """A consumer (a worker, not a producer): its heart starts beating, and it watches the others'."""
        tag = super().basic_consume(*args, **kwargs)
        liveness().attach(self)
        return tag

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)       # it pings Redis: this channel reaches it
        self._put_back_taken()
        self._give_back_held()

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

    def _give_back_held(self) -> None:
        """The messages a channel held when its connection died (QoS.restore_unacked), back on their
        queues, at the head, by tag."""
        with _taken_lock:
            held = list(_held_when_lost)
            _held_when_lost.clear()
        if not held:
            return
        done = 0
        try:
            with self.conn_or_acquire() as client:
                for tag in held:
                    self.qos.restore_by_tag(tag, client, leftmost=True)
                    done += 1
        except redis.RedisError as e:
            with _taken_lock:
                _held_when_lost[:0] = held[done:]
            log.warning("could not give back %d message(s) held when the connection died (%s); trying again with "
                        "the next channel", len(held) - done, e)
            return
        log.warning("gave back %d message(s) a channel held unfinished when its connection died", len(held))

    def _put(self, queue, message, **kwargs):
        """kombu's, with a waiting `queued` record (recording_publish) written in the same script as
        the push, for this message's task id (see the module's docstring)."""
        pending = getattr(_recording, "pending", None)
        if pending is None or pending.done or (message.get("headers") or {}).get("id") != pending.task_id:
            return super()._put(queue, message, **kwargs)
        if kwargs.get("_publish_batch") is not None or (self._expires and queue in self._expires) \
                or self.global_keyprefix:
            pending.record.run()        # on its own first, through the store's client; then kombu's push
            pending.done = True
            return super()._put(queue, message, **kwargs)
        # the queue key as kombu's _put computes it
        key = self._q_for_pri(queue, self._get_message_priority(message, reverse=False))
        with self.conn_or_acquire() as client:
            pending.record.run(client, queue=key, message=dumps(message))
        pending.done = True

    @contextmanager
    def conn_or_acquire(self, client=None):
        if client:
            yield client
            return
        connection = self.connection
        if self._pool is None and (connection is None or connection.client is None):
            # The connection was released (kombu clears it before closing the channels, after a lost
            # connection), or the channel closed: a new pool cannot be built. Say so the way a
            # connection error does, which callers expect, instead of kombu's AttributeError, which
            # stops the worker (seen when a task rejected its message after a failover).
            raise redis.ConnectionError("the channel's connection is closed")
        shared = self._shared_client
        if shared is None or shared.connection_pool is not self.pool:
            shared = self._shared_client = self._create_client()
        yield shared


class Transport(kombu_redis.Transport):
    Channel = Channel


class SentinelChannel(Channel, kombu_redis.SentinelChannel):
    """kombu's SentinelChannel (the pool of the primary the Sentinels name) with our channel's client
    reuse, heartbeats and restores."""

    from_transport_options = tuple(dict.fromkeys(  # type: ignore[assignment]
        Channel.from_transport_options + kombu_redis.SentinelChannel.from_transport_options))


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = SentinelChannel
