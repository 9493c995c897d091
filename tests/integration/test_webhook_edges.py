"""The webhook receiver at its edges, as `smsdispatch webhooks` runs it (a subprocess on waitress) against
real Redis, a real worker and the fake gateways: a report settles only its own gateway's messages, each
gateway has its own secret and a rotation keeps the old one working until it is dropped, slow clients
cannot exhaust the server, and no body gets a traceback or a 500."""

from __future__ import annotations

import json
import selectors
import socket
import time

import psutil
import pytest
import requests

from smsdispatch.devtools.fakes.devsms import FakeDevSms
from smsdispatch.devtools.processes import WorkerProcess
from smsdispatch.devtools.redis_server import free_port
from smsdispatch.records import MessageStatus

from ..procs import Receiver
from .conftest import Producer, worker_settings

TIMEOUT = 30
ESKIZ_SECRET = "eskiz-secret-" + "e" * 20
DEVSMS_SECRET = "devsms_secret_" + "d" * 20
NEW_ESKIZ_SECRET = "eskiz-rotated-" + "n" * 20
ESKIZ_TO, DEVSMS_TO = "+998901230001", "+998901230002"


def eskiz_report(**fields) -> dict:
    return {"country": "UZ", "sms_count": "1", "status_date": "2026-11-22 10:00:00", **fields}


def test_a_report_settles_only_its_own_gateways_message(redis_url, fake):
    port = free_port()
    with FakeDevSms(token="edge-token") as devsms:
        settings = worker_settings(redis_url, fake, DEVSMS_TOKEN="edge-token", DEVSMS_BASE_URL=devsms.base_url,
                                   WEBHOOK_BASE_URL=f"http://127.0.0.1:{port}",
                                   WEBHOOK_SECRETS=f"eskiz={ESKIZ_SECRET},devsms={DEVSMS_SECRET}")
        receiver, worker = Receiver(settings, port), WorkerProcess(settings, name="edges")
        try:
            producer = Producer(settings)
            via_devsms = producer.send_sms.delay(DEVSMS_TO, "Your code is 1234", gateway="devsms").get(timeout=TIMEOUT)
            via_eskiz = producer.send_sms.delay(ESKIZ_TO, "Your code is 5678").get(timeout=TIMEOUT)
            assert via_devsms["status"] == via_eskiz["status"] == "accepted"
            sent_devsms, sent_eskiz = devsms.accepted_for(to=DEVSMS_TO)[0], fake.sends_for(via_eskiz["message_id"])[0]
            # each gateway was handed its own secret
            assert sent_devsms.callback_url == f"{receiver.base}/devsms/{DEVSMS_SECRET}"
            assert sent_eskiz.callback_url == f"{receiver.base}/eskiz/{ESKIZ_SECRET}"

            # Eskiz reports on its own message that happens to carry DevSMS's id for ours: nothing changes
            devsms_id = sent_devsms.gateway_message_id
            answer = requests.post(sent_eskiz.callback_url, timeout=5,
                                   json=eskiz_report(message_id=devsms_id, status="UNDELIV"))
            assert answer.status_code == 200 and answer.json() == {"reports": 1, "applied": 0}
            # ... nor when the report names our message: it is counted as another gateway's
            answer = requests.post(sent_eskiz.callback_url, timeout=5,
                                   json=eskiz_report(user_sms_id=via_devsms["message_id"], status="UNDELIV"))
            assert answer.json() == {"reports": 1, "applied": 0, "foreign": 1}
            assert producer.record(via_devsms["message_id"])["status"] == "accepted"
            foreign = producer.dispatcher.keys.webhook_foreign("eskiz")
            assert producer.dispatcher.records.redis.get(foreign) == b"1"
            # the DevSMS secret does not open the Eskiz route, nor the Eskiz one DevSMS's
            report = {"sms_id": int(devsms_id), "status": "DELIVRD"}
            assert requests.post(f"{receiver.base}/devsms/{ESKIZ_SECRET}", json=report, timeout=5).status_code == 404
            assert requests.post(f"{receiver.base}/eskiz/{DEVSMS_SECRET}", timeout=5,
                                 json=eskiz_report(user_sms_id=via_eskiz["message_id"], status="DELIVRD")
                                 ).status_code == 404
            # each gateway settles its own
            assert requests.post(sent_devsms.callback_url, json=report, timeout=5).json()["applied"] == 1
            assert requests.post(sent_eskiz.callback_url, timeout=5, json=eskiz_report(
                user_sms_id=via_eskiz["message_id"], message_id=str(sent_eskiz.eskiz_id), status="UNDELIV"),
            ).json()["applied"] == 1
            assert producer.record(via_devsms["message_id"])["status"] == "delivered"
            assert producer.record(via_eskiz["message_id"])["status"] == "failed"
        finally:
            worker.stop()
            output = receiver.stop()
    assert ESKIZ_SECRET not in output and DEVSMS_SECRET not in output
    assert ESKIZ_SECRET not in worker.log and DEVSMS_SECRET not in worker.log


