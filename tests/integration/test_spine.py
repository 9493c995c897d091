"""The dispatch spine against a real Redis, a real `celery worker` subprocess and the fake Eskiz."""

from __future__ import annotations

import json
import pickle
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from kombu import Connection

from smsdispatch.dispatch import message_id_for
from smsdispatch.tasks import SEND_SMS

from .conftest import ESKIZ_PASSWORD, Producer, send_requests_for, worker_settings

TO = "+998901234567"
TIMEOUT = 30


@pytest.fixture
def worker(stack):
    return stack[0]


@pytest.fixture
def producer(stack):
    return stack[1]


def test_result_contract_record_and_history(producer, fake):
    result = producer.send_sms.delay(TO, "Salom", metadata={"order": 42}).get(timeout=TIMEOUT)
    mid = result["message_id"]
    assert result == {"message_id": mid, "status": "accepted", "gateway": "eskiz",
                      "gateway_message_id": fake.sends_for(mid)[0].request_id, "attempts": 1,
                      "idempotency_key": mid, "segments": 1, "error": None}
    record = producer.record(mid)
    assert record["to"] == TO and record["metadata"] == {"order": 42} and record["task_id"] == mid
    assert [h["status"] for h in producer.history(mid)] == ["queued", "sending", "accepted"]


def test_the_same_task_message_delivered_twice_sends_once(producer, worker, fake):
    task_id = str(uuid.uuid4())
    fake.hang_next(seconds=0.5, accept=True)   # the first delivery is still at the gateway ...
    first = producer.send_sms.apply_async((TO, "Twice"), task_id=task_id)
    assert fake.wait_for(lambda f: len(f.sends_for(task_id)) == 1)
    producer.send_sms.apply_async((TO, "Twice"), task_id=task_id)   # ... when the copy arrives
    assert worker.wait_for(rf"send_sms\[{task_id}\] succeeded", count=2, timeout=TIMEOUT), worker.log
    assert first.get(timeout=TIMEOUT)["status"] == "accepted"
    assert len(send_requests_for(fake, task_id)) == 1
    # and once more, long after: still no second send
    producer.send_sms.apply_async((TO, "Twice"), task_id=task_id)
    assert worker.wait_for(rf"send_sms\[{task_id}\] succeeded", count=3, timeout=TIMEOUT)
    assert len(send_requests_for(fake, task_id)) == 1


def test_one_key_from_three_producers_sends_once_with_three_identical_results(producer, fake):
    key = f"order-{uuid.uuid4()}"
    with ThreadPoolExecutor(3) as pool:
        handles = list(pool.map(lambda _: producer.send_sms.delay(TO, "Once", idempotency_key=key), range(3)))
    results = [h.get(timeout=TIMEOUT) for h in handles]
    assert len({h.id for h in handles}) == 3
    assert results[0] == results[1] == results[2]
    assert results[0]["status"] == "accepted" and results[0]["message_id"] == message_id_for(key, "")
    assert len(send_requests_for(fake, results[0]["message_id"])) == 1


def test_500_500_200_is_accepted_after_three_attempts_with_growing_gaps(producer, fake):
    fake.fail_next(2, status=500)
    result = producer.send_sms.delay(TO, "Retry me").get(timeout=TIMEOUT)
    assert result["status"] == "accepted" and result["attempts"] == 3
    calls = send_requests_for(fake, result["message_id"])
    assert [c.status for c in calls] == [500, 500, 200]
    gap1 = calls[1].received_at - calls[0].received_at
    gap2 = calls[2].received_at - calls[1].received_at
    assert 0.5 <= gap1 < gap2 and gap2 >= 1.0            # backoff 0.5 s, then 1 s
    # a 500 may hide an accepted send: Eskiz is asked before each resend (and said no), each time about
    # the message's own dispatch (one call), never by walking the account's listing
    assert fake.count("/message/sms/get-user-messages-by-dispatch") == 2
    assert fake.count("/message/sms/get-user-messages") == 0


def test_an_answer_trickling_past_the_total_deadline_is_reconciled_not_resent(producer, fake):
    # Eskiz accepts, then answers a byte every 0.5 s: the 1 s read timeout never fires, the 2 s total
    # deadline (HTTP_TOTAL_TIMEOUT unset: connect 1 + read 1) does. Ambiguous; Eskiz can look it up.
    fake.trickle_next(byte_interval=0.5, accept=True)
    handle = producer.send_sms.delay(TO, "Trickled")
    result = handle.get(timeout=TIMEOUT)
    assert result["status"] == "accepted" and result["attempts"] == 1
    assert result["gateway_message_id"] == fake.sends_for(handle.id)[0].request_id
    assert len(send_requests_for(fake, handle.id)) == 1                  # never sent twice
    history = producer.history(handle.id)
    assert [h["status"] for h in history] == ["queued", "sending", "retrying", "accepted"], history
    assert history[2]["error"] == {"code": "ambiguous", "message": "no complete answer within 2s (HTTP_TOTAL_TIMEOUT)"}
    assert history[3]["note"] == "reconciled: found at eskiz, not resent"
    assert history[2]["at"] - history[1]["at"] < 2 + 1.5       # the call ended at its deadline, not later


