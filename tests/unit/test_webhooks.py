"""The webhook receiver as a WSGI app, on fakeredis: authentication, payloads, agreement with polling."""

from __future__ import annotations

import io
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
    records.update("m1", MessageStatus.ACCEPTED, gateway="eskiz", gateway_message_id="r-1")
    assert post(hooks, f"/eskiz/{SECRET}", eskiz("m1")) == (200, {"reports": 1, "applied": 1})
    assert records.get("m1")["status"] == "delivered" and records.get("m1")["raw_status"] == "DELIVRD"


def test_form_bodies_and_failures_too(hooks, records):
    records.update("m2", MessageStatus.ACCEPTED, gateway="eskiz")
    assert post(hooks, f"/eskiz/{SECRET}", eskiz("m2", "UNDELIV"), form=True)[1]["applied"] == 1
    assert records.get("m2")["status"] == "failed" and records.get("m2")["error"]["code"] == "undelivered"


@pytest.mark.parametrize("path", [f"/eskiz/{'x' * 24}", "/eskiz", f"/unknown/{SECRET}", f"/eskiz/{SECRET}/x"])
def test_without_the_secret_or_the_route_nothing_changes(hooks, records, path):
    records.update("m1", MessageStatus.ACCEPTED, gateway="eskiz")
    assert post(hooks, path, eskiz("m1"))[0] == 404
    assert records.get("m1")["status"] == "accepted"


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b"", json.dumps({"user_sms_id": "m1"}).encode()])
def test_a_malformed_body_is_a_400_and_changes_nothing(hooks, records, body):
    records.update("m1", MessageStatus.ACCEPTED, gateway="eskiz")
    assert post(hooks, f"/eskiz/{SECRET}", body)[0] == 400
    assert records.get("m1")["status"] == "accepted"


def test_get_is_refused(hooks):
    assert post(hooks, f"/eskiz/{SECRET}", eskiz("m1"), method="GET")[0] == 405


def test_sms_cx_batches_reports_by_msg_id(hooks, records):
    for i in range(3):
        records.update(f"c{i}", MessageStatus.ACCEPTED, gateway="smscx", gateway_message_id=f"msg-{i}")
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
    records.update("d1", MessageStatus.ACCEPTED, gateway="devsms", gateway_message_id="123")
    assert post(hooks, f"/devsms/{SECRET}", {"sms_id": 123, "status": "DELIVERED"})[1]["applied"] == 1
    assert records.get("d1")["status"] == "delivered"


def test_callbacks_and_polling_agree_whatever_their_order(hooks, records):
    records.update("m1", MessageStatus.ACCEPTED, gateway="eskiz")
    assert records.advance("m1", MessageStatus.DELIVERED)                 # the poller got there first
    assert post(hooks, f"/eskiz/{SECRET}", eskiz("m1", "UNDELIV"))[1]["applied"] == 0
    assert post(hooks, f"/eskiz/{SECRET}", eskiz("m1", "ACCEPTED"))[1]["applied"] == 0
    assert records.get("m1")["status"] == "delivered"


def test_sends_carry_our_callback_url_with_the_secret():
    s = load_settings(webhook_base_url="https://sms.example.com/hooks/", webhook_secret=SECRET)
    assert s.callback_url("eskiz") == f"https://sms.example.com/hooks/eskiz/{SECRET}"
    assert s.callback_url("smsflow") is None                                # no callbacks there
    with pytest.raises(ConfigError, match="SMSDISPATCH_WEBHOOK_SECRET: a webhook secret must be 24"):
        load_settings(webhook_base_url="https://sms.example.com/hooks", webhook_secret="short")
    with pytest.raises(ConfigError, match="WEBHOOK_BASE_URL is set but no gateway has a webhook secret"):
        load_settings(webhook_base_url="https://sms.example.com/hooks")


def test_a_report_that_beats_our_acceptance_asks_the_gateway_to_call_again(hooks, records):
    records.update("m9", MessageStatus.SENDING, gateway="eskiz")
    assert post(hooks, f"/eskiz/{SECRET}", eskiz("m9")) == (503, {"reports": 1, "applied": 0, "retry": 1})
    assert records.get("m9")["status"] == "sending"
    records.update("m9", MessageStatus.ACCEPTED)
    assert post(hooks, f"/eskiz/{SECRET}", eskiz("m9")) == (200, {"reports": 1, "applied": 1})


