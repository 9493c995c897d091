"""HttpGateway's own preparation of a JSON call (`_prepared`): the same request requests would send,
and session.request wherever requests' merging could make a difference. A real server on 127.0.0.1
compares what reaches the wire."""

from __future__ import annotations

import socket
import threading

import pytest
import requests

from smsdispatch.errors import AmbiguousError
from smsdispatch.gateways.base import HttpGateway


class Probe(HttpGateway):
    name = "probe"
    send = status = balance = None


def probe(base: str = "http://GW.test:8080/api/", **kwargs) -> Probe:
    return Probe(base, connect_timeout=1, read_timeout=1, **kwargs)


def by_requests(gw: Probe, method: str, path: str, **kwargs) -> requests.PreparedRequest:
    return gw.session.prepare_request(requests.Request(method, gw.base_url + path, **kwargs))


@pytest.mark.parametrize("base, method, path, kwargs", [
    ("http://GW.test:8080/api/", "POST", "/message/sms/send-batch",
     {"json": {"messages": [{"to": "998901234567", "text": "Код 1234 ✓"}], "from": "4546"},
      "headers": {"Authorization": "Bearer abc"}}),
    ("http://gw.test/api", "post", "/send_sms.php", {"json": {"n": 1.5, "x": None, "l": [True, False]}}),
    ("https://gw.test", "POST", "/", {"json": {"a": "b"}, "headers": {"User-Agent": "ours", "Accept": None}}),
    ("https://gw.test/v1", "GET", "/account/balance", {"headers": {"X-API-KEY": "k"}}),
    ("https://gw.test/v1", "DELETE", "/sms/x-1.2_~3", {}),
    ("http://bücher.example/api", "POST", "/sms", {"json": []}),
])
def test_a_json_call_is_prepared_as_requests_prepares_it(base, method, path, kwargs):
    gw = probe(base)
    ours, theirs = gw._prepared(method, path, dict(kwargs)), by_requests(gw, method.upper(), path, **kwargs)
    assert ours is not None
    assert (ours.method, ours.url, dict(ours.headers), ours.body) == \
        (theirs.method, theirs.url, dict(theirs.headers), theirs.body)


@pytest.mark.parametrize("base, path, kwargs", [
    ("http://gw.test/api", "/status", {"params": {"id": "1"}}),
    ("http://gw.test/api", "/auth/login", {"data": {"email": "a@b.c"}}),
    ("http://gw.test/api", "/auth", {"auth": ("id", "secret")}),
    ("http://gw.test/api", "/a/../b", {}),
    ("http://gw.test/api", "/a b", {}),
    ("http://gw.test/api", "/reports/single/a%2Fb", {}),
    ("http://gw.test/api", "", {}),
    ("http://user:pw@gw.test/api", "/sms", {"json": {}}),
    ("http://gw.test/api?key=1", "/sms", {"json": {}}),
])
def test_what_requests_would_merge_goes_through_session_request(base, path, kwargs):
    assert probe(base)._prepared("POST", path, kwargs) is None


def test_a_session_holding_a_cookie_or_of_the_callers_goes_through_session_request():
    gw = probe()
    gw.session.cookies.set("sid", "1", domain="gw.test")
    assert gw._prepared("POST", "/sms", {"json": {}}) is None
    assert probe(session=requests.Session())._prepared("POST", "/sms", {"json": {}}) is None


class Wire:
    """A server on 127.0.0.1 that keeps each request's raw bytes and answers 200 with a JSON body."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.requests: list[bytes] = []
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/api"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, conn: socket.socket) -> None:
        buf = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                head, _, rest = buf.partition(b"\r\n\r\n")
                length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(rest) < length:
                    rest += conn.recv(65536)
                self.requests.append(head + b"\r\n\r\n" + rest[:length])
                buf = rest[length:]
                conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n'
                             b'{"id": "1"}')

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def wire():
    server = Wire()
    yield server
    server.close()


def test_a_send_reaches_the_wire_as_it_did_through_session_request(wire, monkeypatch):
    gw = probe(wire.url)
    call = {"json": {"mobile_phone": "998901234567", "message": "Код ✓", "from": "4546"},
            "headers": {"Authorization": "Bearer t"}}
    assert gw.request("POST", "/message/sms/send", **call).json() == {"id": "1"}
    monkeypatch.setattr(gw, "_prepared", lambda *a: None)          # the way every call went before
    assert gw.request("POST", "/message/sms/send", **call).json() == {"id": "1"}
    assert len(wire.requests) == 2 and wire.requests[0] == wire.requests[1]


def test_a_send_does_not_go_through_session_request(wire, monkeypatch):
    gw = probe(wire.url)

    def merged(*args, **kwargs):
        raise AssertionError("session.request: the merging the send path does without")

    monkeypatch.setattr(gw.session, "request", merged)
    assert gw.request("POST", "/sms", json={"to": "1"}, headers={"X-API-KEY": "k"}).status_code == 200
    assert gw.json(gw.request("GET", "/account/balance")) == {"id": "1"}


def test_a_header_with_a_line_break_is_refused_before_anything_is_sent(wire):
    gw = probe(wire.url)
    with pytest.raises(AmbiguousError, match="HTTP error"):        # as session.request refuses it
        gw.request("POST", "/sms", json={}, headers={"Authorization": "Bearer t\r\nX-Evil: 1"})
    assert wire.requests == []
