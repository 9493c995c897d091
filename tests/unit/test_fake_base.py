"""FakeGateway (smsdispatch/devtools/fakes/base.py) through a tiny echo protocol defined here, against a real HTTP client."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid

import pytest
import requests

from smsdispatch.devtools.fakes.base import Accepted, FakeGateway, Reply, Request, parse_body

SEND = "/send"


class EchoFake(FakeGateway):
    """POST /v1/send {to, text, ref?, call?} -> {"id"}; GET /v1/echo -> what the fake saw; GET /v1/boom -> a bug."""

    prefix = "/v1"
    send_path = SEND
    name = "echo"

    def error_body(self, status: int, message: str) -> dict:
        return {"err": {"code": status, "text": message}}

    def route(self, req: Request) -> Reply:
        if (req.method, req.path) == ("GET", "/echo"):
            return Reply(200, {"query": req.query, "fields": req.fields, "bearer": req.bearer,
                               "basic": list(req.basic) if req.basic else None})
        if (req.method, req.path) == ("GET", "/boom"):
            return Reply(200, {"x": 1 // 0})
        if (req.method, req.path) != ("POST", SEND):
            raise Reply(404, self.error_body(404, "no such route"))
        to = str(req.fields.get("to", "")).lstrip("+")
        if to in self.rejected:
            raise Reply(400, self.error_body(400, "rejected"))
        if not self.charge(self.price):
            raise Reply(402, self.error_body(402, "no money"))
        entry = self.record(Accepted(uuid.uuid4().hex, to, str(req.fields.get("text", "")), None,
                                     req.fields.get("ref"), req.fields.get("call"), "queued", time.monotonic()))
        return Reply(200, {"id": entry.gateway_message_id})


@pytest.fixture
def fake():
    with EchoFake(price=10, balance=1000) as f:
        yield f


@pytest.fixture
def http():
    with requests.Session() as s:
        yield s


def send(fake, http, timeout=5.0, **fields) -> requests.Response:
    body = {"to": "+27000000001", "text": "hi", **fields}
    return http.post(f"{fake.base_url}{SEND}", json=body, timeout=timeout)


def test_record_accepted_and_accepted_for(fake, http):
    first = send(fake, http, ref="r1", call="c1")
    send(fake, http, to="27000000002", ref="r2", call="c1")
    assert first.status_code == 200 and fake.base_url.endswith("/v1")
    a, b = fake.accepted
    assert (a.gateway_message_id, a.to, a.text, a.client_ref, a.call_ref) == (first.json()["id"], "27000000001",
                                                                              "hi", "r1", "c1")
    assert fake.accepted_for(to="+27000000001") == [a] and fake.accepted_for(to="27000000002") == [b]
    assert fake.accepted_for(client_ref="r2") == [b] and fake.accepted_for(call_ref="c1") == [a, b]
    assert fake.accepted_for(call_ref="c1", client_ref="r1") == [a] and fake.accepted_for(client_ref="zz") == []
    assert fake.balance == 980
    fake.accepted.clear()  # a copy: the fake's list is untouched
    assert len(fake.accepted) == 2


def test_charge_refuses_without_deducting(fake, http):
    fake.balance = 15
    assert send(fake, http).status_code == 200
    r = send(fake, http)
    assert r.status_code == 402 and r.json() == {"err": {"code": 402, "text": "no money"}}
    assert fake.balance == 5 and len(fake.accepted) == 1


def test_fail_next_uses_error_body_and_records_fields(fake, http):
    fake.fail_next(2)
    r = send(fake, http, ref="f1")
    assert r.status_code == 500 and r.json() == {"err": {"code": 500, "text": "server error"}}
    assert send(fake, http, ref="f2").status_code == 500 and send(fake, http, ref="f3").status_code == 200
    assert [(rec.status, rec.fields["ref"]) for rec in fake.requests_log] == [(500, "f1"), (500, "f2"), (200, "f3")]
    assert [a.client_ref for a in fake.accepted] == ["f3"]


def test_fail_next_custom_answer_other_path_and_any_path(fake, http):
    fake.fail_next(status=418, body="teapot", headers={"X-Why": "because"}, path="/v1/echo")  # prefix accepted
    assert send(fake, http).status_code == 200  # a fault on another path leaves send alone
    r = http.get(f"{fake.base_url}/echo", timeout=5)
    assert (r.status_code, r.text, r.headers["X-Why"]) == (418, "teapot", "because")
    assert r.headers["Content-Type"].startswith("text/plain")
    fake.fail_next(status=503, path="*")
    assert http.get(f"{fake.base_url}/echo", timeout=5).status_code == 503
    assert http.get(f"{fake.base_url}/echo", timeout=5).status_code == 200


def test_rate_limit_next(fake, http):
    fake.rate_limit_next(2, retry_after=2.5)
    r = send(fake, http)
    assert r.status_code == 429 and r.headers["Retry-After"] == "3"  # whole seconds, rounded up
    assert r.json() == {"err": {"code": 429, "text": "Too many requests"}}
    assert send(fake, http).status_code == 429 and send(fake, http).status_code == 200
    fake.rate_limit_next(retry_after="7")
    assert send(fake, http).headers["Retry-After"] == "7"
    assert len(fake.accepted) == 1


def test_hang_accepted_records_then_answers_late_and_stop_cuts_it_short(fake, http):
    fake.hang_next(seconds=2, accept=True)
    with pytest.raises(requests.exceptions.ReadTimeout):
        send(fake, http, timeout=(5, 0.3), ref="amb")
    assert [a.client_ref for a in fake.accepted] == ["amb"]  # routed before the hang
    assert fake.requests_log[-1].status is None  # still hanging
    started = time.monotonic()
    fake.stop()
    fake.stop()  # idempotent
    assert time.monotonic() - started < 1.5
    assert fake.wait_for(lambda f: f.requests_log[-1].status == 200, timeout=1.0)


def test_hang_not_accepted_routes_nothing_and_answers_503_late(fake, http):
    fake.hang_next(seconds=2, accept=False)
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        send(fake, http, timeout=(5, 0.3), ref="slow")
    assert fake.wait_for(lambda f: f.requests_log[-1].status == 503, timeout=5)
    assert time.monotonic() - started >= 1.9
    assert fake.accepted == [] and fake.requests_log[-1].fields["ref"] == "slow"


def raw_send(fake, ref: str) -> socket.socket:
    """POST /v1/send over a bare socket (the test reads the answer byte by byte itself)."""
    body = json.dumps({"to": "+27000000001", "text": "hi", "ref": ref}).encode()
    conn = socket.create_connection((fake.host, fake.port), timeout=5)
    conn.sendall(b"POST /v1/send HTTP/1.1\r\nHost: fake\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    return conn


def test_trickle_writes_even_the_status_line_a_byte_at_a_time(fake):
    fake.trickle_next(byte_interval=0.3)
    with raw_send(fake, "trickled") as conn:
        first = conn.recv(1024)
        assert first and b"HTTP/1.1 200".startswith(first) and len(first) < 9   # the status line is not whole
    assert [a.client_ref for a in fake.accepted] == ["trickled"]                   # routed first (accept=True)


def test_trickle_answer_arrives_whole_though_slower_than_the_read_timeout(fake, http):
    interval = 0.005
    fake.trickle_next(byte_interval=interval)
    started = time.monotonic()
    r = send(fake, http, timeout=(5, 0.3), ref="slow")         # no gap reaches the 0.3 s read timeout
    took = time.monotonic() - started
    (accepted,) = fake.accepted
    assert r.status_code == 200 and r.json() == {"id": accepted.gateway_message_id}
    head = b"HTTP/1.1 200 OK\r\n" + b"".join(f"{k}: {v}\r\n".encode() for k, v in r.raw.headers.items()) + b"\r\n"
    at_least = (len(head) + len(r.content) - 1) * interval      # a pause between any two bytes: > 0.3 s
    # the fake stamps answered_at just after its last byte, which the client may have read first
    assert fake.wait_for(lambda f: f.requests_log[-1].answered_at is not None)
    record = fake.requests_log[-1]
    assert took >= at_least > 0.3 and record.answered_at - record.received_at >= at_least
    assert send(fake, http).status_code == 200                 # one trickle only; keep-alive intact


def test_trickle_not_accepted_routes_nothing_and_trickles_a_503(fake, http):
    fake.trickle_next(byte_interval=0.002, accept=False, path="*")
    r = send(fake, http, timeout=(5, 0.3), ref="dropped")
    assert r.status_code == 503 and r.json() == {"err": {"code": 503, "text": "Service unavailable"}}
    assert fake.accepted == [] and fake.requests_log[-1].fields["ref"] == "dropped"


def test_stop_cuts_a_trickle_short(fake):
    fake.trickle_next(byte_interval=5)
    with raw_send(fake, "cut") as conn:
        assert conn.recv(1) == b"H"                             # the next byte would come in 5 s
        started = time.monotonic()
        fake.stop()
        while conn.recv(1024):                                  # the rest at once, or the end
            pass
        assert time.monotonic() - started < 1.5
    with pytest.raises(ValueError):
        fake.trickle_next(byte_interval=0)


def test_refuse_and_accept_connections_on_the_same_port(fake, http):
    port = fake.port
    assert send(fake, http).status_code == 200  # the session now holds a keep-alive connection
    fake.refuse_connections()
    with pytest.raises(requests.ConnectionError):
        send(fake, http)
    fake.accept_connections()
    assert fake.port == port and send(fake, http).status_code == 200
    assert len(fake.accepted) == 2


def test_set_status_by_any_reference(fake, http):
    gid = send(fake, http, ref="s1", call="call-9").json()["id"]
    send(fake, http, ref="s2")
    assert [a.client_ref for a in fake.set_status(gid, "sent")] == ["s1"]
    assert fake.accepted_for(client_ref="s1")[0].status == "sent"
    fake.set_status("s2", "delivered")
    fake.set_status("call-9", "failed")
    assert [a.status for a in fake.accepted] == ["failed", "delivered"]
    with pytest.raises(KeyError):
        fake.set_status("nope", "x")


def test_reject_recipients(fake, http):
    fake.reject_recipients("+27000000001")
    assert fake.rejected == {"27000000001"}
    assert send(fake, http).status_code == 400 and send(fake, http, to="27000000002").status_code == 200
    assert [a.to for a in fake.accepted] == ["27000000002"]


def test_reset_forgets_everything_but_balance_and_port(fake, http):
    port = fake.port
    send(fake, http)
    http.get(f"{fake.base_url}/boom", timeout=5)
    fake.fail_next(path="*")
    fake.reject_recipients("27000000001")
    fake.reset()
    assert (fake.accepted, fake.requests_log, fake.errors, fake.rejected) == ([], [], [], set())
    assert send(fake, http).status_code == 200  # the fault is gone, and so is the rejection
    assert fake.port == port and fake.balance == 980


def test_wait_for_is_woken_by_requests_and_changes(fake, http):
    thread = threading.Thread(target=send, args=(fake, http), kwargs={"ref": "bg"})
    thread.start()
    assert fake.wait_for(lambda f: len(f.accepted_for(client_ref="bg")) == 1, timeout=5)
    thread.join()
    setter = threading.Timer(0.05, fake.set_status, args=("bg", "delivered"))
    setter.start()
    assert fake.wait_for(lambda f: f.accepted[0].status == "delivered", timeout=5)
    setter.join()
    assert fake.wait_for(lambda f: f.count(SEND) == 2, timeout=0.05) is False


def test_count_by_path_and_method(fake, http):
    send(fake, http)
    http.get(f"{fake.base_url}{SEND}", timeout=5)  # wrong method: 404 from the protocol, still counted
    assert fake.count(SEND) == 2 and fake.count("/v1/send") == 2
    assert fake.count(SEND, "post") == 1 and fake.count(SEND, "GET") == 1 and fake.count("/echo") == 0


def test_headers_query_and_auth_are_seen(fake, http):
    r = http.get(f"{fake.base_url}/echo?a=1&a=2&b=", headers={"X-Custom-Thing": "V", "Authorization": "Bearer t0k"},
                 timeout=5)
    assert r.json()["query"] == {"a": "2", "b": ""} and r.json()["bearer"] == "t0k"
    rec = fake.requests_log[-1]
    assert rec.headers["x-custom-thing"] == "V" and "X-Custom-Thing" not in rec.headers
    assert (rec.path, rec.query) == ("/echo", "a=1&a=2&b=")
    basic = http.get(f"{fake.base_url}/echo", auth=("client", "se:cret"), timeout=5).json()
    assert basic["basic"] == ["client", "se:cret"] and basic["bearer"] is None


def test_outside_the_prefix_is_404_and_not_routed(fake, http):
    root = fake.base_url.removesuffix("/v1")
    r = http.post(f"{root}{SEND}", json={"to": "27000000001", "text": "x"}, timeout=5)
    assert r.status_code == 404 and r.json() == {"err": {"code": 404, "text": "Not found"}}
    assert fake.accepted == [] and fake.requests_log[-1].fields == {"to": "27000000001", "text": "x"}


def test_bodies_json_form_multipart_and_malformed(fake, http):
    url = f"{fake.base_url}/echo"
    assert http.get(url, data={"k": "v"}, timeout=5).json()["fields"] == {"k": "v"}
    assert http.get(url, files={"k": (None, "v")}, timeout=5).json()["fields"] == {"k": "v"}
    assert http.get(url, json=[1, 2], timeout=5).json()["fields"] == {"_json": [1, 2]}
    r = http.get(url, data=b"{nope", headers={"Content-Type": "application/json"}, timeout=5)
    assert r.status_code == 400 and r.json() == {"err": {"code": 400, "text": "Malformed JSON body"}}
    assert parse_body("", b'{"a": 1}') == {"a": 1} and parse_body("text/plain", b"  ") == {}


def test_a_bug_in_the_fake_is_a_500_with_its_traceback(fake, http):
    r = http.get(f"{fake.base_url}/boom", timeout=5)
    assert r.status_code == 500 and r.json() == {"err": {"code": 500, "text": "server error"}}
    assert len(fake.errors) == 1 and "ZeroDivisionError" in fake.errors[0]


def test_expire_token_without_tokens(fake):
    assert fake.has_tokens is False
    with pytest.raises(NotImplementedError, match="echo has no tokens"):
        fake.expire_token()


# ----------------------------------------------------------------- chaos: seeded random faults

from smsdispatch.devtools.fakes.base import CHAOS_KINDS, DEFAULT_CHAOS_KINDS  # noqa: E402 - appended section


def drive(fake, n: int, *, timeout: float = 20.0) -> list[str]:
    """Send (one request at a time, numbered refs) until the fake has logged n send requests; returns
    what the client saw for each attempt: a status code, "reset" or "refused"."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    with requests.Session() as http:
        i = 0
        while fake.count(SEND) < n:
            assert time.monotonic() < deadline, f"only {fake.count(SEND)} of {n} requests got through"
            try:
                seen.append(str(send(fake, http, timeout=5, ref=f"m{i}").status_code))
            except requests.ConnectionError as e:
                refused = "refused" in str(e).lower()
                seen.append("refused" if refused else "reset")
                if refused:  # wait for the window to end instead of spinning on ECONNREFUSED
                    fake.wait_for(lambda f: not f.refusing, timeout=5)
            i += 1
    return seen