# --- a report settles only its own gateway's messages -------------------------------------------

def call(hooks, path, raw: bytes, content_type="application/json", length=None):
    """Through the WSGI entry point, as a server calls it: the status line and the JSON answer."""
    environ = {"PATH_INFO": path, "REQUEST_METHOD": "POST", "CONTENT_TYPE": content_type,
               "CONTENT_LENGTH": str(len(raw) if length is None else length), "wsgi.input": io.BytesIO(raw)}
    seen = {}
    body = b"".join(hooks(environ, lambda status, headers: seen.update(status=status)))
    return int(seen["status"].split()[0]), json.loads(body)


def test_a_report_for_an_id_another_gateway_also_used_settles_only_that_gateways_message(hooks, records):
    records.update("d1", MessageStatus.ACCEPTED, gateway="devsms", gateway_message_id="555")
    eskiz_report = {"message_id": "555", "status": "UNDELIV"}          # Eskiz's own message 555: not ours
    assert post(hooks, f"/eskiz/{SECRET}", eskiz_report) == (200, {"reports": 1, "applied": 0})
    assert records.get("d1")["status"] == "accepted"
    records.update("e1", MessageStatus.ACCEPTED, gateway="eskiz", gateway_message_id="555")
    assert post(hooks, f"/eskiz/{SECRET}", eskiz_report) == (200, {"reports": 1, "applied": 1})
    assert post(hooks, f"/devsms/{SECRET}", {"sms_id": 555, "status": "DELIVRD"}) == (200, {"reports": 1, "applied": 1})
    assert (records.get("e1")["status"], records.get("d1")["status"]) == ("failed", "delivered")


def test_a_report_naming_another_gateways_message_by_our_id_changes_nothing_and_is_counted(hooks, records,
                                                                                           redis_client):
    records.update("d1", MessageStatus.ACCEPTED, gateway="devsms", gateway_message_id="7")
    answer = post(hooks, f"/eskiz/{SECRET}", eskiz("d1", "UNDELIV"))
    assert answer == (200, {"reports": 1, "applied": 0, "foreign": 1})
    assert records.get("d1")["status"] == "accepted"
    assert redis_client.get(Keys("t").webhook_foreign("eskiz")) == b"1"
    assert post(hooks, f"/devsms/{SECRET}", {"user_sms_id": "d1", "status": "DELIVRD"})[1]["applied"] == 1


def test_records_of_the_shared_index_still_settle_but_only_from_their_gateway(hooks, records, redis_client):
    """Entries an earlier version wrote (sms:gwid:<id>) stay readable until RECORD_TTL expires them."""
    records.update("old", MessageStatus.ACCEPTED, gateway="devsms")
    redis_client.set(Keys("t").legacy_gateway_id("42"), "old")
    assert post(hooks, f"/eskiz/{SECRET}", {"message_id": "42", "status": "UNDELIV"})[1]["applied"] == 0
    assert records.by_gateway_id("eskiz", "42") is None and records.by_gateway_id("devsms", "42") == "old"
    assert post(hooks, f"/devsms/{SECRET}", {"sms_id": "42", "status": "DELIVRD"})[1]["applied"] == 1
    assert records.get("old")["status"] == "delivered"


def test_an_accepted_update_must_name_its_gateway(records):
    with pytest.raises(ValueError, match="must name the gateway"):
        records.update("m1", MessageStatus.ACCEPTED, gateway_message_id="g1")


# --- secrets per gateway, rotatable ---------------------------------------------------------------

ESKIZ_SECRET, DEVSMS_SECRET, OLD_SECRET = "e" * 24, "d-" * 12 + "_x", "old_" + "o" * 28


