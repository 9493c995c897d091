"""Metrics, health and JSON logs with the real parts: a real Redis, a `celery worker` and `celery beat`,
the fake Eskiz over HTTP, and the webhook receiver as a user starts it (`smsdispatch webhooks`), whose
/metrics and /healthz are scraped over HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from smsdispatch.devtools.processes import BeatProcess, WorkerProcess
from smsdispatch.devtools.redis_server import free_port

from ..procs import Receiver, user_env
from .conftest import Producer, wait_until, worker_settings

SECRET = "observe-secret-" + "x" * 16
NODE = "observed"
TIMEOUT = 30


@pytest.fixture(scope="module")
def observed(redis_url, fake_eskiz, tmp_path_factory):
    """A worker writing JSON log lines, a beat whose heartbeat goes stale after 3 s, the receiver."""
    port = free_port()
    settings = worker_settings(redis_url, fake_eskiz, WEBHOOK_BASE_URL=f"http://127.0.0.1:{port}",
                               WEBHOOK_SECRET=SECRET, LOG_FORMAT="json", BEAT_STALE_AFTER="3",
                               STATUS_POLL_INTERVAL="3600")       # reports come by webhook only here
    worker = WorkerProcess(settings, name=NODE)
    receiver = Receiver(settings, port)
    beat = BeatProcess(settings, schedule_dir=str(tmp_path_factory.mktemp("beat")))
    yield settings, worker, receiver, beat, Producer(settings)
    beat.proc.send_signal(signal.SIGCONT)
    for p in (beat, worker):
        p.stop()
    receiver.stop()


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_count_what_real_sends_did(observed, fake):
    settings, worker, receiver, _, producer = observed
    fake.reject_recipients("+998900000009")
    fake.fail_next(1, status=503)                         # the first send is retried, then accepted
    results = [producer.send_sms.delay(to, "Your code is 4821").get(timeout=TIMEOUT)
               for to in ["+998901234567", "+998901234568", "+998901234569", "+998901234570",
                          "+998900000009", "12"]]
    assert [r["status"] for r in results] == ["accepted"] * 4 + ["failed", "failed"]
    assert results[0]["attempts"] == 2
    sent = fake.sends_for(results[1]["message_id"])[0]        # Eskiz reports one delivery
    report = {"request_id": sent.request_id, "message_id": str(sent.eskiz_id), "user_sms_id": sent.user_sms_id,
              "status": "DELIVRD"}
    assert requests.post(sent.callback_url, json=report, timeout=5).json()["applied"] == 1

    scrape = requests.get(f"{receiver.base}/metrics", timeout=10)
    assert scrape.status_code == 200 and scrape.headers["Content-Type"].startswith("text/plain")
    got = samples(scrape.text)

    def value(name, **labels):
        return got.get((f"smsdispatch_{name}", tuple(sorted(labels.items()))), 0.0)
    assert value("messages_enqueued_total") == 6
    assert value("messages_total", gateway="eskiz", status="accepted") == 4
    assert value("messages_total", gateway="eskiz", status="delivered") == 1
    assert value("messages_total", gateway="eskiz", status="failed") == 1          # the refused number
    assert value("messages_total", gateway="none", status="failed") == 1           # "12": never reached one
    assert value("attempts_total", gateway="eskiz") == 6 and value("retries_total", gateway="eskiz") == 1
    assert value("accept_latency_seconds_count", gateway="eskiz") == 4
    assert value("accept_latency_seconds_bucket", gateway="eskiz", le="+Inf") == 4
    assert 0 < value("accept_latency_seconds_sum", gateway="eskiz") < TIMEOUT * 4
    assert value("messages_in_flight") == 3 and value("dead_letters_waiting") == 0
    assert value("queue_length", queue=settings["SMSDISPATCH_QUEUE"]) == 0
    assert value("circuit_state", gateway="eskiz", state="closed") == 1

    once = subprocess.run([sys.executable, "-m", "smsdispatch.cli", "metrics", "--once"], env=user_env(settings),
                          capture_output=True, text=True, timeout=60)
    assert once.returncode == 0, once.stderr
    counted = {k: v for k, v in samples(once.stdout).items() if k[0].endswith("_total")}
    assert counted == {k: v for k, v in got.items() if k[0].endswith("_total")}

    # the worker's lines are JSON, with the send's fields, and no number in any of them
    lines = [json.loads(x) for x in worker.log.splitlines() if x.startswith("{")]
    accepted = [x for x in lines if x.get("status") == "accepted" and x.get("logger") == "smsdispatch.dispatch"]
    assert {x["message_id"] for x in accepted} >= {r["message_id"] for r in results[:4]}
    assert all(x["gateway"] == "eskiz" and x["attempt"] >= 1 and x["task_id"] for x in accepted)
    assert any(x.get("status") == "retrying" and x.get("attempt") == 1 for x in lines)
    assert "901234567" not in worker.log and "900000009" not in worker.log


def get_health(receiver, query: str = "") -> tuple[int, dict]:
    answer = requests.get(f"{receiver.base}/healthz{query}", timeout=10)
    return answer.status_code, answer.json()


def test_healthz_sees_redis_a_worker_and_beat_and_a_stuck_beat(observed):
    _, _, receiver, beat, _ = observed
    assert wait_until(lambda: get_health(receiver)[0] == 200, timeout=15), get_health(receiver)
    _, body = get_health(receiver)
    assert f"{NODE}@" in body["checks"]["workers"]["detail"]

    beat.proc.send_signal(signal.SIGSTOP)          # alive to ps and Docker, but its loop is stuck
    try:
        assert wait_until(lambda: get_health(receiver)[0] == 503, timeout=15)
        status, body = get_health(receiver)
        assert not body["checks"]["beat"]["ok"] and body["checks"]["redis"]["ok"] and body["checks"]["workers"]["ok"]
        assert get_health(receiver, "?check=redis,workers")[0] == 200      # the receiver's own probe is fine
    finally:
        beat.proc.send_signal(signal.SIGCONT)
    assert wait_until(lambda: get_health(receiver)[0] == 200, timeout=15)
    # asking did not make the receiver a consumer of the broker, beating a heart among the workers'
    producer = observed[4]
    assert producer.dispatcher.records.redis.zcard(producer.dispatcher.keys.workers()) == 1


def health_cli(settings, *args: str) -> tuple[int, dict, float]:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "smsdispatch.cli", "health", *args], env=user_env(settings),
                          capture_output=True, text=True, timeout=60)
    return proc.returncode, json.loads(proc.stdout or "{}"), time.monotonic() - started


def test_the_health_command_for_container_checks(observed):
    settings = observed[0]
    code, answer, _ = health_cli(settings, "workers", "--node", f"{NODE}@{socket.gethostname()}")
    assert code == 0 and answer["healthy"], answer
    code, answer, took = health_cli(settings, "workers", "--node", "nobody@nowhere", "--timeout", "0.5")
    assert code == 1 and not answer["checks"]["workers"]["ok"]
    code, answer, _ = health_cli(settings, "beat")
    assert code == 0, answer
    dead = {**settings, "SMSDISPATCH_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}      # nobody listens
    code, answer, took = health_cli(dead, "redis")
    assert code == 1 and not answer["checks"]["redis"]["ok"] and took < 20
    code, _, _ = health_cli(settings, "nonsense")
    assert code == 2


@pytest.mark.skipif(sys.platform != "linux", reason="SIGSTOP/SIGCONT as on Linux")
def test_a_stopped_worker_fails_its_own_ping_but_not_the_others(observed, redis_url, fake_eskiz):
    settings = observed[0]
    other = WorkerProcess(settings, name="other")
    try:
        os.kill(other.proc.pid, signal.SIGSTOP)
        code, answer, _ = health_cli(settings, "workers", "--node", f"other@{socket.gethostname()}",
                                     "--timeout", "1")
        assert code == 1, answer
        assert health_cli(settings, "workers", "--node", f"{NODE}@{socket.gethostname()}")[0] == 0
    finally:
        os.kill(other.proc.pid, signal.SIGCONT)
        other.stop()