def test_chaos_mix_happens_and_is_reproducible_with_the_seed():
    faults = []
    for _ in range(2):
        with EchoFake(balance=10**6) as f:
            f.chaos(0.3, seed=42, refuse_seconds=(0.02, 0.05))
            seen = drive(f, 200)
            # a request's answered_at is stamped just after its last byte, which its client may read first
            assert f.wait_for(lambda g: all(r.answered_at is not None for r in g.requests_log
                                            if r.fault not in ("reset_before", "reset_after")))
            log = f.requests_log
            faults.append([r.fault for r in log])
            counts = f.chaos_counts
            assert counts == {k: sum(1 for r in log if r.fault == k) for k in CHAOS_KINDS}
            assert all(counts[k] > 0 for k in DEFAULT_CHAOS_KINDS), counts  # every default kind happened
            assert counts["http_429"] == counts["slow"] == 0, counts          # asked for only by name
            assert 30 <= sum(counts.values()) <= 90, counts                  # about 30% of 200
            # 5xx answers are 500/502/503 and route nothing; resets answer nothing
            assert {r.status for r in log if r.fault == "http_5xx"} <= {500, 502, 503}
            assert all(r.status is None and r.answered_at is None for r in log
                       if r.fault in ("reset_before", "reset_after"))
            assert all(r.answered_at >= r.received_at for r in log if r.fault not in ("reset_before", "reset_after"))
            # accepted: every request routed, i.e. no fault, a refusal trigger, or a reset AFTER routing
            routed = [r.fields["ref"] for r in log if r.fault in (None, "refuse", "reset_after")]
            assert [a.client_ref for a in f.accepted] == routed
            assert seen.count("reset") == counts["reset_before"] + counts["reset_after"]
            assert "refused" in seen                                          # the window refused connections
    assert faults[0] == faults[1]                                            # same seed, same faults in order
    with EchoFake() as other:
        other.chaos(0.3, seed=43, kinds=("http_5xx",))
        drive(other, 200)
        assert [r.fault for r in other.requests_log] != faults[0]


