"""The send policy: what happens after a gateway call failed. One decision, for single sends
(dispatch.py) and batch entries (batch.py) alike; `after_failure` is a pure function.

    the call's error                         can_lookup        can_dedupe          neither
    ──────────────────────────────────────── ───────────────── ─────────────────── ─────────────────────
    auth, insufficient balance               FAILOVER to the next gateway of the route (unless pinned), else FAIL
    any other permanent error (4xx)          FAIL
    provably not sent: refused, connect      FAILOVER to the next gateway (unless pinned), else RETRY
      timeout, 408, 429, 503, other 5xx
    maybe processed: HTTP 500, 502           RECONCILE         REPEAT              RETRY, pinned
    ambiguous: read timeout, reset after     RECONCILE         REPEAT              UNKNOWN
      sending, 504, cut at HTTP_TOTAL_TIMEOUT,
      an unexpected exception
    our own Redis failed inside the adapter  RETRY: nothing was sent, and it is not the gateway's fault

    RETRY / REPEAT at MAX_ATTEMPTS           → EXHAUSTED (failed, retries_exhausted, dead-lettered)
    RECONCILE                                → bounded by its lookups (MAX_ATTEMPTS), then unknown

RECONCILE: the next run asks the gateway whether it has the message before sending again. REPEAT: the
next run sends again on the same gateway with the same reference, which the gateway dedupes. RETRY,
pinned: the documented risk of a gateway that can do neither: a 500 usually means "not processed", so it
is tried again, but only there, and the record keeps `maybe_sent`.

`maybe_sent` says the call may have reached the gateway. A record keeps it once set (until a lookup
proves the gateway does not have the message), and it decides what may be sent again: a message whose
retries ran out is reopened by a new submission, or replayed from the dead letters, only when it is
provably unsent (`reopenable`); an operator's `dead-letters --replay --force` is the only way past it.

`health` says how the call counts for the gateway's circuit (circuit.py) and rate limit (ratelimit.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Protocol

import redis

from .errors import (
    AuthError,
    InsufficientBalance,
    PermanentError,
    RateLimited,
    TransientError,
)


class Action(str, Enum):
    FAIL = "fail"              # terminal `failed`: the gateway refused it; nothing was sent
    FAILOVER = "failover"      # try the next gateway of the route now; nothing was sent here
    RETRY = "retry"            # run again after a backoff (pinned: on this gateway only)
    RECONCILE = "reconcile"    # run again after a backoff, asking the gateway first
    REPEAT = "repeat"          # run again after a backoff, same gateway, same reference (it dedupes)
    UNKNOWN = "unknown"        # terminal `unknown`: it may have been sent and nobody can tell; never resent
    EXHAUSTED = "exhausted"    # terminal `failed` (retries_exhausted), dead-lettered


class Health(str, Enum):
    FAILURE = "failure"        # counts as a failed call for the circuit
    ANSWERED = "answered"      # the gateway answered (a refusal): a successful call for the circuit
    RATE_LIMITED = "rate_limited"   # 429: slows the rate limit; not a failure
    NEUTRAL = "neutral"        # not the gateway's doing (our Redis): counts nowhere


class Capabilities(Protocol):
    name: str
    can_lookup: bool
    can_dedupe: bool


@dataclass(frozen=True)
class Decision:
    action: Action
    maybe_sent: bool           # this call may have reached the gateway
    pin: bool                  # from now on the message stays on this gateway
    health: Health


def classify(error: BaseException) -> str:
    """The kind of a failed call: "reroute" (permanent, but another gateway may take it), "permanent",
    "not_sent", "maybe_processed" (500/502), "ambiguous", or "store" (our Redis)."""
    if isinstance(error, (AuthError, InsufficientBalance)):
        return "reroute"
    if isinstance(error, PermanentError):
        return "permanent"
    if isinstance(error, TransientError):
        return "maybe_processed" if error.maybe_sent else "not_sent"
    if isinstance(error, redis.RedisError):
        return "store"
    return "ambiguous"           # AmbiguousError, or anything unexpected: it may have gone out


def after_failure(error: BaseException, gateway: Capabilities, *, attempts: int, max_attempts: int,
                  has_next: bool, pinned: bool) -> Decision:
    """The decision after one failed call to `gateway`: `attempts` counts this call; `has_next`: another
    gateway of the route follows; `pinned`: an earlier possibly-sent call holds the message here."""
    kind = classify(error)
    may_move = has_next and not pinned
    exhausted = attempts >= max_attempts
    if kind == "store":
        return Decision(Action.RETRY, False, pinned, Health.NEUTRAL)
    if kind == "reroute":
        return Decision(Action.FAILOVER if may_move else Action.FAIL, False, pinned, Health.ANSWERED)
    if kind == "permanent":
        return Decision(Action.FAIL, False, pinned, Health.ANSWERED)
    health = Health.RATE_LIMITED if isinstance(error, RateLimited) else Health.FAILURE
    if kind == "not_sent":
        if may_move:
            return Decision(Action.FAILOVER, False, False, health)
        return Decision(Action.EXHAUSTED if exhausted else Action.RETRY, False, pinned, health)
    # maybe_processed or ambiguous: it may be at the gateway now
    if gateway.can_lookup:
        return Decision(Action.RECONCILE, True, pinned, health)
    if gateway.can_dedupe:
        return Decision(Action.EXHAUSTED if exhausted else Action.REPEAT, True, True, health)
    if kind == "ambiguous":
        return Decision(Action.UNKNOWN, True, True, health)
    return Decision(Action.EXHAUSTED if exhausted else Action.RETRY, True, True, health)
