"""Redis failing under running tasks: no message published by name is lost or sent twice.

A web app that has only Celery publishes by name (`send_task`), so no `queued` record exists before a
task runs, and without beat no sweeper would ever find a lost message: every message must reach a
final record through the broker alone. When Redis fails inside a task, the task's retry has to be
published to the same Redis; Celery discards a message whose retry publish failed
(``Reject(requeue=False)``), and the message is then gone if Redis answers the discarding reject.

- Redis killed (SIGKILL) mid-work and restarted from its AOF (`appendfsync always`: it loses nothing
  it acknowledged). The gateway answers slowly, so many tasks are mid-send when Redis dies; the
  workers run under a supervisor that restarts them if they exit, with a short visibility timeout so
  unacknowledged messages come back within the test.
- Redis refusing our store's scripts (an ACL takes EVAL/EVALSHA away from the workers' user) while it
  serves everything else: the retry publish of send_sms fails (it writes the `queued` record with a
  script) while the discarding reject would succeed, which is the loss, every time.

No beat in either.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections import Counter

import redis
from celery import Celery

from smsdispatch.devtools.processes import WorkerProcess
from smsdispatch.devtools.redis_server import EmbeddedRedis, RedisUnavailable
from smsdispatch.dispatch import message_id_for
from smsdispatch.keys import Keys
from smsdispatch.tasks import SEND_SMS

from ..unavailable import unavailable
from .conftest import wait_until, worker_settings

FINAL = {"accepted", "delivered", "failed", "unknown", "expired"}

# Log lines of a task that met Redis's failure: its message left for redelivery (the fix), dropped by
# Celery's Reject(requeue=False) (the loss), or retried with a countdown after a Redis error.
REQUEUED = r"left for the broker to redeliver"
DROPPED = r"reject requeue=False"
RETRIED = r"retry: Retry in .*(Error \d+|[Cc]onnection)"


class Supervised:
    """A worker kept running by a thread: restarted whenever it exits, until `stop()` (like compose's
    `restart: unless-stopped`). Every generation is kept, so their logs can be read afterwards."""

    def __init__(self, settings: dict[str, str], name: str) -> None:
        self.settings, self.name = settings, name
        self.generations: list[WorkerProcess] = []
        self.ready = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"supervise-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping:
            try:
                proc = WorkerProcess(self.settings, name=self.name)   # returns once it logged "ready."
            except RuntimeError:
                continue                                              # it exited while starting: again
            self.generations.append(proc)
            if self._stopping:
                break
            self.ready.set()
            proc.proc.wait()                                          # blocks until it exits
            self.ready.clear()
        for proc in self.generations:
            proc.stop()

    def count(self, pattern: str) -> int:
        return sum(proc.count(pattern) for proc in self.generations)

    def stop(self) -> None:
        self._stopping = True
        for proc in list(self.generations):
            proc.stop()
        self._thread.join(timeout=90)


def private_redis(**options) -> EmbeddedRedis:
    """A redis-server of this test's own: it is killed or reconfigured, which a shared one must not be."""
    try:
        return EmbeddedRedis(**options).start()
    except RedisUnavailable as e:
        unavailable(f"no redis-server: {e}")


def webapp(url: str) -> Celery:
    """The web app: a bare Celery app on the same Redis, with no smsdispatch behind it."""
    app = Celery("webapp", broker=url, set_as_current=False)
    app.conf.update(task_serializer="json", broker_connection_retry_on_startup=True)
    return app


def plan(n: int) -> tuple[list[dict], list[str]]:
    """n by-name kwargs with unique keys, and the message id each one's record has."""
    run = uuid.uuid4().hex[:8]
    messages = [{"to": f"+99890{i:07d}", "text": f"Your code is {i:04d}", "idempotency_key": f"{run}-{i}"}
                for i in range(n)]
    return messages, [message_id_for(m["idempotency_key"], "") for m in messages]