@pytest.mark.parametrize("kind", ["http_5xx", "reset_before", "reset_after"])
def test_chaos_each_kind_alone(fake, http, kind):
    fake.chaos(1.0, seed=1, kinds=(kind,), statuses=(502,))
    if kind == "http_5xx":
        r = send(fake, http, ref="k")
        assert r.status_code == 502 and r.json() == {"err": {"code": 502, "text": "server error"}}
    else:
        with pytest.raises(requests.ConnectionError):
            send(fake, http, ref="k")
    rec = fake.requests_log[-1]
    assert rec.fault == kind and rec.fields["ref"] == "k"
    assert [a.client_ref for a in fake.accepted] == (["k"] if kind == "reset_after" else [])
    assert fake.chaos_counts == {k: int(k == kind) for k in CHAOS_KINDS}


def test_chaos_http_429_answers_retry_after_and_routes_nothing(fake, http):
    fake.chaos(1.0, seed=1, kinds=("http_429",))
    r = send(fake, http, ref="limited")
    assert r.status_code == 429 and r.headers["Retry-After"] == "1"
    assert r.json() == {"err": {"code": 429, "text": "Too many requests"}}     # the protocol's own 429
    assert fake.wait_for(lambda f: f.requests_log[-1].answered_at is not None)   # stamped after the last byte
    rec = fake.requests_log[-1]
    assert (rec.fault, rec.status, rec.fields["ref"]) == ("http_429", 429, "limited") and rec.answered_at
    assert fake.accepted == [] and fake.balance == 1000
    assert fake.chaos_counts == {k: int(k == "http_429") for k in CHAOS_KINDS}


