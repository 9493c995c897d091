"""The SMSPM adapter against the fake SMSPM (a real HTTP server on 127.0.0.1): what the contract suite
does not cover — the wire format, every answer shape of docs/gateways/smspm.md, error texts, the status map."""

from __future__ import annotations

import logging

import pytest
import requests
from pydantic import SecretStr

from smsdispatch.config import load_settings
from smsdispatch.devtools.fakes.smspm import FakeSmsPm
from smsdispatch.errors import (
    AmbiguousError,
    AuthError,
    GatewayRejected,
    InsufficientBalance,
    RecipientRejected,
    ValidationError,
)
from smsdispatch.gateways import build_gateway
from smsdispatch.gateways.base import Acceptance, OutboundSms
from smsdispatch.gateways.smspm import SmsPmGateway, classify, map_status, parse_answer
from smsdispatch.keys import Keys
from smsdispatch.records import MessageStatus

HASH, TOKEN = "52248aec022c6d53eabe30", "A1B2C3D4-E5F6-7788-99AA-BBCCDDEEFF00"
A, B, C = "+37256789045", "+37251234567", "+37258765432"


@pytest.fixture
def fake():
    with FakeSmsPm(hash=HASH, token=TOKEN) as f:
        yield f


def gateway(fake, *, token=TOKEN, sender="SMSPM.com") -> SmsPmGateway:
    return SmsPmGateway(hash=HASH, token=SecretStr(token), sender=sender, base_url=fake.base_url,
                        connect_timeout=1, read_timeout=2)


def sms(to=A, text="Tere", message_id="m-1", sender=None, callback_url=None) -> OutboundSms:
    return OutboundSms(message_id, to, text, sender, callback_url)


# --- the wire format -----------------------------------------------------------------------------

def test_send_posts_one_json_body_to_the_root(fake):
    receipt = gateway(fake).send(sms())
    (req,) = fake.requests_log
    assert (req.method, req.path, req.query) == ("POST", "/", "")
    assert req.headers["content-type"] == "application/json"
    assert "authorization" not in req.headers
    assert req.fields == {"hash": HASH, "token": TOKEN, "toNumber": ["37256789045"], "text": "Tere",
                          "fromNumber": "SMSPM.com"}
    assert receipt.gateway_message_id == fake.sent[0].gateway_message_id
    assert receipt.raw_status == "Added to queue"


def test_the_message_sender_and_callback_url_go_out_as_fromnumber_and_callbackurl(fake):
    gateway(fake).send(sms(sender="MyShop", callback_url="https://example.com/dlr"))
    fields = fake.requests_log[0].fields
    assert fields["fromNumber"] == "MyShop" and fields["callbackUrl"] == "https://example.com/dlr"
    assert (fake.sent[0].sender, fake.sent[0].callback_url) == ("MyShop", "https://example.com/dlr")


def test_a_batch_is_one_call_with_every_number_and_one_text(fake):
    messages = [sms(n, "Sama tekst", f"m-{i}") for i, n in enumerate((A, B, C))]
    results = gateway(fake).send_batch(messages, call_ref="call-1")
    (req,) = fake.requests_log
    assert req.fields["toNumber"] == ["37256789045", "37251234567", "37258765432"]
    assert req.fields["text"] == "Sama tekst" and "call-1" not in str(req.fields)
    by_number = {s.to: s.gateway_message_id for s in fake.sent}
    assert [r.gateway_message_id for r in results] == [by_number[n.lstrip("+")] for n in (A, B, C)]


def test_a_batch_maps_ids_back_by_tonumber_not_by_position(fake):
    fake.fail_next(status=200, body={"messages": [
        {"id": "id-c", "toNumber": "37258765432", "status": "Added to queue"},
        {"id": "id-a", "toNumber": "+37256789045", "status": "Added to queue"},
        {"id": "id-b", "toNumber": "37251234567", "status": "Added to queue"}]})
    results = gateway(fake).send_batch([sms(n, "x", f"m-{i}") for i, n in enumerate((A, B, C))], call_ref="c")
    assert [(r.message_id, r.gateway_message_id) for r in results] == [("m-0", "id-a"), ("m-1", "id-b"),
                                                                         ("m-2", "id-c")]


