"""The SMS.CX adapter against the fake SMS.CX (a real HTTP server on 127.0.0.1) and fakeredis:
the wire format, every documented response shape, the status map, both auth modes, the 429 wait."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid

import fakeredis
import pytest
import requests
from pydantic import SecretStr

from smsdispatch.devtools.fakes.smscx import FakeSmsCx
from smsdispatch.errors import (
    AuthError,
    ConfigError,
    GatewayRejected,
    InsufficientBalance,
    RateLimited,
    RecipientRejected,
)
from smsdispatch.gateways.base import OutboundSms
from smsdispatch.gateways.smscx import (
    DEFAULT_TOKEN_TTL,
    IDEMPOTENCY_NAMESPACE,
    SmsCxGateway,
    classify,
    idempotency_id,
    map_status,
    parse_send,
    retry_after_from_reset,
)
from smsdispatch.keys import Keys
from smsdispatch.records import MessageStatus

FR, FR2, GB = "+33612345678", "+33698765432", "+447700900123"
SMS = OutboundSms("msg-1", FR, "Bonjour")


@pytest.fixture
def fake():
    with FakeSmsCx(api_key="the-api-key", client_id="cid", client_secret="csecret") as f:
        yield f
    assert f.errors == []   # no bug inside the fake answered a request with a 500


def gateway(fake, redis_client=None, *, api_key=None, secret="csecret", connect_timeout=1.0):
    return SmsCxGateway(api_key=SecretStr(api_key) if api_key else None, client_id="cid",
                        client_secret=SecretStr(secret), sender="InfoText", base_url=fake.base_url,
                        redis_client=redis_client or fakeredis.FakeRedis(), keys=Keys("t"),
                        connect_timeout=connect_timeout, read_timeout=2.0)


def sends(fake):
    return [r for r in fake.requests_log if r.path == "/sms"]


# --- wire format ------------------------------------------------------------------------------

def test_oauth_mode_asks_for_a_token_with_basic_auth_then_sends_json_with_bearer(fake, redis_client):
    receipt = gateway(fake, redis_client).send(SMS)
    token_call, send_call = fake.requests_log
    assert (token_call.method, token_call.path) == ("POST", "/oauth/token")
    assert token_call.fields == {"grant_type": "client_credentials"}
    assert token_call.headers["content-type"] == "application/x-www-form-urlencoded"
    assert token_call.headers["authorization"].startswith("Basic ")
    assert send_call.headers["content-type"] == "application/json"
    assert send_call.headers["authorization"].startswith("Bearer ") and "x-api-key" not in send_call.headers
    assert send_call.fields == {"to": [FR], "from": "InfoText", "text": "Bonjour", "allowInvalid": True,
                                "idempotencyId": str(uuid.uuid5(IDEMPOTENCY_NAMESPACE, "sms:msg-1"))}
    assert receipt.gateway_message_id == fake.sent[0].gateway_message_id and receipt.raw_status == "ACCEPTED"


def test_sender_and_callback_url_travel_when_given(fake):
    gateway(fake).send(OutboundSms("m2", FR, "Hi", "MyShop", "https://example.com/dlr"))
    fields = sends(fake)[0].fields
    assert fields["from"] == "MyShop" and fields["dlrCallbackUrl"] == "https://example.com/dlr"
    assert fake.sent[0].callback_url == "https://example.com/dlr"


def test_a_batch_is_one_call_with_all_numbers_and_an_id_derived_from_the_call_ref(fake):
    messages = [OutboundSms(f"b{i}", n, "Same text") for i, n in enumerate((FR, FR2, GB))]
    results = gateway(fake).send_batch(messages, call_ref="call-7")
    [call] = sends(fake)
    assert call.fields["to"] == [FR, FR2, GB] and call.fields["text"] == "Same text"
    assert call.fields["idempotencyId"] == idempotency_id("call:call-7") != idempotency_id("sms:call-7")
    by_number = {"+" + s.to: s.gateway_message_id for s in fake.sent}
    assert [r.gateway_message_id for r in results] == [by_number[m.to] for m in messages]
    assert {s.call_ref for s in fake.sent} == {call.fields["idempotencyId"]}


def test_a_batch_with_two_texts_is_refused_before_anything_is_sent(fake):
    with pytest.raises(GatewayRejected, match="one text"):
        gateway(fake).send_batch([OutboundSms("a", FR, "one"), OutboundSms("b", FR2, "two")], call_ref="c")
    assert fake.requests_log == []


def test_a_repeated_call_is_deduplicated_and_answers_the_same_ids(fake):
    gw = gateway(fake)
    first, again = gw.send(SMS), gw.send(SMS)
    assert first == again and len(fake.sent) == 1 and len(sends(fake)) == 2
    assert gw.send(OutboundSms("msg-other", FR, "Bonjour")).gateway_message_id != first.gateway_message_id


def test_the_fake_echoes_x_idempotency_id_and_charges_once(fake):
    token = requests.post(f"{fake.base_url}/oauth/token", data={"grant_type": "client_credentials"},
                          auth=("cid", "csecret"), timeout=5).json()["access_token"]
    body = {"to": FR, "from": "InfoText", "text": "Hi", "idempotencyId": str(uuid.uuid4())}
    answers = [requests.post(f"{fake.base_url}/sms", json=body, headers={"Authorization": f"Bearer {token}"},
                             timeout=5) for _ in range(2)]
    assert [a.headers["X-Idempotency-Id"] for a in answers] == [body["idempotencyId"]] * 2
    assert answers[0].json() == answers[1].json()
    assert 100_000 - fake.balance == pytest.approx(0.041)       # one SMS charged, not two


# --- API-key mode -----------------------------------------------------------------------------

def test_api_key_mode_sends_the_header_and_never_asks_for_a_token(fake):
    gw = gateway(fake, api_key="the-api-key")
    gw.send(SMS)
    assert gw.balance().amount > 0
    assert fake.count("/oauth/token") == 0 and fake.tokens_issued == 0
    for r in fake.requests_log:
        assert r.headers["x-api-key"] == "the-api-key" and "authorization" not in r.headers


def test_a_refused_api_key_is_an_auth_error_at_once_that_never_leaks_the_key(fake):
    with pytest.raises(AuthError) as e:
        gateway(fake, api_key="wrong-key-123").send(SMS)
    assert "SMSDISPATCH_SMSCX_API_KEY" in str(e.value) and "wrong-key-123" not in str(e.value)
    assert len(fake.requests_log) == 1 and fake.sent == []


def test_no_credentials_at_all_is_a_config_error(fake):
    with pytest.raises(ConfigError, match="SMSCX_API_KEY"):
        SmsCxGateway(api_key=None, client_id=None, client_secret=None, sender="x", base_url=fake.base_url,
                     redis_client=fakeredis.FakeRedis(), keys=Keys("t"), connect_timeout=1, read_timeout=1)


# --- token cache and renewal ------------------------------------------------------------------

def test_the_token_is_cached_in_redis_for_expires_in_minus_60s_and_shared(fake, redis_client):
    gw = gateway(fake, redis_client)
    gw.send(SMS)
    gateway(fake, redis_client).send(OutboundSms("m2", FR2, "x"))   # another worker, same Redis
    assert fake.tokens_issued == 1
    assert gw.token.key.startswith("t:gw:smscx:") and gw.token.key.endswith(":token")
    assert 86340 - 5 <= redis_client.ttl(gw.token.key) <= 86340


def test_a_token_without_expires_in_is_cached_for_the_default(fake, redis_client):
    fake.fail_next(status=200, body={"access_token": "plain", "token_type": "Bearer"}, path="/oauth/token")
    gw = gateway(fake, redis_client)
    assert gw.token.get() == "plain"
    assert DEFAULT_TOKEN_TTL - 5 <= redis_client.ttl(gw.token.key) <= DEFAULT_TOKEN_TTL


def test_an_expired_token_is_replaced_once_and_the_call_repeated(fake, redis_client):
    gw = gateway(fake, redis_client)
    gw.send(SMS)
    fake.expire_token()
    gw.send(OutboundSms("m2", FR2, "x"))
    assert fake.tokens_issued == 2 and len(fake.sent) == 2
    assert [r.status for r in sends(fake)] == [200, 401, 200]


def test_concurrent_401s_share_a_single_token_request(fake, redis_client):
    # 8 simultaneous connects can overflow the fake's listen backlog (5): the kernel retries the SYN
    # after 1 s, so a 1 s connect timeout would fail the test for a reason that is not the point here.
    gw = gateway(fake, redis_client, connect_timeout=5.0)
    gw.send(SMS)
    fake.expire_token()
    barrier, errors = threading.Barrier(8), []

    def worker(i):
        barrier.wait()
        try:
            gw.send(OutboundSms(f"c{i}", FR, "x"))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert errors == [] and fake.tokens_issued == 2 and len(fake.sent) == 9


def test_a_fresh_token_still_refused_is_an_auth_error(fake, redis_client):
    gw = gateway(fake, redis_client)
    gw.send(SMS)
    fake.fail_next(2, status=401, body={"error": {"type": "invalid_client", "code": None, "message": "no"}})
    with pytest.raises(AuthError, match="freshly renewed"):
        gw.send(OutboundSms("m2", FR2, "x"))
    assert len(sends(fake)) == 3 and fake.tokens_issued == 2 and len(fake.sent) == 1


def test_bad_client_credentials_never_leak_the_secret(fake):
    with pytest.raises(AuthError) as e:
        gateway(fake, secret="s3cr3t-value").send(SMS)
    assert "SMSDISPATCH_SMSCX_CLIENT_SECRET" in str(e.value) and "s3cr3t-value" not in str(e.value)
    assert fake.count("/sms") == 0


# --- send answers -----------------------------------------------------------------------------

def answer(*rows, invalid=()):
    return {"info": {"campaignId": "c", "totalPhoneNumbers": len(rows) + len(invalid), "invalid": list(invalid)},
            "data": [{"msgId": f"id-{i}", "status": status, "to": to} for i, (to, status) in enumerate(rows)]}


def test_parse_send_maps_every_documented_row_status_and_invalid_numbers():
    msgs = [OutboundSms(f"m{i}", n, "t") for i, n in enumerate(("+331", "+332", "+333", "+334", "+335"))]
    body = answer(("+331", "ACCEPTED"), ("+332", "SCHEDULED"), ("+333", "REJECTED"), ("+334", "NO COVERAGE"),
                  invalid=["+335"])
    out = parse_send(body, msgs)
    assert [(r.message_id, r.gateway_message_id, w) for r, w in out[:2]] == [("m0", "id-0", "ACCEPTED"),
                                                                             ("m1", "id-1", "SCHEDULED")]
    assert [type(r.error) for r, _ in out[2:]] == [RecipientRejected] * 3
    assert all(r.gateway_message_id is None for r, _ in out[2:])


def test_parse_send_matches_numbers_by_digits_and_refuses_unmentioned_ones():
    msgs = [OutboundSms("a", FR, "t"), OutboundSms("b", FR2, "t")]
    [(a, _), (b, _)] = parse_send(answer((FR.lstrip("+"), "ACCEPTED")), msgs)
    assert a.accepted and a.gateway_message_id == "id-0"
    assert isinstance(b.error, GatewayRejected) and "does not mention" in str(b.error)
    assert FR2 not in str(b.error)


def test_a_refused_single_number_raises_recipient_rejected_with_a_masked_number(fake):
    fake.reject_recipients(FR)
    with pytest.raises(RecipientRejected, match="REJECTED") as e:
        gateway(fake).send(SMS)
    assert FR not in str(e.value) and fake.sent == []


def test_no_coverage_in_a_200_answer_refuses_that_number(fake):
    fake.fail_next(status=200, body=answer((FR, "NO COVERAGE")))
    with pytest.raises(RecipientRejected, match="NO COVERAGE"):
        gateway(fake).send(SMS)


def test_a_malformed_number_in_a_batch_is_refused_alone_through_info_invalid(fake):
    messages = [OutboundSms("a", FR, "t"), OutboundSms("b", "+12", "t"), OutboundSms("c", GB, "t")]
    results = gateway(fake).send_batch(messages, call_ref="c")
    assert [r.accepted for r in results] == [True, False, True]
    assert isinstance(results[1].error, RecipientRejected)
    assert sends(fake)[0].status == 200 and len(fake.sent) == 2


def test_a_lone_malformed_number_is_a_400_1207_and_a_recipient_rejected(fake):
    with pytest.raises(RecipientRejected, match="1207"):
        gateway(fake).send(OutboundSms("a", "+12", "t"))
    assert sends(fake)[0].status == 400


def test_insufficient_credit_is_permanent_and_charges_nothing(fake):
    fake.balance = 0.01
    with pytest.raises(InsufficientBalance, match="1113"):
        gateway(fake).send(SMS)
    assert fake.balance == 0.01 and fake.sent == []


# --- error bodies -----------------------------------------------------------------------------

def envelope(type_, code, message="m", **extra):
    return {"error": {"type": type_, "code": code, "message": message, "uri": "https://x"}, **extra}


@pytest.mark.parametrize("status, body, exc", [
    (400, envelope("insufficient_credit", 1113), InsufficientBalance),
    (400, envelope("insufficient_credit", 1114), InsufficientBalance),
    (400, envelope("invalid_param", "1113"), InsufficientBalance),               # code as a string
    (400, envelope("invalid_param", 1207), RecipientRejected),
    (400, envelope("invalid_param", 1210), RecipientRejected),
    (403, envelope("no_coverage", 1119), RecipientRejected),
    # the invalid-numbers list alone (no known code) decides, wherever it sits:
    (400, envelope("invalid_param", None, invalid=["+33612345678"]), RecipientRejected),   # next to error
    (400, {"error": {"type": "invalid_param", "code": None, "message": "m",
                     "invalid": ["+33612345678"]}}, RecipientRejected),                   # inside error
    (401, envelope("invalid_api_key", None), AuthError),
    (401, envelope("invalid_client", 1600), AuthError),
    (400, envelope("invalid_param", 1104), GatewayRejected),
    (403, envelope("access_denied", None), GatewayRejected),
    (404, envelope("not_found", 1160), GatewayRejected),
    (405, envelope("method_not_allowed", None), GatewayRejected),
    (400, {"unexpected": True}, GatewayRejected),
])
def test_classify_maps_the_code_table(status, body, exc):
    error = classify(status, body)
    assert type(error) is exc and error.status == status and error.gateway == "smscx"


def test_classify_masks_numbers_in_provider_messages_and_invalid_lists():
    error = classify(400, envelope("invalid_param", 1207, "The phone number +33612345678 is not valid",
                                   invalid=["+447700900123"]))
    assert "+33612345678" not in str(error) and "+447700900123" not in str(error)
    assert "1207" in str(error) and "+336******78" in str(error) and "+447*******23" in str(error)


def test_a_403_no_coverage_answer_refuses_the_recipient(fake):
    fake.fail_next(status=403, body=envelope("no_coverage", 1119, "No coverage"))
    with pytest.raises(RecipientRejected, match="no_coverage 1119"):
        gateway(fake).send(SMS)


# --- 429 --------------------------------------------------------------------------------------

def test_retry_after_from_reset_reads_a_unix_timestamp():
    assert retry_after_from_reset("1700000030", now=1_700_000_000.5) == pytest.approx(29.5)
    assert retry_after_from_reset("1699999990", now=1_700_000_000) == 0
    assert retry_after_from_reset("12", now=1_700_000_000) == 12      # tolerated: seconds, not 1970
    assert retry_after_from_reset(None, now=1.0) is None
    assert retry_after_from_reset("soon", now=1.0) is None


def test_429_waits_until_x_rate_limit_reset(fake):
    gw = gateway(fake)
    fake.rate_limit_next(retry_after=7)
    with pytest.raises(RateLimited) as e:
        gw.send(SMS)
    response = next(r for r in fake.requests_log if r.status == 429)
    assert response.path == "/sms" and 6 <= e.value.retry_after <= 8 and e.value.status == 429


def test_429_prefers_retry_after_when_present(fake):
    reset = str(int(time.time()) + 100)
    fake.fail_next(status=429, headers={"Retry-After": "12", "X-Rate-Limit-Reset": reset},
                   body=envelope("rate_limit", None))
    with pytest.raises(RateLimited) as e:
        gateway(fake).send(SMS)
    assert e.value.retry_after == 12


# --- status and balance -----------------------------------------------------------------------

@pytest.mark.parametrize("word, status", [
    ("ACCEPTED", MessageStatus.ACCEPTED), ("SCHEDULED", MessageStatus.ACCEPTED), ("sent", MessageStatus.ACCEPTED),
    ("DELIVERED", MessageStatus.DELIVERED), ("FAILED", MessageStatus.FAILED),
    ("REJECTED", MessageStatus.FAILED), ("NO COVERAGE", MessageStatus.FAILED), ("no coverage", MessageStatus.FAILED),
])
def test_status_map(word, status):
    assert map_status(word) is status


def test_status_reads_reports_single_by_msg_id(fake):
    gw = gateway(fake)
    receipt = gw.send(SMS)
    fake.set_status(receipt.gateway_message_id, "DELIVERED")
    report = gw.status(receipt.gateway_message_id)
    assert (report.status, report.raw_status) == (MessageStatus.DELIVERED, "DELIVERED")
    assert fake.requests_log[-1].path == f"/reports/single/{receipt.gateway_message_id}"


def test_status_of_an_unknown_message_is_a_permanent_404(fake):
    with pytest.raises(GatewayRejected, match="404 not_found 1160"):
        gateway(fake).status(str(uuid.uuid4()))


def test_balance_reads_amount_and_currency(fake):
    fake.balance = 12.5
    balance = gateway(fake).balance()
    assert (balance.amount, balance.currency) == (12.5, "EUR")
    assert fake.requests_log[-1].path == "/account/balance"


def test_the_fake_runs_from_the_command_line():
    out = subprocess.run([sys.executable, "-m", "smsdispatch.devtools.fakes.smscx", "--help"], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0 and "--client-id" in out.stdout and "--api-key" in out.stdout


def test_a_duplicate_idempotency_id_error_means_the_earlier_call_was_accepted(fake, redis_client):
    """If SMS.CX answers a repeated idempotencyId with a duplicate_id error instead of the original
    answer, the message went out before: accepted (without a msgId), never `failed`."""
    from smsdispatch.gateways.base import OutboundSms
    gw = gateway(fake, redis_client, api_key="the-api-key")
    fake.fail_next(status=400, body={"error": {"type": "duplicate_id", "code": 1112,
                                               "message": "idempotencyId already used", "uri": ""}})
    receipt = gw.send(OutboundSms("m-dup", "+447911123456", "Hi"))
    assert receipt.gateway_message_id is None and receipt.raw_status == "DUPLICATE"
    fake.fail_next(status=400, body={"error": {"type": "duplicate_id", "code": 1112, "message": "x", "uri": ""}})
    results = gw.send_batch([OutboundSms("a", "+447911123456", "Hi"), OutboundSms("b", "+447911123457", "Hi")],
                                 call_ref="c-dup")
    assert [r.accepted for r in results] == [True, True]
