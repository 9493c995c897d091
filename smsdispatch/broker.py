"""The broker: every broker-specific Celery and kombu option, for Redis (the default) or RabbitMQ.

SMSDISPATCH_BROKER_URL picks it; unset, REDIS_URL is the broker too. Records, the ledger and Celery's
results stay in REDIS_URL whichever the broker is. worker.create_app asks this module once
(`celery_options`, `task_queues`); the rest of the code asks `Settings.amqp_broker` where a decision
depends on the broker (the sweeper's queue peek and the metrics' queue lengths: `queue_lengths`).

Redis (redis://, rediss://, unix://, sentinel://): our kombu transport (redis_transport.py), the
visibility timeout in all three places (celery#7651), a quick restore of dead workers' messages.

RabbitMQ (amqp://, amqps://):

- quorum queues (``x-queue-type: quorum``, replicated by Raft on a cluster, on disk on one node), each
  bound to a *topic* exchange of its own name: Celery's native delayed delivery routes a countdown
  through its ``celery_delayed_*`` exchanges and does not support direct exchanges;
- native delayed delivery (Celery 5.5+, kombu 5.5+): a countdown, an ETA, a retry's backoff waits in
  RabbitMQ, not in a worker's memory, and reaches the queue when due. Its delays are whole seconds
  (kombu truncates them, and refuses one under a second), so our producer rounds every delay up
  (`whole_seconds`): a message never runs before its time;
- publisher confirms (``confirm_publish``): `.delay()` returns once RabbitMQ has the message (on a
  quorum queue: once a majority has written it), and a refused publish raises instead of vanishing.
  Task events (Flower) are published without confirms (task_events.py): a confirm wait in the
  worker's event loop stalls consumption;
- late acks as on Redis: a message comes back when its worker's connection closes (a killed worker:
  at once), or after RabbitMQ's consumer_timeout (RABBITMQ_CONSUMER_TIMEOUT says what it is);
- prefetch: the worker's concurrency x worker_prefetch_multiplier (1), per consumer: quorum queues
  support no global QoS, which Celery detects (worker_detect_quorum_queues).
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

from kombu import Connection, Exchange, Queue

from . import sentinel
from .config import Settings, broker_scheme

#: The queue type of our queues and of the native delayed delivery's own queues on RabbitMQ.
QUEUE_TYPE = "quorum"


def celery_options(settings: Settings) -> dict[str, Any]:
    """Celery's broker settings for `settings`: the URL, the transport and its options."""
    if settings.amqp_broker:
        return _amqp_options(settings)
    return _redis_options(settings)


def task_queues(settings: Settings, names: tuple[str, ...]) -> list[Queue]:
    """The queues of these names: plain ones on Redis; quorum queues on topic exchanges on RabbitMQ."""
    if not settings.amqp_broker:
        return [Queue(name) for name in names]
    return [Queue(name, Exchange(name, type="topic", durable=True), routing_key=name, durable=True,
                  queue_arguments={"x-queue-type": QUEUE_TYPE}) for name in names]


# --- Redis ---------------------------------------------------------------------------------------

def _redis_options(settings: Settings) -> dict[str, Any]:
    transport = result_transport_options(settings)
    return {
        "broker_url": settings.celery_broker_url,
        # The visibility timeout in all three places (celery#7651).
        # The broker's transport also takes our key prefix and WORKER_LOST_AFTER (redis_transport.py: a dead
        # worker's messages come back in seconds, not after the visibility timeout).
        "broker_transport_options": {**transport, "smsdispatch_key_prefix": settings.key_prefix,
                                     "worker_lost_after": settings.worker_lost_after},
        "visibility_timeout": settings.visibility_timeout,
        # kombu's Redis transport, reusing one client per channel (redis_transport.py): a publish, an ack
        # or a task event no longer builds a redis-py client first. For redis:// and sentinel:// only:
        # kombu picks its TLS defaults for rediss:// from the URL's scheme, which a named transport would hide.
        "broker_transport": _redis_transport(settings.celery_broker_url),
    }