def test_chaos_slow_routes_then_answers_late(fake, http):
    fake.chaos(1.0, seed=1, kinds=("slow",), slow_seconds=0.4)
    started = time.monotonic()
    r = send(fake, http, ref="late")
    assert r.status_code == 200 and time.monotonic() - started >= 0.4      # answered normally, late
    assert fake.wait_for(lambda f: f.requests_log[-1].answered_at is not None)   # stamped after the last byte
    rec = fake.requests_log[-1]
    assert rec.fault == "slow" and rec.answered_at - rec.received_at >= 0.4
    assert [a.client_ref for a in fake.accepted] == ["late"] and r.json()["id"] == fake.accepted[0].gateway_message_id
    # a client that gives up earlier meets the ambiguous case: accepted, never heard
    with pytest.raises(requests.exceptions.ReadTimeout):
        send(fake, http, timeout=(5, 0.1), ref="gave-up")
    assert [a.client_ref for a in fake.accepted] == ["late", "gave-up"]
    assert fake.chaos_counts == {k: 2 * int(k == "slow") for k in CHAOS_KINDS}


def test_chaos_slow_defaults_to_two_seconds_and_stop_cuts_it_short(fake, http):
    fake.chaos(1.0, seed=1, kinds=("slow",))
    with pytest.raises(requests.exceptions.ReadTimeout):
        send(fake, http, timeout=(5, 1.0), ref="s")
    assert fake.requests_log[-1].status is None                            # still held back (2 s)
    started = time.monotonic()
    fake.stop()
    assert time.monotonic() - started < 1.0


