"""The SMSFlow adapter against the fake SMSFlow (a real HTTP server on 127.0.0.1) and fakeredis:
what the contract suite does not cover — wire format, response shapes, error mapping, the token cache."""

from __future__ import annotations

import base64
import logging
import threading

import fakeredis
import pytest
from pydantic import SecretStr

from smsdispatch.devtools.fakes.smsflow import FakeSmsFlow
from smsdispatch.errors import (
    AmbiguousError,
    AuthError,
    GatewayRejected,
    InsufficientBalance,
    RecipientRejected,
    ValidationError,
)
from smsdispatch.gateways.base import OutboundSms
from smsdispatch.gateways.smsflow import (
    STATUS_MAP,
    SmsFlowGateway,
    classify,
    error_code,
    parse_send,
    token_ttl,
)
from smsdispatch.keys import Keys
from smsdispatch.records import MessageStatus

AUTH, SEND, BALANCE = "/api/integration/authentication", "/api/integration/BulkMessages", "/api/integration/Balance"
SMS = OutboundSms("msg-1", "+27821234567", "Order 1001 has shipped.")
NUMBERS = ("27821234567", "27831234567", "27721234567")


@pytest.fixture
def fake():
    with FakeSmsFlow(client_id="cid", client_secret="s3cret-value") as f:
        yield f


@pytest.fixture
def redis_client():
    return fakeredis.FakeRedis()


def gateway(fake, redis_client, *, secret="s3cret-value", campaign="Order alerts"):
    return SmsFlowGateway(client_id="cid", client_secret=SecretStr(secret), campaign=campaign,
                          base_url=fake.base_url, redis_client=redis_client, keys=Keys("t"),
                          connect_timeout=1.0, read_timeout=2.0)


def batch(n=3):
    return [OutboundSms(f"m-{i}", f"+{NUMBERS[i]}", f"Text {i}") for i in range(n)]


# --- wire format -------------------------------------------------------------------------------

def test_authentication_is_a_get_with_basic_credentials(fake, redis_client):
    gateway(fake, redis_client).send(SMS)
    auth = fake.requests_log[0]
    assert (auth.method, auth.path) == ("GET", AUTH)
    assert auth.headers["authorization"] == "Basic " + base64.b64encode(b"cid:s3cret-value").decode()


def test_send_posts_the_documented_bulk_shape_with_a_bearer_token(fake, redis_client):
    gw = gateway(fake, redis_client)
    gw.send_batch(batch(2), call_ref="c1")
    send = fake.requests_log[-1]
    assert (send.method, send.path) == ("POST", SEND)
    assert send.headers["content-type"] == "application/json"
    assert send.headers["authorization"] == f"Bearer {redis_client.get(gw.token.key).decode()}"
    assert send.fields == {
        "SendOptions": {"campaignName": "Order alerts", "checkOptOuts": True, "startDeliveryUtc": None},
        "messages": [{"content": "Text 0", "destination": "27821234567"},
                     {"content": "Text 1", "destination": "27831234567"}],
    }


def test_sender_and_callback_are_not_sent_because_the_api_has_no_such_fields(fake, redis_client):
    gateway(fake, redis_client).send(OutboundSms("m", "+27821234567", "Hi", "MyShop", "https://example.com/cb"))
    body = fake.requests_log[-1].fields
    assert "MyShop" not in str(body) and "example.com" not in str(body)
    assert fake.sent[0].campaign == "Order alerts" and fake.sent[0].check_opt_outs is True


def test_balance_is_a_bearer_get(fake, redis_client):
    fake.balance = 42.5
    result = gateway(fake, redis_client).balance()
    assert (result.amount, result.currency) == (42.5, "ZAR")
    assert fake.requests_log[-1].method == "GET" and fake.requests_log[-1].path == BALANCE
    assert fake.requests_log[-1].headers["authorization"].startswith("Bearer ")


# --- send results ------------------------------------------------------------------------------

def test_every_message_of_a_call_carries_the_event_id(fake, redis_client):
    results = gateway(fake, redis_client).send_batch(batch(), call_ref="c1")
    event_ids = {s.event_id for s in fake.sent}
    assert len(event_ids) == 1
    assert [r.gateway_message_id for r in results] == [str(event_ids.pop())] * 3
    assert fake.count(SEND) == 1


def test_send_returns_the_event_id_and_the_submitted_status(fake, redis_client):
    receipt = gateway(fake, redis_client).send(SMS)
    assert receipt.gateway_message_id == str(fake.sent[0].event_id)
    assert STATUS_MAP[receipt.raw_status] is MessageStatus.ACCEPTED


def test_a_refused_number_in_a_batch_is_refused_alone(fake, redis_client):
    fake.reject_recipients(NUMBERS[2])
    results = gateway(fake, redis_client).send_batch(batch(), call_ref="c1")
    assert [r.accepted for r in results] == [True, True, False]
    assert isinstance(results[2].error, RecipientRejected) and results[2].gateway_message_id is None
    assert "27721234567" not in str(results[2].error)


