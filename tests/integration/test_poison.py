"""A poison message: a task whose worker dies on it every time is dead-lettered after MAX_DELIVERIES,
not handed from dying worker to dying worker for ever. Real workers, real Redis, the fake Eskiz."""

from __future__ import annotations

from smsdispatch.devtools.processes import WorkerProcess

from .conftest import Producer, send_requests_for, worker_settings

TO = "+998901234567"


def test_a_message_that_kills_every_worker_is_dead_lettered_after_max_deliveries(redis_url, fake):
    # VT 20 s: a dead worker's message is handed out again about 20-25 s after it was taken
    settings = worker_settings(redis_url, fake, VISIBILITY_TIMEOUT="20", MAX_DELIVERIES="2")
    producer = Producer(settings)
    fake.hang_next(10, seconds=30, accept=False)      # every call hangs: the worker "dies on it"
    handle = producer.send_sms.delay(TO, "I kill workers")
    for delivery in (1, 2):
        worker = WorkerProcess(settings, name=f"victim{delivery}")
        try:
            assert fake.wait_for(lambda f, n=delivery: len(send_requests_for(f, handle.id)) == n, timeout=90)
            worker.kill()                             # the worker dies holding the message
        finally:
            worker.stop()
    last = WorkerProcess(settings, name="survivor")
    try:
        result = handle.get(timeout=90)               # the third delivery: more than MAX_DELIVERIES (2)
        assert last.wait_for(r"poison message", timeout=5)
    finally:
        last.stop()
    assert result["status"] == "failed" and result["error"]["code"] == "poison_message"
    assert "handed out 3 times" in result["error"]["message"]
    record = producer.record(handle.id)
    assert record["maybe_sent"] == 1                  # its calls may have reached Eskiz: no blind replay
    assert handle.id in producer.dispatcher.records.dead_letters()
    assert len(send_requests_for(fake, handle.id)) == 2   # the third delivery never called the gateway
    assert producer.dispatcher.ledger.state(f"task:{handle.id}") == "done"