def test_chaos_new_kinds_leave_the_default_sequence_alone():
    """Callers that name no kinds draw what they always drew, in the same order for a seed."""
    sequences = []
    for kinds in (None, {"http_5xx": 1, "reset_before": 1, "reset_after": 1, "refuse": 1, "http_429": 0, "slow": 0}):
        with EchoFake(balance=10**6) as f:
            f.chaos(0.5, seed=5, refuse_seconds=(0.0, 0.0), **({"kinds": kinds} if kinds else {}))
            drive(f, 60)
            sequences.append([r.fault for r in f.requests_log])
    assert sequences[0] == sequences[1] and {"http_429", "slow"}.isdisjoint(sequences[0])


def test_chaos_refuse_answers_then_refuses_new_connections_then_rebinds(fake, http):
    port = fake.port
    fake.chaos(1.0, seed=1, kinds={"refuse": 1.0}, refuse_seconds=(0.3, 0.3))
    r = send(fake, http, ref="trigger")
    assert r.status_code == 200 and r.headers["Connection"] == "close"     # answered and accepted
    assert fake.refusing and fake.requests_log[-1].fault == "refuse"
    with pytest.raises(requests.ConnectionError, match="(?i)refused"):
        send(fake, http, ref="refused")
    assert fake.wait_for(lambda f: not f.refusing, timeout=5)
    fake.calm()
    assert send(fake, http, ref="after").status_code == 200 and fake.port == port
    assert [a.client_ref for a in fake.accepted] == ["trigger", "after"] and fake.chaos_counts["refuse"] == 1


