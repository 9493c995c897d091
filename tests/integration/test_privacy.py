"""Secrets and privacy in logs: a worker and a beat at DEBUG, every gateway configured with long random
secrets against its fake, the webhook receiver, and real traffic through all of it (sends through
every gateway, a token refresh, a rejected recipient, a 5xx retry, batches, status and balance polls,
webhook callbacks, strangers at wrong URLs). Then every line the worker, the beat and the receiver
wrote is scanned: no secret (nor a long piece of one) and no phone number we used (E.164 with or without
"+", international or national format, with any separators) may appear."""

from __future__ import annotations

import base64
import re
import secrets
import time
from dataclasses import dataclass

import phonenumbers
import pytest
import requests

from smsdispatch.devtools.fakes.devsms import FakeDevSms
from smsdispatch.devtools.fakes.eskiz import FakeEskiz
from smsdispatch.devtools.fakes.smscx import FakeSmsCx
from smsdispatch.devtools.fakes.smsflow import FakeSmsFlow
from smsdispatch.devtools.fakes.smspm import FakeSmsPm
from smsdispatch.devtools.processes import BeatProcess, WorkerProcess
from smsdispatch.devtools.redis_server import free_port
from smsdispatch.tasks import SEND_SMS

from ..procs import Receiver
from .conftest import Producer, worker_settings

TIMEOUT = 30


def secret() -> str:
    return "s3cr3t" + secrets.token_urlsafe(30)


SECRETS = {
    "eskiz password": secret(), "devsms token": secret(), "smsflow client secret": secret(),
    "smscx api key": secret(), "smspm hash": secret(), "smspm token": secret(), "webhook secret": secret(),
}
SMSFLOW_CLIENT_ID = "privacy-client"

# The numbers we send to (valid, and distinct from every other test's).
ESKIZ_TO, ESKIZ_REJECTED, DEVSMS_TO, BATCH_TO = "+998937415286", "+998995142763", "+998973620815", "+998946180372"
SMSFLOW_TO, SMSCX_TO, SMSPM_TO, SMSPM_REJECTED = "+27826394175", "+4915229384716", "+37253817264", "+37258164923"
NUMBERS = [ESKIZ_TO, ESKIZ_REJECTED, DEVSMS_TO, BATCH_TO, SMSFLOW_TO, SMSCX_TO, SMSPM_TO, SMSPM_REJECTED]


# ------------------------------------------------------------------ the scanner

@dataclass(frozen=True)
class Needle:
    what: str
    pattern: re.Pattern


def _digits_pattern(digits: str) -> str:
    """The digits in order, with up to three separators (space, - . ( ) /) between any two, and no
    digit right before or after: "+998 (93) 741-52-86" matches 998937415286."""
    return r"(?<!\d)" + r"[\s\-.()/]{0,3}".join(digits) + r"(?!\d)"


def phone_needles(number: str) -> list[Needle]:
    """Every way `number` could be written: E.164 (with or without "+", any separators), its national
    significant number, and its national format with a trunk prefix (e.g. 082 639 4175)."""
    parsed = phonenumbers.parse(number)
    e164 = number.lstrip("+")
    nsn = phonenumbers.national_significant_number(parsed)
    national = re.sub(r"\D", "", phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL))
    return [Needle(f"number {number} as {form}", re.compile(_digits_pattern(form)))
            for form in dict.fromkeys([e164, nsn, national])]


def secret_needles(name: str, value: str, *, head: bool = True) -> list[Needle]:
    """The value, and its first and last 12 characters (a truncated or split leak). `head=False` for
    tokens whose start is no secret (a JWT's header)."""
    parts = [("whole", value), ("tail", value[-12:])] + ([("head", value[:12])] if head else [])
    return [Needle(f"{name} ({part})", re.compile(re.escape(piece))) for part, piece in parts]


def scan(output: str, needles: list[Needle]) -> list[str]:
    """Every (needle, line) hit in `output`."""
    return [f"{n.what}: {line[:300]}" for line in output.splitlines() for n in needles if n.pattern.search(line)]


def all_needles(tokens: dict[str, str] | None = None) -> list[Needle]:
    """Our numbers and secrets, and `tokens` (issued by the gateways: whole and tail only)."""
    found = [n for number in NUMBERS for n in phone_needles(number)]
    for name, value in SECRETS.items():
        found += secret_needles(name, value)
    for name, value in (tokens or {}).items():
        found += secret_needles(name, value, head=False)
    return found