def test_a_400_fails_after_exactly_one_call(producer, fake):
    fake.fail_next(status=400, body={"status": "error", "message": "Text is not approved (moderation)"})
    result = producer.send_sms.delay(TO, "Not a template").get(timeout=TIMEOUT)
    assert result["status"] == "failed" and result["error"]["code"] == "rejected"
    assert "moderation" in result["error"]["message"] and result["attempts"] == 1
    assert len(send_requests_for(fake, result["message_id"])) == 1


def test_connection_refused_then_the_gateway_comes_back(producer, worker, fake):
    fake.refuse_connections()
    try:
        handle = producer.send_sms.delay(TO, "Are you there?")
        assert worker.wait_for(rf"message {handle.id}: gateway_unavailable on attempt 1", timeout=TIMEOUT)
    finally:
        fake.accept_connections()
    result = handle.get(timeout=TIMEOUT)
    assert result["status"] == "accepted" and result["attempts"] >= 2
    assert len(fake.sends_for(handle.id)) == 1
    history = producer.history(handle.id)
    assert "retrying" in [h["status"] for h in history]
    assert any("cannot connect" in (h.get("error") or {}).get("message", "") for h in history)


def test_expired_token_gets_one_refresh_and_one_send(producer, fake):
    producer.send_sms.delay(TO, "warm up").get(timeout=TIMEOUT)   # make sure a token exists
    fake.reset()
    fake.expire_token()
    result = producer.send_sms.delay(TO, "After expiry").get(timeout=TIMEOUT)
    assert result["status"] == "accepted" and result["attempts"] == 1
    assert fake.refreshes == 1 and fake.logins == 0
    assert [c.status for c in send_requests_for(fake, result["message_id"])] == [401, 200]
    assert len(fake.sends_for(result["message_id"])) == 1


def test_an_invalid_number_fails_validation_with_zero_gateway_calls(producer, fake):
    result = producer.send_sms.delay("+998 12", "Hi").get(timeout=TIMEOUT)
    assert result["status"] == "failed" and result["error"]["code"] == "validation"
    assert "not a valid number" in result["error"]["message"]
    assert fake.requests_log == []


def test_send_task_by_name_works_like_delay(producer, fake):
    result = producer.app.send_task(SEND_SMS, kwargs={"to": TO, "text": "By name"}).get(timeout=TIMEOUT)
    assert result["status"] == "accepted"
    assert len(fake.sends_for(result["message_id"])) == 1


def test_a_pickle_message_is_refused_and_never_executed(producer, worker, fake, tmp_path):
    marker = tmp_path / "pickle-was-executed"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    task_id = str(uuid.uuid4())
    body = pickle.dumps(((), {"to": TO, "text": "pwned", "x": Exploit()}, {}))
    with Connection(producer.settings.redis_url) as conn:
        conn.default_channel.basic_publish(
            conn.default_channel.prepare_message(
                body, content_type="application/x-python-serialize", content_encoding="binary",
                headers={"lang": "py", "task": SEND_SMS, "id": task_id, "root_id": task_id,
                         "parent_id": None, "group": None, "retries": 0, "eta": None, "expires": None,
                         "argsrepr": "()", "kwargsrepr": "{}", "origin": "attacker"}),
            exchange="", routing_key=producer.settings.queue)
    assert worker.wait_for(r"(?i)refusing to deserialize untrusted content", timeout=TIMEOUT), worker.log
    # the worker keeps serving, and nothing of the pickle ran or reached the gateway
    assert producer.send_sms.delay(TO, "after pickle").get(timeout=TIMEOUT)["status"] == "accepted"
    assert not marker.exists()
    assert producer.record(task_id) is None
    assert [r for r in fake.requests_log if (r.fields or {}).get("message") == "pwned"] == []


def test_published_messages_show_flower_a_masked_number_and_no_text(redis_url, fake_eskiz):
    idle = Producer(worker_settings(redis_url, fake_eskiz))   # a queue no worker consumes
    handle = idle.send_sms.delay(TO, "secret code 4821", idempotency_key="k-flower")
    raw = redis.Redis.from_url(redis_url).lrange(idle.settings.queue, 0, -1)
    headers = json.loads(raw[0])["headers"]
    assert headers["id"] == handle.id and headers["argsrepr"] == "()"
    assert "+998*******67" in headers["kwargsrepr"] and "k-flower" in headers["kwargsrepr"]
    assert "4821" not in headers["kwargsrepr"] and TO.lstrip("+") not in headers["kwargsrepr"]
    assert idle.record(message_id_for("k-flower", ""))["status"] == "queued"   # recorded before publishing


def test_worker_logs_never_show_full_numbers_or_secrets(worker, producer, fake):
    # Scans everything this module's worker logged, including a send made here for certain.
    handle = producer.send_sms.delay(TO, "log me")
    handle.get(timeout=TIMEOUT)
    assert worker.wait_for(rf"send_sms\[{handle.id}\] succeeded")
    log = worker.log
    assert f"message {handle.id} to +998*******67 accepted" in log   # numbers are there, masked
    assert TO not in log and TO.lstrip("+") not in log
    assert ESKIZ_PASSWORD not in log
