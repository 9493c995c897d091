"""The testing kit's machinery: while a `Harness` is active, every smsdispatch app in the process
publishes into it instead of its broker, and works on a fakeredis server of its own with memory
gateways. No Redis server, no worker, no network.

What is replaced, on the classes (so an app built before, during or after the harness starts is
covered: the default app, the one `smsdispatch.configure` built, a host's own `create_app`), and put
back on exit:

    SmsApp.send_task           the last step of every publish (`.delay`, `apply_async`, a retry, a batch's
                               chunks, a released reminder): the app's own calls land in the outbox; in
                               eager mode every task also runs, here
    Runtime._part              each runtime's Redis, dispatcher, batches, reminders, poller: built anew,
                               on the harness's fakeredis server, the dispatcher with memory gateways
                               (the app's own parts are untouched and used again after the harness)
    Runtime.schedule_reminder  the reminder lands in the outbox
    Runtime.records_with_publish  False: no broker's script writes the `queued` record with the message,
                               so SendSms.apply_async writes it first, as production does with another broker

Everything before the publish is the production code: `SendSms.apply_async` checks the arguments and
writes the `queued` record, `SendBatch.apply_async` checks and stores the entries, `schedule_reminder`
validates and stores the reminder. A call that raises in production raises in the test.

Eager mode runs each task as a worker would: its own `run`, under a worker-like request (so a retry is
a publish with a countdown, as in production), one at a time. A task published without a delay runs
before `.delay()` returns, in the publishing thread; one published with a delay (a retry, an `eta`
send, a reminder's release ahead of its time) waits in `scheduled` until `run_scheduled()`, which runs
it as if its time had come. Beat does not run: reminders days ahead are released by `run_scheduled()`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, ClassVar

from celery import states
from celery.exceptions import Ignore, Reject, Retry, TimeoutError
from celery.utils import uuid
from kombu import serialization

from ..batch import entry_key
from ..dispatch import message_id_for
from ..errors import ValidationError
from ..gateways import Gateways, build_gateway
from ..gateways.base import Gateway
from ..redact import redact
from ..reminders import parse_send_at
from ..sendrequest import FIELDS, check_encodable, merge_arguments
from ..tasks import SEND_BATCH, SEND_REMINDER, SEND_SMS, release_due
from ..worker import Runtime, SmsApp
from .memory import Failures, MemoryGateway, SentSms
from .outbox import BATCH, REMINDER, SMS, Outbox, OutboxSms

log = logging.getLogger("smsdispatch.testing")

#: The most task runs one drain may make: a task that publishes itself again without a delay, for ever,
#: fails the test instead of hanging it.
MAX_RUNS = 10_000
#: How far ahead `run_scheduled` releases reminders: "their time has come", whatever it is.
FAR_AHEAD = 100 * 365 * 24 * 3600.0
#: The worker name tasks see in their request (Flower would show it).
HOSTNAME = "smsdispatch-testing@localhost"


@dataclass
class Job:
    """One published task, as a worker would receive it."""
    app: SmsApp
    name: str
    args: tuple
    kwargs: dict
    task_id: str
    due: float | None = None         # epoch seconds it was published for (eta / countdown); None: now
    retries: int = 0
    queue: str | None = None
    headers: dict = field(default_factory=dict)

    def __repr__(self) -> str:       # no arguments: they hold numbers and texts
        when = "" if self.due is None else f", due={datetime.fromtimestamp(self.due, timezone.utc).isoformat()}"
        return f"Job({self.name}[{self.task_id}]{when})"


class Harness:
    """Active between `start()` and `stop()` (or as a context manager); one at a time per process."""

    _active: ClassVar[Harness | None] = None
    _active_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, *, eager: bool) -> None:
        try:
            import fakeredis
        except ImportError:
            raise ImportError("smsdispatch.testing needs fakeredis with Lua: pip install 'smsdispatch[testing]'") \
                from None
        self.eager = eager
        self.server = fakeredis.FakeServer()
        self._fakeredis = fakeredis
        self.outbox = Outbox()
        self.sent: list[SentSms] = []            # what the memory gateways got, in order
        self.failures = Failures()               # scripted for whichever gateway is called next
        self.gateways: dict[str, MemoryGateway] = {}
        self.scheduled: list[Job] = []
        self._queue: deque[Job] = deque()
        self._states: dict[str, tuple[str, Any]] = {}
        self._parts: dict[int, tuple[Runtime, dict[str, Any]]] = {}
        self._lock = threading.RLock()
        self._draining = threading.Lock()
        self._local = threading.local()
        self._undo: list[Callable[[], None]] = []

    # --- on and off ---------------------------------------------------------------------------

    def __enter__(self) -> Harness:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> Harness:
        with Harness._active_lock:
            if Harness._active is not None:
                raise RuntimeError("an smsdispatch.testing harness is already active in this process "
                                   "(sms_outbox and sms_eager cannot be used together)")
            Harness._active = self
        harness = self
        schedule_reminder = Runtime.schedule_reminder

        def send_task(app: SmsApp, name: str, args: Any = None, kwargs: Any = None, countdown: Any = None,
                      eta: Any = None, task_id: str | None = None, **options: Any) -> KitResult:
            return harness.publish(app, name, args, kwargs, countdown=countdown, eta=eta, task_id=task_id,
                                   options=options)

        def part(runtime: Runtime, name: str, build: Callable[[], Any]) -> Any:
            return harness.part(runtime, name, build)

        def scheduling(runtime: Runtime, kwargs: dict[str, Any], send_at: Any) -> str:
            return harness.schedule_reminder(schedule_reminder, runtime, kwargs, send_at)

        self._replace(SmsApp, "send_task", send_task)
        self._replace(Runtime, "_part", part)
        self._replace(Runtime, "schedule_reminder", scheduling)
        self._replace(Runtime, "records_with_publish", False)
        log.debug("testing harness on (%s)", "eager" if self.eager else "capturing")
        return self

    def stop(self) -> None:
        while self._undo:
            self._undo.pop()()
        with Harness._active_lock:
            if Harness._active is self:
                Harness._active = None
        log.debug("testing harness off")

    def _replace(self, cls: type, name: str, value: Any) -> None:
        missing = object()
        old = cls.__dict__.get(name, missing)
        setattr(cls, name, value)
        self._undo.append(lambda: delattr(cls, name) if old is missing else setattr(cls, name, old))

    # --- the runtimes' parts ------------------------------------------------------------------

    def part(self, runtime: Runtime, name: str, build: Callable[[], Any]) -> Any:
        """A runtime part (Runtime._part) built for the harness: Redis is the fakeredis server, the
        dispatcher gets memory gateways; the others are built as usual from those."""
        with self._lock:
            entry = self._parts.get(id(runtime))
            if entry is None or entry[0] is not runtime:
                entry = self._parts[id(runtime)] = (runtime, {})
            parts = entry[1]
            if name not in parts:
                if name == "_redis":
                    parts[name] = self._fakeredis.FakeRedis(server=self.server)
                else:
                    parts[name] = build()
                    if name == "_dispatcher":
                        settings, client = runtime.settings, runtime.redis
                        parts[name].gateways = _MemoryGateways(self, settings, client, parts[name].keys)
            return parts[name]

    def runtimes(self) -> list[Runtime]:
        with self._lock:
            return [runtime for runtime, _ in self._parts.values()]

    def gateway(self, name: str) -> MemoryGateway:
        """The memory gateway standing in for `name` (one per name, shared by every app)."""
        with self._lock:
            if name not in self.gateways:
                self.gateways[name] = MemoryGateway(name, log=self.sent, shared_failures=self.failures)
            return self.gateways[name]

    # --- publishing ---------------------------------------------------------------------------

    def publish(self, app: SmsApp, name: str, args: Any, kwargs: Any, *, countdown: Any, eta: Any,
                task_id: str | None, options: dict[str, Any]) -> KitResult:
        """SmsApp.send_task: what a broker would get, kept (and in eager mode, run)."""
        task_id = task_id or uuid()
        args, kwargs = _as_delivered(app, args, kwargs)
        job = Job(app, name, tuple(args), kwargs, task_id, _due(countdown, eta), int(options.get("retries") or 0),
                  options.get("queue"), dict(options.get("headers") or {}))
        inside = self._inside()
        if not inside:
            self.outbox.add(self._submitted(job))
        with self._lock:
            self._states[task_id] = (states.PENDING, None)
            if self.eager:
                later = job.due is not None and (self._running() or job.due > time.time())
                (self.scheduled if later else self._queue).append(job)
        if self.eager and not inside:
            self.drain()
        return KitResult(self, task_id, name)

    def schedule_reminder(self, original: Callable[..., str], runtime: Runtime, kwargs: dict[str, Any],
                          send_at: Any) -> str:
        """Runtime.schedule_reminder, production's, then the reminder in the outbox."""
        with self._quiet():                 # a release inside it is the reminder's, not the app's
            reminder_id = original(runtime, kwargs, send_at)
        key = kwargs.get("idempotency_key") or f"reminder:{reminder_id}"
        when = datetime.fromtimestamp(parse_send_at(send_at), timezone.utc)
        self.outbox.add([OutboxSms(kwargs.get("to"), kwargs.get("text"), REMINDER, **_fields(kwargs),
                                   message_id=message_id_for(key, ""), reminder_id=reminder_id, eta=when,
                                   number=self._check(runtime, kwargs, "reminder-check")[0])])
        if self.eager and not self._inside():
            self.drain()
        return reminder_id

    def _submitted(self, job: Job) -> list[OutboxSms]:
        """The messages one publish of the app stands for (none for tasks that are not a send)."""
        eta = datetime.fromtimestamp(job.due, timezone.utc) if job.due is not None else None
        common: dict[str, Any] = {"task_id": job.task_id, "eta": eta, "queue": job.queue}
        if job.name == SEND_SMS:
            try:
                kwargs = merge_arguments(job.args, job.kwargs)
            except ValidationError as e:
                raw = job.kwargs if isinstance(job.kwargs, dict) else {}
                return [OutboxSms(raw.get("to"), raw.get("text"), rejection=str(e), **common)]
            key = kwargs.get("idempotency_key")
            message_id = message_id_for(key, job.task_id)
            number, rejection = self._check(job.app.runtime, kwargs, message_id)
            return [OutboxSms(kwargs.get("to"), kwargs.get("text"), SMS, **_fields(kwargs), message_id=message_id,
                              number=number, rejection=rejection, **common)]
        if job.name == SEND_BATCH:
            return self._batch(job, common)
        return []

    def _batch(self, job: Job, common: dict[str, Any]) -> list[OutboxSms]:
        meta = {k: job.kwargs.get(k) for k in ("batch_id", "gateway", "sender", "idempotency_key")}
        runtime = job.app.runtime
        entries = job.kwargs.get("messages")
        if entries is None and meta["batch_id"]:     # stored by SendBatch.apply_async
            blobs = runtime.redis.lrange(runtime.dispatcher.keys.batch_chunks(meta["batch_id"]), 0, -1)
            entries = [entry for blob in blobs for entry in json.loads(blob)]
        batch_key = meta["idempotency_key"] or meta["batch_id"] or job.task_id
        out = []
        for n, entry in enumerate(entries if isinstance(entries, list) else []):
            message_id = message_id_for(entry_key(entry, n, batch_key), "")
            raw = entry if isinstance(entry, dict) else {}
            try:
                request, _, _ = runtime.batches.prepare_entry(entry, meta, message_id)
                number, rejection = request.to, None
            except ValidationError as e:
                number, rejection = None, str(e)
            out.append(OutboxSms(raw.get("to"), raw.get("text"), BATCH, idempotency_key=raw.get("idempotency_key"),
                                 gateway=meta["gateway"], sender=meta["sender"], metadata=raw.get("metadata"),
                                 message_id=message_id, batch_id=meta["batch_id"], number=number,
                                 rejection=rejection, **common))
        return out

    def _check(self, runtime: Runtime, kwargs: dict[str, Any], message_id: str) -> tuple[str | None, str | None]:
        """(the number in E.164, None) for a message the worker would send; (None, why) for one it would
        record `failed` with code `validation`. The worker's own checks (SendSms.run, Dispatcher.prepare)."""
        try:
            check_encodable(kwargs)
            kwargs = {k: v for k, v in kwargs.items() if not (k in FIELDS and v is None)}
            request, _, _ = runtime.dispatcher.prepare(kwargs, message_id)
        except ValidationError as e:
            return None, str(e)
        return request.to, None

    # --- running (eager) ----------------------------------------------------------------------

    def drain(self) -> int:
        """Run every task waiting to run now, including those they publish without a delay."""
        if self._running():
            return 0            # published by a running task: the loop that runs it runs this too
        runs = 0
        with self._draining:
            while True:
                with self._lock:
                    job = self._queue.popleft() if self._queue else None
                if job is None:
                    return runs
                runs += 1
                if runs > MAX_RUNS:
                    raise RuntimeError(f"smsdispatch.testing: more than {MAX_RUNS} task runs in a row "
                                       f"(a task publishing itself again without a delay?): {job!r}")
                self._run(job)

    def run_scheduled(self, *, rounds: int = 100) -> int:
        """Run what waits for a later time (retries, `eta` sends, reminders, including those beat would
        release days ahead), as if that time had come; then what those runs schedule, for up to
        `rounds` rounds. Returns the number of task runs."""
        runs = 0
        for _ in range(rounds):
            with self._quiet():
                for runtime in self.runtimes():
                    release_due(runtime, runtime.app.tasks[SEND_REMINDER], now=time.time() + FAR_AHEAD)
            with self._lock:
                self._queue.extend(sorted(self.scheduled, key=lambda j: j.due or 0.0))
                self.scheduled.clear()
                if not self._queue:
                    return runs
            runs += self.drain()
        return runs

    def _run(self, job: Job) -> None:
        task = job.app.tasks[job.name]
        request = {"id": job.task_id, "args": list(job.args), "kwargs": job.kwargs, "retries": job.retries,
                   "is_eager": False, "called_directly": False, "hostname": HOSTNAME, "headers": job.headers,
                   "delivery_info": {"exchange": "", "routing_key": job.queue or job.app.conf.task_default_queue,
                                     "priority": 0, "redelivered": False},
                   "root_id": job.task_id, "correlation_id": job.task_id}
        task.push_request(**request)
        self._local.running = self._running() + 1
        try:
            value = task.run(*job.args, **job.kwargs)
            outcome: tuple[str, Any] = (states.SUCCESS, value)
        except Retry:
            outcome = (states.RETRY, None)              # its retry is published (scheduled) already
        except (Ignore, Reject) as e:
            outcome = (states.REJECTED, e)
        except Exception as e:          # a bug: `.get()` raises it; the log line shows it redacted
            log.error("task %s[%s] raised %s: %s", job.name, job.task_id, type(e).__name__, redact(str(e)))
            outcome = (states.FAILURE, e)
        finally:
            self._local.running -= 1
            task.pop_request()
        with self._lock:
            self._states[job.task_id] = outcome
        log.debug("ran %s[%s]: %s", job.name, job.task_id, outcome[0])

    def state(self, task_id: str) -> tuple[str, Any]:
        with self._lock:
            return self._states.get(task_id, (states.PENDING, None))

    # --- where a publish comes from -----------------------------------------------------------

    def _running(self) -> int:
        return getattr(self._local, "running", 0)

    def _inside(self) -> bool:
        """A publish made by a task (or by the reminder machinery), not by the app itself."""
        return self._running() > 0 or getattr(self._local, "quiet", 0) > 0

    @contextmanager
    def _quiet(self) -> Iterator[None]:
        self._local.quiet = getattr(self._local, "quiet", 0) + 1
        try:
            yield
        finally:
            self._local.quiet -= 1


