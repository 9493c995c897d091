"""Flower against the test Redis: it lists our tasks, behind basic auth, without full numbers."""

from __future__ import annotations

import requests

from smsdispatch.devtools.processes import FlowerProcess, WorkerProcess
from smsdispatch.devtools.redis_server import free_port

from .conftest import Producer, wait_until, worker_settings

TO = "+998901234567"


def test_flower_lists_a_finished_send_sms_with_the_number_masked(redis_url, fake):
    settings = worker_settings(redis_url, fake)
    flower = FlowerProcess(settings, port=free_port(), basic_auth="ops:s3cret")   # listening for events first
    worker = WorkerProcess(settings, name="flowered")
    try:
        result = Producer(settings).send_sms.delay(TO, "Watched by Flower").get(timeout=30)
        task_id = result["message_id"]                      # no key given: the message id is the task id

        def listed():
            r = requests.get(f"{flower.url}/api/tasks", auth=("ops", "s3cret"), timeout=5)
            return r.ok and r.json().get(task_id, {}).get("state") == "SUCCESS"
        # Flower is another process fed by events; there is nothing of its own to wait on but its API.
        assert wait_until(listed, timeout=30, interval=0.2)
        task = requests.get(f"{flower.url}/api/tasks", auth=("ops", "s3cret"), timeout=5).json()[task_id]
        assert task["name"] == "smsdispatch.send_sms"
        assert "+998*******67" in task["kwargs"] and "998901234567" not in str(task)
        assert requests.get(f"{flower.url}/api/tasks", timeout=5).status_code == 401   # no anonymous API
        # what compose's health check of Flower asks, without credentials; and Flower's own /metrics,
        # also served without them (README: keep its port on loopback)
        assert requests.get(f"{flower.url}/healthcheck", timeout=5).text == "OK"
        assert "flower_events_total" in requests.get(f"{flower.url}/metrics", timeout=5).text
    finally:
        worker.stop()
        flower.stop()
