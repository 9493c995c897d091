"""Thin Celery tasks: hand the raw kwargs to the dispatcher, and retry when it says so.

Task names are explicit and public: web apps may call them by name with ``app.send_task``.

A retry is never lost (`RetryOrRequeue`, the base of send_sms, send_chunk and send_reminder). A task
retries when the dispatcher asks it to, and when Redis failed under it (nothing was decided for sure;
the ledger makes the rerun safe). Celery's `Task.retry` publishes the retry to the broker, which is
the same Redis; when that publish fails, Celery raises ``Reject(requeue=False)`` and the worker
discards the message, which for a message published by name (no `queued` record, nothing for the
sweeper to find) loses it without a trace. So when the publish fails with a Redis or broker error,
the task hands its own message back instead, with a requeueing Reject, after waiting the retry's
countdown (at most REQUEUE_PAUSE_MAX seconds):

- Redis still away: the reject cannot reach it either (nor does a worker that lost its broker
  connection ack or reject at all). The message stays where kombu put it on delivery, in Redis's
  `unacked` hash, and a live worker moves it back to the queue once the visibility timeout has
  passed. Redis answering OOM or READONLY refuses the requeue too: the same.
- Redis back by then: the message goes back to the end of the queue and runs again soon.
- Redis failing our store while the broker side works: the retry publish succeeds, and this is the
  ordinary countdown retry, acknowledged as usual. Only when the publish fails too (send_sms's
  publish writes the `queued` record first) while the requeue works does the message come straight
  back; the wait before each requeue keeps it from looping at full speed.

Any other publish failure (a bug) stays Celery's Reject(requeue=False).
"""

from __future__ import annotations

import copy
import functools
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, cast

import redis
from celery import Celery, Task
from celery.exceptions import Reject
from celery.utils import uuid
from kombu.exceptions import OperationalError

from .batch import CheckedBatch, ChunkOutcome, batch_id_for
from .contrib.django import commit as django_commit
from .dispatch import Outcome, message_id_for
from .errors import ValidationError
from .polling import QUEUED_AT_HEADER
from .redact import shown_arguments
from .redis_transport import recording_publish
from .sendrequest import (
    FIELDS,
    MAX_ID_CHARS,
    MAX_IDEMPOTENCY_KEY_CHARS,
    check_bounds,
    check_encodable,
    check_id,
    merge_arguments,
    valid_unicode,
)

if TYPE_CHECKING:
    from .worker import Runtime, SmsApp

SEND_SMS = "smsdispatch.send_sms"
SEND_BATCH = "smsdispatch.send_batch"
SEND_CHUNK = "smsdispatch.send_chunk"
SEND_REMINDER = "smsdispatch.send_reminder"
RELEASE_REMINDERS = "smsdispatch.release_due_reminders"
POLL_STATUS = "smsdispatch.poll_delivery_status"
POLL_BALANCE = "smsdispatch.poll_balance"
SWEEP = "smsdispatch.sweep_stuck_messages"

log = logging.getLogger("smsdispatch.tasks")

#: The longest a task waits before handing back a message whose retry could not be published.
REQUEUE_PAUSE_MAX = 5.0

#: What a failed retry publish may raise when Redis (store or broker) is away or refusing.
PUBLISH_ERRORS = (redis.RedisError, OperationalError, OSError)


#: Every one of our tasks: arguments shown only masked by the worker (consumer.MaskedRequest), whatever
#: the producer put in the message's `argsrepr`/`kwargsrepr` (a by-name `send_task` puts the raw ones).
MASKED_REQUEST = "smsdispatch.task_events:MaskedRequest"


class PrivateTask(Task):
    """The base of every smsdispatch task (the app's `task_cls`): its worker-side request shows Flower,
    `celery inspect` and the worker's log only masked arguments."""

    Request = MASKED_REQUEST