def test_chaos_only_on_its_paths_calm_and_reset(fake, http):
    fake.chaos(1.0, seed=7, kinds=("http_5xx",))
    assert http.get(f"{fake.base_url}/echo", timeout=5).status_code == 200   # not a send path
    assert send(fake, http).status_code >= 500
    fake.fail_next(status=418)                                              # scripted faults go first
    assert send(fake, http).status_code == 418 and fake.requests_log[-1].fault is None
    fake.calm()
    assert send(fake, http).status_code == 200
    assert fake.chaos_counts["http_5xx"] == 1                               # counts survive calm()
    fake.chaos(1.0, seed=7, kinds=("http_5xx",), paths=["/v1/echo"])        # prefix accepted
    assert http.get(f"{fake.base_url}/echo", timeout=5).status_code >= 500 and send(fake, http).status_code == 200
    fake.reset()
    assert fake.chaos_counts == dict.fromkeys(CHAOS_KINDS, 0)
    assert http.get(f"{fake.base_url}/echo", timeout=5).status_code == 200  # reset() calms too


def test_chaos_refuses_bad_settings(fake):
    for bad in [dict(rate=1.5), dict(kinds=("flood",)), dict(kinds={}), dict(statuses=(404,)),
                dict(refuse_seconds=(1, 0)), dict(slow_seconds=-1), dict(slow_seconds=float("inf"))]:
        with pytest.raises(ValueError):
            fake.chaos(**bad)


def test_a_client_that_went_away_is_not_reported_but_other_errors_are(fake, capsys):
    server = fake._server
    try:
        raise ConnectionResetError(104, "Connection reset by peer")   # e.g. a SIGKILLed worker's connection
    except ConnectionResetError:
        server.handle_error(None, ("127.0.0.1", 1))
    assert capsys.readouterr().err == ""
    try:
        raise ValueError("a real problem")
    except ValueError:
        server.handle_error(None, ("127.0.0.1", 1))
    assert "ValueError: a real problem" in capsys.readouterr().err
