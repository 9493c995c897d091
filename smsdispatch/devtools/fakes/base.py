"""What every fake gateway shares: a real HTTP server on 127.0.0.1, observation and failure injection.

A fake is a subclass of `FakeGateway` that sets `prefix`, `send_path` and `name` and implements
`route(req) -> Reply` for its gateway's protocol. Everything else lives here, with one API that tests
use the same way on every fake:

- lifecycle: `start()`/`stop()` (or `with`), `refuse_connections()`/`accept_connections()` on the same
  port, `base_url`;
- observation: `requests_log` (every request, answered or not, with its parsed body and headers),
  `count()`, `accepted` / `accepted_for()` (every SMS accepted, in protocol-neutral terms), `errors`
  (bugs inside the fake), `wait_for(predicate)` (notified after every request and every change);
- control: `fail_next`, `rate_limit_next`, `hang_next`, `trickle_next` (scripted faults, FIFO, per path
  or "*"), `clear_faults`, `reject_recipients`, `set_status`, `expire_token` (token-based fakes), `balance`,
  `reset()`;
- chaos: `chaos(rate, seed=...)` / `calm()`: seeded random faults on send calls (a 5xx answered without
  routing, a connection reset before routing, a connection reset AFTER routing: the ambiguous case, a
  brief refusal of new connections; on request also a 429 and a slow answer), counted in
  `chaos_counts` and marked on each `RequestRecord.fault`.

Order of work for one request: the body is parsed and recorded, then a scripted fault (if any) is
taken; a "fail" or rate-limit fault answers at once without routing; without a scripted fault, chaos
(if on) may draw one of its faults (a chaos 5xx, 429 or reset-before answers at once, without routing); a
malformed body is answered 400; otherwise `route()` answers (after the delay of a "hang" fault or of a
chaos "slow" one; a "trickle" fault writes that answer a byte at a time). A request outside `prefix` is
answered 404 without faults or routing.
Bodies must come with Content-Length (no chunked uploads).

The server speaks HTTP/1.1 keep-alive (every answer has Content-Length) with TCP_NODELAY, skips the
reverse DNS lookup in server_bind, logs nothing to stderr, and tracks its connections so that
`refuse_connections()` also closes idle keep-alive ones and `stop()` closes all of them and cuts
deliberate hangs and trickles short.
"""

from __future__ import annotations

import argparse
import base64
import email.policy
import io
import json
import math
import random
import socket
import socketserver
import struct
import sys
import threading
import time
import traceback
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Self
from urllib.parse import parse_qs, urlsplit


@dataclass
class RequestRecord:
    """One request received (answered or not)."""

    method: str
    path: str  # without the fake's `prefix` and without the query string
    received_at: float  # time.monotonic()
    status: int | None = None  # None while the request is still being handled (e.g. hanging)
    query: str = ""
    fields: dict[str, Any] = field(default_factory=dict)  # parsed body; filled even when a fault answers
    headers: dict[str, str] = field(default_factory=dict)  # names lower-cased
    fault: str | None = None  # the chaos fault applied to it (CHAOS_KINDS), if any; scripted faults are not marked
    answered_at: float | None = None  # time.monotonic() once the answer was written; None: no answer went out


@dataclass
class Accepted:
    """One SMS a fake accepted, in protocol-neutral terms. Protocols may subclass it (see eskiz.SentSms)."""

    gateway_message_id: str  # the gateway's id for this SMS (per message; else the per-call id)
    to: str  # digits only, no "+"
    text: str
    sender: str | None
    client_ref: str | None  # OUR per-message reference where the protocol carries one (Eskiz user_sms_id)
    call_ref: str | None  # the reference of the call that carried it (Eskiz dispatch_id, SMS.CX idempotencyId, ...)
    status: str  # the gateway's own status word; FakeGateway.set_status changes it
    received_at: float  # time.monotonic()

    def refs(self) -> set[str]:
        """The references `set_status` finds this SMS by; subclasses may add their own ids."""
        return {r for r in (self.gateway_message_id, self.client_ref, self.call_ref) if r is not None}