class RetryOrRequeue(PrivateTask):
    """A task whose retry goes to the retry queue (not behind the send queue's backlog) and, when it
    cannot be published, becomes a redelivery of the message itself (see the module's docstring)."""

    def retry(self, args=None, kwargs=None, exc=None, throw=True, eta=None, countdown=None, max_retries=None,
              **options):
        options.setdefault("queue", retry_queue(self.app))
        try:
            return super().retry(args, kwargs, exc, throw, eta, countdown, max_retries, **options)
        except Reject as rejected:
            # Task.retry raises Reject only when publishing the retry failed: Reject(publish error, False).
            if rejected.requeue or not isinstance(rejected.reason, PUBLISH_ERRORS):
                raise
            pause = min(max(float(countdown or 0), 0.0), REQUEUE_PAUSE_MAX)
            log.warning("task %s[%s]: its retry could not be published (%s: %s); message left for the broker "
                        "to redeliver (handed back in %.1fs)", self.name, self.request.id,
                        type(rejected.reason).__name__, rejected.reason, pause)
            time.sleep(pause)
            raise Reject(rejected.reason, requeue=True) from None


class SmsTask(PrivateTask):
    """A task of an SmsApp: reaches what it needs at run time through `self.runtime` (worker.Runtime)."""

    @property
    def runtime(self) -> Runtime:
        return cast("SmsApp", self.app).runtime

    def deliveries_past_limit(self) -> int:
        """A redelivered message (the broker handed it out again: no worker finished it) is counted in
        Redis; past MAX_DELIVERIES the count is returned, else 0. A first delivery and Celery's own
        retries (new messages) cost nothing here."""
        if not (self.request.delivery_info or {}).get("redelivered"):
            return 0
        deliveries = self.runtime.dispatcher.redelivered(self.request.id) + 1
        return deliveries if deliveries > self.runtime.settings.max_deliveries else 0

    def poisoned(self, kwargs: dict[str, Any], *, store_result: bool = False) -> Outcome | None:
        """A poison message's outcome instead of a run (Dispatcher.poisoned), or None to run it."""
        deliveries = self.deliveries_past_limit()
        if not deliveries:
            return None
        return self.runtime.dispatcher.poisoned(kwargs, task_id=self.request.id, deliveries=deliveries,
                                                store_result=store_result)


class StoreRetry(SmsTask, RetryOrRequeue):
    """A sending task: a Redis error under it, or a dispatcher's answer "later", becomes a retry. When
    our store failed mid-way nothing was decided for sure: the task runs again later, and the ledger
    makes the rerun safe (a claim left behind is reconciled, never blindly resent)."""

    max_retries = None      # retried as long as it takes: the dispatcher gives up on its own terms

    @contextmanager
    def retrying_store_errors(self) -> Iterator[None]:
        try:
            yield
        except redis.RedisError as e:
            raise self.retry(exc=e, countdown=self.runtime.settings.backoff_base, max_retries=None) from None

    def retry_if_asked(self, outcome: Outcome | ChunkOutcome) -> None:
        if outcome.retry_in is not None:
            raise self.retry(countdown=outcome.retry_in, max_retries=None)

    def result_or_retry(self, outcome: Outcome) -> dict[str, Any]:
        self.retry_if_asked(outcome)
        return final_result(outcome)


