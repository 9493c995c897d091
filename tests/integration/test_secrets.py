"""Secrets never reach a log or a record: a Redis password in SMSDISPATCH_REDIS_URL (a real
redis-server with --requirepass), and a gateway's error body that echoes our password and a token."""

from __future__ import annotations

import secrets
import subprocess

import pytest
import redis

from smsdispatch.devtools.processes import WorkerProcess
from smsdispatch.devtools.redis_server import find_redis_server, free_port

from .conftest import ESKIZ_PASSWORD, Producer, wait_until, worker_settings

TIMEOUT = 30
PASSWORD = "redispw" + secrets.token_urlsafe(18)
TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJzbXNkaXNwYXRjaCJ9.c2lnbmF0dXJlLW9mLWEtdG9rZW4"


@pytest.fixture(scope="module")
def locked_redis_url(tmp_path_factory):
    port = free_port()
    proc = subprocess.Popen([find_redis_server(), "--bind", "127.0.0.1", "--port", str(port), "--requirepass",
                             PASSWORD, "--save", "", "--dir", str(tmp_path_factory.mktemp("locked"))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://:{PASSWORD}@127.0.0.1:{port}/0"

    def answers() -> bool:
        try:
            return redis.Redis.from_url(url, socket_connect_timeout=0.5).ping()
        except redis.ConnectionError:
            return False
    assert wait_until(answers, timeout=10), "redis-server --requirepass did not start"
    yield url
    proc.terminate()
    proc.wait(10)


def test_a_worker_on_a_password_protected_redis_logs_neither_it_nor_an_echoed_gateway_secret(locked_redis_url, fake):
    settings = worker_settings(locked_redis_url, fake)
    worker = WorkerProcess(settings, name="locked", loglevel="DEBUG")
    try:
        producer = Producer(settings)
        assert PASSWORD not in repr(producer.settings) and PASSWORD not in producer.settings.model_dump_json()
        assert producer.send_sms.delay("+998901230011", "Behind a password").get(timeout=TIMEOUT)["status"] == \
            "accepted"
        # the gateway refuses, quoting our password and its token back in the body
        fake.fail_next(status=400, body={"status": "error",
                                         "message": f"bad login it@example.com/{ESKIZ_PASSWORD}, token {TOKEN}"})
        refused = producer.send_sms.delay("+998901230012", "Refused").get(timeout=TIMEOUT)
        assert refused["status"] == "failed" and "bad login" in refused["error"]["message"]
        record = producer.record(refused["message_id"])
        history = producer.history(refused["message_id"])
    finally:
        worker.stop()
    for where, text in {"result": str(refused), "record": str(record), "history": str(history),
                        "worker log": worker.log}.items():
        for secret in (PASSWORD, ESKIZ_PASSWORD, TOKEN, TOKEN.split(".")[1]):
            assert secret not in text, (where, secret)
    # Celery's banner names the broker with the password masked; our own lines with ours masked
    assert f"redis://:**@127.0.0.1:{locked_redis_url.rsplit(':', 1)[1]}" in worker.log, worker.log[:3000]