def test_a_rotated_secret_is_handed_out_and_the_old_one_works_until_it_is_dropped(redis_url, fake):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    before = worker_settings(redis_url, fake, WEBHOOK_BASE_URL=base, WEBHOOK_SECRET=ESKIZ_SECRET)
    during = {**before, "SMSDISPATCH_WEBHOOK_SECRETS": f"eskiz={NEW_ESKIZ_SECRET}",
              "SMSDISPATCH_WEBHOOK_OLD_SECRETS": f"eskiz={ESKIZ_SECRET}"}
    after = {k: v for k, v in during.items() if k != "SMSDISPATCH_WEBHOOK_OLD_SECRETS"}

    def send(settings: dict[str, str], to: str):
        worker = WorkerProcess(settings, name="rotating")
        try:
            result = Producer(settings).send_sms.delay(to, "Rotation").get(timeout=TIMEOUT)
        finally:
            worker.stop()
        sent = fake.sends_for(result["message_id"])[0]
        return result["message_id"], sent.callback_url, eskiz_report(
            user_sms_id=sent.user_sms_id, request_id=sent.request_id, message_id=str(sent.eskiz_id), status="DELIVRD")

    producer = Producer(after)
    first, first_url, first_report = send(before, "+998901230011")
    assert first_url == f"{base}/eskiz/{ESKIZ_SECRET}"
    second, second_url, second_report = send(during, "+998901230012")
    assert second_url == f"{base}/eskiz/{NEW_ESKIZ_SECRET}"               # new sends carry the new secret

    receiver = Receiver(during, port)                                  # the rotation: both are accepted
    try:
        assert requests.post(first_url, json=first_report, timeout=5).json() == {"reports": 1, "applied": 1}
        assert requests.post(second_url, json={**second_report, "status": "ACCEPTED"}, timeout=5).status_code == 200
    finally:
        receiver.stop()
    receiver = Receiver(after, port)                                   # rotation over: the old one is refused
    try:
        assert requests.post(first_url, json=second_report, timeout=5).status_code == 404
        assert producer.record(second)["status"] == "accepted"
        assert requests.post(second_url, json=second_report, timeout=5).json() == {"reports": 1, "applied": 1}
    finally:
        receiver.stop()
    assert producer.record(first)["status"] == producer.record(second)["status"] == "delivered"


# --- the server: slow clients and bad bodies ------------------------------------------------------

@pytest.fixture(scope="module")
def receiver(redis_url, fake_eskiz):
    settings = worker_settings(redis_url, fake_eskiz, WEBHOOK_SECRET=ESKIZ_SECRET)
    running = Receiver(settings, free_port(), "--threads", "4", "--channel-timeout", "3")
    yield running, Producer(settings)
    output = running.stop()
    assert "Traceback" not in output and ESKIZ_SECRET not in output, output


def report_now(base: str) -> tuple[int, float]:
    started = time.monotonic()
    answer = requests.post(f"{base}/eskiz/{ESKIZ_SECRET}", json=eskiz_report(user_sms_id="nobody", status="DELIVRD"),
                           timeout=10)
    return answer.status_code, time.monotonic() - started


