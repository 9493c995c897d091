"""HTTP_TOTAL_TIMEOUT: every gateway call is cut at its deadline, wherever it is (gateways/deadline.py).

Real HTTP on 127.0.0.1: a small fake (smsdispatch/devtools/fakes/base.py) for answers that trickle or never
come, raw sockets for a request the other side never reads and for a connect nobody answers. The
elapsed times are bounds (never before the deadline, not long after it), not speed tests.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from urllib3.exceptions import ConnectTimeoutError

from smsdispatch.config import load_settings
from smsdispatch.devtools.fakes.base import Accepted, FakeGateway, Reply, Request
from smsdispatch.errors import AmbiguousError, GatewayUnavailable
from smsdispatch.gateways import build_gateway
from smsdispatch.gateways.base import HttpGateway
from smsdispatch.gateways.deadline import Watchdog
from smsdispatch.keys import Keys

#: How long after its deadline a cut call may still take to raise (a loaded 2-core machine).
MARGIN = 0.5


class TinyFake(FakeGateway):
    """POST /api/send -> {"id"} (recorded as accepted); GET /api/big -> a 3,000-byte text body."""

    prefix = "/api"
    send_path = "/send"
    name = "tiny"

    def route(self, req: Request) -> Reply:
        if (req.method, req.path) == ("GET", "/big"):
            return Reply(200, "x" * 3000)
        entry = self.record(Accepted(uuid.uuid4().hex, "27000000001", str(req.fields.get("text", "")), None,
                                     None, None, "queued", time.monotonic()))
        return Reply(200, {"id": entry.gateway_message_id})


class Probe(HttpGateway):
    name = "probe"
    send = status = balance = None


@pytest.fixture
def fake():
    with TinyFake() as f:
        yield f


def probe(base_url: str, *, connect: float = 0.5, read: float = 0.5, total: float = 0.6) -> Probe:
    return Probe(base_url, connect_timeout=connect, read_timeout=read, total_timeout=total)


@contextmanager
def elapsed_between(low: float, high: float) -> Iterator[None]:
    started = time.monotonic()
    yield
    took = time.monotonic() - started
    assert low <= took < high, f"took {took:.3f}s, expected {low}..{high}"


def test_an_answer_trickling_past_the_deadline_is_ambiguous_and_the_pool_still_works(fake):
    gw = probe(fake.base_url)
    assert gw.request("POST", "/send", json={"text": "warm"}).status_code == 200
    fake.trickle_next(byte_interval=0.1)       # each byte well within the 0.5 s read timeout
    with elapsed_between(0.6, 0.6 + MARGIN):
        with pytest.raises(AmbiguousError, match=r"no complete answer within 0.6s \(HTTP_TOTAL_TIMEOUT\)"):
            gw.request("POST", "/send", json={"text": "slow"})
    assert [a.text for a in fake.accepted] == ["warm", "slow"]     # it was sent: ambiguous is right
    for i in range(3):                                              # the next calls are unharmed
        assert gw.request("POST", "/send", json={"text": f"next {i}"}).status_code == 200
    assert len(fake.accepted) == 5


def test_a_silent_gateway_is_cut_at_the_deadline_even_with_a_longer_read_timeout(fake):
    gw = probe(fake.base_url, read=10, total=0.6)
    fake.hang_next(seconds=10)
    with elapsed_between(0.6, 0.6 + MARGIN):
        with pytest.raises(AmbiguousError, match="HTTP_TOTAL_TIMEOUT"):
            gw.request("POST", "/send", json={"text": "hang"})


def test_a_body_trickling_past_the_deadline_is_cut(fake):
    gw = probe(fake.base_url)
    fake.trickle_next(byte_interval=0.001, path="/big")    # headers in ~0.2 s, the body would take 3 s
    with elapsed_between(0.6, 0.6 + MARGIN):
        with pytest.raises(AmbiguousError, match="HTTP_TOTAL_TIMEOUT"):
            gw.request("GET", "/big")
    assert gw.request("GET", "/big").text == "x" * 3000


def test_a_request_the_gateway_does_not_read_is_cut_while_sending():
    with socket.socket() as server:             # accepts connections (the kernel does) and never reads
        server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        # connect=5: urllib3 sends under the connect timeout; only the deadline may end this call
        gw = probe(f"http://127.0.0.1:{server.getsockname()[1]}", connect=5)
        with elapsed_between(0.6, 0.6 + MARGIN):
            with pytest.raises(AmbiguousError, match="HTTP_TOTAL_TIMEOUT"):
                gw.request("POST", "/send", data=b"x" * (16 << 20))     # far beyond both socket buffers


@contextmanager
def unanswered_port() -> Iterator[int]:
    """A port whose listen queue is full: a new connection's SYNs are dropped, its connect hangs."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        fillers: list[socket.socket] = []
        try:
            while True:                         # connect until one cannot: the queue is full
                if len(fillers) == 16:
                    if os.environ.get("CI") == "true":      # Linux (CI's kind of machine) fills it at once
                        pytest.fail("cannot fill a listen queue on this system")
                    pytest.skip("cannot fill a listen queue on this system")
                filler = socket.socket()
                fillers.append(filler)
                filler.settimeout(0.2)
                try:
                    filler.connect(("127.0.0.1", port))
                except TimeoutError:
                    break
            yield port
        finally:
            for filler in fillers:
                filler.close()


