"""A web app that sends by name (`app.send_task("smsdispatch.send_sms", ...)`) puts the raw number and
text in the message's argsrepr/kwargsrepr, and `celery inspect` shows raw arguments by default. The
worker shows masked ones whatever the producer did: in its task events (Flower's input), in `inspect
active/scheduled/reserved/query_task` (a retry waiting in the worker included) and in its log lines."""

from __future__ import annotations

import json
import re
import threading

from smsdispatch.devtools.processes import WorkerProcess
from smsdispatch.tasks import SEND_BATCH, SEND_SMS

from .conftest import Producer, worker_settings

TIMEOUT = 30
NUMBER, TEXT = "+998901230006", "Privacy zebra text"
HANGING_NUMBER, HANGING_TEXT = "+998 90 123 00 07", "Hanging okapi text"
BATCH_NUMBER, BATCH_TEXT = "+998901230008", "Batch quokka text"
NUMBERS = [re.compile(r"(?<!\d)" + r"[\s\-.()/]{0,3}".join(n.lstrip("+").replace(" ", "")) + r"(?!\d)")
           for n in (NUMBER, HANGING_NUMBER, BATCH_NUMBER)]
WORDS = ("zebra", "okapi", "quokka")


def leaks(text: str) -> list[str]:
    return [p.pattern for p in NUMBERS if p.search(text)] + [w for w in WORDS if w in text]


class Events:
    """Every event published on the Redis, collected by Celery's own event receiver (as Flower does)."""

    def __init__(self, app) -> None:
        self.events: list[dict] = []
        self.cond = threading.Condition()
        self.conn = app.connection_for_read()
        self.receiver = app.events.Receiver(self.conn, handlers={"*": self._on})
        self.thread = threading.Thread(target=self.receiver.capture, kwargs={"wakeup": False}, daemon=True)
        self.thread.start()

    def _on(self, event: dict) -> None:
        with self.cond:
            self.events.append(event)
            self.cond.notify_all()

    def wait_for(self, predicate, timeout: float = TIMEOUT) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: any(predicate(e) for e in self.events), timeout)

    def stop(self) -> None:
        self.receiver.should_stop = True
        self.thread.join(5)
        self.conn.release()


def test_by_name_sends_show_no_number_and_no_text_in_events_inspect_and_logs(redis_url, fake):
    # a 503 makes the first send retry 20 s later: the retry waits in the worker (inspect scheduled)
    settings = worker_settings(redis_url, fake, BACKOFF_BASE="20", BACKOFF_MAX="20", HTTP_READ_TIMEOUT="10",
                               CLAIM_LEASE="60", VISIBILITY_TIMEOUT="300")
    producer = Producer(settings)
    events = Events(producer.app)
    worker = WorkerProcess(settings, name="private", concurrency=2)
    try:
        assert events.wait_for(lambda e: e["type"] == "worker-online" or e["type"] == "worker-heartbeat")
        fake.fail_next(status=503)
        retried = producer.app.send_task(SEND_SMS, kwargs={"to": NUMBER, "text": TEXT}).id
        assert events.wait_for(lambda e: e["type"] == "task-retried" and e["uuid"] == retried)
        assert events.wait_for(lambda e: e["type"] == "task-received" and e["uuid"] == retried
                               and e.get("retries") == 1), "the retry did not come back to the worker"
        fake.hang_next(seconds=8, accept=True)                 # this send stays active while we inspect
        hanging = producer.app.send_task(SEND_SMS, args=[HANGING_NUMBER, HANGING_TEXT]).id
        assert events.wait_for(lambda e: e["type"] == "task-started" and e["uuid"] == hanging)
        batch = producer.app.send_task(SEND_BATCH, args=[[{"to": BATCH_NUMBER, "text": BATCH_TEXT}]]).id

        inspect = producer.app.control.inspect(destination=[w for w in _workers(worker)], timeout=5)
        active, scheduled, reserved = inspect.active(), inspect.scheduled(), inspect.reserved()
        queried = inspect.query_task(retried, hanging)
        replies = json.dumps([active, scheduled, reserved, queried])
        assert hanging in json.dumps(active) and retried in json.dumps(scheduled), replies
        assert "+998*******07" not in replies           # separators kept: "+998 ** *** ** 07"
        assert "+998 ** *** ** 07" in json.dumps(active) and "+998*******06" in json.dumps(scheduled)
        assert leaks(replies) == [], replies

        assert events.wait_for(lambda e: e["type"] == "task-succeeded" and e["uuid"] == batch)
        assert events.wait_for(lambda e: e["type"] == "task-succeeded" and e["uuid"] == hanging, timeout=20)
        received = {e["uuid"]: e for e in events.events if e["type"] == "task-received"}
        assert "+998*******06" in received[retried]["kwargs"] and "<18 chars>" in received[retried]["kwargs"]
        assert "+998 ** *** ** 07" in received[hanging]["kwargs"] and received[hanging]["args"] == "()"
        assert "+998*******08" in received[batch]["kwargs"]
        assert leaks(json.dumps(events.events)) == []
    finally:
        worker.stop()
        events.stop()
    assert re.search(rf"Task {SEND_SMS}\[{hanging}\] received", worker.log)
    assert re.search(rf"Task {SEND_SMS}\[{hanging}\] succeeded", worker.log)
    assert leaks(worker.log) == [], worker.log


def _workers(worker: WorkerProcess) -> list[str]:
    match = re.search(r"(private@\S+)", worker.log)
    assert match, worker.log
    return [match.group(1).rstrip(":")]