def result_transport_options(settings: Settings) -> dict[str, Any]:
    """The Redis transport options, for the result backend (always Redis) and a Redis broker."""
    return {
        "visibility_timeout": settings.visibility_timeout,
        # kombu sweeps unacknowledged messages of dead workers back into the queue only every
        # interval x throttle seconds (10 x 10 by default). Sweep every min(10 s, VT/4) instead: a
        # crashed worker's messages come back soon after the visibility timeout, for one cheap
        # Redis query per sweep.
        "unacked_restore_interval": max(1, min(10, settings.visibility_timeout // 4)),
        "unacked_restore_throttle": 1,
        # behind Sentinel: the primary's name and how to reach the Sentinels (sentinel.py)
        **_sentinel_options(settings),
    }


def broker_is_store(settings: Settings, transport: Any) -> bool:
    """True when the broker is our Redis transport on the store's own Redis (no separate BROKER_URL;
    redis:// or sentinel://), and the app's `broker_transport` (`transport`) is still the one we set:
    a send_sms publish can then write its `queued` record in the same script
    (redis_transport.recording_publish). Otherwise the record is written first, in its own round trip."""
    ours = _redis_transport(settings.redis_url)
    return settings.celery_broker_url == settings.redis_url and ours is not None and transport == ours


def _redis_transport(url: str) -> str | None:
    """Our kombu transport for the URL's scheme (redis_transport.py), or None: kombu's own."""
    return {"redis": "smsdispatch.redis_transport:Transport",
            "sentinel": "smsdispatch.redis_transport:SentinelTransport"}.get(broker_scheme(url))


def _sentinel_options(settings: Settings) -> dict[str, Any]:
    """kombu's and Celery's transport options for a sentinel:// REDIS_URL (the same for the broker and
    the result backend); none for any other URL."""
    if not sentinel.is_sentinel(settings.redis_url) or not settings.sentinel_master:
        return {}
    password = settings.sentinel_password.get_secret_value() if settings.sentinel_password else None
    return sentinel.transport_options(settings.sentinel_master, password)


# --- RabbitMQ ------------------------------------------------------------------------------------

def _amqp_options(settings: Settings) -> dict[str, Any]:
    return {
        "broker_url": settings.celery_broker_url,
        "broker_transport": None,
        # every publish waits for RabbitMQ's basic.ack; a nack raises (kombu's pyamqp transport)
        "broker_transport_options": {"confirm_publish": True},
        # countdowns, ETAs and retries wait in RabbitMQ (its celery_delayed_* exchanges and queues,
        # declared by each worker at start-up), on quorum queues like ours
        "broker_native_delayed_delivery_queue_type": QUEUE_TYPE,
        "worker_detect_quorum_queues": True,
        "task_default_exchange_type": "topic",
        "task_default_queue_type": QUEUE_TYPE,
    }


def event_transport_options(settings: Settings) -> dict[str, Any] | None:
    """Transport options for the worker's task-event connection (task_events.Consumer): without
    publisher confirms on RabbitMQ; None: the broker's own."""
    if not settings.amqp_broker:
        return None
    return {"confirm_publish": False}


def whole_seconds(countdown: Any, eta: Any, now: datetime | None = None) -> tuple[Any, Any]:
    """(countdown, eta) with a future delay rounded up to whole seconds, as a countdown: RabbitMQ's
    native delayed delivery counts whole seconds only (kombu truncates 1.5 s to 1 and refuses 0.5 s), so
    unrounded a message would arrive before its time, or not be published at all. A delay that is not in
    the future is left as given (the message goes to its queue at once)."""
    delay: float | None = None
    if eta is not None:
        when = datetime.fromisoformat(eta) if isinstance(eta, str) else eta
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        delay = (when - (now or datetime.now(timezone.utc))).total_seconds()
    elif countdown is not None:
        delay = float(countdown)
    if delay is None or delay <= 0:
        return countdown, eta
    return math.ceil(delay), None


def queue_lengths(settings: Settings, names: tuple[str, ...], *, timeout: float = 2.0) -> dict[str, int | None]:
    """Ready messages in each queue, read from RabbitMQ (a passive queue.declare: message_count; not
    counting messages delivered to workers and unacknowledged, which AMQP does not tell). None for a
    queue that does not exist yet."""
    lengths: dict[str, int | None] = {}
    with Connection(settings.celery_broker_url, connect_timeout=timeout,
                    transport_options={"confirm_publish": False}) as conn:
        conn.ensure_connection(max_retries=1, timeout=timeout)
        for name in names:
            channel = conn.channel()
            try:
                lengths[name] = channel.queue_declare(queue=name, passive=True).message_count
            except conn.channel_errors:     # 404 NOT_FOUND closes the channel
                lengths[name] = None
            finally:
                try:
                    channel.close()
                except Exception:       # noqa: BLE001 (already closed by the broker)
                    pass
    return lengths