def test_a_connection_not_made_before_the_deadline_is_provably_not_sent():
    with unanswered_port() as port:
        gw = probe(f"http://127.0.0.1:{port}", connect=5, total=0.6)     # the deadline caps the connect
        with elapsed_between(0.6 - 0.05, 0.6 + MARGIN):
            with pytest.raises(GatewayUnavailable):
                gw.request("POST", "/send", json={"text": "never"})


def test_build_gateway_gives_each_adapter_the_deadline_of_the_settings(redis_client):
    creds = {"devsms_token": "t", "eskiz_email": "e@example.com", "eskiz_password": "p", "claim_lease": 60,
             "http_connect_timeout": 1, "http_read_timeout": 2}
    assert build_gateway("devsms", load_settings(**creds), redis_client, Keys("t")).total_timeout == 3.0
    eskiz = build_gateway("eskiz", load_settings(**creds, http_total_timeout=1.5), redis_client, Keys("t"))
    assert eskiz.total_timeout == 1.5
    assert eskiz.token.lock_wait == 2 * 1.5 + 1          # a token fetch (login + refresh) is cut there too


# --- the watchdog itself, with socket pairs standing in for connections -------------------------------


class Conn:
    """What the watchdog needs of a urllib3 connection: a socket."""

    def __init__(self) -> None:
        self.sock, self.peer = socket.socketpair()

    def cut(self) -> bool:
        """True if our socket was shut down (a read sees the end at once); False if it is still open."""
        self.sock.setblocking(False)
        try:
            return self.sock.recv(1) == b""
        except BlockingIOError:
            return False

    def close(self) -> None:
        self.sock.close()
        self.peer.close()


@pytest.fixture
def conns():
    made: list[Conn] = []

    def make() -> Conn:
        made.append(Conn())
        return made[-1]

    yield make
    for c in made:
        c.close()


def in_thread(watchdog: Watchdog, seconds: float, conn: Conn, *, sending: bool = True) -> threading.Thread:
    """A call in another thread that claims `conn` and blocks reading it until the watchdog cuts it."""
    calls = []

    def run() -> None:
        call = watchdog.begin(seconds)
        watchdog.claim(call, conn, sending=sending)
        calls.append(call)
        conn.sock.recv(1)                        # returns b"" when the socket is shut down
        watchdog.end(call)

    t = threading.Thread(target=run, daemon=True)
    t.calls = calls
    t.start()
    return t


def test_the_watchdog_cuts_a_blocked_read_at_the_deadline_and_marks_the_call(conns):
    watchdog = Watchdog()
    conn = conns()
    with elapsed_between(0.3, 0.3 + MARGIN):
        t = in_thread(watchdog, 0.3, conn)
        t.join(5)
    assert not t.is_alive()
    (call,) = t.calls
    assert call.expired and call.cut and call.sent and call.done
    assert watchdog.pending() == 0


def test_calls_that_end_in_time_are_never_cut_and_leave_nothing_behind(conns):
    watchdog = Watchdog()
    early = [conns() for _ in range(300)]
    for conn in early:                           # 300 calls that end at once, deadlines 30 s away
        call = watchdog.begin(30)
        watchdog.claim(call, conn, sending=True)
        watchdog.end(call)
    late = in_thread(watchdog, 0.2, conns())     # one that runs into its deadline
    late.join(5)
    assert late.calls[0].cut
    assert watchdog.pending() == 0               # the ended ones were dropped on the way
    assert not any(conn.cut() for conn in early)


def test_a_connection_passed_on_to_another_call_is_not_cut_by_the_first_calls_deadline(conns):
    watchdog = Watchdog()
    shared = conns()
    first = watchdog.begin(0.1)                  # e.g. its body read, the connection back in the pool ...
    watchdog.claim(first, shared, sending=True)
    second = watchdog.begin(30)                  # ... and taken by another call before `first` ends
    watchdog.claim(second, shared, sending=True)
    witness = in_thread(watchdog, 0.2, conns())  # cut after `first`'s deadline has been handled
    witness.join(5)
    assert witness.calls[0].cut
    assert first.expired and not first.cut and not shared.cut()
    watchdog.end(first)
    watchdog.end(second)


def test_a_call_past_its_deadline_is_not_sent_and_says_so(conns):
    watchdog = Watchdog()
    call = watchdog.begin(0.05)
    witness = in_thread(watchdog, 0.1, conns())  # cut after `call`'s deadline has been handled
    witness.join(5)
    assert call.expired and not call.sent
    with pytest.raises(ConnectTimeoutError, match=r"HTTP_TOTAL_TIMEOUT \(0.05s\) passed before the request was sent"):
        watchdog.claim(call, conns(), sending=True)
    assert not call.sent
    watchdog.end(call)