def test_the_scanner_finds_planted_secrets_and_numbers_and_passes_masked_lines():
    needles = all_needles()
    planted = {
        f"POST /?hash={SECRETS['smspm hash']}&token=x HTTP/1.1": "smspm hash (whole)",
        f"auth failed: {SECRETS['devsms token'][:20]}...": "devsms token (head)",
        "sending to +998 93 741-52-86": f"number {ESKIZ_TO} as 998937415286",
        "{'to': '93 741 52 86'}": f"number {ESKIZ_TO} as 937415286",
        "to=082 639 4175": f"number {SMSFLOW_TO} as 0826394175",
        "body: b'{\"toNumber\": [\"37253817264\"]}'": f"number {SMSPM_TO} as 37253817264",
        f"/eskiz/{SECRETS['webhook secret']}": "webhook secret (whole)",
    }
    for line, what in planted.items():
        hits = scan(line, needles)
        assert any(h.startswith(what + ":") for h in hits), (line, hits)
    clean = ["message 3f2a accepted by eskiz as 17", "to +998*******86 (12 chars)", "POST / HTTP/1.1 200 91",
             "id 99893741528612345 is longer", "took 937 ms, 415 sent, 286 left"]
    assert [scan(line, needles) for line in clean] == [[]] * len(clean)


# ------------------------------------------------------------------ the run


@pytest.fixture(scope="module")
def fakes():
    with FakeEskiz(email="privacy@example.com", password=SECRETS["eskiz password"], balance=10**9) as eskiz, \
            FakeDevSms(token=SECRETS["devsms token"]) as devsms, \
            FakeSmsFlow(client_id=SMSFLOW_CLIENT_ID, client_secret=SECRETS["smsflow client secret"]) as smsflow, \
            FakeSmsCx(api_key=SECRETS["smscx api key"]) as smscx, \
            FakeSmsPm(hash=SECRETS["smspm hash"], token=SECRETS["smspm token"]) as smspm:
        yield {"eskiz": eskiz, "devsms": devsms, "smsflow": smsflow, "smscx": smscx, "smspm": smspm}


