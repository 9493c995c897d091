"""A total deadline per gateway call (HTTP_TOTAL_TIMEOUT), enforced by one watchdog thread per process.

requests' `timeout=(connect, read)` bounds each connect and each socket read, not the call: a gateway
that answers a byte at a time (status line, headers or body) holds the call, a worker thread and the
message's claim for as long as it likes. Here a call has one deadline, wherever it is when it passes:

- `WATCHDOG` keeps a heap of the deadlines of the calls in flight and sleeps on a condition variable
  until the earliest one. No thread and no timer per call (a worker makes ~150 calls a second): a
  call that ends in time only marks itself done (a few µs per call, bench/deadline.py). When the
  watchdog wakes it drops the ended calls at the top of the heap in bulk and sleeps towards the next
  call still in flight: about one wake per HTTP_TOTAL_TIMEOUT under load, and a heap of about the
  calls started in the last one or two HTTP_TOTAL_TIMEOUTs. At a deadline it shuts the call's socket down
  (SHUT_RDWR), so the blocked send or recv fails at once; the call is marked `cut`.
- `DeadlineAdapter` (a requests HTTPAdapter) makes its urllib3 pools use `DeadlineHTTPConnection` /
  `DeadlineHTTPSConnection`. When a request starts on a connection (new or from the pool), the
  connection is claimed by the calling thread's current call, so the watchdog knows which socket to
  shut; a new connection's connect timeout is capped at the time left. Just before the request's
  first byte goes out the call is marked `sent`: a call cut before that provably sent nothing.

`HttpGateway.request` opens a call around `session.request` (`WATCHDOG.begin` / `end`) and reads
`expired`, `sent` and `cut` to classify a failure (gateways/base.py).

Limits: a DNS lookup cannot be interrupted, and a host with several addresses gets one connect attempt
per address, each capped at the time left when the connection started; a TLS handshake is limited by
that capped connect timeout per read (the watchdog cannot reach a socket while ssl wraps it). A request
is never sent once its deadline has passed. SOCKS proxies keep urllib3's own connections (no deadline).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from requests.adapters import HTTPAdapter
from urllib3 import poolmanager
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError

log = logging.getLogger("smsdispatch.gateways")


class Call:
    """One gateway call under a deadline (time.monotonic()). `sent`: its request may have gone out;
    `cut`: the watchdog shut its socket down. Both only change under the watchdog's lock."""

    __slots__ = ("seconds", "deadline", "conn", "sent", "cut", "expired", "done", "outer")

    def __init__(self, seconds: float, outer: Call | None) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.conn: _DeadlineMixin | None = None    # the connection it is using, if any
        self.sent = False
        self.cut = False          # a socket of this call was shut down: never trust what it returned
        self.expired = False      # the deadline passed while the call was in flight
        self.done = False
        self.outer = outer        # the call this thread was in before (calls may nest)


class _Local(threading.local):
    call: Call | None = None      # the call this thread is in