def test_a_batch_refusing_mixed_texts_or_too_many_numbers_sends_nothing(fake):
    gw = gateway(fake)
    with pytest.raises(GatewayRejected, match="one text"):
        gw.send_batch([sms(A, "one", "m-1"), sms(B, "two", "m-2")], call_ref="c")
    with pytest.raises(GatewayRejected, match="1..100"):
        gw.send_batch([sms(f"+3725{i:07d}", "x", f"m-{i}") for i in range(101)], call_ref="c")
    assert fake.requests_log == []


def test_a_full_batch_of_100_goes_out_in_one_call(fake):
    messages = [sms(f"+3725{i:07d}", "x", f"m-{i}") for i in range(100)]
    results = gateway(fake).send_batch(messages, call_ref="c")
    assert len(fake.requests_log) == 1 and len(fake.sent) == 100
    assert all(r.accepted for r in results)


# --- answer shapes -------------------------------------------------------------------------------

def test_parse_the_v2_messages_shape():
    body = {"messages": [{"id": "a7b3", "toNumber": "37256789045", "status": "Added to queue"}]}
    assert parse_answer(200, body, ["37256789045"]) == [Acceptance("a7b3", "Added to queue")]


def test_parse_the_older_status_messageid_shape():
    assert parse_answer(200, {"status": "success", "messageId": "old-1"}, ["37256789045"]) == [
        Acceptance("old-1", "success")]
    # inferred: the older shape has one id per call; every number of the call gets it
    assert [a.gateway_message_id for a in parse_answer(200, {"status": "success", "messageId": "x"},
                                                       ["1", "2"])] == ["x", "x"]


def test_parse_a_null_error_key_is_not_a_failure():
    body = {"error": None, "messages": [{"id": "i", "toNumber": "372", "status": "Added to queue"}]}
    assert parse_answer(200, body, ["372"])[0].gateway_message_id == "i"


@pytest.mark.parametrize("element", [
    {"toNumber": "37251234567", "status": "rejected"},
    {"toNumber": "37251234567", "status": "Invalid"},
    {"id": "z", "toNumber": "37251234567", "status": "Added to queue", "error": "Blacklisted"},
    None,                                                   # missing from messages[]
])
def test_parse_a_refused_or_missing_number_is_rejected_for_that_message_only(element):
    body = {"messages": [{"id": "a", "toNumber": "37256789045", "status": "Added to queue"}]
            + ([element] if element else [])}
    first, second = parse_answer(200, body, ["37256789045", "37251234567"])
    assert first == Acceptance("a", "Added to queue")
    assert isinstance(second, RecipientRejected)
    assert "37251234567" not in str(second) and "+372" in str(second)


def test_parse_a_number_twice_in_a_call_takes_its_answers_in_order():
    body = {"messages": [{"id": "1", "toNumber": "372", "status": "Added to queue"},
                         {"id": "2", "toNumber": "372", "status": "Added to queue"}]}
    assert [a.gateway_message_id for a in parse_answer(200, body, ["372", "372"])] == ["1", "2"]


def test_parse_elements_without_tonumber_answer_the_unmatched_numbers_in_order():
    body = {"messages": [{"id": "x", "status": "Added to queue"},
                         {"id": "b", "toNumber": "37251234567", "status": "Added to queue"}]}
    assert [a.gateway_message_id for a in parse_answer(200, body, ["37256789045", "37251234567"])] == ["x", "b"]