def publish_by_name(app: Celery, queue: str, kwargs: dict, failures: Counter,
                    task_ids: dict[str, list[str]] | None = None) -> None:
    """What a web app does when a publish fails: publish again, with the same idempotency key. Each
    attempt's task id (a new one, as Celery makes) is noted in `task_ids`, so a loss can be traced."""
    while True:
        task_id = str(uuid.uuid4())
        if task_ids is not None:
            task_ids.setdefault(kwargs["idempotency_key"], []).append(task_id)
        try:
            app.send_task(SEND_SMS, kwargs=kwargs, queue=queue, task_id=task_id)
            return
        except Exception as e:  # kombu.exceptions.OperationalError, redis.ConnectionError, ...
            failures[type(e).__name__] += 1
            time.sleep(0.2)     # the web app's back-off while Redis is away


def statuses(store: redis.Redis, keys: Keys, ids: list[str]) -> list[str | None]:
    """Each message's record status (None: no record, or Redis not answering)."""
    try:
        pipe = store.pipeline(transaction=False)
        for message_id in ids:
            pipe.hget(keys.message(message_id), "status")
        return [s.decode() if s else None for s in pipe.execute()]
    except redis.RedisError:
        return [None] * len(ids)


def trace(lost_keys: list[str], task_ids: dict[str, list[str]], workers, store: redis.Redis,
          queue: str) -> dict[str, dict]:
    """Where each lost message's task went: every worker log line naming one of its task ids, and
    whether Redis still holds it (in its queues or kombu's unacked hash)."""
    try:
        held = b"".join([*store.lrange(queue, 0, -1), *store.lrange(f"{queue}.retry", 0, -1),
                         *store.hvals("unacked")])
    except redis.RedisError as e:
        held = repr(e).encode()
    out = {}
    for key in lost_keys[:3]:
        ids = task_ids.get(key, [])
        lines = [line for w in workers for proc in w.generations for line in proc.log.splitlines()
                 if any(t in line for t in ids)]
        out[key] = {"task_ids": ids, "in_redis": [t for t in ids if t.encode() in held], "log": lines[:20]}
    # our transport's lines about messages it took but could not record, and what it gave back
    out["transport"] = [line for w in workers for proc in w.generations for line in proc.log.splitlines()
                        if re.search(r"taken off|taken but not recorded|gave back|give back", line)][:40]
    return out


def outcome(final: list[str | None], ids: list[str], sends: Counter, workers) -> tuple[str, dict[str, int]]:
    met = {"requeued": sum(w.count(REQUEUED) for w in workers),
           "dropped": sum(w.count(DROPPED) for w in workers),
           "retried": sum(w.count(RETRIED) for w in workers)}
    return (f"{len(ids)} messages; statuses {dict(Counter(final))}; lost (no final record) "
            f"{sum(s not in FINAL for s in final)}; never sent {sum(sends[m] == 0 for m in ids)}; sent twice "
            f"{sum(sends[m] > 1 for m in ids)}; log lines of tasks that met the failure {met}"), met


MESSAGES = 300
BACKLOG = 60            # the producer stays at most this far ahead of the gateway
GATEWAY_LATENCY = 0.25  # seconds per send: with 2 x 8 threads, ~16 sends are in flight at any moment
OUTAGE = 4.0            # seconds Redis stays down: far longer than redis-py's and kombu's own retries