def test_each_gateway_has_its_own_secret_and_old_ones_open_only_during_a_rotation(records):
    records.update("m1", MessageStatus.ACCEPTED, gateway="eskiz")
    rotating = load_settings(webhook_base_url="https://sms.example.com/hooks", webhook_secret=SECRET,
                             webhook_secrets=f"eskiz={ESKIZ_SECRET},devsms={DEVSMS_SECRET}",
                             webhook_old_secrets=f"eskiz={OLD_SECRET}")
    hooks = Webhooks(rotating, records)
    assert rotating.callback_url("eskiz") == f"https://sms.example.com/hooks/eskiz/{ESKIZ_SECRET}"   # the new one
    assert rotating.callback_url("devsms").endswith(f"/devsms/{DEVSMS_SECRET}")
    assert rotating.callback_url("smscx").endswith(f"/smscx/{SECRET}")                            # the default
    for wrong in (f"/eskiz/{SECRET}", f"/eskiz/{DEVSMS_SECRET}", f"/devsms/{ESKIZ_SECRET}", f"/devsms/{OLD_SECRET}",
                  f"/smscx/{ESKIZ_SECRET}", f"/eskiz/{ESKIZ_SECRET}x", f"/eskiz/{ESKIZ_SECRET[:-1]}?"):
        assert post(hooks, wrong, eskiz("m1"))[0] == 404, wrong
    assert post(hooks, f"/eskiz/{OLD_SECRET}", eskiz("m1", "ACCEPTED")) == (200, {"reports": 1, "applied": 0})
    assert post(hooks, f"/eskiz/{ESKIZ_SECRET}", eskiz("m1")) == (200, {"reports": 1, "applied": 1})
    done = Webhooks(load_settings(webhook_secrets=f"eskiz={ESKIZ_SECRET}"), records)     # rotation over
    assert post(done, f"/eskiz/{OLD_SECRET}", eskiz("m1"))[0] == 404
    assert post(done, f"/eskiz/{ESKIZ_SECRET}", eskiz("m1"))[0] == 200
    assert post(done, f"/devsms/{ESKIZ_SECRET}", eskiz("m1"))[0] == 404      # no secret: devsms refused


@pytest.mark.parametrize(("setting", "value", "message"), [
    ("webhook_secret", "a/b" + "c" * 30, "SMSDISPATCH_WEBHOOK_SECRET: a webhook secret may hold only"),
    ("webhook_secret", "abc?d#" + "c" * 30, "SMSDISPATCH_WEBHOOK_SECRET: a webhook secret may hold only"),
    ("webhook_secret", "c" * 23, "SMSDISPATCH_WEBHOOK_SECRET: a webhook secret must be 24 to 256"),
    ("webhook_secrets", "eskiz=" + "c" * 10, "SMSDISPATCH_WEBHOOK_SECRETS: eskiz: a webhook secret must be 24"),
    ("webhook_secrets", "smsflow=" + "c" * 30, "SMSDISPATCH_WEBHOOK_SECRETS: 'smsflow' is not a gateway"),
    ("webhook_secrets", "eskiz:" + "c" * 30, "SMSDISPATCH_WEBHOOK_SECRETS: must look like"),
    ("webhook_old_secrets", f"*={'c' * 30}|c%2F{'c' * 30}", "SMSDISPATCH_WEBHOOK_OLD_SECRETS: \\*: a webhook secret "
                                                             "may hold only"),
])
def test_secrets_that_would_not_survive_a_url_path_or_are_short_stop_start_up(monkeypatch, setting, value, message):
    monkeypatch.setenv(f"SMSDISPATCH_{setting.upper()}", value)
    if setting == "webhook_old_secrets":
        monkeypatch.setenv("SMSDISPATCH_WEBHOOK_SECRET", SECRET)
    with pytest.raises(ConfigError, match=message) as err:
        load_settings()
    assert value.split("=")[-1].split("|")[-1] not in str(err.value)      # the secret is never quoted


