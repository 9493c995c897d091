"""All five gateways through a real worker: routing by prefix, native batches, per-message refusals,
and each gateway's own answer to an ambiguous call (lookup, dedupe, or `unknown`)."""

from __future__ import annotations

import uuid
from contextlib import ExitStack

import pytest
from celery.result import AsyncResult

from smsdispatch.devtools.fakes.devsms import FakeDevSms
from smsdispatch.devtools.fakes.smscx import FakeSmsCx
from smsdispatch.devtools.fakes.smsflow import FakeSmsFlow
from smsdispatch.devtools.fakes.smspm import FakeSmsPm
from smsdispatch.devtools.processes import WorkerProcess
from smsdispatch.dispatch import message_id_for

from .conftest import Producer, worker_settings

TIMEOUT = 60


@pytest.fixture(scope="module")
def fleet(redis_url, fake_eskiz):
    """One worker with every gateway configured, each pointing at its fake."""
    with ExitStack() as stack:
        fakes = {
            "eskiz": fake_eskiz,
            "devsms": stack.enter_context(FakeDevSms(token="dev-token-secret")),
            "smsflow": stack.enter_context(FakeSmsFlow(client_id="flow-id", client_secret="flow-secret")),
            "smscx": stack.enter_context(FakeSmsCx(api_key="cx-key-secret")),
            "smspm": stack.enter_context(FakeSmsPm(hash="pm-hash", token="pm-token-secret")),
        }
        settings = worker_settings(
            redis_url, fake_eskiz, ROUTES="44=smscx,27=smsflow,372=smspm",
            DEVSMS_TOKEN="dev-token-secret", DEVSMS_BASE_URL=fakes["devsms"].base_url,
            SMSFLOW_CLIENT_ID="flow-id", SMSFLOW_CLIENT_SECRET="flow-secret",
            SMSFLOW_BASE_URL=fakes["smsflow"].base_url,
            SMSCX_API_KEY="cx-key-secret", SMSCX_BASE_URL=fakes["smscx"].base_url,
            SMSPM_HASH="pm-hash", SMSPM_TOKEN="pm-token-secret", SMSPM_BASE_URL=fakes["smspm"].base_url)
        worker = WorkerProcess(settings, name="fleet")
        stack.callback(worker.stop)
        yield fakes, Producer(settings), worker


@pytest.fixture
def fakes(fleet):
    for fake in fleet[0].values():
        fake.reset()
    return fleet[0]


@pytest.fixture
def producer(fleet):
    return fleet[1]


def test_a_mixed_batch_is_routed_by_prefix_into_each_gateways_native_calls(producer, fakes):
    uz = [f"+99890{i:07d}" for i in range(4)]
    gb = [f"+4479111234{i:02d}" for i in range(4)]
    za = [f"+278212345{i:02d}" for i in range(3)]
    ee = [f"+37251234{i:03d}" for i in range(3)]
    fakes["smscx"].reject_recipients(gb[2])
    messages = ([{"to": n, "text": f"Salom {i}"} for i, n in enumerate(uz)]
                + [{"to": n, "text": "Sale today"} for n in gb]
                + [{"to": n, "text": f"Howzit {i}"} for i, n in enumerate(za)]
                + [{"to": n, "text": "Tere"} for n in ee])
    summary = producer.send_batch.delay(messages, batch_id=f"mix-{uuid.uuid4().hex[:6]}").get(timeout=TIMEOUT)
    for task_id in summary["chunk_tasks"]:
        AsyncResult(task_id, app=producer.app).get(timeout=TIMEOUT)
    final = producer.app.runtime.batches.get(summary["batch_id"])
    assert (final["accepted"], final["failed"], final["status"]) == (13, 1, "done")
    got = {name: sorted("+" + a.to for a in fake.accepted) for name, fake in fakes.items()}
    assert got == {"eskiz": uz, "smscx": sorted(gb[:2] + gb[3:]), "smsflow": za, "smspm": ee, "devsms": []}
    assert fakes["eskiz"].count("/message/sms/send-batch") == 1     # each gateway: one native call
    assert fakes["smscx"].count("/sms") == 1
    assert fakes["smsflow"].count("/api/integration/BulkMessages") == 1
    assert fakes["smspm"].count("/") == 1
    refused = producer.record(message_id_for(f"{summary['batch_id']}:6", ""))   # entry 6 is gb[2]
    assert refused["status"] == "failed" and refused["error"]["code"] == "recipient_rejected"
    assert refused["to"] == gb[2] and refused["gateway"] == "smscx"


def test_sms_cx_repeats_an_unanswered_call_with_the_same_idempotency_id_and_sends_once(producer, fakes):
    cx = fakes["smscx"]
    cx.hang_next(seconds=3, accept=True)            # accepted, but the answer comes after our 1 s timeout
    result = producer.send_sms.delay("+447911123456", "Dedupe me").get(timeout=TIMEOUT)
    assert result["status"] == "accepted" and result["gateway"] == "smscx" and result["attempts"] == 2
    calls = [r for r in cx.requests_log if r.path == "/sms"]
    assert len(calls) == 2 and calls[0].fields["idempotencyId"] == calls[1].fields["idempotencyId"]
    assert len(cx.accepted) == 1                      # SMS.CX deduplicated the repeat


def test_smsflow_without_an_answer_ends_unknown_and_is_never_resent(producer, fakes):
    flow = fakes["smsflow"]
    producer.send_sms.delay("+27821234500", "warm up").get(timeout=TIMEOUT)   # token first
    flow.reset()
    flow.hang_next(seconds=3, accept=True)
    result = producer.send_sms.delay("+27821234501", "No answer").get(timeout=TIMEOUT)
    assert result["status"] == "unknown" and "cannot look messages up" in result["error"]["message"]
    assert flow.count("/api/integration/BulkMessages") == 1 and len(flow.accepted) == 1


def test_devsms_universal_otp_is_checked_before_sending(producer, fakes):
    dev = fakes["devsms"]
    otp = {"type": "universal_otp", "template_type": 1, "service_name": "TechShop", "otp_code": "5678"}
    ok = producer.send_sms.delay("+998901234567", None, gateway="devsms", options=otp).get(timeout=TIMEOUT)
    assert ok["status"] == "accepted" and dev.requests_log[-1].fields["type"] == "universal_otp"
    bad = producer.send_sms.delay("+998901234567", None, gateway="devsms",
                                  options=otp | {"otp_code": "12"}).get(timeout=TIMEOUT)
    assert bad["status"] == "failed" and bad["error"]["code"] == "validation"
    assert "otp_code" in bad["error"]["message"] and len(dev.requests_log) == 1


def test_no_gateway_secret_reaches_the_worker_log(fleet):
    log = fleet[2].log
    for secret in ("dev-token-secret", "flow-secret", "cx-key-secret", "pm-token-secret"):
        assert secret not in log