class _MemoryGateways(Gateways):
    """gateways.Gateways, with a memory gateway under each configured name: an unconfigured name is
    refused exactly as in production; the real adapter lends its flags and its check of options."""

    def __init__(self, harness: Harness, settings: Any, client: Any, keys: Any) -> None:
        super().__init__(settings, client, keys)
        self.harness = harness

    def get(self, name: str) -> Gateway:
        if name not in self.settings.configured_gateways():
            return super().get(name)        # raises UnknownGatewayError, with production's message
        gateway = self.harness.gateway(name)
        with self._lock:
            if name not in self._built:         # once per dispatcher: the real adapter lends its flags
                try:
                    self._built[name] = build_gateway(name, self.settings, self.redis, self.keys)
                    if gateway.like is None:
                        gateway.mirror(self._built[name])
                except Exception as e:          # an adapter that cannot be built offline: default flags
                    log.debug("memory gateway %s: real adapter not built (%s); default flags", name, e)
                    self._built[name] = gateway
        return gateway


class KitResult:
    """What `.delay()` returns under the harness: the task id, and the task's state and result once it
    ran (eager mode). `.get()` of a task that has not run raises celery's TimeoutError, saying why."""

    def __init__(self, harness: Harness, task_id: str, name: str) -> None:
        self.id = self.task_id = task_id
        self.name = name
        self._harness = harness
        self.ignored = False

    @property
    def state(self) -> str:
        return self._harness.state(self.id)[0]

    status = state

    @property
    def result(self) -> Any:
        return self._harness.state(self.id)[1]

    def ready(self) -> bool:
        return self.state in states.READY_STATES

    def successful(self) -> bool:
        return self.state == states.SUCCESS

    def failed(self) -> bool:
        return self.state == states.FAILURE

    def get(self, timeout: float | None = None, propagate: bool = True, **_: Any) -> Any:
        state, value = self._harness.state(self.id)
        if state == states.SUCCESS:
            return value
        if state in states.PROPAGATE_STATES or state == states.REJECTED:
            if propagate:
                raise value if isinstance(value, BaseException) else RuntimeError(f"{self.name} {state}")
            return value
        why = ("sms_outbox captures messages and runs nothing; use sms_eager to run them"
               if not self._harness.eager else
               "it waits for a later time (a retry, an eta, a reminder): call sms_eager.run_scheduled()")
        raise TimeoutError(f"task {self.name}[{self.id}] has not run: {why}")

    def __repr__(self) -> str:
        return f"<KitResult: {self.id} {self.state}>"


def _as_delivered(app: SmsApp, args: Any, kwargs: Any) -> tuple[list, dict]:
    """The arguments through the app's serializer and back, as a worker receives them."""
    serializer = app.conf.task_serializer
    content_type, encoding, data = serialization.dumps((list(args or ()), dict(kwargs or {})), serializer)
    args, kwargs = serialization.loads(data, content_type, encoding, accept=[content_type])
    return list(args), dict(kwargs)


def _due(countdown: Any, eta: Any) -> float | None:
    if isinstance(eta, str):
        eta = datetime.fromisoformat(eta)
    if isinstance(eta, datetime):
        return (eta if eta.tzinfo else eta.replace(tzinfo=timezone.utc)).timestamp()
    if countdown is not None:
        return time.time() + float(countdown)
    return None


def _fields(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: kwargs.get(k) for k in FIELDS if k not in ("to", "text")}