def test_a_call_whose_every_number_is_refused_raises(fake, redis_client):
    fake.reject_recipients(*NUMBERS[:2])
    with pytest.raises(RecipientRejected):
        gateway(fake, redis_client).send_batch(batch(2), call_ref="c1")
    assert fake.sent == []


def test_send_raises_when_an_error_report_refuses_its_only_message(fake, redis_client):
    gw = gateway(fake, redis_client)
    fake.fail_next(status=200, body={"statusCode": 200, "errors": None, "sendResponse": {
        "eventId": 7, "errorReport": [{"code": "INVALID_DESTINATION", "message": "Invalid destination.",
                                       "field": "messages[0].destination"}]}})
    with pytest.raises(RecipientRejected):
        gw.send(SMS)


def test_an_unattributable_error_report_keeps_the_message_accepted_and_warns(fake, redis_client, caplog):
    gw = gateway(fake, redis_client)
    fake.fail_next(status=200, body={"sendResponse": {
        "eventId": 8, "errorReport": [{"code": "SOMETHING", "message": "about 27829999999", "field": "SendOptions"}]}})
    with caplog.at_level(logging.WARNING, logger="smsdispatch.gateways.smsflow"):
        receipt = gw.send(SMS)
    assert receipt.gateway_message_id == "8"
    assert "kept accepted" in caplog.text and "27829999999" not in caplog.text


def test_more_than_max_batch_is_refused_before_any_request(fake, redis_client):
    gw = gateway(fake, redis_client)
    with pytest.raises(ValueError):
        gw.send_batch([SMS] * (gw.max_batch + 1), call_ref="c1")
    assert fake.requests_log == []


def test_an_unreadable_2xx_is_ambiguous(fake, redis_client):
    gw = gateway(fake, redis_client)
    fake.fail_next(status=200, body="OK")
    with pytest.raises(AmbiguousError):
        gw.send(SMS)


# --- parse_send: every shape docs/gateways/smsflow.md allows ------------------------------------

DOCUMENTED = {"statusCode": 200, "errors": None, "sendResponse": {
    "cost": 1.25, "remainingBalance": 98.75, "eventId": 123, "sample": "Hello", "messages": 1, "parts": 1,
    "costBreakdown": [{"quantity": 1, "cost": 1.25, "network": "..."}], "errorReport": []}}


def report(*entries):
    return {"sendResponse": {"eventId": 5, "errorReport": list(entries)}}


@pytest.mark.parametrize("body", [DOCUMENTED, {"sendResponse": {"eventId": 123, "errorReport": None}},
                                  {"sendResponse": {"eventId": "123"}}])
def test_parse_send_reads_the_event_id(body):
    assert parse_send(body, NUMBERS) == ("123", {})


@pytest.mark.parametrize("entry, index, kind", [
    ({"code": "INVALID_DESTINATION", "field": "messages[1].destination"}, 1, RecipientRejected),
    ({"code": "X", "field": "Messages[2].Destination"}, 2, RecipientRejected),
    ({"code": "CONTENT_TOO_LONG", "field": "messages[0].content"}, 0, GatewayRejected),
    ({"code": "INSUFFICIENT_BALANCE", "field": "messages[0]"}, 0, InsufficientBalance),
    ({"code": "INVALID", "field": "27831234567"}, 1, RecipientRejected),
    ({"code": "OPTED_OUT", "message": "27721234567 opted out"}, 2, RecipientRejected),
])
def test_parse_send_attributes_error_report_entries(entry, index, kind):
    event_id, refused = parse_send(report(entry), NUMBERS)
    assert event_id == "5" and list(refused) == [index] and isinstance(refused[index], kind)


@pytest.mark.parametrize("entry", [{"code": "X", "field": "messages[9].destination"}, {"code": "X"}, "plain text"])
def test_parse_send_ignores_what_it_cannot_attribute(entry):
    assert parse_send(report(entry), NUMBERS) == ("5", {})


def test_parse_send_reads_an_error_body_that_came_with_a_2xx():
    with pytest.raises(RecipientRejected):
        parse_send({"statusCode": 400, "errors": [{"code": "INVALID_DESTINATION"}]}, NUMBERS)


def test_parse_send_without_an_event_id_is_ambiguous():
    with pytest.raises(AmbiguousError):
        parse_send({"statusCode": 200, "sendResponse": {"cost": 1}}, NUMBERS)


# --- error bodies -------------------------------------------------------------------------------

@pytest.mark.parametrize("body, code", [
    ({"errors": [{"code": "INVALID_DESTINATION", "message": "m"}], "code": "TOP"}, "INVALID_DESTINATION"),
    ({"errors": [], "code": "TOP"}, "TOP"), ({"errors": None}, "SMSFLOW_ERROR"), ({}, "SMSFLOW_ERROR"),
])
def test_error_code_follows_the_sdk_rule(body, code):
    assert error_code(body) == code


