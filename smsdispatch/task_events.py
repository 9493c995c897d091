"""The worker's consumer and task requests: task events published in batches by a timer, not once per event.

Celery's worker buffers its task events (received, started, succeeded... Flower's input) and, with
its default consumer, asks the event loop to publish them at its next turn after each one. At a
hundred tasks a second that is 2.3 PUBLISHes per task, each through kombu's whole publish path:
1.2 ms of worker CPU per message in bench/ part (b), more than the rest of smsdispatch's own work.
This consumer publishes them every EVENT_FLUSH_INTERVAL instead, all buffered events in one
`task-multi` message (Celery's EventDispatcher still flushes at once when 24 are buffered). Every
event still reaches Flower, at most EVENT_FLUSH_INTERVAL later; at worker shutdown Celery flushes
what is left. Used through the ``worker_consumer`` setting (worker.py).

On RabbitMQ the events' connection has no publisher confirms (broker.event_transport_options): a
publish with confirms waits for RabbitMQ's answer, and that wait, in the worker's event loop, froze
consumption. An event is worth no such wait; a task message still is (its publishes keep confirms).
"""

from __future__ import annotations

from celery.worker.consumer import Consumer as CeleryConsumer
from celery.worker.request import Request

from . import broker
from .redact import shown_arguments
from .tasks import SEND_BATCH, SEND_SMS

EVENT_FLUSH_INTERVAL = 0.1


class Consumer(CeleryConsumer):
    _event_flush_timer = None

    def register_with_event_loop(self, hub) -> None:
        super().register_with_event_loop(hub)
        if self._event_flush_timer is not None:       # the loop restarted (a reconnect): one timer only
            self._event_flush_timer.cancel()
        self._event_flush_timer = hub.call_repeatedly(EVENT_FLUSH_INTERVAL, self._flush_events)

    def on_send_event_buffered(self) -> None:
        """Nothing to do now: the timer publishes the buffer."""

    def connection_for_write(self, url=None, heartbeat=None):
        """The connection Celery's Events step publishes task events through: on RabbitMQ, one
        without publisher confirms (see the module's docstring)."""
        runtime = getattr(self.app, "runtime", None)
        options = broker.event_transport_options(runtime.settings) if runtime is not None else None
        if options is None:
            return super().connection_for_write(url=url, heartbeat=heartbeat)
        return self.ensure_connected(self.app.connection_for_write(url=url, heartbeat=heartbeat,
                                                                   transport_options=options))


class MaskedRequest(Request):
    """A task request that shows its arguments only masked (redact.shown_arguments), whoever produced
    the message: a web app calling ``send_task("smsdispatch.send_sms", kwargs={...})`` puts the raw
    number and text in the message's `argsrepr`/`kwargsrepr`. Those reprs feed the task-received event
    (Flower's task list), the "Task ... received" and "... succeeded"/failure log lines; `info()`
    answers `celery inspect active/reserved/scheduled/query_task`, which by default show the raw
    arguments. The task itself still runs with the real ones. The `Request` of tasks.PrivateTask."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        positional = ("to", "text") if self._type == SEND_SMS else ("messages",) if self._type == SEND_BATCH else ()
        self._argsrepr, self._kwargsrepr = shown_arguments(self._args, self._kwargs, positional=positional)
        self._request_dict["argsrepr"], self._request_dict["kwargsrepr"] = self._argsrepr, self._kwargsrepr

    def info(self, safe: bool = False) -> dict:
        return super().info(safe=True)