def test_slow_clients_hold_neither_threads_nor_sockets_and_a_report_is_answered_at_once(receiver):
    running, _ = receiver
    half = (f"POST /eskiz/{ESKIZ_SECRET} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: 2000\r\n\r\n" + '{"status": "DELIVRD", "user_sms_id": ').encode()
    headers_only = f"POST /eskiz/{ESKIZ_SECRET} HTTP/1.1\r\nHost: x\r\nContent-Le".encode()
    stalled = []
    try:
        for i in range(300):
            s = socket.create_connection(("127.0.0.1", running.port), timeout=5)
            s.sendall(half if i % 2 else headers_only)                 # ... and never another byte
            stalled.append(s)
        status, took = report_now(running.base)
        assert status == 200 and took < 1.0, (status, took)            # a real report is answered at once
        threads = psutil.Process(running.proc.pid).num_threads()
        assert threads <= 4 + 4, threads                               # 4 workers + waitress's loop, not 300
        # every stalled connection is closed by the server within the channel timeout (3 s) + a check
        selector = selectors.DefaultSelector()
        for s in stalled:
            s.setblocking(False)
            selector.register(s, selectors.EVENT_READ)
        closed, deadline = 0, time.monotonic() + 15
        while closed < len(stalled) and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=1):
                try:
                    data = key.fileobj.recv(4096)
                except (ConnectionResetError, BlockingIOError):
                    data = b""
                if not data:
                    selector.unregister(key.fileobj)
                    closed += 1
        assert closed == len(stalled), f"{closed} of {len(stalled)} stalled connections closed by the server"
        status, took = report_now(running.base)
        assert status == 200 and took < 1.0
    finally:
        for s in stalled:
            s.close()


def raw_request(port: int, head: str, body: bytes = b"") -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head.encode() + body)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    return answer.decode("latin-1")


def test_a_huge_body_is_refused_before_it_is_read(receiver):
    running, _ = receiver
    head = (f"POST /eskiz/{ESKIZ_SECRET} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {50 * 1024 * 1024}\r\nConnection: close\r\n\r\n")
    started = time.monotonic()
    assert raw_request(running.port, head, b'{"status": "').startswith("HTTP/1.1 413")
    assert time.monotonic() - started < 2
    chunked = (f"POST /eskiz/{ESKIZ_SECRET} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               f"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
    chunk = b"x" * 65536
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(8)) + b"0\r\n\r\n"    # 512 KB
    try:        # refused once past the limit; the rest we were sending may cut the answer short (a reset)
        answer = raw_request(running.port, chunked, body)
    except (ConnectionResetError, BrokenPipeError):
        answer = "HTTP/1.1 413 (reset while sending the rest)"
    assert answer.startswith("HTTP/1.1 413"), answer[:200]
    assert report_now(running.base)[0] == 200


@pytest.mark.parametrize(("case", "body", "kind"), [
    ("deeply nested JSON", b"[" * 100_000, "application/json"),
    ("deeply nested objects", b'{"status": ' * 20_000, "application/json"),
    ("JSON that is not an object", b'["DELIVRD"]', "application/json"),
    ("invalid UTF-8", b'{"status": "DELIVRD", "user_sms_id": "\xff\xfe"}', "application/json"),
    ("invalid UTF-8 in a form", b"status=DELIVRD&user_sms_id=\xc3\x28", "application/x-www-form-urlencoded"),
    ("over the body limit", b'{"status": "' + b"x" * 300_000 + b'"}', "application/json"),
])
def test_a_body_we_cannot_read_is_a_4xx_never_a_500(receiver, case, body, kind):
    running, _ = receiver
    answer = requests.post(f"{running.base}/eskiz/{ESKIZ_SECRET}", data=body, headers={"Content-Type": kind},
                           timeout=10)
    assert 400 <= answer.status_code < 500, (case, answer.status_code, answer.text[:200])


def test_a_reference_naming_a_key_that_is_no_record_is_not_a_500(receiver):
    running, producer = receiver
    records = producer.dispatcher.records
    records.update("edge-1", MessageStatus.ACCEPTED, gateway="eskiz", gateway_message_id="g-edge-1")
    # sms:msg:edge-1:history is a list: reading it as a record is Redis's WRONGTYPE
    for ref in ("edge-1:history", "g-edge-1:x"):
        answer = requests.post(f"{running.base}/eskiz/{ESKIZ_SECRET}", timeout=10,
                               data=json.dumps(eskiz_report(user_sms_id=ref, status="DELIVRD")),
                               headers={"Content-Type": "application/json"})
        assert answer.status_code == 200 and answer.json() == {"reports": 1, "applied": 0}
    assert records.get("edge-1")["status"] == "accepted"
