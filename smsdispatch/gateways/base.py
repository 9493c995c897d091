"""The contract every gateway adapter fulfils, and the HTTP plumbing they share.

An adapter answers: send this (`send`), send these in one native call (`send_batch`, where
`max_batch > 1`), did a message of ours reach you (`lookup`, where `can_lookup`), what became of
message X (`status`, where `supports_status`), how much credit is left (`balance`, where
`supports_balance`). It raises only the exceptions of errors.py: `HttpGateway.request` translates
requests' exceptions and the generic HTTP statuses; each adapter translates its own error bodies.

What each flag promises the dispatcher (dispatch.py and batch.py rely on these):

    can_lookup        a possibly-sent message can be found again by our message id → reconcile
    can_dedupe        a repeated call with the same reference is not sent twice by the gateway
                      (SMS.CX idempotencyId) → an ambiguous call is simply repeated
    neither           an ambiguous call ends `unknown`; it is never repeated
    max_batch         most messages per native batch call (1: no batch endpoint)
    batch_same_text   a batch call carries one text for all its numbers (SMS.CX, SMSPM)
"""

from __future__ import annotations

import logging
import os
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.cookies import RequestsCookieJar
from requests.structures import CaseInsensitiveDict
from urllib3.exceptions import NameResolutionError, NewConnectionError

from ..errors import (
    AmbiguousError,
    BadReport,
    GatewayError,
    GatewayRejected,
    GatewayUnavailable,
    PermanentError,
    RateLimited,
    ValidationError,
)
from ..records import MessageStatus
from ..retry import parse_retry_after
from .deadline import WATCHDOG, Call, DeadlineAdapter

log = logging.getLogger("smsdispatch.gateways")

#: Server errors after which the gateway may have acted on the request anyway. 503 (and 408, 429,
#: 501) say it was not processed; 504 is ambiguous outright.
MAYBE_PROCESSED = frozenset({500, 502})


@dataclass(frozen=True)
class OutboundSms:
    message_id: str           # ours; passed to gateways that echo a client reference (Eskiz user_sms_id)
    to: str                   # E.164, with the leading +
    text: str
    sender: str | None = None
    callback_url: str | None = None
    options: Mapping[str, Any] | None = None   # gateway-specific, checked by Gateway.validate_options


@dataclass(frozen=True)
class Acceptance:
    gateway_message_id: str | None
    raw_status: str | None = None


