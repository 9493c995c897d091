"""The DevSMS adapter against the fake DevSMS (a real HTTP server on 127.0.0.1): the wire format, every
documented answer shape, the error classification, the status map and the universal-OTP options.
What every gateway must do (5xx, 429, refused connections, ...) is in tests/contract."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from smsdispatch.config import load_settings
from smsdispatch.devtools.fakes.devsms import FakeDevSms
from smsdispatch.errors import (
    AuthError,
    GatewayRejected,
    InsufficientBalance,
    RecipientRejected,
    ValidationError,
)
from smsdispatch.gateways import build_gateway
from smsdispatch.gateways.base import OutboundSms
from smsdispatch.gateways.devsms import DevSmsGateway, classify, map_status, parse_money, parse_send
from smsdispatch.keys import Keys
from smsdispatch.records import MessageStatus

SMS = OutboundSms("msg-1", "+998901234567", "Salom")
OTP = {"type": "universal_otp", "template_type": 1, "service_name": "TechShop", "otp_code": "5678"}
OFFLINE = DevSmsGateway(token=SecretStr("t"), sender="4546", base_url="http://127.0.0.1:9",   # never called
                        connect_timeout=1.0, read_timeout=1.0)


@pytest.fixture
def fake():
    with FakeDevSms(token="tok") as f:
        yield f


def gateway(fake, *, token="tok", sender="4546"):
    return DevSmsGateway(token=SecretStr(token), sender=sender, base_url=fake.base_url,
                         connect_timeout=1.0, read_timeout=2.0)


# --- the wire ---------------------------------------------------------------------------------

def test_send_posts_json_with_the_bearer_token(fake):
    receipt = gateway(fake).send(SMS)
    [req] = fake.requests_log
    assert (req.method, req.path) == ("POST", "/send_sms.php")
    assert req.headers["authorization"] == "Bearer tok"
    assert req.headers["content-type"].startswith("application/json")
    assert req.fields == {"phone": "998901234567", "message": "Salom", "from": "4546"}
    assert receipt.gateway_message_id == fake.sent[0].gateway_message_id == "1"
    assert receipt.raw_status == "sent"


def test_send_carries_the_sender_and_callback_of_the_message(fake):
    gateway(fake).send(OutboundSms("m", "+998901234567", "Hi", "MyShop", "https://example.com/cb"))
    assert fake.requests_log[0].fields == {"phone": "998901234567", "message": "Hi", "from": "MyShop",
                                           "callback_url": "https://example.com/cb"}
    assert fake.sent[0].sender == "MyShop" and fake.sent[0].callback_url == "https://example.com/cb"


def test_universal_otp_sends_the_template_fields_and_no_text(fake):
    gateway(fake).send(OutboundSms("m", "+998901234567", "", options=OTP))
    assert fake.requests_log[0].fields == {"phone": "998901234567", **OTP}
    assert fake.sent[0].kind == "universal_otp" and "5678" in fake.sent[0].text


def test_simple_type_is_passed_with_the_text(fake):
    gateway(fake).send(OutboundSms("m", "+998901234567", "Hi", options={"type": "simple"}))
    assert fake.requests_log[0].fields == {"phone": "998901234567", "type": "simple", "message": "Hi",
                                           "from": "4546"}


def test_send_with_bad_options_raises_before_any_request(fake):
    with pytest.raises(ValidationError, match="otp_code"):
        gateway(fake).send(OutboundSms("m", "+998901234567", "", options={**OTP, "otp_code": "12"}))
    assert fake.requests_log == []


def test_status_asks_by_sms_id_and_falls_back_to_request_id(fake):
    gw = gateway(fake)
    receipt = gw.send(SMS)
    assert gw.status(receipt.gateway_message_id).raw_status == "waiting"
    assert fake.requests_log[-1].path == "/get_status.php" and fake.requests_log[-1].query == "sms_id=1"
    request_id = fake.sent[0].request_id
    fake.set_status(request_id, "UNDELIVERABLE")
    report = gw.status(request_id)
    assert fake.requests_log[-1].query == f"request_id={request_id}"
    assert (report.status, report.raw_status) == (MessageStatus.FAILED, "UNDELIVERABLE")


def test_status_of_an_unknown_id_is_rejected(fake):
    with pytest.raises(GatewayRejected, match="404"):
        gateway(fake).status("999")


@pytest.mark.parametrize("body, raw", [
    ({"success": True, "data": {"status": "DELIVERED", "sms_id": 1}}, "DELIVERED"),   # inferred shape
    ({"success": True, "status": "REJECTED"}, "REJECTED"),                            # tolerated: no envelope
])
def test_status_answer_shapes(fake, body, raw):
    fake.fail_next(status=200, body=body, path="/get_status.php")
    report = gateway(fake).status("1")
    assert report.raw_status == raw and report.status is map_status(raw)


def test_balance_in_som_and_in_dollars(fake):
    fake.balance = 1000
    assert (gateway(fake).balance().amount, gateway(fake).balance().currency) == (1000.0, "UZS")
    with FakeDevSms(token="tok", currency="USD", balance=0.079) as usd:
        balance = gateway(usd).balance()
        assert (balance.amount, balance.currency) == (pytest.approx(0.079), "USD")
        assert usd.requests_log[0].path == "/get_balance.php" and usd.requests_log[0].method == "GET"


def test_a_dollar_account_sends_and_is_charged_per_part(fake):
    with FakeDevSms(token="tok", currency="USD", balance=1) as usd:
        receipt = gateway(usd).send(OutboundSms("m", "+998901234567", "x" * 161))   # two GSM-7 parts
        assert receipt.gateway_message_id == "1" and usd.sent[0].parts_count == 2
        assert usd.balance == pytest.approx(1 - 2 * 0.005)


# --- parsing the documented shapes --------------------------------------------------------------

@pytest.mark.parametrize("body, gid, raw", [
    ({"success": True, "message": "SMS muvaffaqiyatli yuborildi",           # newer, uz: integers
      "data": {"sms_id": 123, "request_id": "uuid-here", "status": "sent", "parts_count": 1,
               "total_cost": 50, "balance": 950, "type": "eskiz"}}, "123", "sent"),
    ({"success": True, "data": {"sms_id": 124, "request_id": "u", "status": "sent",  # newer, en: "$" strings
                                "total_cost": "$0.005", "balance": "$0.079", "type": "eskiz"}}, "124", "sent"),
    ({"success": True, "data": {"sms_id": 125, "request_id": "u", "status": "waiting",   # older: no type
                                "parts_count": 1, "total_cost": 50, "balance": 900}}, "125", "waiting"),
    ({"success": True, "data": {"sms_id": 126, "status": "sent", "country": "United States",  # international
                                "country_code": "us"}}, "126", "sent"),
    ({"success": True, "data": {"request_id": "0b5c-uuid", "status": "sent"}}, "0b5c-uuid", "sent"),  # no sms_id
    ({"success": True, "data": {"status": "sent"}}, None, "sent"),            # accepted, but nothing to poll by
])
def test_send_answer_shapes(body, gid, raw):
    receipt = parse_send(body)
    assert (receipt.gateway_message_id, receipt.raw_status) == (gid, raw)


@pytest.mark.parametrize("value, expected", [
    (950, (950.0, "UZS")), (12.5, (12.5, "UZS")), ("1000", (1000.0, "UZS")), ("$0.079", (0.079, "USD")),
    (" $1,234.50 ", (1234.5, "USD")), ("1 000", (1000.0, "UZS")),
])
def test_money_fields_are_numbers_or_dollar_strings(value, expected):
    assert parse_money(value) == (pytest.approx(expected[0]), expected[1])


@pytest.mark.parametrize("value", [None, True, "abc", "$", {"amount": 1}])
def test_unreadable_money_is_rejected(value):
    with pytest.raises(GatewayRejected, match="unreadable amount"):
        parse_money(value)


@pytest.mark.parametrize("word, status", [
    ("waiting", MessageStatus.ACCEPTED), ("sent", MessageStatus.ACCEPTED), ("ACCEPTED", MessageStatus.ACCEPTED),
    ("DELIVERED", MessageStatus.DELIVERED), ("delivered", MessageStatus.DELIVERED),
    ("REJECTED", MessageStatus.FAILED), ("UNDELIVERABLE", MessageStatus.FAILED),
    ("DELIVRD", MessageStatus.DELIVERED), ("EXPIRED", MessageStatus.FAILED),       # Eskiz words (inferred)
    ("something-new", MessageStatus.ACCEPTED), (None, MessageStatus.ACCEPTED),
])
def test_status_words_map_to_ours(word, status):
    assert map_status(word) is status


# --- errors -------------------------------------------------------------------------------------

@pytest.mark.parametrize("status, error, exc", [
    (400, "Balans yetarli emas", InsufficientBalance),
    (400, "Недостаточно средств на балансе", InsufficientBalance),
    (400, "Insufficient balance", InsufficientBalance),
    (400, "Telefon raqami noto'g'ri", RecipientRejected),
    (400, "Неверный номер телефона", RecipientRejected),
    (400, "Invalid phone number", RecipientRejected),
    (400, "Token noto'g'ri", AuthError),
    (400, "Неверный токен", AuthError),
    (400, "Unauthorized", AuthError),
    (401, "Xatolik xabari", AuthError),
    (403, "Forbidden", AuthError),
    (400, "Xatolik xabari", GatewayRejected),
    (404, "Not found", GatewayRejected),
])
def test_error_wording_is_classified(status, error, exc):
    result = classify(status, {"success": False, "error": error})
    assert type(result) is exc and result.status == status and result.gateway == "devsms"


def test_a_200_with_success_false_is_an_error(fake):
    fake.fail_next(status=200, body={"success": False, "error": "Balans yetarli emas"})
    with pytest.raises(InsufficientBalance) as e:
        gateway(fake).send(SMS)
    assert e.value.status == 200


def test_a_200_without_success_true_is_an_error(fake):
    fake.fail_next(status=200, body={"data": {"sms_id": 9}})
    with pytest.raises(GatewayRejected, match="HTTP 200"):
        gateway(fake).send(SMS)


def test_a_body_that_is_not_json(fake):
    fake.fail_next(status=200, body="<html>oops</html>")
    with pytest.raises(GatewayRejected, match="not JSON"):
        gateway(fake).send(SMS)
    fake.fail_next(status=401, body="Unauthorized")
    with pytest.raises(AuthError):
        gateway(fake).send(SMS)


def test_the_fakes_refusals_are_classified(fake):
    gw = gateway(fake)
    fake.reject_recipients("998901234567")
    with pytest.raises(RecipientRejected) as refused:
        gw.send(SMS)
    fake.balance = 10
    with pytest.raises(InsufficientBalance) as low:
        gw.send(OutboundSms("m", "+998911234567", "x"))
    assert refused.value.status == low.value.status == 400 and fake.sent == []


def test_a_bad_token_is_an_auth_error_that_never_leaks_the_token(fake):
    with pytest.raises(AuthError) as e:
        gateway(fake, token="wrong-secret-token").send(SMS)
    assert "SMSDISPATCH_DEVSMS_TOKEN" in str(e.value) and "wrong-secret-token" not in str(e.value)
    assert fake.sent == []


def test_a_phone_number_in_an_error_is_masked(fake):
    fake.fail_next(status=400, body={"success": False, "error": "998901234567 raqami bloklangan"})
    with pytest.raises(RecipientRejected) as e:
        gateway(fake).send(SMS)
    assert "998901234567" not in str(e.value) and "998*******67" in str(e.value)


# --- capabilities and construction --------------------------------------------------------------

def test_flags_and_what_devsms_cannot_do(fake):
    gw = gateway(fake)
    assert (gw.can_lookup, gw.can_dedupe, gw.max_batch, gw.batch_same_text) == (False, False, 1, False)
    assert gw.supports_status and gw.supports_balance
    with pytest.raises(NotImplementedError):
        gw.send_batch([SMS], call_ref="c")
    with pytest.raises(NotImplementedError):
        gw.lookup(SMS, since=0)
    assert fake.requests_log == []


def test_the_registry_builds_it_from_settings(fake, redis_client):
    settings = load_settings(redis_url="redis://unused:6379/0", devsms_token="tok",
                             devsms_base_url=fake.base_url, devsms_sender="Shop")
    gw = build_gateway("devsms", settings, redis_client, Keys("t"))
    assert isinstance(gw, DevSmsGateway)
    gw.send(SMS)
    assert fake.requests_log[0].fields["from"] == "Shop"


# --- options ------------------------------------------------------------------------------------

@pytest.mark.parametrize("options, text, expected", [
    ({}, "Hi", {}),
    ({"type": "simple"}, "Hi", {"type": "simple"}),
    ({"type": "eskiz"}, "Hi", {"type": "eskiz"}),
    (OTP, None, OTP),
    ({**OTP, "template_type": 7}, None, {**OTP, "template_type": 7}),
    ({**OTP, "otp_code": "0042"}, None, {**OTP, "otp_code": "0042"}),
    ({**OTP, "otp_code": "12345678"}, None, {**OTP, "otp_code": "12345678"}),
])
def test_valid_options(options, text, expected):
    assert OFFLINE.validate_options(options, text=text) == expected


@pytest.mark.parametrize("name", ["AT&T", "Oʻzbek Telecom", "Mag'azin-24", "Магазин_1.0", "Ab", "A" * 50])
def test_valid_service_names(name):
    options = {**OTP, "service_name": name}
    assert OFFLINE.validate_options(options, text=None)["service_name"] == name


@pytest.mark.parametrize("options, text, message", [
    ({}, None, "text: required"),
    ({"type": "simple"}, None, "text: required"),
    ({"type": "eskiz"}, None, "text: required"),
    ({"type": "notification"}, "Hi", "options.type: must be one of eskiz, simple, universal_otp"),
    ({"template_type": 1}, None, "options.type: must be one of"),
    ({"type": "simple", "otp_code": "1234"}, "Hi", "options: simple takes no otp_code"),
    ({**OTP, "from": "x"}, None, "options: universal_otp takes no from"),
    (OTP, "Your code is 5678", "text: must be absent with universal_otp"),
    ({"type": "universal_otp", "service_name": "Shop", "otp_code": "1234"}, None,
     "options.template_type: required"),
    ({"type": "universal_otp", "template_type": 1, "otp_code": "1234"}, None, "options.service_name: required"),
    ({"type": "universal_otp", "template_type": 1, "service_name": "Shop"}, None, "options.otp_code: required"),
    ({**OTP, "template_type": 0}, None, "options.template_type: must be an integer >= 1"),
    ({**OTP, "template_type": "1"}, None, "options.template_type: must be an integer >= 1"),
    ({**OTP, "template_type": True}, None, "options.template_type: must be an integer >= 1"),
    ({**OTP, "template_type": 1.0}, None, "options.template_type: must be an integer >= 1"),
    ({**OTP, "otp_code": "123"}, None, "options.otp_code: must be 4-8 digits"),
    ({**OTP, "otp_code": "123456789"}, None, "options.otp_code: must be 4-8 digits"),
    ({**OTP, "otp_code": 5678}, None, "options.otp_code: must be 4-8 digits"),
    ({**OTP, "otp_code": "12a4"}, None, "options.otp_code: must be 4-8 digits"),
    ({**OTP, "otp_code": "١٢٣٤"}, None, "options.otp_code: must be 4-8 digits"),   # Arabic-Indic digits
    ({**OTP, "otp_code": "1234\n"}, None, "options.otp_code: must be 4-8 digits"),
])
def test_invalid_options(options, text, message):
    with pytest.raises(ValidationError, match="^" + message.replace("(", r"\(")):
        OFFLINE.validate_options(options, text=text)


@pytest.mark.parametrize("name", ["A", "A" * 51, " Shop", "Shop ", "1234", "Tech<Shop>", "Tech\nShop",
                                  "Shop!", "Shop\u00a0One", "", 42, None])
def test_invalid_service_names(name):
    with pytest.raises(ValidationError, match="^options.service_name: must be 2-50 characters"):
        OFFLINE.validate_options({**OTP, "service_name": name}, text=None)