class Watchdog:
    """The deadlines of the calls in flight in this process, and the thread that enforces them."""

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)   # the thread does not survive a fork

    def _reset(self) -> None:
        self._lock = threading.Lock()      # held bare on the hot path: `with Condition` costs twice as much
        self._cond = threading.Condition(self._lock)
        self._heap: list[tuple[float, int, Call]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._local = _Local()

    # --- the calling thread's side ----------------------------------------------------------------

    def begin(self, seconds: float) -> Call:
        """Start a call of this thread that must end within `seconds`; pair with `end`."""
        call = Call(seconds, self._local.call)
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="smsdispatch-http-deadline", daemon=True)
                self._thread.start()
            heapq.heappush(self._heap, (call.deadline, next(self._seq), call))
            if self._heap[0][2] is call:      # sooner than what the watchdog sleeps towards
                self._cond.notify()
        self._local.call = call
        return call

    def end(self, call: Call) -> None:
        """The call is over (answered or failed); after this its flags are final."""
        self._local.call = call.outer
        with self._lock:
            call.done = True
            call.conn = None

    def current(self) -> Call | None:
        return self._local.call

    def claim(self, call: Call, conn: _DeadlineMixin, *, sending: bool) -> None:
        """`conn` now works for `call` (the watchdog shuts its socket at the deadline). sending=True: the
        request is about to go out; raises ConnectTimeoutError instead if the deadline has passed."""
        with self._lock:
            if call.expired or time.monotonic() >= call.deadline:     # the watchdog may not have run yet
                call.expired = True
                raise ConnectTimeoutError(conn, f"HTTP_TOTAL_TIMEOUT ({call.seconds:g}s) passed before the "
                                                "request was sent")
            call.conn = conn
            conn._deadline_call = call
            if sending:
                call.sent = True

    # --- the watchdog thread ----------------------------------------------------------------------

    def pending(self) -> int:
        """Heap entries not yet dropped (calls in flight, plus ended ones the watchdog has not seen)."""
        with self._lock:
            return len(self._heap)

    def _run(self) -> None:
        heap = self._heap
        with self._cond:
            while True:
                while heap and heap[0][2].done:
                    heapq.heappop(heap)
                if not heap:
                    self._cond.wait()
                    continue
                wait = heap[0][0] - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                call = heapq.heappop(heap)[2]
                try:
                    self._expire(call)
                except Exception:       # never let one odd connection end the enforcement of all others
                    log.exception("cutting a call at its HTTP_TOTAL_TIMEOUT failed")

    def _expire(self, call: Call) -> None:
        """Under the lock. Shut the socket of the call's connection, unless another call claimed it since
        (a pooled connection passed on: its socket is no longer ours to cut)."""
        call.expired = True
        conn = call.conn
        if conn is None or getattr(conn, "_deadline_call", None) is not call:
            return
        sock: Any = conn.sock
        raw = sock if isinstance(sock, socket.socket) else getattr(sock, "socket", None)
        if raw is None:
            return
        try:
            # socket.socket's own shutdown also on an SSLSocket: ssl's would drop its state under the
            # reader's feet; on the descriptor, the reader just sees the connection end.
            socket.socket.shutdown(raw, socket.SHUT_RDWR)
            call.cut = True
        except OSError:         # already closed, or not connected yet
            pass


#: The one watchdog of this process.
WATCHDOG = Watchdog()


if TYPE_CHECKING:       # what the mixin is mixed into, so that its super() calls are checked
    _Connection = HTTPConnection
else:
    _Connection = object


class _DeadlineMixin(_Connection):
    """For urllib3's HTTPConnection and HTTPSConnection: obey the current call's deadline."""

    _deadline_call: Call | None = None     # the call that last claimed this connection

    def _new_conn(self) -> socket.socket:
        call = WATCHDOG.current()
        if call is not None:
            left = call.deadline - time.monotonic()
            if left <= 0:
                raise ConnectTimeoutError(self, f"HTTP_TOTAL_TIMEOUT ({call.seconds:g}s) passed before connecting")
            if not isinstance(self.timeout, (int, float)) or left < self.timeout:
                self.timeout = left
        sock = super()._new_conn()
        if call is not None:
            self.sock = sock            # so that the watchdog can reach it during a proxy tunnel
            WATCHDOG.claim(call, self, sending=False)
        return sock

    def request(self, method: str, url: str, body: Any = None, headers: Any = None, **kwargs: Any) -> None:
        call = WATCHDOG.current()
        if call is not None:
            if self.sock is None:       # http.client would connect on the first write; connect first, so
                self.connect()          # that `sent` is set only once the request itself starts
            WATCHDOG.claim(call, self, sending=True)
        super().request(method, url, body, headers, **kwargs)


class DeadlineHTTPConnection(_DeadlineMixin, HTTPConnection):
    pass


class DeadlineHTTPSConnection(_DeadlineMixin, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = DeadlineHTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = DeadlineHTTPSConnection


_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


class DeadlineAdapter(HTTPAdapter):
    """An HTTPAdapter whose connections (direct or through an HTTP proxy) obey WATCHDOG's deadlines."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if manager.pool_classes_by_scheme is poolmanager.pool_classes_by_scheme:   # not SOCKS: its own pools
            manager.pool_classes_by_scheme = _POOLS
        return manager