class SendSms(StoreRetry):
    """send_sms(to, text, *, sender=None, gateway=None, idempotency_key=None, callback_url=None,
    metadata=None, options=None): send one SMS exactly once; returns {message_id, status, gateway,
    gateway_message_id, attempts, idempotency_key, segments, error}. Bad input ends `failed` (code
    `validation`), whatever its shape: the signature takes anything (even a keyword named `self`, or
    `to` both by position and by name) so that no input can make the task itself raise.

    Published with ignore_result (apply_async), Celery does not store the result: we do, with the
    record (celery_results.py). Retries and errors (an unexpected exception) Celery still stores."""

    name = SEND_SMS
    typing = False
    store_errors_even_if_ignored = True

    def run(self, /, *args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            check_id("task_id", self.request.id)
        except ValidationError as e:    # sent by name with an id that would reach into other keys: no record
            log.info("task %r rejected: %s", str(self.request.id)[:MAX_ID_CHARS], e)
            return {"message_id": None, "status": "failed", "error": {"code": "validation", "message": str(e)}}
        with self.retrying_store_errors():
            try:
                kwargs = merge_arguments(args, kwargs)
                check_encodable(kwargs)     # before the dispatcher derives ids from the key or writes a record
            except ValidationError as e:
                return self.stored(self.refuse(kwargs, str(e)))
            kwargs = {k: v for k, v in kwargs.items() if not (k in FIELDS and v is None)}
            outcome = self.poisoned(kwargs, store_result=True) or \
                self.runtime.dispatcher.send(kwargs, task_id=self.request.id, store_result=True)
            if outcome.retry_in is None and not outcome.stored:
                self.stored(final_result(outcome))
        return self.result_or_retry(outcome)

    def stored(self, result: dict[str, Any]) -> dict[str, Any]:
        """Store a final result as this task's Celery result (send_sms ignores Celery's storing)."""
        self.runtime.dispatcher.results.store(self.request.id, result)
        return result

    def refuse(self, kwargs: Any, reason: str) -> dict[str, Any]:
        """Record a submission whose arguments the dispatcher cannot even take as `failed` (validation).
        Its record is keyed like any refused message, by its idempotency key when that one is usable."""
        key = kwargs.get("idempotency_key") if isinstance(kwargs, dict) else None
        if not (isinstance(key, str) and key and len(key) <= MAX_IDEMPOTENCY_KEY_CHARS and valid_unicode(key)):
            key = None
        message_id = message_id_for(key, self.request.id)
        log.info("message %s rejected: %s", message_id, reason)
        return self.runtime.dispatcher.reject(message_id, self.request.id, {"idempotency_key": key} if key else {},
                                              "validation", reason)

    def apply_async(self, args=None, kwargs=None, task_id=None, **options):
        """Record the message as `queued` before publishing it (docs/celery-redis.md H6): when the
        broker is the store's own Redis, in the same script as the push (Runtime.records_with_publish),
        else first, in a round trip of its own. Shows Flower a masked number instead of the real one.
        Raises ValidationError here, at the producer, for arguments that cannot even be recorded: not
        JSON (a datetime, bytes, a set), not valid Unicode (a lone surrogate), or one argument given
        twice. Everything else is validated by the worker, which records the refusal."""
        task_id, kwargs = self.checked(args, kwargs, task_id)      # before Redis holds any of it
        record = self.runtime.dispatcher.queued_record(kwargs, task_id=task_id, not_before=_not_before(options))
        # when it joined the queue: the sweeper reads it off the queue's oldest message (polling.py)
        options["headers"] = {**(options.get("headers") or {}), QUEUED_AT_HEADER: time.time()}
        options.setdefault("kwargsrepr", _masked_repr(kwargs))
        options.setdefault("argsrepr", "()")
        if not self.app.conf.task_always_eager:
            # The worker stores the result itself, with the record (celery_results.py): Celery need not,
            # nor subscribe to it now (a result is subscribed to when `.get()` asks for it).
            options.setdefault("ignore_result", True)
        # A publish that subscribes to its result first (ignore_result False: a retry of a message sent by
        # name) writes its record first too: with Redis away that fails at once, as a publish error (which
        # a retry turns into a requeue), not after the result backend's reconnection attempts.
        if self.runtime.records_with_publish and options.get("ignore_result"):
            # the record and the message in one script, one round trip (redis_transport.recording_publish)
            with recording_publish(task_id, record) as pending:
                result = super().apply_async((), kwargs, task_id=task_id, **options)
            if not pending.done:     # the publish did not reach our transport's _put: never a message unrecorded
                log.warning("message %s: published without its record being written with it; written now",
                            record.message_id)
                record.run()
        else:
            record.run()        # first, on its own: the broker is elsewhere (or nothing is published)
            result = super().apply_async((), kwargs, task_id=task_id, **options)
        result.ignored = False         # `.get()` waits for the result all the same
        return result

    def checked(self, args: Any, kwargs: Any, task_id: str | None) -> tuple[str, dict[str, Any]]:
        """What apply_async refuses at the producer, raised as ValidationError: a bad task id, arguments
        given twice, not JSON, not valid Unicode, or too large. Returns (task id, merged kwargs)."""
        check_id("task_id", task_id)
        kwargs = merge_arguments(args, kwargs)
        check_encodable(kwargs)
        check_bounds(kwargs, max_text_chars=self.runtime.settings.max_text_chars)
        return task_id or uuid(), kwargs

    def delay_on_commit(self, *args: Any, **kwargs: Any) -> str:
        """`delay`, once the caller's Django database transaction commits: `apply_async_on_commit`."""
        _no_using(kwargs)
        return self.apply_async_on_commit(args, kwargs)

    def apply_async_on_commit(self, args: Any = None, kwargs: Any = None, task_id: str | None = None, *,
                              using: str | None = None, **options: Any) -> str:
        """`apply_async`, once the transaction of Django database `using` commits; nothing is recorded
        or published if it rolls back. Returns the message id the message will have. What apply_async
        refuses (ValidationError) is raised here, at the call, inside the transaction: only the record
        and the publish wait for the commit. Without Django: ConfigError, first (contrib/django/commit.py).
        A message lost between the commit and the publish (the process dies, Redis is away) is not
        sent: smsdispatch.outbox.send_sms closes that gap."""
        django_commit.check()
        task_id, kwargs = self.checked(args, kwargs, task_id)
        _not_before(options)      # a malformed eta raises now, not after the commit
        kwargs = copy.deepcopy(kwargs)      # sent as checked, whatever the caller changes before the commit
        django_commit.on_commit(functools.partial(self.apply_async, (), kwargs, task_id=task_id, **options),
                                using=using)
        return message_id_for(kwargs.get("idempotency_key"), task_id)

    def __call__(self, /, *args, **kwargs):
        """Celery's Task.__call__ names its first parameter `self`, so a keyword argument `self` (bad
        input, e.g. sent by name) would raise TypeError inside Celery before send_sms could refuse it.
        Such a call goes straight to run (in the worker the request is already pushed); every other
        call takes Celery's way."""
        if "self" in kwargs:
            return self.run(*args, **kwargs)
        return super().__call__(*args, **kwargs)


class SendBatch(SmsTask):
    """send_batch(messages, *, gateway=None, batch_id=None, sender=None, idempotency_key=None): send many
    messages, each its own message with its own key; returns the batch summary. `messages` is a list of
    {to, text, idempotency_key?, metadata?}; `smsdispatch.get_batch(batch_id)` follows progress. (Inline
    `messages` only arrive here when a client calls the task by name.)"""

    name = SEND_BATCH
    typing = False
    max_retries = None

    def run(self, messages=None, *extra, gateway=None, batch_id=None, sender=None, idempotency_key=None,
            **unexpected) -> dict[str, Any]:
        try:
            check_id("batch_id", batch_id)
            check_id("task_id", self.request.id)
        except ValidationError as e:
            return _refused(None, str(e))
        batch_id = batch_id_for(batch_id, idempotency_key, self.request.id)
        if extra or unexpected:
            names = ", ".join([*(f"#{n + 2}" for n in range(len(extra))), *sorted(unexpected)])
            return _refused(batch_id, f"unexpected arguments: {names}")
        if messages is not None:
            try:
                self.runtime.batches.store(batch_id, messages, gateway=gateway, sender=sender,
                                           idempotency_key=idempotency_key, submission=self.request.id)
            except ValidationError as e:
                return _refused(batch_id, str(e))
        summary = self.runtime.batches.get(batch_id)
        if summary is None:
            return _refused(batch_id, "no such batch in Redis (expired or never stored)")
        send_chunk = self.app.tasks[SEND_CHUNK]
        chunk_tasks = [send_chunk.apply_async(kwargs={"batch_id": batch_id, "index": index,
                                                      "submission": self.request.id}).id
                       for index in range(summary["chunks"])]
        return summary | {"chunk_tasks": chunk_tasks}

    def apply_async(self, args=None, kwargs=None, task_id=None, **options):
        """Store the entries in Redis before publishing: the task message carries only the batch id,
        however large the batch. Raises ValidationError here, at the producer, for a malformed batch."""
        task_id, kwargs, batch = self.checked(args, kwargs, task_id)
        return self._store_and_publish(task_id, kwargs, batch, options)

    def checked(self, args: Any, kwargs: Any, task_id: str | None) -> tuple[str, dict[str, Any], CheckedBatch | None]:
        """What apply_async refuses at the producer, raised as ValidationError. Returns (task id, the
        task's kwargs with its batch id and without the entries, the checked entries or None)."""
        check_id("task_id", task_id)
        task_id = task_id or uuid()
        kwargs = dict(kwargs or {})
        if args:
            kwargs.setdefault("messages", args[0])
        messages = kwargs.pop("messages", None)
        check_id("batch_id", kwargs.get("batch_id"))
        kwargs["batch_id"] = batch_id_for(kwargs.get("batch_id"), kwargs.get("idempotency_key"), task_id)
        batch = None
        if messages is not None:
            batch = self.runtime.batches.check(kwargs["batch_id"], messages, gateway=kwargs.get("gateway"),
                                               sender=kwargs.get("sender"),
                                               idempotency_key=kwargs.get("idempotency_key"), submission=task_id)
        return task_id, kwargs, batch

    def _store_and_publish(self, task_id: str, kwargs: dict[str, Any], batch: CheckedBatch | None,
                           options: dict[str, Any]):
        if batch is not None:
            self.runtime.batches.write(batch)
        return super().apply_async((), kwargs, task_id=task_id, **options)

    def delay_on_commit(self, *args: Any, **kwargs: Any) -> str:
        """`delay`, once the caller's Django database transaction commits: `apply_async_on_commit`."""
        _no_using(kwargs)
        return self.apply_async_on_commit(args, kwargs)

    def apply_async_on_commit(self, args: Any = None, kwargs: Any = None, task_id: str | None = None, *,
                              using: str | None = None, **options: Any) -> str:
        """`apply_async`, once the transaction of Django database `using` commits: the entries are
        checked (ValidationError) now, at the call, and stored and published only after the commit;
        nothing if it rolls back. Returns the batch id."""
        django_commit.check()
        task_id, kwargs, batch = self.checked(args, kwargs, task_id)
        django_commit.on_commit(functools.partial(self._store_and_publish, task_id, kwargs, batch, dict(options)),
                                using=using)
        return str(kwargs["batch_id"])


class SendChunk(StoreRetry):
    """One chunk of a batch (send_batch publishes one per chunk)."""

    name = SEND_CHUNK

    def run(self, batch_id: str, index: int, submission: str) -> dict[str, int]:
        with self.retrying_store_errors():
            outcome = self.runtime.batches.run_chunk(batch_id, index, submission=submission,
                                                     poisoned=self.deliveries_past_limit())
        self.retry_if_asked(outcome)
        return dict(outcome.counts)


class SendReminder(StoreRetry):
    """Send a released reminder, unless it was cancelled; its key makes a double release harmless."""

    name = SEND_REMINDER

    def run(self, reminder_id: str) -> dict[str, Any]:
        reminders = self.runtime.reminders
        with self.retrying_store_errors():   # also around begin_send and finish: rerunning both is safe
            payload = reminders.begin_send(reminder_id)
            if payload is None:
                return {"reminder_id": reminder_id, "status": "cancelled"}
            outcome = self.poisoned(payload) or self.runtime.dispatcher.send(payload, task_id=self.request.id)
            if outcome.retry_in is None:
                reminders.finish(reminder_id, final_result(outcome))
        return self.result_or_retry(outcome) | {"reminder_id": reminder_id}


class ReleaseDueReminders(SmsTask):
    """Beat: publish the reminders that came within the horizon. Safe to run twice at once."""

    name = RELEASE_REMINDERS

    def run(self) -> int:
        return release_due(self.runtime, self.app.tasks[SEND_REMINDER], now=time.time())


class PollDeliveryStatus(SmsTask):
    """Beat: ask gateways what became of accepted messages; expire the ones too old to wait for."""

    name = POLL_STATUS

    def run(self) -> dict[str, int]:
        return self.runtime.poller.poll_status(at=time.time())


class PollBalance(SmsTask):
    """Beat: store every configured gateway's balance; alert below its threshold."""

    name = POLL_BALANCE

    def run(self) -> dict[str, Any]:
        return self.runtime.poller.poll_balance(at=time.time())


class SweepStuckMessages(SmsTask):
    """Beat: publish again messages whose publish or task was lost (safe: the ledger decides)."""

    name = SWEEP

    def run(self) -> int:
        again = self.runtime.poller.sweep(at=time.time())
        send_sms = self.app.tasks[SEND_SMS]
        for task_id, kwargs in again:       # late already: on the retry queue, not behind the backlog
            send_sms.apply_async(kwargs=kwargs, task_id=task_id, queue=retry_queue(self.app))
        return len(again)


#: Every task an SmsApp registers (worker.create_app), each under its public name.
TASKS: tuple[type[SmsTask], ...] = (SendSms, SendBatch, SendChunk, SendReminder, ReleaseDueReminders,
                                    PollDeliveryStatus, PollBalance, SweepStuckMessages)


def register_tasks(app: SmsApp) -> None:
    """Register every task on `app`, each through a subclass of its own: Celery binds a task class to
    one app (Task.bind sets class attributes), and each app (the worker's, a web app's, a test's) has
    its own tasks."""
    for cls in TASKS:
        app.register_task(type(cls.__name__, (cls,), {"__module__": cls.__module__, "__doc__": cls.__doc__})())


def final_result(outcome: Outcome) -> dict[str, Any]:
    """The result of a final outcome (no retry asked): the dispatcher always gives one."""
    assert outcome.result is not None, f"a final outcome without a result: {outcome!r}"
    return outcome.result


def _refused(batch_id: str | None, message: str) -> dict[str, Any]:
    return {"batch_id": batch_id, "status": "failed", "error": {"code": "validation", "message": message}}


def queue_names(queue: str) -> tuple[str, str, str]:
    """The queues every worker consumes, from SMSDISPATCH_QUEUE: (sends, retries and republished
    messages, beat's periodic work)."""
    return queue, f"{queue}.retry", f"{queue}.periodic"


def retry_queue(app: Celery) -> str:
    return queue_names(app.conf.task_default_queue)[1]


def release_due(runtime: Runtime, send_reminder: Task, *, now: float) -> int:
    """Move due reminders to `inflight`, publish each with its ETA, mark it queued."""
    reminders = runtime.reminders
    reminders.recover(older_than=now - 60)
    due = reminders.claim_due(until=now + runtime.settings.reminder_horizon, now=now)
    for d in due:
        eta = datetime.fromtimestamp(d.send_at, timezone.utc) if d.send_at > now else None
        send_reminder.apply_async(kwargs={"reminder_id": d.reminder_id}, eta=eta)
        reminders.published(d.reminder_id)
    return len(due)


def _no_using(kwargs: dict[str, Any]) -> None:
    """`using` is no task argument: the worker would refuse it long after the call meant a database."""
    if "using" in kwargs:
        raise TypeError("delay_on_commit passes its keyword arguments to the task; for another database "
                        "call apply_async_on_commit(args, kwargs, using=...)")


def _not_before(options: dict[str, Any]) -> float | None:
    """The epoch time an `eta=` or `countdown=` publish asks for, if any."""
    eta, countdown = options.get("eta"), options.get("countdown")
    if isinstance(eta, str):
        eta = datetime.fromisoformat(eta)
    if isinstance(eta, datetime):
        return (eta if eta.tzinfo else eta.replace(tzinfo=timezone.utc)).timestamp()
    if countdown:
        return time.time() + float(countdown)
    return None


def _masked_repr(kwargs: dict[str, Any]) -> str:
    return shown_arguments((), kwargs)[1]
