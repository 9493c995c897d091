"""MemoryGateway: a real `Gateway` that keeps what it "sends" in memory and fails when told to.

The testing kit (harness.py) stands one in for every gateway an app routes to, under that gateway's
name, so records say `eskiz` where production would. It takes the real adapter's flags (can_lookup,
can_dedupe, max_batch, batch_same_text) and its check of gateway options, so the dispatcher decides
as it would with the real gateway: an ambiguous failure on Eskiz (which can look messages up) is
reconciled, the same failure on DevSMS (which cannot) ends `unknown`.

What `fail_next(kind)` makes the next call raise, and what the dispatcher does with it:

    unavailable         GatewayUnavailable: provably not sent; retried later, or the next gateway of the route
    rate_limited        RateLimited (429, Retry-After 1 s): retried after it
    server_error        GatewayUnavailable, HTTP 500: maybe processed; looked up first where the gateway can
    timeout             AmbiguousError, and the gateway did NOT get it: reconciled, `unknown` or repeated
    timeout_after_send  AmbiguousError, but the gateway DID get it (it is in `sent`): a lookup finds it
    rejected            RecipientRejected: `failed` at once
    auth                AuthError: `failed` at once (or the next gateway of the route)
    balance             InsufficientBalance: the same
or any `GatewayError` instance. `refuse(number)` makes the gateway refuse one number every time
(per message inside a batch call).
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import (
    AmbiguousError,
    AuthError,
    GatewayError,
    GatewayUnavailable,
    InsufficientBalance,
    RateLimited,
    RecipientRejected,
)
from ..gateways.base import Acceptance, Balance, DeliveryReport, Gateway, ItemResult, Lookup, OutboundSms
from ..phone import mask
from ..records import MessageStatus

log = logging.getLogger("smsdispatch.testing")

#: The failures `fail_next` knows by name: how to build each for a gateway, and whether the gateway got
#: the message before the answer was lost (only then can a lookup find it).
FAILURES: dict[str, tuple[Callable[[str], GatewayError], bool]] = {
    "unavailable": (lambda g: GatewayUnavailable("cannot connect (memory gateway told to fail)", gateway=g), False),
    "rate_limited": (lambda g: RateLimited("HTTP 429 (memory gateway told to fail)", gateway=g, status=429,
                                           retry_after=1.0), False),
    "server_error": (lambda g: GatewayUnavailable("HTTP 500 (memory gateway told to fail)", gateway=g, status=500,
                                                  maybe_sent=True), False),
    "timeout": (lambda g: AmbiguousError("no answer (memory gateway told to fail; it did not get it)", gateway=g),
                False),
    "timeout_after_send": (lambda g: AmbiguousError("no answer (memory gateway told to fail; it got it)",
                                                    gateway=g), True),
    "rejected": (lambda g: RecipientRejected("number refused (memory gateway told to fail)", gateway=g), False),
    "auth": (lambda g: AuthError("credentials refused (memory gateway told to fail)", gateway=g, status=401), False),
    "balance": (lambda g: InsufficientBalance("no balance (memory gateway told to fail)", gateway=g), False),
}

#: Flags copied from the real adapter (gateways/base.py says what each promises the dispatcher).
FLAGS = ("can_lookup", "can_dedupe", "max_batch", "batch_same_text", "supports_status", "supports_balance")


@dataclass(frozen=True)
class SentSms:
    """One message as a gateway got it: the number in E.164, the text, our message id and its id."""

    gateway: str
    message_id: str
    to: str
    text: str
    sender: str | None
    gateway_message_id: str
    options: Mapping[str, Any] | None = None
    callback_url: str | None = None
    batch_call: str | None = None       # the call reference when it went out in a native batch call

    def __repr__(self) -> str:          # test data: the number in full, for the test's author
        return f"SentSms(gateway={self.gateway!r}, to={self.to!r}, text={self.text!r}, message_id={self.message_id!r})"


class Failures:
    """Scripted failures, taken one per call, first come first served (thread-safe)."""

    def __init__(self) -> None:
        self._queue: deque[str | GatewayError] = deque()
        self._lock = threading.Lock()

    def add(self, kind: str | GatewayError, times: int = 1) -> None:
        if not isinstance(kind, GatewayError) and kind not in FAILURES:
            raise ValueError(f"unknown failure {kind!r}: one of {', '.join(FAILURES)} or a GatewayError")
        with self._lock:
            self._queue.extend([kind] * times)

    def take(self) -> str | GatewayError | None:
        with self._lock:
            return self._queue.popleft() if self._queue else None

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()

    def __len__(self) -> int:
        return len(self._queue)


class MemoryGateway(Gateway):
    """A gateway named `name` whose sends land in `log` (shared by the kit's gateways, in call order)."""

    def __init__(self, name: str, *, log: list[SentSms], like: Gateway | None = None,
                 shared_failures: Failures | None = None) -> None:
        self.name = name
        self.like: Gateway | None = None
        self.can_lookup = True          # it remembers everything it got (until it is told what it mirrors)
        if like is not None:
            self.mirror(like)
        self.failures = Failures()
        self._shared = shared_failures
        self._log = log
        self._refused: set[str] = set()
        self._got: dict[str, SentSms] = {}        # message id -> what it got
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def mirror(self, like: Gateway) -> None:
        """Take the real adapter's flags and its check of options (the harness does, on first use)."""
        self.like = like
        for flag in FLAGS:
            setattr(self, flag, getattr(like, flag))

    # --- what a test tells it -----------------------------------------------------------------

    def fail_next(self, kind: str | GatewayError = "unavailable", *, times: int = 1) -> None:
        """The next `times` calls to this gateway fail with `kind` (see the module's docstring)."""
        self.failures.add(kind, times)

    def refuse(self, number: str) -> None:
        """This gateway refuses `number` (E.164) every time: RecipientRejected, `failed` at once."""
        self._refused.add(number)

    @property
    def sent(self) -> list[SentSms]:
        """What this gateway got, in order."""
        return [s for s in self._log if s.gateway == self.name]

    # --- the Gateway contract -----------------------------------------------------------------

    def validate_options(self, options: Mapping[str, Any], *, text: str | None) -> dict[str, Any]:
        if self.like is not None:
            return self.like.validate_options(options, text=text)
        return super().validate_options(options, text=text)

    def send(self, sms: OutboundSms) -> Acceptance:
        error, got_it = self._failure()
        if error is not None and not got_it:
            raise error
        if sms.to in self._refused:
            raise self._refusal(sms)
        got = self._keep(sms, None)
        if error is not None:       # it has the message; its answer was lost
            raise error
        return Acceptance(got.gateway_message_id, "accepted")

    def send_batch(self, messages: Sequence[OutboundSms], *, call_ref: str) -> list[ItemResult]:
        error, got_it = self._failure()
        if error is not None and not got_it:
            raise error
        results = []
        for sms in messages:
            if sms.to in self._refused:
                results.append(ItemResult(sms.message_id, error=self._refusal(sms)))
            else:
                results.append(ItemResult(sms.message_id, self._keep(sms, call_ref).gateway_message_id))
        if error is not None:
            raise error
        return results

    def lookup(self, sms: OutboundSms, *, since: float) -> Lookup:
        got = self._got.get(sms.message_id)
        return Lookup(got is not None, got.gateway_message_id if got else None,
                      MessageStatus.ACCEPTED if got else None)

    def status(self, gateway_message_id: str) -> DeliveryReport:
        return DeliveryReport(MessageStatus.ACCEPTED, "accepted")

    def balance(self) -> Balance:
        return Balance(amount=0, unlimited=True)

    # --- inside -------------------------------------------------------------------------------

    def _failure(self) -> tuple[GatewayError | None, bool]:
        """The failure scripted for this call, if any, and whether the gateway gets the message first."""
        kind = self.failures.take()
        if kind is None and self._shared is not None:
            kind = self._shared.take()
        if kind is None or isinstance(kind, GatewayError):
            return kind, False
        build, got_it = FAILURES[kind]
        return build(self.name), got_it

    def _refusal(self, sms: OutboundSms) -> RecipientRejected:
        return RecipientRejected(f"number {mask(sms.to)} refused (memory gateway told to)", gateway=self.name)

    def _keep(self, sms: OutboundSms, call_ref: str | None) -> SentSms:
        with self._lock:
            if self.can_dedupe and sms.message_id in self._got:   # a repeat it dedupes: sent once
                return self._got[sms.message_id]
            got = SentSms(self.name, sms.message_id, sms.to, sms.text, sms.sender,
                          f"{self.name}-{next(self._ids)}", sms.options, sms.callback_url, call_ref)
            self._got[sms.message_id] = got
            self._log.append(got)
        log.info("memory gateway %s: message %s to %s (%d chars) accepted", self.name, sms.message_id,
                 mask(sms.to), len(sms.text))
        return got
