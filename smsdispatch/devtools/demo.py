"""`smsdispatch demo`: the whole spine on one machine, with no Redis installed and no network.

It starts a private redis-server (unless SMSDISPATCH_REDIS_URL is set), a fake Eskiz gateway on
127.0.0.1 and a real `celery worker`; sends a handful of messages that exercise the interesting
paths; prints every final record with its history; then stops everything it started.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from contextlib import ExitStack

from ..config import load_settings
from ..redact import redact_url
from ..tasks import SEND_BATCH, SEND_SMS
from ..worker import SmsApp, create_app
from .fakes.eskiz import FakeEskiz
from .processes import WorkerProcess
from .redis_server import EmbeddedRedis

EMAIL, PASSWORD = "demo@example.com", "demo-password"
TIMEOUT = 60


def run(out: Callable[[str], None] = print) -> int:
    with ExitStack() as stack:
        url = _redis(stack, out)
        fake = stack.enter_context(FakeEskiz(email=EMAIL, password=PASSWORD))
        out(f"Gateway: a fake Eskiz at {fake.base_url}")
        run_id = uuid.uuid4().hex[:6]
        env = {"REDIS_URL": url, "KEY_PREFIX": f"demo{run_id}", "QUEUE": f"demo{run_id}",
               "DEFAULT_GATEWAY": "eskiz", "DEFAULT_REGION": "UZ", "ESKIZ_BASE_URL": fake.base_url,
               "ESKIZ_EMAIL": EMAIL, "ESKIZ_PASSWORD": PASSWORD, "BACKOFF_BASE": "0.5",
               "BACKOFF_MAX": "5", "HTTP_CONNECT_TIMEOUT": "2", "HTTP_READ_TIMEOUT": "5"}
        worker = WorkerProcess({f"SMSDISPATCH_{k}": v for k, v in env.items()}, concurrency=4, name="demo")
        stack.callback(worker.stop)
        out("Worker: celery worker --pool threads is ready\n")

        app = create_app(load_settings(**{k.lower(): v for k, v in env.items()}))
        _single_sends(app, fake, run_id, out)
        _batch(app, fake, run_id, out)
        calls = fake.send_calls()
        batches = sum(1 for c in calls if len(fake.carried(c)) > 1)
        out(f"The fake Eskiz accepted {len(fake.sent)} SMS in all ({len(calls) - batches} calls for single "
            f"messages, each a send-batch of one in a dispatch of its own; {batches} batch call).")
        out("Stopping the worker, the fake gateway" + ("" if os.environ.get("SMSDISPATCH_REDIS_URL")
                                                       else " and Redis") + ".")
    return 0


def _redis(stack: ExitStack, out: Callable[[str], None]) -> str:
    """SMSDISPATCH_REDIS_URL if set, else a private redis-server that `stack` stops."""
    url = os.environ.get("SMSDISPATCH_REDIS_URL")
    if url:
        out(f"Redis: {redact_url(url)} (from SMSDISPATCH_REDIS_URL)")
        return url
    server = stack.enter_context(EmbeddedRedis())
    out(f"Redis: started a private redis-server at {server.url}")
    return server.url


def _single_sends(app: SmsApp, fake: FakeEskiz, run_id: str, out: Callable[[str], None]) -> None:
    """One message per interesting path, each printed with its record's history."""
    send = app.tasks[SEND_SMS]
    records = app.runtime.dispatcher.records
    key = f"order-{run_id}-confirmation"
    fake.fail_next(1, status=503)                                # the first call fails, transiently
    fake.reject_recipients("998935550000")
    scenarios = [
        ("a transient 503, accepted on the retry", lambda: send.delay("+998 90 123 45 67", "Your code is 4821")),
        ("idempotency key, first producer", lambda: send.delay("90 111 22 33", "Order 1001 confirmed",
                                                               idempotency_key=key)),
        ("same key, second producer: the recorded result, no second send",
         lambda: send.delay("90 111 22 33", "Order 1001 confirmed", idempotency_key=key)),
        ("invalid number", lambda: send.delay("+998 12", "Hello")),
        ("recipient rejected by the gateway", lambda: send.delay("+998 93 555 00 00", "Hello")),
        ("Cyrillic text (UCS-2)", lambda: send.delay("+998 97 765 43 21", "Ваш заказ доставлен")),
    ]
    for title, enqueue in scenarios:   # one at a time, so the injected 503 hits the first one
        result = enqueue().get(timeout=TIMEOUT)
        out(f"── {title}")
        out(_describe(result, records.history(result["message_id"])))


def _batch(app: SmsApp, fake: FakeEskiz, run_id: str, out: Callable[[str], None]) -> None:
    """A batch with one bad entry, sent through Eskiz's send-batch; its final counts printed."""
    batch = [{"to": f"+99890{5550000 + i}", "text": f"Your parcel #{100 + i} is on its way"} for i in range(5)]
    batch.append({"to": "not a number", "text": "Your parcel is on its way"})
    summary = app.tasks[SEND_BATCH].delay(batch, batch_id=f"parcels-{run_id}").get(timeout=TIMEOUT)
    for task_id in summary["chunk_tasks"]:
        app.AsyncResult(task_id).get(timeout=TIMEOUT)
    final = app.runtime.batches.get(summary["batch_id"])
    if final is None:
        raise RuntimeError(f"batch {summary['batch_id']} has no record in Redis")
    out(f"── a batch of {final['total']} (one bad entry), sent through Eskiz's send-batch")
    out(f"   batch {final['batch_id']}: {final['status'].upper()}  accepted={final['accepted']} "
        f"failed={final['failed']} pending={final['pending']}  (one send-batch call)\n")


def _describe(result: dict, history: list[dict]) -> str:
    error = result["error"]
    lines = [f"   message {result['message_id']}: {result['status'].upper()}"
             f"  attempts={result['attempts']} segments={result['segments']}"
             f"  gateway_message_id={result['gateway_message_id']}"]
    if error:
        lines.append(f"   error {error['code']}: {error['message']}")
    for h in history:
        detail = "; ".join(x for x in (h.get("note"), (h.get("error") or {}).get("message")) if x)
        lines.append(f"     · {h['status']:<9} {detail}")
    return "\n".join(lines) + "\n"