@dataclass(frozen=True)
class ItemResult:
    """The fate of one message inside a batch call that, as a whole, went through."""
    message_id: str
    gateway_message_id: str | None = None
    error: PermanentError | None = None        # this message was refused (the others may be fine)

    @property
    def accepted(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class Lookup:
    found: bool
    gateway_message_id: str | None = None
    status: MessageStatus | None = None


@dataclass(frozen=True)
class DeliveryReport:
    status: MessageStatus
    raw_status: str


@dataclass(frozen=True)
class Balance:
    amount: float
    currency: str | None = None
    unlimited: bool = False


class Gateway(ABC):
    name: str = ""
    can_lookup: bool = False
    can_dedupe: bool = False
    max_batch: int = 1
    batch_same_text: bool = False
    supports_status: bool = True
    supports_balance: bool = True

    def validate_options(self, options: Mapping[str, Any], *, text: str | None) -> dict[str, Any]:
        """Check gateway-specific send options (and whether `text` is needed) before anything is
        sent; raise ValidationError if wrong. Adapters with options override this."""
        if options:
            raise ValidationError(f"options: {self.name} takes no options (got {', '.join(sorted(options))})")
        if text is None:
            raise ValidationError("text: required")
        return {}

    @abstractmethod
    def send(self, sms: OutboundSms) -> Acceptance:
        """One message. Gateways that dedupe derive their idempotency reference from sms.message_id."""

    def single_call_ref(self, message_id: str) -> str | None:
        """The reference of the call that sends message `message_id` alone, for a gateway whose
        `send` makes it a one-message batch call (Eskiz); None for the others. The dispatcher writes it
        in the record before the call, and a reconcile asks `lookup_batch` about that very call."""
        return None

    def send_batch(self, messages: Sequence[OutboundSms], *, call_ref: str) -> list[ItemResult]:
        """One native call for 1..max_batch messages (one text for all when batch_same_text).
        Call-level failures raise like `send`; per-message refusals come back as ItemResult.error.
        Results are in the order of `messages`. `call_ref` is stable across retries of this call."""
        raise NotImplementedError(f"{self.name} has no batch endpoint")

    def lookup(self, sms: OutboundSms, *, since: float) -> Lookup:
        """Did `sms` reach the gateway after `since` (epoch seconds)? Only where `can_lookup`."""
        raise NotImplementedError(f"{self.name} cannot look messages up")

    def lookup_batch(self, messages: Sequence[OutboundSms], *, call_ref: str | None,
                     since: float) -> dict[str, Lookup]:
        """`lookup` for several messages, by message id; adapters override it when they can do it in
        one query (Eskiz: by dispatch)."""
        return {m.message_id: self.lookup(m, since=since) for m in messages}

    def status(self, gateway_message_id: str) -> DeliveryReport:
        raise NotImplementedError(f"{self.name} has no delivery-status API")

    def balance(self) -> Balance:
        raise NotImplementedError(f"{self.name} has no balance API")


#: What `HttpGateway._prepared` prepares itself: a JSON body and headers; a path of these characters only.
_LEAN_ARGUMENTS = frozenset({"json", "headers"})
_PLAIN_PATH = re.compile(r"(/(?!\.\.?(?:/|$))[A-Za-z0-9._~-]*)+")      # no '.' or '..' segment


class HttpGateway(Gateway):
    """Owns a pooled `requests.Session`, cuts every call at its total deadline (deadline.py) and maps
    transport failures into the exception tree."""

    def __init__(self, base_url: str, *, connect_timeout: float, read_timeout: float,
                 total_timeout: float | None = None, session: requests.Session | None = None,
                 pool_size: int = 64) -> None:
        """`total_timeout`: the most one call may take, start to end (HTTP_TOTAL_TIMEOUT; None: connect +
        read). The connect and read timeouts still apply within it. A `session` of the caller's gets the
        deadline enforced only where it mounts deadline.DeadlineAdapter (tests mount stubs)."""
        self.base_url = base_url.rstrip("/")
        self.timeout = (connect_timeout, read_timeout)
        self.total_timeout = float(total_timeout if total_timeout is not None else connect_timeout + read_timeout)
        if session is None:
            session = requests.Session()
            adapter = DeadlineAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            # requests reads proxy and CA-bundle variables from the environment on every request (a
            # profile showed 6% of a worker's time there). Read them once, here, with the same meaning.
            session.proxies = requests.utils.get_environ_proxies(self.base_url)
            session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
            session.trust_env = False
            # the base URL as requests prepares it (host lowercased, IDNA, quoting), once, for `_prepared`;
            # not one with a user name (requests turns it into an Authorization header) or a query
            base = requests.Request("GET", self.base_url).prepare().url or self.base_url
            parts = urlsplit(base)
            self._prepared_base: str | None = \
                None if parts.username or parts.query or parts.fragment else base.rstrip("/")
        else:
            self._prepared_base = None       # a caller's session: every call through session.request
        self.session = session

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        """One HTTP call. Returns any response the adapter may want to read (2xx and 4xx alike);
        raises for what is the same on every gateway: no connection, timeouts, 408, 429, 5xx."""
        started = time.monotonic()
        call = WATCHDOG.begin(self.total_timeout)
        try:
            try:
                prepared = self._prepared(method, path, kwargs)
                if prepared is not None:
                    response = self.session.send(prepared, timeout=self.timeout)
                else:
                    response = self.session.request(method, self.base_url + path, timeout=self.timeout, **kwargs)
            finally:
                WATCHDOG.end(call)      # call.expired, .cut and .sent are final from here
        except requests.RequestException as e:
            # At the deadline a socket timeout capped at the time left may fire just before the watchdog.
            late = call.expired or time.monotonic() >= call.deadline
            raise (self._past_deadline(call) if late else self._transport_error(e)) from None
        if call.cut:        # an answer without a length ends at EOF: the cut may have truncated it
            raise self._past_deadline(call)
        log.debug("%s %s %s -> %s in %.0f ms", self.name, method, path, response.status_code,
                 (time.monotonic() - started) * 1000)
        code = response.status_code
        if code == 429:
            raise RateLimited(f"HTTP 429 {_reason(response)}", gateway=self.name, status=code,
                              retry_after=parse_retry_after(response.headers.get("Retry-After")))
        if code == 504:
            raise AmbiguousError(f"HTTP 504 {_reason(response)}", gateway=self.name, status=code)
        if code == 408 or code >= 500:
            raise GatewayUnavailable(f"HTTP {code} {_reason(response)}", gateway=self.name, status=code,
                                     retry_after=parse_retry_after(response.headers.get("Retry-After")),
                                     maybe_sent=code in MAYBE_PROCESSED)
        return response

    def _prepared(self, method: str, path: str, kwargs: dict[str, Any]) -> requests.PreparedRequest | None:
        """A call with a JSON body or none, and headers (every gateway's send), prepared without
        Session.request's merging: the request it would send, byte for byte, for about three quarters
        of the CPU (`python -m bench.deadline --json`: ~300 µs a call instead of ~410). None where that
        merging could change the request: a caller's session, a cookie the session holds, a path that
        needs quoting, or any argument besides `json` and `headers` (params, form data, auth): those
        go through session.request."""
        if (self._prepared_base is None or not kwargs.keys() <= _LEAN_ARGUMENTS or self.session.cookies
                or not _PLAIN_PATH.fullmatch(path)):
            return None
        headers = CaseInsensitiveDict(self.session.headers)
        for name, value in (kwargs.get("headers") or {}).items():      # None drops a header, as in requests
            if value is None:
                headers.pop(name, None)
            else:
                headers[name] = value
        prepared = requests.PreparedRequest()
        prepared.prepare_method(method)
        prepared.url = self._prepared_base + path
        prepared.prepare_headers(headers)              # refuses a header value with a line break
        prepared.prepare_body(None, None, kwargs.get("json"))
        prepared._cookies = RequestsCookieJar()        # a redirect's cookies are kept here, as requests does
        return prepared

    def _past_deadline(self, call: Call) -> GatewayError:
        """The call's deadline passed: ambiguous once its request may have gone out, else not sent."""
        if call.sent:
            return AmbiguousError(f"no complete answer within {call.seconds:g}s (HTTP_TOTAL_TIMEOUT)",
                                  gateway=self.name)
        return GatewayUnavailable(f"not connected within {call.seconds:g}s (HTTP_TOTAL_TIMEOUT)", gateway=self.name)

    def _transport_error(self, e: requests.RequestException) -> GatewayError:
        """requests' exception → ours: not sent where provable (no connection), else ambiguous."""
        if isinstance(e, requests.ConnectTimeout):
            return GatewayUnavailable(f"connect timeout: {_short(e)}", gateway=self.name)
        if isinstance(e, requests.ConnectionError):
            if _never_connected(e):
                return GatewayUnavailable(f"cannot connect: {_short(e)}", gateway=self.name)
            return AmbiguousError(f"connection lost after sending: {_short(e)}", gateway=self.name)
        if isinstance(e, requests.Timeout):
            return AmbiguousError(f"no answer within {self.timeout[1]:g}s: {_short(e)}", gateway=self.name)
        return AmbiguousError(f"HTTP error: {_short(e)}", gateway=self.name)

    def json(self, response: requests.Response) -> dict:
        try:
            body = response.json()
        except ValueError:
            raise GatewayRejected(f"HTTP {response.status_code}: body is not JSON",
                                  gateway=self.name, status=response.status_code) from None
        return body if isinstance(body, dict) else {"data": body}


def json_object(value: object) -> dict[str, Any]:
    """`value` if it is a JSON object, else an empty one: for a part of a gateway's answer that may be
    missing or of another shape."""
    return value if isinstance(value, dict) else {}


def _never_connected(error: requests.ConnectionError) -> bool:
    """True when the request provably never left: refused, unreachable or unresolvable."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, (NewConnectionError, NameResolutionError, ConnectionRefusedError)):
            return True
        cause = getattr(cause, "reason", None) or cause.__context__ or cause.__cause__
        if cause is None and error.args and isinstance(error.args[0], BaseException):
            cause = error.args[0]
    return False


def _short(error: Exception) -> str:
    return str(error)[:200]


def _reason(response: requests.Response) -> str:
    return (response.reason or "").strip()


__all__ = ["Acceptance", "Balance", "DeliveryReport", "Gateway", "GatewayError", "HttpGateway",
           "ItemResult", "Lookup", "OutboundSms"]


def single_report(body: Mapping[str, Any], map_status: Callable[[str], MessageStatus],
                  refs: Sequence[str]) -> list[tuple[list[str], MessageStatus | None, str]]:
    """The one report of a webhook body that carries a `status` word and references in the `refs`
    fields (Eskiz, and DevSMS, which relays Eskiz's fields: inferred), read with the gateway's own
    map; a word that is not final (delivered or failed) gives no status."""
    word = str(body.get("status") or "")
    if not word:
        raise BadReport("a delivery report needs a status")
    status = map_status(word)
    final = status if status in (MessageStatus.DELIVERED, MessageStatus.FAILED) else None
    return [([str(body.get(k) or "") for k in refs], final, word)]