class Reply(Exception):
    """An HTTP answer: returned or raised by `route()`. A str body is sent as text/plain, anything else as
    JSON; a Content-Type in `headers` overrides that."""

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None):
        super().__init__(status)
        self.status, self.body, self.headers = status, body, dict(headers or {})


@dataclass
class Request:
    """What `route()` gets. `path` is without the prefix; `query` keeps the last value of each name."""

    method: str
    path: str
    query: dict[str, str]
    fields: dict[str, Any]
    headers: dict[str, str]  # names lower-cased
    raw: bytes

    @property
    def bearer(self) -> str | None:
        auth = self.headers.get("authorization", "")
        return auth[7:].strip() if auth[:7].lower() == "bearer " else None

    @property
    def basic(self) -> tuple[str, str] | None:
        auth = self.headers.get("authorization", "")
        if auth[:6].lower() != "basic ":
            return None
        try:
            user, sep, password = base64.b64decode(auth[6:].strip(), validate=True).decode("utf-8").partition(":")
        except ValueError:  # bad base64 (binascii.Error), non-ASCII or non-UTF-8
            return None
        return (user, password) if sep else None


class BodyError(ValueError):
    """A body that cannot be parsed; answered 400 with the fake's error_body (after any scripted fault)."""


def parse_body(content_type: str, body: bytes) -> dict[str, Any]:
    """Form-urlencoded, multipart/form-data or JSON, as a dict of fields.

    An empty body is {}. A JSON object is returned as is; any other JSON value (an array, a string, a
    number) comes back as {"_json": value}, for the protocol to accept or refuse. Without a Content-Type,
    a body starting with "{" or "[" is read as JSON. Form fields keep the last value of a repeated name;
    multipart parts are decoded as UTF-8 text. Malformed JSON raises BodyError.
    """
    ctype = content_type.split(";")[0].strip().lower()
    if not body.strip():
        return {}
    if ctype == "application/json" or ctype.endswith("+json") or (not ctype and body.lstrip()[:1] in (b"{", b"[")):
        try:
            data = json.loads(body)
        except ValueError:
            raise BodyError("Malformed JSON body") from None
        return data if isinstance(data, dict) else {"_json": data}
    if ctype == "multipart/form-data":
        head = f"Content-Type: {content_type}\r\n\r\n".encode()
        msg = BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
        out: dict[str, Any] = {}
        for part in msg.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if name:
                payload = part.get_payload(decode=True)     # bytes for a part that is not multipart itself
                out[str(name)] = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
        return out
    return {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}


#: The kinds of fault `FakeGateway.chaos()` injects:
#: - "http_5xx": answered with one of `statuses` (500/502/503) without routing: nothing accepted;
#: - "reset_before": the connection is reset (RST) before routing: nothing accepted, no answer;
#: - "reset_after": routed (the SMS is accepted, if the protocol takes it), then the connection is reset
#:   instead of answering: the client cannot know it was accepted (the dangerous, ambiguous case);
#: - "refuse": this request is routed and answered normally (with `Connection: close`), but the listening
#:   socket is closed for a moment (`refuse_seconds`) and idle keep-alive connections are dropped, so new
#:   connections are refused (ECONNREFUSED) until it re-binds the same port;
#: - "http_429": answered with the protocol's rate-limit reply (`rate_limit_reply`: 429, Retry-After 1 s)
#:   without routing: nothing accepted;
#: - "slow": routed and answered normally, but only `slow_seconds` (default 2 s) after routing; a client
#:   whose read timeout is shorter gives up on an SMS that was accepted (the ambiguous case again).
CHAOS_KINDS = ("http_5xx", "reset_before", "reset_after", "refuse", "http_429", "slow")
#: What `chaos()` draws from when no `kinds` are given: the first four, equally weighted (the two later
#: kinds are drawn only when asked for, so existing callers keep their fault sequences).
DEFAULT_CHAOS_KINDS = ("http_5xx", "reset_before", "reset_after", "refuse")
#: The Retry-After of a chaos "http_429" answer (seconds).
CHAOS_RETRY_AFTER = 1.0