@pytest.mark.parametrize("status, body, exc", [
    (400, {"error": "Token is required"}, AuthError),
    (200, {"error": "Hash is required"}, AuthError),                 # failure with a 200: by its text
    (200, {"status": "error", "message": "Insufficient credit"}, InsufficientBalance),
    (200, {"status": "failed", "message": "Sender ID not approved"}, GatewayRejected),
])
def test_parse_failure_shapes_raise_by_their_text(status, body, exc):
    with pytest.raises(exc):
        parse_answer(status, body, ["37256789045"])


def test_parse_a_success_without_ids_is_ambiguous():
    with pytest.raises(AmbiguousError, match="may have sent"):
        parse_answer(200, {"status": "success"}, ["37256789045"])


# --- error texts (HTTP codes unverified) ---------------------------------------------------------

@pytest.mark.parametrize("status, message, exc", [
    (400, "Hash is required", AuthError),
    (400, "Token is required", AuthError),
    (401, "Invalid hash or token", AuthError),
    (403, "Forbidden", AuthError),
    (400, "At least one recipient number is required", RecipientRejected),
    (400, "Invalid phone number", RecipientRejected),
    (400, "Insufficient balance", InsufficientBalance),
    (402, "Not enough credit on your account", InsufficientBalance),
    (400, "Sender ID is not approved", GatewayRejected),
    (400, "Sender ID is too long", GatewayRejected),
    (400, "fromNumber is invalid", GatewayRejected),               # not a recipient problem
    (400, "Message text is required", GatewayRejected),
    (405, "Method Not Allowed", GatewayRejected),
])
def test_classify_by_text(status, message, exc):
    error = classify(status, {"error": message})
    assert type(error) is exc and error.status == status and error.gateway == "smspm"


def test_classify_reads_the_older_message_key():
    assert isinstance(classify(200, {"status": "error", "message": "Invalid number"}), RecipientRejected)


# --- over the wire: errors, secrets, odd bodies --------------------------------------------------

def test_wrong_token_is_an_auth_error_that_never_shows_the_token(fake):
    with pytest.raises(AuthError) as e:
        gateway(fake, token="wrong-secret-token").send(sms())
    assert e.value.status == 401 and "wrong-secret-token" not in str(e.value)
    assert "SMSDISPATCH_SMSPM_TOKEN" in str(e.value) and fake.sent == []


def test_an_answer_echoing_the_hash_or_token_is_scrubbed(fake):
    fake.fail_next(status=400, body={"error": f"Token {TOKEN} for hash {HASH} is not valid"})
    with pytest.raises(AuthError) as e:
        gateway(fake).send(sms())
    assert TOKEN not in str(e.value) and HASH not in str(e.value) and "***" in str(e.value)


def test_error_texts_mask_phone_numbers(fake):
    fake.fail_next(status=400, body={"error": "Invalid number 37256789045"})
    with pytest.raises(RecipientRejected) as e:
        gateway(fake).send(sms())
    assert "37256789045" not in str(e.value) and "45" in str(e.value)


def test_the_token_is_not_logged(fake, caplog):
    caplog.set_level(logging.DEBUG)
    gateway(fake).send(sms())
    assert caplog.records and TOKEN not in caplog.text and HASH not in caplog.text


def test_refused_recipient_and_low_balance_over_the_wire(fake):
    gw = gateway(fake)
    fake.reject_recipients(A)
    with pytest.raises(RecipientRejected):
        gw.send(sms(A))
    fake.balance = 0
    with pytest.raises(InsufficientBalance):
        gw.send(sms(B))
    assert fake.sent == []


def test_a_batch_with_a_refused_number_charges_only_the_others(fake):
    fake.reject_recipients(B)
    before = fake.balance
    results = gateway(fake).send_batch([sms(n, "x", f"m-{i}") for i, n in enumerate((A, B, C))], call_ref="c")
    assert [r.accepted for r in results] == [True, False, True]
    assert results[1].gateway_message_id is None and isinstance(results[1].error, RecipientRejected)
    assert fake.balance == before - 2 * fake.price


