"""The webhook receiver as a WSGI app, on fakeredis: authentication, payloads, agreement with polling."""

from __future__ import annotations

import io
import json

import pytest

from smsdispatch.config import load_settings
from smsdispatch.errors import ConfigError
from smsdispatch.keys import Keys
from smsdispatch.records import MessageStatus, Records
from smsdispatch.webhooks import Webhooks

SECRET = "s" * 24


@pytest.fixture
def records(redis_client):
    return Records(redis_client, Keys("t"))


@pytest.fixture
def hooks(records):
    settings = load_settings(webhook_base_url="https://sms.example.com/hooks", webhook_secret=SECRET)
    return Webhooks(settings, records)


def post(hooks, path, body, *, form=False, method="POST"):
    raw = (body if isinstance(body, bytes) else
           ("&".join(f"{k}={v}" for k, v in body.items()) if form else json.dumps(body)).encode())
    environ = {"PATH_INFO": path, "REQUEST_METHOD": method, "CONTENT_LENGTH": str(len(raw)),
               "CONTENT_TYPE": "application/x-www-form-urlencoded" if form else "application/json",
               "wsgi.input": io.BytesIO(raw)}
    status, answer = hooks.handle(environ)
    return int(status.split()[0]), answer


def eskiz(user_sms_id, status="DELIVRD"):
    return {"request_id": "r-1", "message_id": "4385062", "user_sms_id": user_sms_id, "country": "UZ",
            "phone_number": "998991234567", "sms_count": "1", "status": status, "status_date": "2026-11-22 10:00:00"}


def test_an_eskiz_report_delivers_the_message(hooks, records):
    records.update("m1", MessageStatus.ACCEPTED, gateway_message_id="r-1")
    assert post(hooks, f"/eskiz/{SECRET}", eskiz("m1")) == (200, {"reports": 1, "applied": 1})
    assert records.get("m1")["status"] == "delivered" and records.get("m1")["raw_status"] == "DELIVRD"


def test_form_bodies_and_failures_too(hooks, records):
    records.update("m2", MessageStatus.ACCEPTED)
    assert post(hooks, f"/eskiz/{SECRET}", eskiz("m2", "UNDELIV"), form=True)[1]["applied"] == 1
    assert records.get("m2")["status"] == "failed" and records.get("m2")["error"]["code"] == "undelivered"


@pytest.mark.parametrize("path", [f"/eskiz/{'x' * 24}", "/eskiz", f"/unknown/{SECRET}", f"/eskiz/{SECRET}/x"])
def test_without_the_secret_or_the_route_nothing_changes(hooks, records, path):
    records.update("m1", MessageStatus.ACCEPTED)
    assert post(hooks, path, eskiz("m1"))[0] == 404
    assert records.get("m1")["status"] == "accepted"


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b"", json.dumps({"user_sms_id": "m1"}).encode()])
def test_a_malformed_body_is_a_400_and_changes_nothing(hooks, records, body):
    records.update("m1", MessageStatus.ACCEPTED)
    assert post(hooks, f"/eskiz/{SECRET}", body)[0] == 400
    assert records.get("m1")["status"] == "accepted"


def test_get_is_refused(hooks):
    assert post(hooks, f"/eskiz/{SECRET}", eskiz("m1"), method="GET")[0] == 405


def test_sms_cx_batches_reports_by_msg_id(hooks, records):
    for i in range(3):
        records.update(f"c{i}", MessageStatus.ACCEPTED, gateway_message_id=f"msg-{i}")
    body = {"event": "dlr_update", "data": [
        {"campaignId": "k", "msgId": "msg-0", "status": "DELIVERED", "errorCode": None},
        {"campaignId": "k", "msgId": "msg-1", "status": "FAILED", "errorCode": 41},
        {"campaignId": "k", "msgId": "msg-2", "status": "SENT", "errorCode": None},
        {"campaignId": "k", "msgId": "not-ours", "status": "DELIVERED", "errorCode": None}]}
    assert post(hooks, f"/smscx/{SECRET}", body) == (200, {"reports": 4, "applied": 2})
    assert [records.get(f"c{i}")["status"] for i in range(3)] == ["delivered", "failed", "accepted"]
    too_many = {"event": "dlr_update", "data": [body["data"][0]] * 201}
    assert post(hooks, f"/smscx/{SECRET}", too_many)[0] == 400
    assert post(hooks, f"/smscx/{SECRET}", {"event": "new_optout", "data": []}) == (200, {"reports": 0, "applied": 0})


def test_devsms_reports_are_found_by_sms_id(hooks, records):
    records.update("d1", MessageStatus.ACCEPTED, gateway_message_id="123")
    assert post(hooks, f"/devsms/{SECRET}", {"sms_id": 123, "status": "DELIVERED"})[1]["applied"] == 1
    assert records.get("d1")["status"] == "delivered"


def test_callbacks_and_polling_agree_whatever_their_order(hooks, records):
    records.update("m1", MessageStatus.ACCEPTED)
    assert records.advance("m1", MessageStatus.DELIVERED)                 # the poller got there first
    assert post(hooks, f"/eskiz/{SECRET}", eskiz("m1", "UNDELIV"))[1]["applied"] == 0
    assert post(hooks, f"/eskiz/{SECRET}", eskiz("m1", "ACCEPTED"))[1]["applied"] == 0
    assert records.get("m1")["status"] == "delivered"


def test_sends_carry_our_callback_url_with_the_secret():
    s = load_settings(webhook_base_url="https://sms.example.com/hooks/", webhook_secret=SECRET)
    assert s.callback_url("eskiz") == f"https://sms.example.com/hooks/eskiz/{SECRET}"
    assert s.callback_url("smsflow") is None                                # no callbacks there
    with pytest.raises(ConfigError, match="WEBHOOK_SECRET is missing or shorter than 16"):
        load_settings(webhook_base_url="https://sms.example.com/hooks", webhook_secret="short")


def test_a_report_that_beats_our_acceptance_asks_the_gateway_to_call_again(hooks, records):
    records.update("m9", MessageStatus.SENDING)
    assert post(hooks, f"/eskiz/{SECRET}", eskiz("m9")) == (503, {"reports": 1, "applied": 0, "retry": 1})
    assert records.get("m9")["status"] == "sending"
    records.update("m9", MessageStatus.ACCEPTED)
    assert post(hooks, f"/eskiz/{SECRET}", eskiz("m9")) == (200, {"reports": 1, "applied": 1})