def test_no_secret_and_no_phone_number_reaches_any_log_at_debug(redis_url, fakes, tmp_path):
    eskiz, devsms, smsflow, smscx, smspm = (fakes[g] for g in ("eskiz", "devsms", "smsflow", "smscx", "smspm"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = worker_settings(
        redis_url, eskiz, ESKIZ_EMAIL="privacy@example.com", ESKIZ_PASSWORD=SECRETS["eskiz password"],
        DEFAULT_REGION="UZ", DEVSMS_TOKEN=SECRETS["devsms token"], DEVSMS_BASE_URL=devsms.base_url,
        SMSFLOW_CLIENT_ID=SMSFLOW_CLIENT_ID, SMSFLOW_CLIENT_SECRET=SECRETS["smsflow client secret"],
        SMSFLOW_BASE_URL=smsflow.base_url, SMSCX_API_KEY=SECRETS["smscx api key"], SMSCX_BASE_URL=smscx.base_url,
        SMSPM_HASH=SECRETS["smspm hash"], SMSPM_TOKEN=SECRETS["smspm token"], SMSPM_BASE_URL=smspm.base_url,
        WEBHOOK_BASE_URL=base, WEBHOOK_SECRET=SECRETS["webhook secret"],
        BALANCE_THRESHOLDS="eskiz=1000,devsms=1,smscx=1", ROUTES="27=smsflow")
    receiver = Receiver(settings, port)
    worker = WorkerProcess(settings, name="privacy", loglevel="DEBUG")
    beat = BeatProcess(settings, schedule_dir=str(tmp_path), name="privacy", loglevel="DEBUG")
    outputs: dict[str, str] = {}
    try:
        producer = Producer(settings)

        def send(to, text, **kw):
            return producer.send_sms.delay(to, text, **kw).get(timeout=TIMEOUT)

        # Eskiz: numbers written every way a web app might, a token expiry, a 5xx retry, a rejected number
        first = send("93 741 52 86", "Your code is 4821")
        assert first["status"] == "accepted"
        eskiz.expire_token()
        assert send("+998 (93) 741-52-86", "After expiry")["status"] == "accepted"
        assert eskiz.refreshes >= 1
        eskiz.fail_next(status=503)
        retried = send("00998937415286", "After a 503")
        assert retried["status"] == "accepted" and retried["attempts"] == 2
        eskiz.reject_recipients(ESKIZ_REJECTED)
        rejected = send("99 514-27-63", "Nobody home")
        assert rejected["status"] == "failed" and rejected["error"]["code"] == "recipient_rejected"
        # by name, positionally: nothing masks these arguments at the producer
        by_name = producer.app.send_task(SEND_SMS, args=["+998 93 741 52 86", "By name"]).get(timeout=TIMEOUT)
        assert by_name["status"] == "accepted"
        by_name = producer.app.send_task(SEND_SMS, kwargs={"to": "(93) 741-52-86", "text": "By keyword"})
        assert by_name.get(timeout=TIMEOUT)["status"] == "accepted"

        # every other gateway
        assert send("+998 97 362 08 15", "Via DevSMS", gateway="devsms")["status"] == "accepted"
        assert send("+27 82 639 4175", "Via SMSFlow")["status"] == "accepted"          # routed by prefix
        smsflow.expire_token()
        assert send("+27826394175", "SMSFlow after expiry", gateway="smsflow")["status"] == "accepted"
        smscx.fail_next(status=500)
        via_smscx = send("+49 1522 9384716", "Via SMS.CX", gateway="smscx")
        assert via_smscx["status"] == "accepted"
        assert send("+372 5381 7264", "Via SMSPM", gateway="smspm")["status"] == "accepted"
        smspm.reject_recipients(SMSPM_REJECTED)
        assert send("+372 5816 4923", "Refused by SMSPM", gateway="smspm")["error"]["code"] == "recipient_rejected"

        # batches: Eskiz send-batch and SMSPM's one-text bulk
        for gateway, entries in [("eskiz", [{"to": "94 618 03 72", "text": "Batch one"},
                                            {"to": "+998937415286", "text": "Batch two"}]),
                                 ("smspm", [{"to": "+372 5381 7264", "text": "Bulk"},
                                            {"to": "+37258164923", "text": "Bulk"}])]:
            summary = producer.send_batch.delay(entries, gateway=gateway).get(timeout=TIMEOUT)
            for chunk in summary["chunk_tasks"]:
                producer.app.AsyncResult(chunk).get(timeout=TIMEOUT)

        # webhooks: Eskiz, DevSMS and SMS.CX call the secret URL; strangers try others
        sent = eskiz.sends_for(first["message_id"])[0]
        assert sent.callback_url == f"{base}/eskiz/{SECRETS['webhook secret']}"
        report = {"request_id": sent.request_id, "message_id": str(sent.eskiz_id), "user_sms_id": sent.user_sms_id,
                  "country": "UZ", "phone_number": sent.mobile_phone, "sms_count": "1", "status": "DELIVRD",
                  "status_date": "2026-11-22 10:00:00"}
        assert requests.post(sent.callback_url, json=report, timeout=5).status_code == 200
        assert requests.post(f"{base}/smscx/{SECRETS['webhook secret']}", timeout=5, json={
            "event": "dlr_update", "data": [{"msgId": via_smscx["gateway_message_id"], "status": "DELIVERED",
                                             "to": SMSCX_TO}]}).status_code == 200
        assert requests.post(f"{base}/devsms/{SECRETS['webhook secret']}", timeout=5,
                             data={"status": "DELIVRD", "phone": DEVSMS_TO}).status_code in (200, 503)
        assert requests.post(f"{base}/eskiz/{SECRETS['webhook secret']}", data=b"not json", timeout=5,
                             headers={"Content-Type": "application/json"}).status_code == 400
        for path in ["/eskiz/not-the-secret", f"/eskiz/{SECRETS['webhook secret'][:-1]}", "/smscx/",
                     f"/unknown/{SECRETS['webhook secret']}", f"/eskiz/{ESKIZ_TO}", "/"]:
            assert requests.post(base + path, json=report, timeout=5).status_code == 404, path
        assert requests.get(f"{base}/eskiz/{SECRETS['webhook secret']}", timeout=5).status_code == 405

        # beat: status and balance polls have run since the sends (each gateway with an API asked)
        polls = worker.count(r"poll_delivery_status\[.*\] succeeded"), worker.count(r"poll_balance\[.*\] succeeded")
        assert worker.wait_for(r"poll_delivery_status\[.*\] succeeded", count=polls[0] + 2, timeout=TIMEOUT)
        assert worker.wait_for(r"poll_balance\[.*\] succeeded", count=polls[1] + 2, timeout=TIMEOUT)
    finally:
        outputs["beat"] = _stopped(beat)
        outputs["worker"] = _stopped(worker)
        outputs["receiver"] = receiver.stop()

    # the run was real: DEBUG was on, urllib3 logged request lines, every gateway was called
    assert re.search(r"DEBUG", outputs["worker"]) and re.search(r"DEBUG", outputs["beat"])
    assert re.search(r"urllib3\.connectionpool|HTTP/1\.1\" \d{3}", outputs["worker"]), "no urllib3 request lines"
    for name, fake in fakes.items():
        assert fake.accepted, f"{name} accepted nothing"
    issued = {f"{name} issued token {i}": header.split(" ", 1)[-1]
              for name, fake in fakes.items()
              for i, header in enumerate({r.headers.get("authorization", "") for r in fake.requests_log} - {""})}
    basic = base64.b64encode(f"{SMSFLOW_CLIENT_ID}:{SECRETS['smsflow client secret']}".encode()).decode()
    needles = all_needles({**issued, "smsflow basic auth": basic})

    hits = {name: scan(text, needles) for name, text in outputs.items()}
    assert hits == {"beat": [], "worker": [], "receiver": []}, "\n".join(
        f"{name}: {h}" for name, found in hits.items() for h in found[:40])


def _stopped(process) -> str:
    process.stop()
    time.sleep(0.2)          # the pump thread reads the last lines
    return process.log
