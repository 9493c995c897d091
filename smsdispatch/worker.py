"""The Celery app: ``celery -A smsdispatch.worker worker|beat|flower``.

`create_app(settings)` builds an app (`SmsApp`) with every task of tasks.py; `app` here is the default
one, built on first use from the environment (a bad setting stops start-up with a ConfigError naming
it); no connection opens until a task is sent or run.
Recommended worker: ``--pool threads --concurrency 20``: a send is I/O bound (one HTTP call), threads
share one HTTP connection pool per gateway and one Redis pool, and use far less memory than prefork.
A worker consumes three queues: SMSDISPATCH_QUEUE (sends, batches, reminders), the same name with
".retry" (retries, and messages the sweeper publishes again) and with ".periodic" (beat's work); a
worker started with ``-Q`` must name all three.
The broker (Redis, or RabbitMQ with SMSDISPATCH_BROKER_URL=amqp://...) is configured by broker.py.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any, Callable, TypeVar, cast

import redis
from celery import Celery, signals

from . import broker, redischeck
from .batch import Batches
from .celery_results import DEFAULT_TTL as DEFAULT_RESULT_TTL
from .config import Settings, load_settings, settings_from
from .dispatch import Dispatcher
from .errors import ConfigError
from .logs import install as install_logging
from .polling import Poller
from .redisclient import connect_to
from .reminders import NewReminder, Reminders
from .tasks import (
    POLL_BALANCE,
    POLL_STATUS,
    RELEASE_REMINDERS,
    SEND_BATCH,
    SEND_REMINDER,
    SEND_SMS,
    SWEEP,
    PrivateTask,
    SendBatch,
    SendSms,
    queue_names,
    register_tasks,
    release_due,
)

log = logging.getLogger("smsdispatch.worker")
T = TypeVar("T")

#: Beat's tasks, routed to the periodic queue (SMSDISPATCH_QUEUE + ".periodic").
PERIODIC_TASKS = (RELEASE_REMINDERS, POLL_STATUS, POLL_BALANCE, SWEEP)


class Runtime:
    """What tasks need at run time (`app.runtime`), each part built on first use in each process (never
    at import). A part given to the constructor is used instead of building one: tests hand in a
    dispatcher over fakeredis, or stand-ins for batches and reminders."""

    def __init__(self, settings: Settings, app: Celery, *, redis: redis.Redis | None = None,
                 dispatcher: Dispatcher | None = None, batches: Batches | None = None,
                 reminders: Reminders | None = None, poller: Poller | None = None) -> None:
        self.settings = settings
        self.app = app
        self._redis, self._dispatcher, self._batches = redis, dispatcher, batches
        self._reminders, self._poller = reminders, poller
        self._building = threading.RLock()       # a worker's threads build each part once

    def _part(self, name: str, build: Callable[[], T]) -> T:
        part = getattr(self, name)
        if part is None:
            with self._building:
                part = getattr(self, name)
                if part is None:
                    part = build()
                    setattr(self, name, part)
        return part

    @property
    def redis(self) -> redis.Redis:
        return self._part("_redis", lambda: connect_to(self.settings, health_check_interval=30))

    @property
    def dispatcher(self) -> Dispatcher:
        return self._part("_dispatcher", self._build_dispatcher)

    def _build_dispatcher(self) -> Dispatcher:
        expires = self.app.conf.result_expires
        ttl = expires.total_seconds() if hasattr(expires, "total_seconds") else expires
        return Dispatcher(self.settings, self.redis, result_ttl=int(ttl or 0) or DEFAULT_RESULT_TTL)

    @property
    def batches(self) -> Batches:
        return self._part("_batches", lambda: Batches(self.dispatcher))

    @property
    def reminders(self) -> Reminders:
        return self._part("_reminders", lambda: Reminders(
            self.redis, self.dispatcher.keys, default_region=self.settings.default_region,
            ttl=self.settings.record_ttl, validate=lambda kwargs: self.dispatcher.prepare(kwargs, "reminder-check")))

    @property
    def poller(self) -> Poller:
        return self._part("_poller", lambda: Poller(self.dispatcher))

    @property
    def records_with_publish(self) -> bool:
        """Whether a send_sms publish writes its `queued` record in the same round trip
        (broker.broker_is_store), unless Celery runs tasks eagerly (nothing is published then) or the
        app was given another broker transport."""
        conf = self.app.conf
        return not conf.task_always_eager and broker.broker_is_store(self.settings, conf.broker_transport)

    def schedule_reminder(self, kwargs: dict[str, Any], send_at: Any) -> str:
        """Validate and store the reminder; publish it at once if it is already within the horizon."""
        reminder = self.reminders.check(kwargs, send_at)
        self.store_reminder(reminder)
        return reminder.reminder_id

    def store_reminder(self, reminder: NewReminder) -> None:
        """Store a checked reminder first; publish it at once if it is already within the horizon."""
        now = time.time()
        self.reminders.store(reminder, now=now)
        if reminder.send_at <= now + self.settings.reminder_horizon:
            release_due(self, self.app.tasks[SEND_REMINDER], now=now)


class SmsApp(Celery):
    """The Celery app of smsdispatch: Celery's, with the run-time context its tasks reach (`runtime`)
    and its public tasks typed. Build one with `create_app`."""

    runtime: Runtime

    @property
    def send_sms(self) -> SendSms:
        return cast(SendSms, self.tasks[SEND_SMS])

    @property
    def send_batch(self) -> SendBatch:
        return cast(SendBatch, self.tasks[SEND_BATCH])

    def send_task(self, name: str, args: Any = None, kwargs: Any = None, countdown: Any = None,
                  eta: Any = None, *rest: Any, **options: Any) -> Any:
        """Celery's, with a delay rounded up to whole seconds on RabbitMQ (broker.whole_seconds): every
        publish ends here (`.delay`, `apply_async`, a retry, a reminder's release)."""
        if self.runtime.settings.amqp_broker and (countdown is not None or eta is not None):
            countdown, eta = broker.whole_seconds(countdown, eta)
        return super().send_task(name, args, kwargs, countdown, eta, *rest, **options)


def create_app(settings: Settings | None = None) -> SmsApp:
    """An app with every smsdispatch task, for `settings` (default: read from the environment). A web
    app may build its own with its own settings; nothing connects until a task is sent or run."""
    settings = settings or load_settings()
    app = SmsApp("smsdispatch", broker=settings.celery_broker_url, backend=settings.redis_url,
                 set_as_current=False, task_cls=PrivateTask)
    _configure(app, settings)
    _route(app, settings)
    app.runtime = Runtime(settings, app)
    register_tasks(app)
    return app


def _configure(app: Celery, settings: Settings) -> None:
    """Celery's and kombu's settings: JSON only, late acks, the broker's own options (broker.py)."""
    app.conf.update(
        # JSON only: a pickle message is refused by the consumer and never deserialised.
        task_serializer="json", result_serializer="json",
        accept_content=["json"], result_accept_content=["json"],
        # Late ack + requeue on a lost worker: a killed worker's message runs again, and the ledger
        # makes that safe (no second send).
        task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        # The result backend is Redis whatever the broker (the visibility timeout, Sentinel's options).
        result_backend_transport_options=broker.result_transport_options(settings),
        task_default_queue=settings.queue,
        # Events for Flower. Workers send them (received, started, succeeded, retried, failed); the
        # producer's "task-sent" event is off: it cost a fifth of every .delay() (bench/), and a message
        # not yet received is visible anyway, as `queued` in our records (`smsdispatch status`).
        worker_send_task_events=True, task_send_sent_event=False,
        result_extended=False, result_backend_thread_safe=True,
        broker_connection_retry_on_startup=True,
        # Task events go out in batches, every 0.1 s (task_events.py), not one publish per event.
        worker_consumer="smsdispatch.task_events:Consumer",
        worker_hijack_root_logger=True,
        # beat records every pass of its loop in Redis (beat.py, for health.py), and wakes often enough
        # that an idle beat still does so well within BEAT_STALE_AFTER
        beat_scheduler="smsdispatch.beat:Scheduler", beat_max_loop_interval=settings.beat_stale_after / 4,
        # the broker: URL, transport and its options, for Redis or RabbitMQ
        **broker.celery_options(settings),
    )


def _route(app: Celery, settings: Settings) -> None:
    """The three queues every worker consumes, what goes where, and beat's schedule."""
    # Beat's periodic work has a queue of its own, which every worker consumes besides the sends (kombu
    # takes turns between a worker's queues). On the send queue a sweep or a reminder release waited
    # behind every send of a backlog and expired unrun: the chaos run under 25% faults saw 93 of 95
    # sweeps thrown away, and messages whose publish was lost stayed `queued`.
    # Retries have a queue of their own too: on the send queue a retry waited behind the whole backlog,
    # long past its countdown, and the sweeper took it for lost and published it again (the single-
    # gateway chaos run under 25% faults: 519 such republishes for 6,000 messages).
    sends, retries, periodic = queue_names(settings.queue)
    app.conf.task_queues = broker.task_queues(settings, (sends, retries, periodic))
    app.conf.task_routes = {task: {"queue": periodic} for task in PERIODIC_TASKS}
    app.conf.beat_schedule = {
        f"smsdispatch-{name}": {"task": task, "schedule": every, "options": {"expires": max(every * 2, 10)}}
        for name, task, every in [("release-reminders", RELEASE_REMINDERS, settings.reminder_poll_interval),
                                  ("poll-delivery-status", POLL_STATUS, settings.status_poll_interval),
                                  ("poll-balance", POLL_BALANCE, settings.balance_poll_interval),
                                  ("sweep-stuck-messages", SWEEP, settings.sweep_interval)]
    }


@signals.worker_init.connect
def _check_redis(sender=None, **_) -> None:
    """A worker (not a producer, beat or Flower) refuses an evicting Redis before taking any work
    (redischeck.py). SystemExit: Celery logs and swallows an exception a signal handler raises."""
    runtime = getattr(getattr(sender, "app", None), "runtime", None)
    if not isinstance(runtime, Runtime):
        return
    try:
        redischeck.check(runtime.redis, allow_unsafe=runtime.settings.allow_unsafe_redis,
                         claim_replicas=runtime.settings.claim_replicas)
    except ConfigError as e:
        log.critical("not starting: %s", e)
        raise SystemExit(f"smsdispatch worker not started: {e}") from None


@signals.after_setup_logger.connect
@signals.after_setup_task_logger.connect
def _worker_logs(logger: logging.Logger, **_) -> None:
    """Every log line of worker and beat redacted, and as JSON with LOG_FORMAT=json (logs.py)."""
    install_logging(logger, _log_format())


def _log_format() -> str:
    """The default app's LOG_FORMAT (the app `celery -A` runs), else the environment's."""
    try:
        return (_default.runtime.settings if _default is not None else load_settings()).log_format
    except ConfigError:         # the worker stops on it with its own message; log lines stay text
        return "text"


_default_lock = threading.Lock()
_default: SmsApp | None = None


def default_app() -> SmsApp:
    """The app of ``celery -A smsdispatch.worker`` and of `smsdispatch.send_sms`: the one `configure`
    built, else built from the environment on first use (not at import), once per process."""
    global _default
    with _default_lock:
        if _default is None:
            _default = create_app()
        return _default


def configure(settings: Settings | Mapping[str, Any] | None = None, /, **overrides: Any) -> SmsApp:
    """Make the default app (`smsdispatch.send_sms`, ``celery -A smsdispatch.worker``) one built from
    a host app's settings (config.settings_from: a Settings, or a mapping such as Django's
    ``SMSDISPATCH``), and return it. Call it where the host app starts (Django's AppConfig.ready,
    Flask's create_app), in the web process and in the module its worker is started from. A second
    call with other settings replaces the app; one with the same settings keeps it."""
    global _default
    built = settings_from(settings, **overrides)
    with _default_lock:
        if _default is None or _default.runtime.settings != built:
            _default = create_app(built)
        return _default


def __getattr__(name: str) -> SmsApp:
    if name == "app":           # `celery -A smsdispatch.worker` finds it here
        return default_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