def test_old_secrets_need_a_current_one_and_configured_gateways_need_a_secret():
    with pytest.raises(ConfigError, match="WEBHOOK_OLD_SECRETS lists smscx, which has no current secret"):
        load_settings(webhook_secrets=f"eskiz={ESKIZ_SECRET}", webhook_old_secrets=f"smscx={OLD_SECRET}")
    with pytest.raises(ConfigError, match="devsms \\(configured\\) has no webhook secret"):
        load_settings(webhook_base_url="https://sms.example.com/hooks", webhook_secrets=f"eskiz={ESKIZ_SECRET}",
                      devsms_token="t")
    settings = load_settings(webhook_base_url="https://sms.example.com/hooks", webhook_secrets=f"eskiz={ESKIZ_SECRET}")
    assert settings.callback_url("devsms") is None and ESKIZ_SECRET not in repr(settings)


# --- whatever the body, a 4xx, never a traceback --------------------------------------------------

BAD_BODIES = {
    "deeply nested JSON": (b"[" * 100_000, "application/json", None),
    "deeply nested object": (b'{"status": ' * 20_000, "application/json", None),
    "JSON that is not an object": (b'"DELIVRD"', "application/json", None),
    "JSON null": (b"null", "application/json", None),
    "invalid UTF-8 in JSON": (b'{"status": "\xff\xfe", "user_sms_id": "m1"}', "application/json", None),
    "invalid UTF-8 in a form": (b"status=DELIVRD&user_sms_id=\xff\xfe", "application/x-www-form-urlencoded", None),
    "a form of too many fields": (b"&".join(b"f%d=1" % i for i in range(1000)), "application/x-www-form-urlencoded",
                                  None),
    "a huge Content-Length": (b"{}", "application/json", 50_000_000),
    "a negative Content-Length": (b"{}", "application/json", -5),
}


@pytest.mark.parametrize("case", list(BAD_BODIES))
def test_a_body_we_cannot_read_is_a_4xx_and_changes_nothing(hooks, records, case):
    raw, kind, length = BAD_BODIES[case]
    records.update("m1", MessageStatus.ACCEPTED, gateway="eskiz")
    status, answer = call(hooks, f"/eskiz/{SECRET}", raw, kind, length)
    assert 400 <= status < 500 and "error" in answer, (status, answer)
    assert records.get("m1")["status"] == "accepted"
    if case == "a huge Content-Length":
        assert status == 413
    if case.startswith("deeply"):
        assert answer == {"error": "the body is nested too deeply"}


@pytest.mark.parametrize("ref", ["m1:history", "m1:history:x", "../m1"])
def test_a_reference_naming_a_key_that_is_no_record_is_not_found(hooks, records, redis_client, ref):
    records.update("m1", MessageStatus.ACCEPTED, gateway="eskiz")       # t:msg:m1:history is a list
    redis_client.set("t:msg:m1:history:x", "a string")
    redis_client.rpush(Keys("t").legacy_gateway_id("zzz"), "a list")
    for route, body in (("eskiz", eskiz(ref)), ("devsms", {"sms_id": "zzz", "status": "DELIVRD"})):
        assert call(hooks, f"/{route}/{SECRET}", json.dumps(body).encode()) == (200, {"reports": 1, "applied": 0})
    assert records.get("m1")["status"] == "accepted"


def test_a_redis_outage_asks_the_gateway_to_call_again(records):
    import redis

    broken = Records(redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2), Keys("t"))
    hooks = Webhooks(load_settings(webhook_secret=SECRET), broken)
    status, answer = call(hooks, f"/eskiz/{SECRET}", json.dumps(eskiz("m1")).encode())
    assert status == 503 and answer == {"error": "store unavailable, try again"}


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
                           max_leaves=20)
REPORT_KEYS = st.sampled_from(["status", "user_sms_id", "request_id", "message_id", "sms_id", "id", "event", "data",
                               "msgId", "trackData", "errorCode"])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=st.sampled_from(["eskiz", "devsms", "smscx"]),
       body=st.dictionaries(REPORT_KEYS | st.text(max_size=5), JSON_VALUES, max_size=6)
       | st.fixed_dictionaries({"event": st.just("dlr_update"),
                                "data": st.lists(st.dictionaries(REPORT_KEYS, JSON_VALUES, max_size=4), max_size=5)}))
def test_any_json_object_is_answered_200_or_400(hooks, route, body):
    status, answer = call(hooks, f"/{route}/{SECRET}", json.dumps(body).encode())
    assert status in (200, 400), (status, answer)