@dataclass
class _Chaos:
    rate: float
    rng: random.Random
    kinds: tuple[str, ...]
    weights: tuple[float, ...]
    statuses: tuple[int, ...]
    refuse_seconds: tuple[float, float]
    paths: frozenset[str]
    slow_seconds: float = 2.0


@dataclass(frozen=True)
class _Drawn:
    kind: str
    status: int = 0
    seconds: float = 0.0


_RESET = Reply(0, None)  # sentinel answer of _answer(): reset the connection instead of replying


@dataclass
class _Fault:
    kind: str  # "fail" | "rate" | "hang" | "trickle"
    paths: frozenset[str]  # exact paths (without prefix), or {"*"} for any path
    remaining: int
    reply: Reply | None = None  # "fail"
    retry_after: float = 0.0  # "rate": the reply is built when it answers (rate_limit_reply)
    seconds: float = 0.0  # "hang": the delay; "trickle": the pause between two bytes
    accept: bool = True  # "hang", "trickle"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True  # SO_REUSEADDR: accept_connections() re-binds the same port
    # socketserver's default backlog of 5 drops SYNs when many clients connect at once; the kernel's
    # 1 s SYN retry then looks like a connect timeout to a client with a 1 s limit (a flaky test).
    request_queue_size = 128

    def __init__(self, addr: tuple[str, int], fake: FakeGateway):
        self.fake = fake
        super().__init__(addr, _Handler)

    def server_bind(self) -> None:  # skip HTTPServer's getfqdn(): a reverse DNS lookup we do not need
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.socket.getsockname()[:2]   # what server_address holds now

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (a killed worker's connections are reset) is not an error worth a
        traceback on stderr; anything else still gets socketserver's report."""
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive for pooled clients; every answer has Content-Length
    disable_nagle_algorithm = True  # TCP_NODELAY: headers and body go out as two writes
    server: _Server
    byte_interval = 0.0  # > 0: this request's answer trickles (FakeGateway.trickle_next)

    def setup(self) -> None:
        super().setup()
        self.server.fake._track(self.connection, add=True)

    def finish(self) -> None:
        self.server.fake._track(self.connection, add=False)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence stderr logging
        pass

    def do_GET(self) -> None:
        self.server.fake._serve(self)

    do_POST = do_PATCH = do_PUT = do_DELETE = do_OPTIONS = do_GET

    def read_body(self) -> bytes:  # clients here always send Content-Length (no chunked uploads)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def reply(self, reply: Reply, *, byte_interval: float = 0.0, wake: threading.Event | None = None) -> None:
        """Write the answer; with a byte_interval, one byte at a time (status line, headers and body),
        pausing that long between bytes (until `wake` is set: then the rest goes out at once)."""
        is_text = isinstance(reply.body, str)
        data = (reply.body if is_text else json.dumps(reply.body, ensure_ascii=False)).encode()
        headers = dict(reply.headers)
        if not any(name.lower() == "content-type" for name in headers):
            headers["Content-Type"] = "text/plain; charset=utf-8" if is_text else "application/json"
        out = self.wfile
        buffered = io.BytesIO() if byte_interval > 0 else None
        if buffered is not None:
            self.wfile = buffered  # the whole answer, written below
        try:
            self.send_response(reply.status)
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        finally:
            self.wfile = out
        if buffered is not None:
            raw, pause = buffered.getvalue(), wake or threading.Event()
            for i in range(len(raw)):
                if i:
                    pause.wait(byte_interval)  # a deliberate pause between bytes; returns at once when set
                out.write(raw[i:i + 1])
            out.flush()


class FakeGateway(ABC):
    """The base of every fake gateway. All observation and control methods are thread-safe."""

    prefix: str = ""  # path prefix stripped before routing; requests outside it get 404
    send_path: str = "/"  # the send endpoint
    send_paths: tuple[str, ...] = ()  # every send endpoint (default: send_path): what faults and chaos hit by default
    name: str = "fake"
    has_tokens: bool = False  # True where auth issues tokens that expire_token() can expire

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, balance: float = 100_000, price: float = 50):
        self.host, self.port = host, port
        self.balance, self.price = balance, price
        self.errors: list[str] = []  # tracebacks of bugs inside the fake (answered as 500)
        self.rejected: set[str] = set()  # recipients (digits) the protocol refuses
        self.lock = threading.RLock()  # re-entrant: wait_for predicates call count() etc. under it
        self._cond = threading.Condition(self.lock)
        self._control = threading.Lock()  # serialises start/stop/refuse/accept
        self._accepted: list[Accepted] = []
        self._log: list[RequestRecord] = []
        self._faults: list[_Fault] = []
        self._conns: set[socket.socket] = set()
        self._busy: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()  # set by stop(): cuts deliberate hangs short
        self._chaos: _Chaos | None = None
        self._chaos_counts: Counter[str] = Counter()
        self._refusing = False  # a chaos refusal window is open

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> Self:
        with self._control:
            self._wake.clear()
            if self._server is None:
                self._bind()
        return self

    def stop(self) -> None:
        with self._control:
            self._wake.set()
            self._unbind()
            self._drop_connections(idle_only=False)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def refuse_connections(self) -> None:
        """Close the listening socket (new connections get ECONNREFUSED) and idle keep-alive ones."""
        with self._control:
            self._unbind()
            self._drop_connections(idle_only=True)

    def accept_connections(self) -> None:
        """Re-bind the same port (SO_REUSEADDR) and serve again."""
        self.start()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}{self.prefix}"

    def _bind(self) -> None:
        self._server = _Server((self.host, self.port), self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"fake-{self.name}-{self.port}", daemon=True)
        self._thread.start()

    def _unbind(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None
            self._thread.join()
            self._server = self._thread = None

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self.lock:
            (self._conns.add if add else self._conns.discard)(conn)

    def _drop_connections(self, *, idle_only: bool) -> None:
        with self.lock:
            victims = [c for c in self._conns if not (idle_only and c in self._busy)]
        for conn in victims:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # ----------------------------------------------------------------- observation
    @property
    def requests_log(self) -> list[RequestRecord]:
        with self.lock:
            return list(self._log)

    def _local(self, path: str) -> str:
        """A path as the log and the faults hold it: without the prefix (which callers may include)."""
        return path.removeprefix(self.prefix) if self.prefix and path.startswith(self.prefix + "/") else path

    def count(self, path: str, method: str | None = None) -> int:
        path = self._local(path)
        with self.lock:
            return sum(1 for r in self._log if r.path == path and (method is None or r.method == method.upper()))

    @property
    def accepted(self) -> list[Accepted]:
        with self.lock:
            return list(self._accepted)

    def accepted_for(self, *, client_ref: str | None = None, to: str | None = None,
                     call_ref: str | None = None) -> list[Accepted]:
        """The accepted SMS matching every filter given (None = not filtered)."""
        phone = to.lstrip("+") if to is not None else None
        with self.lock:
            return [a for a in self._accepted
                    if (client_ref is None or a.client_ref == client_ref) and (phone is None or a.to == phone)
                    and (call_ref is None or a.call_ref == call_ref)]

    def wait_for(self, predicate: Callable[[Self], bool], timeout: float = 10.0) -> bool:
        """Wait until predicate(self) is true (checked after every request and every change)."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout)

    def notify(self) -> None:
        """Wake wait_for(); subclasses call it after changing state outside a request."""
        with self._cond:
            self._cond.notify_all()

    # ----------------------------------------------------------------- failure injection
    def fail_next(self, n: int = 1, *, status: int = 500, body: Any = None, headers: dict[str, str] | None = None,
                  path: str | None = None) -> None:
        """The next n requests to `path` (default: every send endpoint, send_paths; "*" = any) get this answer and are not routed.
        A body of None is the protocol's error envelope, error_body(status, "server error")."""
        body = self.error_body(status, "server error") if body is None else body
        self._add_fault(_Fault("fail", self._fault_path(path), n, reply=Reply(status, body, headers)))

    def rate_limit_next(self, n: int = 1, *, retry_after: float | str = 1.0, path: str | None = None) -> None:
        """The next n requests to `path` get rate_limit_reply(retry_after), built when each one answers."""
        self._add_fault(_Fault("rate", self._fault_path(path), n, retry_after=float(retry_after)))

    def hang_next(self, n: int = 1, *, seconds: float = 30.0, accept: bool = True, path: str | None = None) -> None:
        """accept=True: routed (SMS recorded) and then answered after `seconds`; accept=False: not routed,
        answered 503 after `seconds`. stop() cuts the wait short."""
        self._add_fault(_Fault("hang", self._fault_path(path), n, seconds=seconds, accept=accept))

    def clear_faults(self) -> None:
        """Drop every scripted fault still waiting (an outage scripted with a large fail_next ends now);
        logs, accepted SMS and chaos are kept."""
        with self.lock:
            self._faults.clear()
            self.notify()

    def trickle_next(self, n: int = 1, *, byte_interval: float = 0.5, accept: bool = True,
                     path: str | None = None) -> None:
        """The answer (status line, headers and body) is written one byte at a time, `byte_interval`
        seconds apart: a client's read timeout above the interval never fires, however long the whole
        answer takes. accept=True: routed (SMS recorded) and the protocol's answer trickles; accept=False:
        not routed, a 503 trickles. stop() cuts it short (the rest goes out at once, if it still can)."""
        if not byte_interval > 0:
            raise ValueError("byte_interval must be above 0")
        self._add_fault(_Fault("trickle", self._fault_path(path), n, seconds=byte_interval, accept=accept))

    def _fault_path(self, path: str | None) -> frozenset[str]:
        return frozenset(self.send_paths or (self.send_path,)) if path is None else frozenset({self._local(path)})

    def _add_fault(self, fault: _Fault) -> None:
        with self.lock:
            self._faults.append(fault)

    def _take_fault(self, path: str) -> _Fault | None:
        with self.lock:
            for fault in self._faults:
                if path in fault.paths or "*" in fault.paths:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    # ----------------------------------------------------------------- chaos: seeded random faults
    def chaos(self, rate: float = 0.2, *, seed: int | str | None = None,
              kinds: Iterable[str] | Mapping[str, float] = DEFAULT_CHAOS_KINDS,
              statuses: Iterable[int] = (500, 502, 503), refuse_seconds: tuple[float, float] = (0.2, 0.5),
              paths: Iterable[str] | None = None, slow_seconds: float = 2.0) -> None:
        """From now on, each request to `paths` (default: every send endpoint, send_paths) gets, with probability `rate`, one
        fault of `kinds` (CHAOS_KINDS; a mapping gives each kind a weight, a sequence weighs them equally;
        default DEFAULT_CHAOS_KINDS). `statuses`: the answers of "http_5xx"; `refuse_seconds`: the range
        a "refuse" window lasts; `slow_seconds`: how late a "slow" fault answers.
        The draws come from random.Random(seed): the n-th request to those paths gets the same fault in
        every run with that seed (which request is n-th depends on the clients). Scripted faults
        (fail_next, ...) go first: a request that takes one draws nothing. A "refuse" drawn while a
        refusal window is already open is not applied (and not counted). Calling chaos() again replaces
        the settings and restarts the sequence; `calm()` ends it."""
        weighted = dict(kinds) if isinstance(kinds, Mapping) else {k: 1.0 for k in kinds}
        unknown = set(weighted) - set(CHAOS_KINDS)
        if unknown:
            raise ValueError(f"unknown chaos kinds {sorted(unknown)}; known: {', '.join(CHAOS_KINDS)}")
        if not weighted or any(w < 0 for w in weighted.values()) or not sum(weighted.values()) > 0:
            raise ValueError("chaos needs at least one kind with a positive weight")
        if not 0.0 <= rate <= 1.0:
            raise ValueError("chaos rate must be between 0 and 1")
        statuses = tuple(int(s) for s in statuses)
        if not statuses or any(not 500 <= s <= 599 for s in statuses):
            raise ValueError("chaos statuses must be 5xx")
        low, high = (float(x) for x in refuse_seconds)
        if not 0 <= low <= high:
            raise ValueError("refuse_seconds must be (low, high) with 0 <= low <= high")
        slow_seconds = float(slow_seconds)
        if not 0 <= slow_seconds < math.inf:
            raise ValueError("slow_seconds must be a finite number >= 0")
        wanted = frozenset(self._local(p) for p in paths) if paths is not None else self._fault_path(None)
        with self.lock:
            self._chaos = _Chaos(float(rate), random.Random(seed), tuple(weighted), tuple(weighted.values()),
                                 statuses, (low, high), wanted, slow_seconds)

    def calm(self) -> None:
        """No more chaos faults (a refusal window already open still ends by itself); counts are kept."""
        with self.lock:
            self._chaos = None

    @property
    def chaos_counts(self) -> dict[str, int]:
        """Faults applied so far by chaos, per kind (every kind listed, 0 if none); reset() clears them."""
        with self.lock:
            return {kind: self._chaos_counts.get(kind, 0) for kind in CHAOS_KINDS}

    @property
    def refusing(self) -> bool:
        """True while a chaos refusal window keeps the listening socket closed."""
        with self.lock:
            return self._refusing

    def _draw_chaos(self, record: RequestRecord) -> _Drawn | None:
        with self.lock:
            c = self._chaos
            if c is None or record.path not in c.paths or c.rng.random() >= c.rate:
                return None
            kind = c.rng.choices(c.kinds, c.weights)[0]
            # Only "http_5xx" and "refuse" draw more numbers: a seed gives the same sequence it always did.
            drawn = _Drawn(kind, status=c.rng.choice(c.statuses)) if kind == "http_5xx" else \
                _Drawn(kind, seconds=c.rng.uniform(*c.refuse_seconds)) if kind == "refuse" else \
                _Drawn(kind, seconds=c.slow_seconds) if kind == "slow" else _Drawn(kind)
            if kind == "refuse" and self._refusing:
                return None
            if kind == "refuse":
                self._refusing = True
            record.fault = kind
            self._chaos_counts[kind] += 1
            return drawn

    def _start_refusal(self, seconds: float) -> None:
        """Close the listener and idle keep-alive connections now (so a client that got the answer to the
        triggering request cannot connect again), and re-bind the same port `seconds` later."""
        with self._control:
            stopped = self._wake.is_set() or self._server is None
            if not stopped:
                self._unbind()
                self._drop_connections(idle_only=True)
        if stopped:
            with self.lock:
                self._refusing = False
            return
        threading.Thread(target=self._end_refusal, args=(seconds,), daemon=True,
                         name=f"fake-{self.name}-refusal").start()

    def _end_refusal(self, seconds: float) -> None:
        try:
            if self._wake.wait(seconds):  # stop() during the window: stay stopped
                return
            for _ in range(100):
                with self._control:
                    if self._wake.is_set() or self._server is not None:
                        return
                    try:
                        self._bind()
                        return
                    except OSError:  # the port is briefly unavailable; try again
                        pass
                time.sleep(0.02)
            with self.lock:
                self.errors.append(f"chaos: could not re-bind port {self.port} after a refusal window")
        finally:
            with self.lock:
                self._refusing = False
                self.notify()

    @staticmethod
    def _reset(h: _Handler) -> None:
        """Abort the connection with a TCP RST (SO_LINGER 0), without an answer."""
        h.close_connection = True
        try:
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            h.connection.close()  # the descriptor closes (RST) once finish() closes rfile/wfile
        except OSError:
            pass

    def reject_recipients(self, *numbers: str) -> None:
        """Numbers (digits, "+" allowed) that the protocol refuses; see `rejected`."""
        with self.lock:
            self.rejected.update(str(n).strip().lstrip("+") for n in numbers)

    def expire_token(self) -> None:
        raise NotImplementedError(f"{self.name} has no tokens")

    def set_status(self, ref: str, status: str) -> list[Accepted]:
        """Set the status of every accepted SMS whose refs() hold `ref`; returns them. KeyError if none."""
        key = str(ref)
        with self.lock:
            hits = [a for a in self._accepted if key in a.refs()]
            if not hits:
                raise KeyError(f"{self.name}: no accepted SMS with id or reference {key!r}")
            for entry in hits:
                entry.status = status
            self.notify()
        return hits

    def reset(self) -> None:
        """Forget logs, accepted SMS, faults (chaos too: calm, counts cleared), rejections and errors; keep
        credentials, tokens, balance, port."""
        with self.lock:
            self._accepted.clear()
            self._log.clear()
            self._faults.clear()
            self._chaos = None
            self._chaos_counts.clear()
            self.rejected.clear()
            self.errors.clear()
            self.notify()

    # ----------------------------------------------------------------- for subclasses
    @abstractmethod
    def route(self, req: Request) -> Reply:
        """Answer one request of the protocol: return or raise a Reply."""

    def error_body(self, status: int, message: str) -> Any:
        """The protocol's error envelope."""
        return {"error": message}

    def rate_limit_reply(self, retry_after: float) -> Reply:
        """429 with Retry-After in whole seconds (rounded up); protocols with other headers override it."""
        return Reply(429, self.error_body(429, "Too many requests"), {"Retry-After": str(math.ceil(retry_after))})

    def record(self, entry: Accepted) -> Accepted:
        with self.lock:
            self._accepted.append(entry)
            self.notify()
        return entry

    def charge(self, amount: float) -> bool:
        """Deduct `amount` from the balance if it is covered; False (and nothing deducted) otherwise."""
        with self.lock:
            if self.balance < amount:
                return False
            self.balance -= amount
            return True

    # ----------------------------------------------------------------- request handling
    def _serve(self, h: _Handler) -> None:
        url = urlsplit(h.path)
        routable = not self.prefix or url.path.startswith(self.prefix + "/")
        path = url.path.removeprefix(self.prefix) if routable else url.path
        headers: dict[str, str] = {}
        for name, value in h.headers.items():
            name = name.lower()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        record = RequestRecord(h.command, path, time.monotonic(), query=url.query, headers=headers)
        with self.lock:
            self._busy.add(h.connection)
            self._log.append(record)
            self.notify()
        h.byte_interval = 0.0  # set by _answer for a "trickle" fault
        try:
            reply = self._answer(h, record, routable)
            if reply is _RESET:  # chaos: no answer at all (record.status stays None)
                self._reset(h)
                return
            with self.lock:
                record.status = reply.status
            try:
                h.reply(reply, byte_interval=h.byte_interval, wake=self._wake)
                with self.lock:
                    record.answered_at = time.monotonic()
            except OSError:  # the client gave up (read timeout) or stop() dropped the connection
                h.close_connection = True
        finally:
            with self.lock:
                self._busy.discard(h.connection)
                self.notify()

    def _answer(self, h: _Handler, record: RequestRecord, routable: bool) -> Reply:
        try:
            raw, fields, malformed = self._read(h, record)
            if not routable:
                return Reply(404, self.error_body(404, "Not found"))
            fault = self._take_fault(record.path)
            drawn = self._draw_chaos(record) if fault is None else None
            early = self._unrouted(fault, drawn)
            if early is not None:
                return early
            if drawn is not None and drawn.kind == "refuse":
                self._start_refusal(drawn.seconds)
            reply: Reply | None = None
            if malformed is not None:
                reply = Reply(400, self.error_body(400, str(malformed)))
            elif fault is None or fault.accept:
                query = {k: v[-1] for k, v in parse_qs(record.query, keep_blank_values=True).items()}
                try:
                    reply = self.route(Request(h.command, record.path, query, dict(fields), record.headers, raw))
                except Reply as r:
                    reply = r
            return self._after_routing(h, reply, fault, drawn)
        except Exception:  # a bug in the fake: make it visible instead of hanging the client
            with self.lock:
                self.errors.append(traceback.format_exc())
            try:
                return Reply(500, self.error_body(500, "server error"))
            except Exception:  # error_body itself is broken
                return Reply(500, {"error": "server error"})

    def _read(self, h: _Handler, record: RequestRecord) -> tuple[bytes, dict[str, Any], BodyError | None]:
        """The body, raw and parsed (with the parse error, if any), recorded even when a fault answers
        the request: tests count calls per message."""
        raw = h.read_body()
        malformed: BodyError | None = None
        try:
            fields = parse_body(record.headers.get("content-type", ""), raw)
        except BodyError as e:
            fields, malformed = {}, e
        with self.lock:
            record.fields = fields
        return raw, fields, malformed

    def _unrouted(self, fault: _Fault | None, drawn: _Drawn | None) -> Reply | None:
        """The answer of a fault that answers without routing (a scripted failure or rate limit; a
        chaos 5xx, 429 or reset before routing), else None."""
        if fault and fault.kind == "fail":
            assert fault.reply is not None
            return fault.reply
        if fault and fault.kind == "rate":
            return self.rate_limit_reply(fault.retry_after)
        if drawn is not None and drawn.kind == "http_5xx":
            return Reply(drawn.status, self.error_body(drawn.status, "server error"))
        if drawn is not None and drawn.kind == "reset_before":
            return _RESET
        if drawn is not None and drawn.kind == "http_429":
            return self.rate_limit_reply(CHAOS_RETRY_AFTER)
        return None

    def _after_routing(self, h: _Handler, reply: Reply | None, fault: _Fault | None, drawn: _Drawn | None) -> Reply:
        """What a fault does once the request was routed: delay the answer (hang, slow), trickle it,
        reset the connection instead (reset_after) or close it after (refuse). No reply from routing
        (a hang or trickle that does not accept) is answered 503."""
        if fault and fault.kind == "hang":  # a deliberate hang, after an accepted request has been recorded
            self._wake.wait(fault.seconds)
        if drawn is not None and drawn.kind == "slow":  # a slow answer, after routing; stop() cuts it short
            self._wake.wait(drawn.seconds)
        if fault and fault.kind == "trickle":
            h.byte_interval = fault.seconds
        if drawn is not None and drawn.kind == "reset_after":
            return _RESET
        reply = reply or Reply(503, self.error_body(503, "Service unavailable"))
        if drawn is not None and drawn.kind == "refuse":  # the client must reconnect: and is refused
            reply = Reply(reply.status, reply.body, {**reply.headers, "Connection": "close"})
        return reply


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)


def run_cli(cls: type[FakeGateway], description: str, *, argv: list[str] | None = None, **defaults: Any) -> None:
    """The shared `python -m smsdispatch.devtools.fakes.<name>` entry: --host, --port, --balance and one option per
    keyword default (typed like it; options named like password/secret/token are not printed)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default=defaults.pop("host", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=defaults.pop("port", 8765))
    parser.add_argument("--balance", type=_number, default=defaults.pop("balance", 100_000))
    for key, default in defaults.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(default, bool):
            parser.add_argument(flag, dest=key, action=argparse.BooleanOptionalAction, default=default)
        else:
            kind = _number if isinstance(default, (int, float)) else str
            parser.add_argument(flag, dest=key, type=kind, default=default)
    args = vars(parser.parse_args(argv))
    fake = cls(**args).start()
    shown = ", ".join(f"{k}={args[k]}" for k in defaults
                      if not any(s in k for s in ("password", "secret", "token", "key", "hash")))
    print(f"fake {fake.name} listening on {fake.base_url}{f' ({shown})' if shown else ''}; Ctrl-C to stop",
          flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()
