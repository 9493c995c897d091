"""Delivery webhooks end to end: the worker gives Eskiz our URL, Eskiz calls the receiver, the record
follows; a caller without the secret changes nothing."""

from __future__ import annotations

import subprocess
import sys

import requests

from smsdispatch.devtools.processes import WorkerProcess
from smsdispatch.devtools.redis_server import free_port

from ..procs import Lines, user_env
from .conftest import Producer, worker_settings

SECRET = "hook-secret-" + "x" * 16
TO = "+998901234567"


def test_a_gateway_callback_delivers_the_message_and_a_stranger_cannot(redis_url, fake):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = worker_settings(redis_url, fake, WEBHOOK_BASE_URL=base, WEBHOOK_SECRET=SECRET)
    # as a user starts it (no PYTHONUNBUFFERED), read through a pipe
    receiver = subprocess.Popen([sys.executable, "-m", "smsdispatch.cli", "webhooks", "--port", str(port)],
                                env=user_env(settings), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = Lines(receiver)
    worker = WorkerProcess(settings, name="hooked")
    try:
        assert "listening on" in lines.next(timeout=60)              # the receiver is up
        producer = Producer(settings)
        result = producer.send_sms.delay(TO, "Tell me when it arrives").get(timeout=30)
        sent = fake.sends_for(result["message_id"])[0]
        assert sent.callback_url == f"{base}/eskiz/{SECRET}"          # what Eskiz will call

        report = {"request_id": sent.request_id, "message_id": str(sent.eskiz_id),
                  "user_sms_id": sent.user_sms_id, "country": "UZ", "phone_number": sent.mobile_phone,
                  "sms_count": "1", "status": "DELIVRD", "status_date": "2026-11-22 10:00:00"}
        stranger = requests.post(f"{base}/eskiz/not-the-secret-at-all", json=report, timeout=5)
        assert stranger.status_code == 404 and producer.record(result["message_id"])["status"] == "accepted"
        eskiz = requests.post(sent.callback_url, json=report, timeout=5)
        assert eskiz.status_code == 200 and eskiz.json() == {"reports": 1, "applied": 1}
        assert producer.record(result["message_id"])["status"] == "delivered"
        assert SECRET not in worker.log
    finally:
        worker.stop()
        receiver.terminate()
        receiver.wait(timeout=10)
        output = lines.rest()
    assert SECRET not in output                                    # request lines are not logged