def test_redis_killed_mid_work_loses_and_duplicates_no_by_name_message(fake):
    server = private_redis(appendfsync="always")
    # VT 10 s (CLAIM_LEASE 8 + BACKOFF_MAX 1 stay below it): an unacked message comes back ~10 s later.
    settings = worker_settings(server.url, fake, VISIBILITY_TIMEOUT="10", CLAIM_LEASE="8", BACKOFF_MAX="1",
                               REMINDER_HORIZON="1")
    queue, keys = settings["SMSDISPATCH_QUEUE"], Keys(settings["SMSDISPATCH_KEY_PREFIX"])
    app, (messages, ids), failures = webapp(server.url), plan(MESSAGES), Counter()
    task_ids: dict[str, list[str]] = {}
    fake.hang_next(10**6, seconds=GATEWAY_LATENCY, accept=True)       # every send: accepted, answered late
    workers = [Supervised(settings, "w1"), Supervised(settings, "w2")]
    store = redis.Redis.from_url(server.url, socket_timeout=5)
    started = time.monotonic()
    try:
        assert all(w.ready.wait(60) for w in workers), "workers did not start"

        def produce() -> None:
            for i, kwargs in enumerate(messages):
                fake.wait_for(lambda f, i=i: len(f.accepted) >= i - BACKLOG, timeout=0.5)
                publish_by_name(app, queue, kwargs, failures, task_ids)
        producer = threading.Thread(target=produce, name="webapp", daemon=True)
        producer.start()

        assert fake.wait_for(lambda f: len(f.accepted) >= MESSAGES // 2, timeout=60), "work-off did not start"
        server.kill()                   # SIGKILL, with ~16 sends in flight and the producer still publishing
        killed_at = len(fake.accepted)
        time.sleep(OUTAGE)              # the outage itself: nothing to wait for
        server.start()                  # same port, same directory: it loads its AOF
        producer.join(timeout=60)
        assert not producer.is_alive(), "the producer could not publish everything"
        done = wait_until(lambda: all(s in FINAL for s in statuses(store, keys, ids)), timeout=75, interval=0.5)
        final = statuses(store, keys, ids)
        sends = Counter(a.client_ref for a in fake.accepted)
        lost = [m["idempotency_key"] for m, s in zip(messages, final, strict=True) if s not in FINAL]
        traced = trace(lost, task_ids, workers, store, queue) if lost else {}
    finally:
        for w in workers:
            w.stop()
        fake.reset()
        server.stop()

    report, met = outcome(final, ids, sends, workers)
    report += (f"; Redis killed after {killed_at} sends; failed publishes {dict(failures)}; worker restarts "
               f"{sum(len(w.generations) - 1 for w in workers)}; {time.monotonic() - started:.0f}s")
    print(report)
    assert done and all(s == "accepted" for s in final), f"{report}; where the lost ones went: {traced}"
    assert all(sends[m] == 1 for m in ids) and len(sends) == MESSAGES, report   # each exactly once
    assert met["requeued"] >= 1 and met["dropped"] == 0, report                 # the path taken
    assert failures, report                     # and the producer met the outage too


REFUSED_FOR = 3.0       # seconds the workers' scripts are refused, from the first refusal on


def test_store_scripts_refused_loses_no_message_and_does_not_hot_loop(fake):
    server = private_redis()
    settings = worker_settings(server.url, fake)
    queue, keys = settings["SMSDISPATCH_QUEUE"], Keys(settings["SMSDISPATCH_KEY_PREFIX"])
    pause = float(settings["SMSDISPATCH_BACKOFF_BASE"])    # a Redis error's retry countdown
    # The web app publishes as a user of its own; the workers' user (default) loses EVAL/EVALSHA.
    admin = redis.Redis.from_url(server.url, socket_timeout=5)
    admin.execute_command("ACL", "SETUSER", "webapp", "on", ">webapp-password", "~*", "&*", "+@all")
    app = webapp(f"redis://webapp:webapp-password@127.0.0.1:{server.port}/0")
    (messages, ids), failures = plan(5), Counter()
    worker = Supervised(settings, "w1")
    try:
        assert worker.ready.wait(60), "worker did not start"
        admin.execute_command("ACL", "SETUSER", "default", "-eval", "-evalsha")
        refused_at = time.monotonic()
        for kwargs in messages:
            publish_by_name(app, queue, kwargs, failures)
        # Every message met the refusal at least once (Celery logs each Reject it gets, either way).
        assert all(p.wait_for(r"reject requeue=", count=len(messages), timeout=30) for p in worker.generations[:1])
        time.sleep(REFUSED_FOR)         # the fault's length: nothing to wait for
        admin.execute_command("ACL", "SETUSER", "default", "+@all")
        refused = time.monotonic() - refused_at
        done = wait_until(lambda: all(s in FINAL for s in statuses(admin, keys, ids)), timeout=30, interval=0.2)
        final = statuses(admin, keys, ids)
        sends = Counter(a.client_ref for a in fake.accepted)
    finally:
        worker.stop()
        server.stop()

    report, met = outcome(final, ids, sends, [worker])
    report += f"; scripts refused for {refused:.1f}s"
    print(report)
    assert done and all(s == "accepted" for s in final), report
    assert all(sends[m] == 1 for m in ids) and len(sends) == len(ids), report
    assert met["dropped"] == 0, report
    # Each message waited its retry countdown before every requeue: a few rounds, not thousands.
    assert len(ids) <= met["requeued"] <= len(ids) * (refused / pause + 2), report
