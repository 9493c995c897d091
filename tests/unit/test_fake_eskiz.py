"""The fake Eskiz gateway (smsdispatch/devtools/fakes/eskiz.py) against a real HTTP client."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta

import pytest
import requests

from smsdispatch.devtools.fakes.base import Accepted
from smsdispatch.devtools.fakes.eskiz import TASHKENT, FakeEskiz, SentSms

SEND = "/message/sms/send"
PHONE = "998901234567"


@pytest.fixture
def fake():
    with FakeEskiz() as f:
        yield f


@pytest.fixture
def http():
    with requests.Session() as s:
        yield s


def login(fake: FakeEskiz, http: requests.Session) -> str:
    r = http.post(f"{fake.base_url}/auth/login", data={"email": fake.email, "password": fake.password}, timeout=5)
    assert r.status_code == 200, r.text
    return r.json()["data"]["token"]


@pytest.fixture
def auth(fake, http) -> dict[str, str]:
    return {"Authorization": f"Bearer {login(fake, http)}"}


def send(fake, http, auth, **fields) -> requests.Response:
    body = {"mobile_phone": PHONE, "message": "Bu Eskiz dan test", "from": "4546", **fields}
    return http.post(f"{fake.base_url}{SEND}", data=body, headers=auth, timeout=5)


def minute(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%d %H:%M")


def test_login_ok_and_bad_credentials(fake, http):
    token = login(fake, http)
    assert token and fake.logins == 1
    r = http.post(f"{fake.base_url}/auth/login", data={"email": fake.email, "password": "nope"}, timeout=5)
    assert r.status_code == 401
    assert r.json() == {"message": "Invalid credentials", "status": "error"}
    assert fake.logins == 1 and fake.count("/auth/login") == 2
    assert login(fake, http) != token  # every login issues a fresh token


def test_login_accepts_json_body(fake, http):
    r = http.post(f"{fake.base_url}/auth/login", json={"email": fake.email, "password": fake.password}, timeout=5)
    assert r.status_code == 200 and r.json()["token_type"] == "bearer"


@pytest.mark.parametrize("kind", ["form", "json", "multipart"])
def test_send_records_sms(fake, http, auth, kind):
    fields = {"mobile_phone": "+" + PHONE, "message": "Salom", "from": "MyNick", "user_sms_id": "u-1",
              "callback_url": "http://127.0.0.1:9/cb"}
    kwargs = {"form": {"data": fields}, "json": {"json": fields},
              "multipart": {"files": {k: (None, v) for k, v in fields.items()}}}[kind]
    r = http.post(f"{fake.base_url}{SEND}", headers=auth, timeout=5, **kwargs)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["message"] == "Waiting for SMS provider" and body["status"] == "waiting"
    [sms] = fake.sent
    assert (sms.request_id, sms.eskiz_id, sms.mobile_phone, sms.message) == (body["id"], 1, PHONE, "Salom")
    assert (sms.sender, sms.user_sms_id, sms.callback_url, sms.status) == ("MyNick", "u-1", "http://127.0.0.1:9/cb",
                                                                           "ACCEPTED")
    assert datetime.fromisoformat(sms.created_at).utcoffset() == timedelta(hours=5)
    assert fake.count(SEND) == 1 and fake.count(SEND, "POST") == 1 and fake.count(SEND, "GET") == 0
    assert fake.sends_for("u-1") == [sms] and fake.sends_for("other") == []
    assert r.headers["Content-Type"] == "application/json"


def test_send_validation(fake, http, auth):
    assert send(fake, http, auth, mobile_phone="").status_code == 400
    assert send(fake, http, auth, message="").json() == {"status": "error", "message": "message is required"}
    bad = send(fake, http, auth, mobile_phone="99890 123 45 67")
    assert bad.status_code == 400 and bad.json()["message"] == "Invalid phone number"
    assert send(fake, http, auth, mobile_phone="12345678").status_code == 400  # 8 digits: too short
    assert fake.sent == [] and fake.count(SEND) == 4


def test_auth_required(fake, http):
    r = send(fake, http, {})
    assert r.status_code == 401 and r.json() == {"status": "token_invalid", "message": "Token is invalid"}
    r = send(fake, http, {"Authorization": "Bearer garbage"})
    assert r.status_code == 401 and r.json()["status"] == "token_invalid"
    assert fake.sent == [] and [rec.status for rec in fake.requests_log] == [401, 401]


def test_expire_token_and_refresh(fake, http, auth):
    fake.expire_token()
    r = send(fake, http, auth)
    assert r.status_code == 401 and r.json() == {"message": "Expired Token"}
    r = http.patch(f"{fake.base_url}/auth/refresh", headers=auth, timeout=5)
    assert r.status_code == 200 and r.json()["message"] == "token_generated"
    new = {"Authorization": f"Bearer {r.json()['data']['token']}"}
    assert send(fake, http, new).status_code == 200
    assert send(fake, http, auth).status_code == 401  # the old token stays expired
    r = http.patch(f"{fake.base_url}/auth/refresh", headers={"Authorization": "Bearer garbage"}, timeout=5)
    assert r.status_code == 401 and r.json()["status"] == "token_invalid"
    assert fake.refreshes == 1 and fake.count("/auth/refresh", "PATCH") == 2 and len(fake.sent) == 1


def test_auth_user(fake, http, auth):
    r = http.get(f"{fake.base_url}/auth/user", headers=auth, timeout=5)
    assert r.status_code == 200 and r.json()["data"]["email"] == fake.email


def test_fail_next_then_success(fake, http, auth):
    fake.fail_next(2, status=500)
    assert [send(fake, http, auth).status_code for _ in range(3)] == [500, 500, 200]
    assert len(fake.sent) == 1 and fake.count(SEND) == 3
    assert [rec.status for rec in fake.requests_log if rec.path == SEND] == [500, 500, 200]


def test_fail_next_custom_body_and_other_path(fake, http, auth):
    fake.fail_next(status=502, body="<html>bad gateway</html>", path="/user/get-limit")
    r = http.get(f"{fake.base_url}/user/get-limit", headers=auth, timeout=5)
    assert r.status_code == 502 and "bad gateway" in r.text
    assert send(fake, http, auth).status_code == 200  # a fault on another path leaves send alone


def test_rate_limit_next(fake, http, auth):
    fake.rate_limit_next(retry_after="7")
    r = send(fake, http, auth)
    assert r.status_code == 429 and r.headers["Retry-After"] == "7"
    assert r.json() == {"message": "Too many requests", "status": "error"}
    assert fake.sent == [] and send(fake, http, auth).status_code == 200


def test_hang_accepted_is_ambiguous_and_stop_cuts_it_short(http, auth, fake):
    fake.hang_next(seconds=2, accept=True)
    with pytest.raises(requests.exceptions.ReadTimeout):
        http.post(f"{fake.base_url}{SEND}", data={"mobile_phone": PHONE, "message": "x", "user_sms_id": "amb"},
                  headers=auth, timeout=(5, 0.3))
    assert [s.mobile_phone for s in fake.sends_for("amb")] == [PHONE]  # accepted although the client timed out
    started = time.monotonic()
    fake.stop()
    assert time.monotonic() - started < 1.5
    # stop() set the hang's Event: the handler thread finishes now, not after 2 s
    assert fake.wait_for(lambda f: f.requests_log[-1].status == 200, timeout=1.0)


def test_hang_not_accepted_records_nothing(fake, http, auth):
    fake.hang_next(seconds=0.2, accept=False)
    r = send(fake, http, auth, user_sms_id="slow")
    assert r.status_code == 503 and fake.sends_for("slow") == []


def test_refuse_and_accept_connections(fake, http, auth):
    port = fake.port
    assert send(fake, http, auth).status_code == 200  # the session now holds a keep-alive connection
    fake.refuse_connections()
    with pytest.raises(requests.ConnectionError):
        send(fake, http, auth)
    fake.accept_connections()
    assert fake.port == port and fake.base_url.endswith(f":{port}/api")
    assert send(fake, http, auth).status_code == 200
    assert len(fake.sent) == 2


def test_status_by_id_and_set_status(fake, http, auth):
    request_id = send(fake, http, auth, user_sms_id="s-1").json()["id"]
    by_uuid = http.get(f"{fake.base_url}/message/sms/status_by_id/{request_id}", headers=auth, timeout=5).json()
    assert by_uuid["status"] == "success" and by_uuid["id"] is None
    data = by_uuid["data"]
    assert (data["request_id"], data["user_sms_id"], data["to"], data["status"]) == (request_id, "s-1", PHONE,
                                                                                     "ACCEPTED")
    assert data["parts_count"] == 1
    fake.set_status("s-1", "DELIVERED")
    by_int = http.get(f"{fake.base_url}/message/sms/status_by_id/{data['id']}", headers=auth, timeout=5).json()
    assert by_int["data"]["status"] == "DELIVERED" and by_int["data"]["request_id"] == request_id
    assert {p["dlr_state"] for p in by_int["data"]["parts"].values()} == {"DELIVRD"}
    r = http.get(f"{fake.base_url}/message/sms/status_by_id/999", headers=auth, timeout=5)
    assert r.status_code == 404 and r.json()["status"] == "error"
    with pytest.raises(KeyError):
        fake.set_status("no-such-id", "DELIVERED")


def test_get_user_messages_window_and_status_filter(fake, http, auth):
    send(fake, http, auth, user_sms_id="w-1")
    now = datetime.now(TASHKENT)
    url = f"{fake.base_url}/message/sms/get-user-messages"
    window = {"start_date": minute(now - timedelta(minutes=1)), "to_date": minute(now)}
    page = http.post(url, data=window, headers=auth, timeout=5).json()
    assert page["status"] == "success"
    assert [row["user_sms_id"] for row in page["data"]["result"]] == ["w-1"]
    past = {"start_date": minute(now - timedelta(days=2)), "to_date": minute(now - timedelta(days=1))}
    assert http.post(url, data=past, headers=auth, timeout=5).json()["data"]["total"] == 0
    delivered = http.post(f"{url}?status=delivered", data=window, headers=auth, timeout=5).json()
    assert delivered["data"]["total"] == 0
    fake.set_status("w-1", "DELIVERED")
    delivered = http.post(f"{url}?status=delivered", data=window, headers=auth, timeout=5).json()
    assert delivered["data"]["total"] == 1


def test_get_user_messages_pagination(fake, http, auth):
    for i in range(25):
        assert send(fake, http, auth, user_sms_id=f"p-{i}").status_code == 200
    now = datetime.now(TASHKENT)
    url = f"{fake.base_url}/message/sms/get-user-messages"
    form = {"start_date": minute(now - timedelta(minutes=5)), "to_date": minute(now), "page_size": "20"}
    first = http.post(url, data=form, headers=auth, timeout=5).json()["data"]
    assert (first["total"], first["last_page"], first["per_page"], len(first["result"])) == (25, 2, 20, 20)
    assert first["next_page_url"].endswith("?page=2") and first["prev_page_url"] is None
    second = http.post(f"{url}?page=2", data=form, headers=auth, timeout=5).json()["data"]
    assert (second["current_page"], second["from"], second["to"], len(second["result"])) == (2, 21, 25, 5)
    assert second["next_page_url"] is None
    ids = {row["user_sms_id"] for row in first["result"] + second["result"]}
    assert ids == {f"p-{i}" for i in range(25)}
    assert http.post(url, data={**form, "page_size": "5"}, headers=auth, timeout=5).status_code == 400


def test_send_batch_and_dispatch_queries(fake, http, auth):
    body = {"messages": [{"user_sms_id": "b1", "to": 998990000000, "text": "eto test"},
                         {"user_sms_id": "b2", "to": "998980000000", "text": "eto test 2"}],
            "from": "4546", "dispatch_id": 123, "callback_url": ""}
    r = http.post(f"{fake.base_url}/message/sms/send-batch", json=body, headers=auth, timeout=5)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == ["waiting", "waiting"]
    sent = fake.sent
    assert [s.mobile_phone for s in sent] == ["998990000000", "998980000000"]
    assert {s.request_id for s in sent} == {r.json()["id"]} and {s.dispatch_id for s in sent} == {123}
    assert sent[0].callback_url is None
    status = http.get(f"{fake.base_url}/message/sms/status_by_id/{r.json()['id']}", headers=auth, timeout=5)
    assert status.json()["data"]["user_sms_id"] == "b1"  # a batch request_id answers with its first message

    fake.set_status("b2", "REJECTED")
    summary = http.post(f"{fake.base_url}/message/sms/get-dispatch-status", data={"dispatch_id": "123"},
                        headers=auth, timeout=5).json()
    assert summary == {"status": "success", "data": [{"status": "ACCEPTED", "total": 1},
                                                     {"status": "REJECTED", "total": 1}], "id": None}
    url = f"{fake.base_url}/message/sms/get-user-messages-by-dispatch"
    rows = http.post(url, data={"dispatch_id": "123"}, headers=auth, timeout=5).json()["data"]["result"]
    assert [row["user_sms_id"] for row in rows] == ["b1", "b2"]
    rejected = http.post(f"{url}?status=rejected", data={"dispatch_id": "123"}, headers=auth, timeout=5).json()
    assert [row["user_sms_id"] for row in rejected["data"]["result"]] == ["b2"]
    totals = http.post(url, data={"dispatch_id": "123", "count": "1"}, headers=auth, timeout=5).json()
    assert sum(t["total"] for t in totals["data"]) == 2
    other = http.post(url, data={"dispatch_id": "9"}, headers=auth, timeout=5).json()
    assert other["data"]["total"] == 0


def test_balance_and_insufficient_balance(fake, http, auth):
    fake.balance = 120
    assert send(fake, http, auth).status_code == 200
    assert http.get(f"{fake.base_url}/user/get-limit", headers=auth, timeout=5).json() == {
        "data": {"balance": 70}, "status": "success"}
    send(fake, http, auth)
    r = send(fake, http, auth, user_sms_id="poor")
    assert r.status_code == 400 and r.json() == {"status": "error", "message": "Insufficient balance"}
    assert fake.balance == 20 and fake.sends_for("poor") == [] and len(fake.sent) == 2


def test_multipart_message_costs_per_part(fake, http, auth):
    fake.balance = 1000
    assert send(fake, http, auth, message="a" * 161).status_code == 200  # 2 GSM-7 parts
    assert send(fake, http, auth, message="Ж" * 70).status_code == 200  # 1 UCS-2 part
    assert [s.parts_count for s in fake.sent] == [2, 1] and fake.balance == 1000 - 3 * fake.price


def test_reject_recipients(fake, http, auth):
    fake.reject_recipients("+998911111111")
    r = send(fake, http, auth, mobile_phone="998911111111")
    assert r.status_code == 400 and r.json() == {"status": "error", "message": "Invalid phone number"}
    assert fake.sent == [] and send(fake, http, auth).status_code == 200


def test_unknown_route_is_404(fake, http, auth):
    r = http.get(f"{fake.base_url}/message/sms/send", headers=auth, timeout=5)  # wrong method
    assert r.status_code == 404 and r.headers["Content-Type"] == "application/json"
    assert http.get(f"{fake.base_url}/nothing", headers=auth, timeout=5).status_code == 404
    root = fake.base_url.removesuffix("/api")
    r = http.post(f"{root}{SEND}", data={"mobile_phone": PHONE, "message": "x"}, headers=auth, timeout=5)
    assert r.status_code == 404 and fake.sent == []  # the /api prefix is required


def test_wait_for(fake, http, auth):
    thread = threading.Thread(target=send, args=(fake, http, auth), kwargs={"user_sms_id": "bg"})
    thread.start()
    assert fake.wait_for(lambda f: len(f.sends_for("bg")) == 1, timeout=5)
    thread.join()
    assert fake.wait_for(lambda f: f.count(SEND) == 2, timeout=0.05) is False


def test_reset_keeps_tokens_and_port(fake, http, auth):
    port = fake.port
    send(fake, http, auth)
    fake.fail_next(path="*")
    fake.reset()
    assert fake.sent == [] and fake.requests_log == [] and fake.count(SEND) == 0
    assert send(fake, http, auth).status_code == 200 and fake.port == port
    assert fake.errors == []


def test_sent_sms_is_an_accepted_in_neutral_terms(fake, http, auth):
    body = {"messages": [{"user_sms_id": "n1", "to": "+998990000000", "text": "salom"}], "from": "Nick",
            "dispatch_id": 77}
    request_id = http.post(f"{fake.base_url}/message/sms/send-batch", json=body, headers=auth, timeout=5).json()["id"]
    [sms] = fake.accepted
    assert isinstance(sms, SentSms) and isinstance(sms, Accepted) and fake.sent == [sms]
    assert (sms.gateway_message_id, sms.to, sms.text, sms.sender, sms.client_ref, sms.call_ref) == (
        request_id, "998990000000", "salom", "Nick", "n1", "77")
    assert (sms.request_id, sms.mobile_phone, sms.message, sms.user_sms_id, sms.dispatch_id) == (
        request_id, "998990000000", "salom", "n1", 77)
    assert fake.accepted_for(call_ref="77") == [sms] and fake.accepted_for(to="+998990000000") == [sms]
    fake.set_status(str(sms.eskiz_id), "DELIVERED")  # the integer id works too
    assert sms.status == "DELIVERED" and sms.updated_at > sms.created_at


def test_default_fault_bodies_use_eskiz_error_shapes(fake, http, auth):
    fake.fail_next(status=503)
    assert send(fake, http, auth).json() == {"message": "server error"}  # the SDK fixture's body
    fake.fail_next(status=400)
    assert send(fake, http, auth).json() == {"status": "error", "message": "server error"}
    fake.rate_limit_next(retry_after=1.5)
    assert send(fake, http, auth).headers["Retry-After"] == "2"
    assert fake.has_tokens and fake.sent == []