@pytest.mark.parametrize("status, body, kind", [
    (400, {"statusCode": 400, "errors": [{"code": "INVALID_DESTINATION", "message": "Invalid destination."}]},
     RecipientRejected),
    (400, {"errors": [{"code": "INSUFFICIENT_BALANCE"}]}, InsufficientBalance),
    (400, {"errors": [{"code": "E1", "message": "Not enough credits"}]}, InsufficientBalance),
    (422, {"code": "NO_FUNDS"}, InsufficientBalance),
    (402, {}, InsufficientBalance),
    (403, {"errors": [{"code": "FORBIDDEN"}]}, AuthError),
    (400, {"errors": [{"code": "MESSAGES_REQUIRED"}]}, GatewayRejected),
    (404, {}, GatewayRejected),
])
def test_classify_maps_4xx_bodies(status, body, kind):
    error = classify(status, body)
    assert type(error) is kind and error.status == status and error.gateway == "smsflow"


def test_error_messages_never_carry_full_numbers():
    error = classify(400, {"errors": [{"code": "INVALID_DESTINATION", "message": "Bad number 27821234567"}]})
    assert "27821234567" not in str(error) and "INVALID_DESTINATION" in str(error)


def test_insufficient_balance_from_the_fake(fake, redis_client):
    fake.balance = 0.1
    with pytest.raises(InsufficientBalance):
        gateway(fake, redis_client).send(SMS)
    assert fake.sent == []


# --- token cache and re-authentication ---------------------------------------------------------

@pytest.mark.parametrize("minutes, seconds", [(120, 6900), ("120", 6900), (10, 300), (6, 60), (5, 60),
                                              (0, 60), (None, 60), ("soon", 60)])
def test_token_ttl_is_five_minutes_short_and_at_least_one_minute(minutes, seconds):
    assert token_ttl(minutes) == seconds


def test_the_token_is_cached_in_redis_with_its_ttl(redis_client):
    with FakeSmsFlow(client_id="cid", client_secret="s3cret-value", token_minutes=120) as fake:
        gw = gateway(fake, redis_client)
        gw.send(SMS)
        assert 6890 <= redis_client.ttl(gw.token.key) <= 6900
        assert gw.token.key.startswith("t:gw:smsflow:") and gw.token.lock_key.startswith("t:gw:smsflow:")


def test_the_token_is_shared_by_every_adapter_instance(fake, redis_client):
    gateway(fake, redis_client).send(SMS)
    gateway(fake, redis_client).balance()
    assert fake.authentications == 1 and fake.count(AUTH) == 1


def test_an_expired_token_costs_one_authentication_on_send_and_on_balance(fake, redis_client):
    gw = gateway(fake, redis_client)
    gw.send(SMS)
    fake.expire_token()
    gw.send(SMS)
    fake.expire_token()
    gw.balance()
    assert fake.authentications == 3 and len(fake.sent) == 2


def test_a_token_refused_after_reauthentication_is_an_auth_error(fake, redis_client):
    gw = gateway(fake, redis_client)
    fake.fail_next(2, status=401)
    with pytest.raises(AuthError, match="freshly renewed"):
        gw.send(SMS)
    assert fake.count(SEND) == 2 and fake.authentications == 2 and fake.sent == []


def test_concurrent_401s_share_a_single_authentication(fake, redis_client):
    gw = gateway(fake, redis_client)
    gw.send(SMS)
    fake.expire_token()
    barrier, errors = threading.Barrier(8), []

    def worker():
        barrier.wait()
        try:
            gw.send(SMS)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)
    threads = [threading.Thread(target=worker) for _ in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert errors == [] and fake.authentications == 2 and len(fake.sent) == 9


def test_bad_credentials_never_leak_the_secret(fake, redis_client):
    with pytest.raises(AuthError) as e:
        gateway(fake, redis_client, secret="wrong-secret").send(SMS)
    assert "SMSDISPATCH_SMSFLOW_CLIENT_SECRET" in str(e.value) and "wrong-secret" not in str(e.value)
    assert fake.count(SEND) == 0


# --- flags and what SMSFlow does not have -------------------------------------------------------

def test_flags_promise_only_what_smsflow_does(fake, redis_client):
    gw = gateway(fake, redis_client)
    assert (gw.can_lookup, gw.can_dedupe, gw.max_batch, gw.batch_same_text) == (False, False, 100, False)
    assert (gw.supports_status, gw.supports_balance) == (False, True)
    with pytest.raises(NotImplementedError):
        gw.status("123")
    with pytest.raises(NotImplementedError):
        gw.lookup(SMS, since=0)


def test_no_send_options_are_accepted(fake, redis_client):
    gw = gateway(fake, redis_client)
    with pytest.raises(ValidationError):
        gw.validate_options({"startDeliveryUtc": "2030-01-01T00:00:00Z"}, text="x")
    assert gw.validate_options({}, text="x") == {}
