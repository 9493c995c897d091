"""The baseline: a plain Celery app on the same broker, with Celery's defaults (acks early, prefetch
multiplier 4, no task events), the JSON serializer and a Redis result backend like smsdispatch's.

Two tasks:
- `bench.plain.noop`: returns None (the producer benchmark publishes it with `.delay()`);
- `bench.plain.send`: ONE `requests.post` of an Eskiz send to the fake gateway over a pooled
  `requests.Session` shared by the worker's threads, with a token fetched once per process. No
  idempotency, no records: what a minimal hand-written SMS task does.

The worker runs it as `celery -A bench.plain worker ...`, configured by BENCH_REDIS_URL, BENCH_QUEUE,
BENCH_GATEWAY_URL (the fake's base URL, with /api) and BENCH_ESKIZ_EMAIL / BENCH_ESKIZ_PASSWORD.
With BENCH_BROKER_URL (amqp://: `python -m bench.run --broker rabbitmq`) the broker is RabbitMQ, set up
as smsdispatch's is there, so the comparison stays fair: a quorum queue on a topic exchange and
publisher confirms (results still in Redis).
"""

from __future__ import annotations

import os
import threading

import requests
from celery import Celery
from kombu import Exchange, Queue
from requests.adapters import HTTPAdapter

from smsdispatch.gateways.eskiz import dispatch_id_for

NOOP = "bench.plain.noop"
SEND = "bench.plain.send"


class _Gateway:
    """One pooled session and one token per process."""

    def __init__(self, url: str, email: str, password: str) -> None:
        self.url, self.email, self.password = url.rstrip("/"), email, password
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=64, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self._token: str | None = None
        self._lock = threading.Lock()

    def token(self) -> str:
        if self._token is None:
            with self._lock:
                if self._token is None:
                    r = self.session.post(f"{self.url}/auth/login", data={"email": self.email, "password": self.password},
                                          timeout=(5, 15))
                    r.raise_for_status()
                    self._token = r.json()["data"]["token"]
        return self._token

    def send(self, to: str, text: str, ref: str) -> str:
        # the same call smsdispatch makes for one message (gateways/eskiz.py): a send-batch of one
        body = {"messages": [{"user_sms_id": ref, "to": to.lstrip("+"), "text": text}], "from": "4546",
                "dispatch_id": dispatch_id_for(ref)}
        r = self.session.post(f"{self.url}/message/sms/send-batch", json=body,
                              headers={"Authorization": f"Bearer {self.token()}"}, timeout=(5, 15))
        r.raise_for_status()
        return r.json()["id"]


_gateway: _Gateway | None = None
_gateway_lock = threading.Lock()


def gateway() -> _Gateway:
    global _gateway
    if _gateway is None:
        with _gateway_lock:
            if _gateway is None:
                _gateway = _Gateway(os.environ["BENCH_GATEWAY_URL"], os.environ.get("BENCH_ESKIZ_EMAIL", ""),
                                    os.environ.get("BENCH_ESKIZ_PASSWORD", ""))
    return _gateway


def make_app(redis_url: str, queue: str, *, backend: bool = True, broker_url: str | None = None) -> Celery:
    app = Celery("bench_plain", broker=broker_url or redis_url, backend=redis_url if backend else None,
                 set_as_current=False)
    app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"],
                    result_accept_content=["json"], task_default_queue=queue,
                    broker_connection_retry_on_startup=True)
    if broker_url and broker_url.startswith("amqp"):
        app.conf.update(task_queues=[Queue(queue, Exchange(queue, type="topic"), routing_key=queue,
                                           queue_arguments={"x-queue-type": "quorum"})],
                        task_default_exchange_type="topic", task_default_queue_type="quorum",
                        broker_transport_options={"confirm_publish": True})

    @app.task(name=NOOP, shared=False)
    def noop(*args, **kwargs) -> None:
        return None

    @app.task(bind=True, name=SEND, shared=False)
    def send(self, to: str, text: str) -> str:
        return gateway().send(to, text, self.request.id)

    return app


app = make_app(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"), os.environ.get("BENCH_QUEUE", "bench-plain"),
               broker_url=os.environ.get("BENCH_BROKER_URL") or None)