def test_unapproved_sender_is_a_permanent_rejection(fake):
    fake.approved_senders = {"SMSPM.com"}
    with pytest.raises(GatewayRejected, match="not approved"):
        gateway(fake).send(sms(sender="Unknown"))
    with pytest.raises(GatewayRejected, match="too long"):
        gateway(fake).send(sms(sender="FarTooLongSender"))
    assert fake.sent == []


def test_405_is_a_permanent_rejection(fake):
    fake.fail_next(status=405, body={"error": "Method Not Allowed"})
    with pytest.raises(GatewayRejected) as e:
        gateway(fake).send(sms())
    assert e.value.status == 405


def test_the_older_shape_over_the_wire(fake):
    fake.fail_next(status=200, body={"status": "success", "messageId": "legacy-42"})
    assert gateway(fake).send(sms()) == Acceptance("legacy-42", "success")


def test_a_2xx_that_is_not_json_is_ambiguous_and_a_4xx_is_classified_by_its_text(fake):
    fake.fail_next(status=200, body="OK")
    with pytest.raises(AmbiguousError, match="not JSON"):
        gateway(fake).send(sms())
    fake.fail_next(status=400, body="Insufficient balance")
    with pytest.raises(InsufficientBalance):
        gateway(fake).send(sms())


# --- flags, options, status map, registry --------------------------------------------------------

def test_flags_promise_only_what_smspm_has(fake):
    gw = gateway(fake)
    assert (gw.can_lookup, gw.can_dedupe, gw.max_batch, gw.batch_same_text) == (False, False, 100, True)
    assert (gw.supports_status, gw.supports_balance) == (False, False)
    with pytest.raises(NotImplementedError):
        gw.status("any")
    with pytest.raises(NotImplementedError):
        gw.balance()
    with pytest.raises(NotImplementedError):
        gw.lookup(sms(), since=0)


def test_smspm_takes_no_options(fake):
    with pytest.raises(ValidationError, match="takes no options"):
        gateway(fake).validate_options({"flash": True}, text="x")
    assert gateway(fake).validate_options({}, text="x") == {}


@pytest.mark.parametrize("word, status", [
    ("Added to queue", MessageStatus.ACCEPTED), ("pending", MessageStatus.ACCEPTED),
    ("success", MessageStatus.ACCEPTED), ("delivered", MessageStatus.DELIVERED),
    ("DELIVERED", MessageStatus.DELIVERED), ("undelivered", MessageStatus.FAILED),
    ("rejected", MessageStatus.FAILED), ("expired", MessageStatus.FAILED), ("invalid", MessageStatus.FAILED),
    ("something new", MessageStatus.ACCEPTED), (None, MessageStatus.ACCEPTED),
])
def test_status_words_map_to_ours(word, status):
    assert map_status(word) is status


def test_the_registry_builds_it_from_settings(fake, redis_client):
    settings = load_settings(redis_url="redis://unused:6379/0", smspm_hash=HASH, smspm_token=TOKEN,
                             smspm_base_url=fake.base_url, smspm_sender="Shop")
    gw = build_gateway("smspm", settings, redis_client, Keys("t"))
    assert isinstance(gw, SmsPmGateway)
    gw.send(sms())
    assert fake.requests_log[0].fields["fromNumber"] == "Shop" and len(fake.sent) == 1


# --- the fake's GET form and method check --------------------------------------------------------

def test_the_fake_also_speaks_get_and_refuses_other_methods(fake):
    params = {"hash": HASH, "token": TOKEN, "toNumber": "37256789045,37251234567", "text": "Hello World",
              "fromNumber": "SMSPM.com"}
    with requests.Session() as http:
        got = http.get(fake.base_url, params=params, timeout=5)
        put = http.put(fake.base_url, json=params, timeout=5)
    assert got.status_code == 200
    assert [m["toNumber"] for m in got.json()["messages"]] == ["37256789045", "37251234567"]
    assert put.status_code == 405 and len(fake.sent) == 2
