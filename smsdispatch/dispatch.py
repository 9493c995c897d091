"""The send path, without Celery: validate → claim the key → (reconcile) → send → record.

`Dispatcher.send` is called by the thin task in tasks.py with the raw kwargs and the task id, and
answers with an `Outcome`: either a final result (the task returns it) or a delay after which the
task must run again. Every decision is recorded, so "what happened to message X?" has an answer.

Identity: a message sent with an explicit idempotency key has the id uuid5(key), so every producer of
that key gets the same message id and the same result; without a key, the key and the message id are
the Celery task id, so a redelivered task message is recognised as the same message.

What happens after a failed call (retry, fail over, reconcile, repeat, `unknown`, dead-letter) is
decided by policy.py, the same function batch chunks use; this module carries the decision out.

Failover: a message without an explicit `gateway` has a route of one or more gateways in priority
order (config.route_chain). A gateway is skipped while its circuit is open (circuit.py), and the next
one is tried at once after an error that proves the message was not sent (connection refused, connect
timeout, 408, 429, 503 and other 5xx but 500/502) or that this gateway cannot take it (auth,
insufficient balance). After an error that leaves the message possibly sent, the message stays on that
gateway (`pinned_gateway`): looked up there (can_lookup), repeated there with the same reference
(can_dedupe), or, with neither, ended `unknown`. It never moves to another gateway until a lookup
proves the first one does not have it. The history names the gateway that sent and why others were
skipped. Calls wait for the gateway's global rate limit (ratelimit.py) first.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import redis

from . import logs
from .celery_results import DEFAULT_TTL as DEFAULT_RESULT_TTL
from .celery_results import Results, ResultSlot
from .circuit import Circuits, Verdict, describe
from .config import Settings
from .errors import (
    AmbiguousError,
    GatewayError,
    TransientError,
    ValidationError,
)
from .gateways import Gateways
from .gateways.base import Gateway, OutboundSms
from .keys import Keys
from .ledger import Begun, Claim, ClaimResult, Durability, Ledger, fingerprint
from .phone import mask
from .policy import Action, Decision, Health, after_failure
from .ratelimit import RateLimiter
from .records import RESULT_FIELDS, MessageStatus, RecordCreate, Records
from .redisclient import text_fields
from .retry import compute_backoff
from .sendrequest import MAX_IDEMPOTENCY_KEY_CHARS, SendRequest, parse_send
from .slots import GatewaySlots

log = logging.getLogger("smsdispatch.dispatch")

#: Namespace of message ids derived from idempotency keys (fixed forever: ids must stay stable).
MESSAGE_ID_NAMESPACE = uuid.UUID("6f1c2a52-3b0e-4d7e-9a41-5c0de5d15a7c")

BALANCE_CACHE_SECONDS = 5.0

#: A duplicate that finds the key claimed looks again this often (or when the lease ends, if sooner).
BUSY_POLL = 2.0

#: What `send` reads of a record along with its claim: the result, and what an attempt depends on.
RECORD_FIELDS_READ = (*RESULT_FIELDS, "pinned_gateway", "maybe_sent", "rate_slot", "call_ref")


def message_id_for(idempotency_key: object, task_id: str) -> str:
    if isinstance(idempotency_key, str) and idempotency_key:
        return str(uuid.uuid5(MESSAGE_ID_NAMESPACE, idempotency_key))
    return task_id


def ledger_key_for(idempotency_key: object, task_id: str) -> str:
    if isinstance(idempotency_key, str) and idempotency_key:
        return f"key:{idempotency_key}"
    return f"task:{task_id}"


@dataclass(frozen=True)
class Outcome:
    result: dict[str, Any] | None = None     # final: the task returns this
    retry_in: float | None = None            # not final: run the task again after this many seconds
    stored: bool = False                     # final, and already stored as the task's Celery result


@dataclass(frozen=True)
class Route:
    """One gateway a message may go through, and the message as that gateway gets it."""
    gateway: Gateway
    sms: OutboundSms


@dataclass(frozen=True)
class _Job:
    """One execution's view of a message: what to send, through which gateways, under which claim."""
    message_id: str
    key: str
    request: SendRequest
    routes: list[Route]          # in priority order; never empty
    claim: ClaimResult
    skipped: tuple[str, ...] = ()   # gateways left out before the claim (balance guard), with why
    closed: frozenset[str] = frozenset()   # gateways whose circuit was closed a moment ago: no need to ask
    result: ResultSlot | None = None      # store the outcome as this task's Celery result (celery_results.py)


@dataclass
class _Walk:
    """What `_attempt` carries from one gateway of the route to the next."""
    attempts: int                 # calls counted on the record so far
    skipped: list[str]            # gateways passed over since the last `sending` update, with why
    maybe_sent: bool              # an earlier call may have reached a gateway
    last_error: dict[str, str] | None = None   # the error of the last gateway failed over from
    reopen_at: float | None = None             # the soonest an open circuit of the route lets a probe through


class Dispatcher:
    def __init__(self, settings: Settings, client: redis.Redis, *, gateways: Gateways | None = None,
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None,
                 result_ttl: int = DEFAULT_RESULT_TTL) -> None:
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self.records = Records(client, self.keys, ttl=settings.record_ttl, queued_grace=settings.queued_grace,
                               active_grace=settings.active_grace)
        self.ledger = Ledger(client, self.keys, lease=settings.claim_lease, ttl=settings.idempotency_ttl,
                             durability=Durability(settings.claim_replicas, settings.claim_replica_timeout))
        self.results = Results(client, self.keys, ttl=result_ttl)
        self.gateways = gateways or Gateways(settings, client, self.keys)
        self.circuits = Circuits(client, self.keys, failure_rate=settings.circuit_failure_rate,
                                 min_calls=settings.circuit_min_calls, window=settings.circuit_window,
                                 cooloff=settings.circuit_cooloff, probes=settings.circuit_probes,
                                 probe_ttl=min(settings.circuit_cooloff, settings.claim_lease / 4))
        self.limiter = RateLimiter(client, self.keys, settings.rate_limits)
        #: GATEWAY_CONCURRENCY: calls in flight per gateway in this process (a slow gateway cannot hold
        #: every worker thread while messages for other gateways wait).
        self.slots = GatewaySlots.from_settings(settings)
        #: The longest a call waits in-process for its rate limit; longer waits go back to the queue.
        self.max_rate_wait = min(5.0, settings.claim_lease / 4)
        self.clock = clock
        self.rng = rng or random.Random()
        self._balances: dict[str, tuple[float | None, float]] = {}

    # --- producer side ------------------------------------------------------------------------

    def record_queued(self, kwargs: dict[str, Any], *, task_id: str, not_before: float | None = None) -> str:
        """Before publishing: a `queued` record holding the payload, so nothing can vanish unseen.
        `not_before`: the ETA it is published with (the sweeper must not send it earlier)."""
        record = self.queued_record(kwargs, task_id=task_id, not_before=not_before)
        record.run()
        return record.message_id

    def queued_record(self, kwargs: dict[str, Any], *, task_id: str, not_before: float | None = None) -> RecordCreate:
        """`record_queued`'s write, prepared and not run: the producer runs it with its publish
        (tasks.SendSms.apply_async)."""
        key = kwargs.get("idempotency_key")
        message_id = message_id_for(key, task_id)
        fields: dict[str, Any] = {"task_id": task_id, "payload": kwargs,
                  "idempotency_key": key if isinstance(key, str) and key else task_id}
        if not_before:
            fields["not_before"] = not_before
        return self.records.create_call(message_id, fields, not_before=not_before, number=kwargs.get("to"))

    # --- worker side --------------------------------------------------------------------------

    def prepare(self, kwargs: dict[str, Any], message_id: str) -> tuple[SendRequest, list[Route], str]:
        """Validate one message and list its gateways: (request, routes in priority order, fingerprint).
        Raises ValidationError (bad input, unknown or unconfigured gateway, bad gateway options). A
        fallback gateway that cannot take the message's options is left out of the route."""
        request = parse_send(kwargs, default_region=self.settings.default_region,
                             max_text_chars=self.settings.max_text_chars)
        names = [request.gateway] if request.gateway else self.settings.route_chain(request.to)
        routes: list[Route] = []
        for name in names:
            gateway = self.gateways.get(name)
            try:
                options = gateway.validate_options(request.options or {}, text=request.text)
            except ValidationError:
                if not routes:
                    raise
                continue
            routes.append(Route(gateway, self._outbound(request, gateway, message_id, options)))
        fp = fingerprint({"to": request.to, "text": request.text, "sender": request.sender,
                          "gateway": request.gateway, "options": routes[0].sms.options})
        return request, routes, fp

    def _outbound(self, request: SendRequest, gateway: Gateway, message_id: str,
                  options: Mapping[str, Any] | None) -> OutboundSms:
        callback = request.callback_url or self.settings.callback_url(gateway.name)
        return OutboundSms(message_id, request.to, request.text or "", request.sender, callback, options or None)

    def available(self, routes: list[Route]) -> tuple[list[Route], list[str]]:
        """The routes the balance guard allows, and why the others are left out."""
        usable, skipped = [], []
        for route in routes:
            refusal = self.balance_refusal(route.gateway.name)
            (skipped.append(refusal) if refusal else usable.append(route))
        return usable, skipped

    def call_limit(self, gateway: Gateway) -> int:
        """Most messages in one native batch call: the gateway's maximum, BATCH_CALL_LIMITS, and no
        more than its rate-limit bucket holds."""
        return max(1, min(gateway.max_batch, self.settings.batch_call_limits.get(gateway.name, gateway.max_batch),
                          self.limiter.burst(gateway.name)))

    def balance_refusal(self, gateway: str) -> str | None:
        """With BALANCE_GUARD: why `gateway` must not be called now (its last polled balance is
        below its threshold), else None. Read from Redis at most every few seconds per process."""
        threshold = self.settings.balance_thresholds.get(gateway)
        if not self.settings.balance_guard or threshold is None:
            return None
        cached = self._balances.get(gateway)
        if cached is None or time.monotonic() - cached[1] > BALANCE_CACHE_SECONDS:
            polled = self.records.redis.hget(self.keys.balance(gateway), "amount")
            cached = self._balances[gateway] = (float(polled) if polled is not None else None, time.monotonic())
        amount = cached[0]
        if amount is not None and amount < threshold:
            return (f"{gateway}'s last known balance {amount:g} is below its threshold {threshold:g} "
                    f"(SMSDISPATCH_BALANCE_GUARD); not sent")
        return None

    def send(self, kwargs: dict[str, Any], *, task_id: str, store_result: bool = False) -> Outcome:
        """`store_result`: store a final outcome as the task's Celery result along with its record
        (celery_results.py); the Outcome says `stored`. Other final outcomes the caller stores itself."""
        raw_key = kwargs.get("idempotency_key")
        message_id = message_id_for(raw_key, task_id)
        key = ledger_key_for(raw_key, task_id)
        try:
            request, routes, fp = self.prepare(kwargs, message_id)
        except ValidationError as e:
            log.info("message %s rejected: %s", message_id, e, extra=logs.fields(message_id, status="failed"))
            return Outcome(self.reject(message_id, task_id, kwargs, "validation", str(e)))

        usable, skipped = self.available(routes)
        if not usable:
            return Outcome(self.reject(message_id, task_id, kwargs, "insufficient_balance", "; ".join(skipped)))
        begun = self._begin(request, usable, skipped, message_id=message_id, key=key, fp=fp, task_id=task_id)
        answered = self._answered_by_claim(begun, message_id, task_id, kwargs)
        if answered is not None:
            return answered
        closed = {r.gateway.name for r, open_until in zip(usable, begun.open_until, strict=True) if open_until is None}
        job = _Job(message_id, key, request, usable, begun.claim, tuple(skipped), frozenset(closed),
                   self.results.slot(task_id) if store_result else None)
        record = self.records.decode(begun.record) or {}
        if begun.claim.answer is Claim.REOPENED:
            self.records.reopen(message_id, note="resubmitted after retries_exhausted: trying again")
            record = dict(record, attempts=0, lookups=0)
        if not begun.claim.durable:
            return self.not_durable(job)
        pinned = record.get("pinned_gateway")
        if begun.claim.answer is Claim.RECONCILE:     # an earlier call may have gone out: ask before sending
            record["maybe_sent"] = 1
            outcome, pinned = self._reconcile(job, record.get("gateway") or usable[0].gateway.name,
                                              record.get("call_ref"))
            if outcome is not None:
                return outcome
            if pinned is None:          # the gateway does not have it: provably unsent again
                record["maybe_sent"] = 0
        return self._attempt(job, task_id, record, pinned)

    def _begin(self, request: SendRequest, usable: list[Route], skipped: list[str], *, message_id: str, key: str,
               fp: str, task_id: str) -> Begun:
        """One round trip: the claim, the record as it stands after it, and the circuits of the route.
        A first attempt through a gateway without a rate limit also writes its `sending` update there,
        unless that gateway's circuit is open (then `_attempt` writes it)."""
        first = usable[0].gateway
        return self.ledger.begin(
            key, fp=fp, message_id=message_id, now=self.clock(), submission=task_id,
            start=self.records.prepared(message_id, MessageStatus.SENDING,
                                        **self._sending(request, first, message_id, key, task_id, 1, list(skipped))),
            write_start=not self.limiter.limited(first.name),
            circuits=[self.keys.circuit(r.gateway.name) for r in usable], fields=RECORD_FIELDS_READ)

    def _answered_by_claim(self, begun: Begun, message_id: str, task_id: str, kwargs: dict[str, Any]) -> Outcome | None:
        """The outcome when the claim alone settles this execution (another payload holds the key, the
        key is done, another execution holds it); None when this execution goes on."""
        claim = begun.claim
        if claim.answer is Claim.CONFLICT:
            reason = (f"idempotency key already used by message {claim.message_id} with a different "
                      f"payload; nothing sent")
            return Outcome(self.reject(task_id, task_id, kwargs, "idempotency_conflict", reason))
        if claim.answer is Claim.DONE:
            if claim.message_id == message_id and begun.record:
                return Outcome(self.records.result_from(begun.record))
            return Outcome(self._recorded_result(claim.message_id))
        if claim.answer is Claim.BUSY:
            # Another execution holds the claim (a duplicate delivery): look again soon; by the end
            # of its lease it has either recorded an outcome or died (then we reconcile).
            return Outcome(retry_in=min(BUSY_POLL, max(0.0, claim.lease_until - self.clock()) + 0.1))
        return None

    # --- poison messages ----------------------------------------------------------------------

    def redelivered(self, task_id: str) -> int:
        """Count one more redelivery of a task message (the broker handed it out again because no
        worker finished it: a worker that died on it). Returns the count so far."""
        pipe = self.records.redis.pipeline(transaction=True)
        pipe.incr(self.keys.deliveries(task_id))
        pipe.expire(self.keys.deliveries(task_id), self.settings.idempotency_ttl)
        return int(pipe.execute()[0])

    def poisoned(self, kwargs: dict[str, Any], *, task_id: str, deliveries: int,
                 store_result: bool = False) -> Outcome | None:
        """A task message handed out `deliveries` times without finishing: end its message `failed`
        (poison_message) and dead-letter it, instead of letting it kill worker after worker. None when
        the message must run after all: it already has an outcome (answered from the record), or a
        live execution holds its claim (that one decides)."""
        raw_key = kwargs.get("idempotency_key") if isinstance(kwargs, dict) else None
        message_id, key = message_id_for(raw_key, task_id), ledger_key_for(raw_key, task_id)
        entry = text_fields(self.records.redis.hgetall(self.keys.idempotency(key)))
        state = entry.get("state")
        if state == "done" or (state == "claimed" and float(entry.get("lease_until") or 0) / 1000 > self.clock()):
            return None
        record = self.records.get(message_id) or {}
        # a claim left `claimed` (its worker died mid-call) or `ambiguous`: a call may have gone out
        maybe_sent = bool(record.get("maybe_sent")) or state in ("claimed", "ambiguous")
        log.error("message %s: task %s handed out %d times without finishing; dead-lettered as a poison message",
                  message_id, task_id, deliveries, extra=logs.fields(message_id, status="failed"))
        return self._write_outcome(message_id, key, self.results.slot(task_id) if store_result else None,
                                   MessageStatus.FAILED, dead_letter=True, reopenable=not maybe_sent,
                            maybe_sent=int(maybe_sent), task_id=task_id, error=_error(
                                "poison_message", f"its task was handed out {deliveries} times and no worker "
                                f"finished it (SMSDISPATCH_MAX_DELIVERIES={self.settings.max_deliveries}); not "
                                f"run again" + ("; an earlier call may have reached the gateway" if maybe_sent
                                                else "")))

    # --- steps --------------------------------------------------------------------------------

    def route_for(self, request: SendRequest, message_id: str, routes: list[Route], name: str) -> Route | None:
        """The route through gateway `name` (the one an earlier attempt used), even if it is no longer
        first in line or left out by the balance guard; None if it is not configured any more."""
        for route in routes:
            if route.gateway.name == name:
                return route
        try:
            gateway = self.gateways.get(name)
        except ValidationError:
            return None
        return Route(gateway, self._outbound(request, gateway, message_id, routes[0].sms.options))

    def _route_named(self, job: _Job, name: str) -> Route | None:
        return self.route_for(job.request, job.message_id, job.routes, name)

    def _reconcile(self, job: _Job, last_gateway: str, call_ref: str | None) -> tuple[Outcome | None, str | None]:
        """An earlier call to `last_gateway` (the call `call_ref`, where the record names one) may have
        reached it. Ask it. Returns (outcome, None) when settled or to run again, (None, gateway) to
        send again on that gateway only (it dedupes), or (None, None): it does not have the message, so
        any gateway of the route may send it."""
        route = self._route_named(job, last_gateway)
        if route is None:
            return self._finish(job, MessageStatus.UNKNOWN, maybe_sent=1, error=_error(
                "unknown", f"an earlier call to {last_gateway} may have been accepted and {last_gateway} is "
                           f"not configured any more, so it cannot be asked; not resent")), None
        gw = route.gateway
        if not gw.can_lookup and gw.can_dedupe:
            self.records.update(job.message_id, MessageStatus.SENDING, maybe_sent=1,
                                note=f"{gw.name} dedupes repeated calls: sending again with the same reference")
            return None, gw.name
        if not gw.can_lookup:
            return self._finish(job, MessageStatus.UNKNOWN, maybe_sent=1, error=_error(
                "unknown", f"an earlier call to {gw.name} may have been accepted (worker stopped or no "
                           f"answer) and {gw.name} cannot look messages up; not resent to avoid a duplicate")), None
        lookups = self.records.increment(job.message_id, "lookups")
        try:
            found = gw.lookup_batch([route.sms], call_ref=call_ref,
                                    since=job.claim.first_claimed_at)[job.message_id]
        except (TransientError, AmbiguousError) as e:
            if lookups >= self.settings.max_attempts:
                return self._finish(job, MessageStatus.UNKNOWN, maybe_sent=1, error=_error(
                    "unknown", f"may have been sent; {lookups} lookups at {gw.name} failed, last: {e}")), None
            self.ledger.release(job.key, job.claim.owner, ambiguous=True)
            delay = self.backoff(lookups, e)
            self.records.update(job.message_id, MessageStatus.RETRYING, error=_error(e.code, str(e)), maybe_sent=1,
                                note=f"lookup at {gw.name} failed; again in {delay:.1f}s")
            return Outcome(retry_in=delay), None
        except GatewayError as e:           # permanent: the lookup itself is refused
            return self._finish(job, MessageStatus.UNKNOWN, maybe_sent=1, error=_error(
                "unknown", f"may have been sent; cannot check at {gw.name}: {e}")), None
        if found.found:
            log.info("message %s reconciled: %s had accepted it", job.message_id, gw.name,
                     extra=logs.fields(job.message_id, gateway=gw.name, status="accepted"))
            status = found.status if found.status in (MessageStatus.DELIVERED, MessageStatus.FAILED) \
                else MessageStatus.ACCEPTED
            return self._finish(job, status, gateway_message_id=found.gateway_message_id, error=None,
                                gateway=gw.name, note=f"reconciled: found at {gw.name}, not resent"), None
        # the gateway does not have it: provably unsent again
        self.records.update(job.message_id, MessageStatus.SENDING, pinned_gateway=None, maybe_sent=0,
                            note=f"reconciled: {gw.name} has no such message; sending")
        return None, None

    def _attempt(self, job: _Job, task_id: str, record: dict[str, Any], pinned: str | None) -> Outcome:
        """Call the gateways of the route in order until one takes the message or the policy says stop."""
        kept = self._route_named(job, pinned) if pinned else None
        if pinned and kept is None:
            return self._finish(job, MessageStatus.UNKNOWN, maybe_sent=1, error=_error(
                "unknown", f"may have been accepted by {pinned}, which is not configured any more; not resent"))
        candidates = [kept] if kept else job.routes
        walk = _Walk(attempts=int(record.get("attempts") or 0), skipped=list(job.skipped),
                     maybe_sent=bool(record.get("maybe_sent")))
        for n, route in enumerate(candidates):
            following = candidates[n + 1].gateway.name if n + 1 < len(candidates) else None
            outcome = self._try_gateway(job, task_id, record, route, walk, first=n == 0, following=following,
                                        pinned=bool(pinned))
            if outcome is not None:
                return outcome
        # every gateway left is open (or busy): wait for the probes, without using an attempt
        delay = self.circuits.wait(walk.reopen_at, now=self.clock(), cap=self.settings.backoff_max, rng=self.rng) \
            if walk.reopen_at is not None else 0.5 + self.rng.uniform(0, 1)
        return self._wait(job, delay, "no gateway available (" + "; ".join(walk.skipped) + ")",
                          **({"error": walk.last_error} if walk.last_error else {}))

    def _try_gateway(self, job: _Job, task_id: str, record: dict[str, Any], route: Route, walk: _Walk, *,
                     first: bool, following: str | None, pinned: bool) -> Outcome | None:
        """One gateway of the route: its circuit, its rate limit, a slot, the call. An Outcome when that
        settles this execution; None to go on to `following`, the next gateway of the route."""
        gw = route.gateway
        probe = False
        if first and job.claim.started:    # the claim wrote this attempt's `sending` update
            walk.attempts, walk.skipped = 1, []
        else:
            if walk.attempts >= self.settings.max_attempts:
                return self._exhausted(job, walk.last_error or record.get("error"), walk.skipped,
                                       maybe_sent=walk.maybe_sent)
            verdict = Verdict(True) if gw.name in job.closed else self.circuits.allow(gw.name, now=self.clock())
            if not verdict.allowed:
                walk.skipped.append(f"{gw.name}: circuit open")
                walk.reopen_at = min(walk.reopen_at or verdict.open_until, verdict.open_until)
                return None
            probe = verdict.probe
            waiting = self._rate_limit(job, gw, record)
            if waiting is not None:
                return waiting
            walk.attempts += 1      # we hold the claim: nobody else writes this record's attempts now
            self.records.update(job.message_id, MessageStatus.SENDING,
                                **self._sending(job.request, gw, job.message_id, job.key, task_id, walk.attempts,
                                                walk.skipped))
            walk.skipped = []
        if not self.slots.try_acquire(gw.name):      # its calls in flight are at GATEWAY_CONCURRENCY
            busy = f"{gw.name}: {self.slots.limit(gw.name)} calls in flight here (GATEWAY_CONCURRENCY)"
            walk.attempts -= 1                            # no call was made
            if following is not None and not pinned:
                walk.skipped.append(busy)
                return None
            return self._wait(job, 0.5 + self.rng.uniform(0, 1), busy, attempts=walk.attempts)
        called = self._call(job, route, probe, walk.attempts)
        if isinstance(called, Outcome):
            return called
        return self._call_failed(job, route, called, walk, probe=probe, following=following, pinned=pinned)

    def _call(self, job: _Job, route: Route, probe: bool, attempt: int) -> Outcome | GatewayError | redis.RedisError:
        """The gateway call, in the slot taken for it (given back here): the recorded outcome when the
        gateway accepts the message, else the error for the policy to judge. An unexpected exception
        (a bug, a library's surprise) counts as ambiguous: the message may have been sent. `attempt`:
        its number, for the log line."""
        gw = route.gateway
        started = time.monotonic()
        try:
            accepted = gw.send(route.sms)
        except (GatewayError, redis.RedisError) as e:
            return e
        except Exception as e:
            log.exception("message %s: unexpected error from %s", job.message_id, gw.name,
                          extra=logs.fields(job.message_id, gateway=gw.name, attempt=attempt))
            return AmbiguousError(f"unexpected: {e!r}"[:300], gateway=gw.name)
        else:
            slow = time.monotonic() - started > self.settings.circuit_slow_call
            log.info("message %s to %s accepted by %s as %s", job.message_id, mask(job.request.to), gw.name,
                     accepted.gateway_message_id, extra=logs.fields(job.message_id, gateway=gw.name, attempt=attempt,
                                                                    status="accepted"))
            return self._finish(job, MessageStatus.ACCEPTED, gateway_message_id=accepted.gateway_message_id,
                                gateway=gw.name, error=None, pinned_gateway=None, call=(gw.name, slow, probe))
        finally:
            self.slots.release(gw.name)

    def _call_failed(self, job: _Job, route: Route, error: GatewayError | redis.RedisError, walk: _Walk, *,
                     probe: bool, following: str | None, pinned: bool) -> Outcome | None:
        """Ask the policy what a failed call means: None to fail over to `following` at once, else the
        Outcome of carrying the decision out (`_after`)."""
        gw = route.gateway
        decision = after_failure(error, gw, attempts=walk.attempts, max_attempts=self.settings.max_attempts,
                                 has_next=following is not None, pinned=pinned)
        if decision.action is not Action.FAILOVER:
            return self._after(job, route, walk.attempts, error, decision, walk.skipped, probe=probe,
                               maybe_sent=walk.maybe_sent or decision.maybe_sent)
        self.count_call(gw, error, decision, probe)
        walk.skipped.append(f"{gw.name}: {_code(error)}: {error}" + ("" if decision.health is Health.ANSWERED
                                                                      else "; not sent"))
        log.info("message %s: %s did not send it (%s); failing over to %s", job.message_id, gw.name, _code(error),
                 following, extra=logs.fields(job.message_id, gateway=gw.name, attempt=walk.attempts, status="sending"))
        walk.last_error = _error(_code(error), str(error))
        return None

    def _rate_limit(self, job: _Job, gw: Gateway, record: dict[str, Any]) -> Outcome | None:
        """Wait for the gateway's global rate limit: None to call now (after a short in-process wait),
        or an Outcome to run again when this message's turn comes. A turn further away than a short
        wait is reserved in the bucket and remembered in the record (`rate_slot`), so the message runs
        once more, at its turn, and then calls without asking again: waiting messages do not spin."""
        if not self.limiter.limited(gw.name):
            return None
        now = self.clock()
        slot_gateway, _, slot_at = (record.get("rate_slot") or "").partition("@")
        if slot_gateway == gw.name and slot_at:
            early = float(slot_at) - now
            if early <= self.max_rate_wait:     # our reserved turn has come
                if early > 0:
                    time.sleep(early)
                return None
            return self._wait(job, early, f"waiting for its turn at {gw.name}'s rate limit",
                              rate_slot=record["rate_slot"])
        permit = self.limiter.acquire(gw.name, now=now, max_wait=self.settings.backoff_max)
        why = f"{gw.name}'s rate limit ({self.settings.rate_limits[gw.name]:g}/s) is used up"
        if not permit.granted:      # not even a turn within BACKOFF_MAX: look again then, spread out
            return self._wait(job, permit.wait + self.rng.uniform(0, permit.wait / 4), why)
        if permit.wait > self.max_rate_wait:
            return self._wait(job, permit.wait, f"{why}; its turn is reserved",
                              rate_slot=f"{gw.name}@{now + permit.wait!r}")
        if permit.wait > 0:
            time.sleep(permit.wait)
        return None

    @staticmethod
    def _sending(request: SendRequest, gw: Gateway, message_id: str, key: str, task_id: str, attempt: int,
                 skipped: list[str]) -> dict[str, Any]:
        """The `sending` update of one attempt (note and fields), before its gateway call; `call_ref`
        names the call where the gateway can be asked about a call (Eskiz's dispatch)."""
        return {"note": _with_skips(f"attempt {attempt} via {gw.name}", skipped), "attempts": attempt,
                "to": request.to, "text": request.text, "gateway": gw.name, "requested_gateway": request.gateway,
                "options": request.options, "sender": request.sender, "segments": request.segments,
                "idempotency_key": key.split(":", 1)[1], "task_id": task_id, "callback_url": request.callback_url,
                "metadata": request.metadata, "rate_slot": None, "call_ref": gw.single_call_ref(message_id)}

    def _wait(self, job: _Job, delay: float, why: str, **fields: Any) -> Outcome:
        """Not sent, and no call failed: give the claim back and run again after `delay`."""
        self.ledger.release(job.key, job.claim.owner, ambiguous=False)
        self.records.update(job.message_id, MessageStatus.RETRYING, note=f"{why}; again in {delay:.1f}s", **fields)
        return Outcome(retry_in=delay)

    def not_durable(self, job: _Job) -> Outcome:
        """The claim reached fewer than CLAIM_REPLICAS replicas within CLAIM_REPLICA_TIMEOUT: a failover
        now could lose it, and the promoted replica would let another execution claim and send again.
        So no gateway call: the claim is given back as it was taken (a reconcile stays to be done), the
        record says why, and the message runs again in 1 to 3 s, without using an attempt (`sending`
        written by the claim is undone). It waits so, again and again, until the replicas answer."""
        claim = job.claim
        self.ledger.release(job.key, claim.owner, ambiguous=claim.answer is Claim.RECONCILE)
        delay = 1.0 + self.rng.uniform(0, 2)
        durability = self.ledger.durability
        why = (f"claim not durable: {claim.replicas_acked} of {durability.replicas} replicas acknowledged it within "
               f"{durability.timeout:g}s (SMSDISPATCH_CLAIM_REPLICAS); not sent, again in {delay:.1f}s")
        log.warning("message %s: %s", job.message_id, why)
        undo: dict[str, Any] = {"attempts": 0} if claim.started else {}
        self.records.update(job.message_id, MessageStatus.RETRYING, note=why, **undo)
        return Outcome(retry_in=delay)

    def count_call(self, gw: Gateway, error: BaseException, decision: Decision, probe: bool) -> None:
        """A failed call's part in the gateway's health: a failure for its circuit, a 429 slows its
        rate limit, an answer (a refusal) is a call that went through; our own Redis counts nowhere."""
        if decision.health is Health.RATE_LIMITED:
            self.limiter.slow_down(gw.name, now=self.clock(), retry_after=getattr(error, "retry_after", None))
            return
        if decision.health is Health.NEUTRAL:
            return
        recorded = self.circuits.record(gw.name, now=self.clock(), failed=decision.health is Health.FAILURE,
                                        probe=probe)
        if recorded.event == "opened":
            log.warning("circuit of %s opened: %s; skipped for %gs", gw.name,
                        describe(recorded, self.settings.circuit_window) if not probe else "a probe failed",
                        self.settings.circuit_cooloff, extra=logs.fields(gateway=gw.name))
        elif recorded.event == "closed":
            log.warning("circuit of %s closed: %d probes went through", gw.name, self.settings.circuit_probes,
                        extra=logs.fields(gateway=gw.name))

    def _after(self, job: _Job, route: Route, attempt: int, e: GatewayError | redis.RedisError, decision: Decision,
               skipped: list[str], *, probe: bool, maybe_sent: bool) -> Outcome:
        """Carry out the policy's decision after the failed call `attempt` (policy.py). `maybe_sent`: this
        call or an earlier one may have reached a gateway (kept on the record)."""
        gw = route.gateway
        error = _error(_code(e), str(e))
        if decision.action is Action.FAIL:       # the gateway answered: counted with the outcome
            log.info("message %s to %s failed at %s: %s", job.message_id, mask(job.request.to), gw.name, e,
                     extra=logs.fields(job.message_id, gateway=gw.name, attempt=attempt, status="failed"))
            return self._finish(job, MessageStatus.FAILED, error=error, maybe_sent=int(maybe_sent),
                                note=_with_skips("", skipped), call=(gw.name, False, probe))
        self.count_call(gw, e, decision, probe)
        if decision.action is Action.UNKNOWN:
            return self._finish(job, MessageStatus.UNKNOWN, maybe_sent=1, note=_with_skips("", skipped), error=_error(
                "unknown", f"{e}; {gw.name} may have accepted it and cannot look messages up: not resent"))
        if decision.action is Action.EXHAUSTED:
            return self._exhausted(job, error, skipped, maybe_sent=maybe_sent)
        reconcile = decision.action is Action.RECONCILE
        self.ledger.release(job.key, job.claim.owner, ambiguous=reconcile)
        delay = self.backoff(attempt, e)
        log.info("message %s: %s on attempt %d; retry in %.1fs", job.message_id, _code(e), attempt, delay,
                 extra=logs.fields(job.message_id, gateway=gw.name, attempt=attempt, status="retrying"))
        note = f"attempt {attempt} via {gw.name} failed; retry in {delay:.1f}s" + (
            "; will check the gateway first" if reconcile else f"; stays on {gw.name}" if decision.pin else "")
        self.records.update(job.message_id, MessageStatus.RETRYING, error=error, maybe_sent=int(maybe_sent),
                            pinned_gateway=gw.name if decision.pin else None, note=_with_skips(note, skipped))
        return Outcome(retry_in=delay)

    def _exhausted(self, job: _Job, last_error: dict | None, skipped: list[str] | None = None, *,
                   maybe_sent: bool) -> Outcome:
        """Retries ran out: `failed` and dead-lettered. A new submission (or a replay) may send it again
        only when it is provably unsent (`reopenable`)."""
        detail = f" (last: {last_error['message']})" if last_error else ""
        return self._finish(job, MessageStatus.FAILED, dead_letter=True, reopenable=not maybe_sent,
                            maybe_sent=int(maybe_sent), note=_with_skips("", skipped or []), error=_error(
                                "retries_exhausted", f"{self.settings.max_attempts} attempts failed{detail}"))

    def backoff(self, attempt: int, e: BaseException) -> float:
        """The delay before retry `attempt` + 1 after the error `e` (its Retry-After, if it has one)."""
        s = self.settings
        return compute_backoff(attempt, base=s.backoff_base, cap=s.backoff_max, jitter=s.backoff_jitter,
                               retry_after=getattr(e, "retry_after", None), rng=self.rng)

    # --- recording ----------------------------------------------------------------------------

    def _finish(self, job: _Job, status: MessageStatus, *, dead_letter: bool = False, note: str = "",
                reopenable: bool = False, call: tuple[str, bool, bool] | None = None, **fields: Any) -> Outcome:
        """The terminal write, one script: record, ledger, the task's result (if asked) and the gateway
        call's result for its circuit (`call`: gateway, failed, probe) together; the result comes back
        in the same round trip."""
        return self._write_outcome(job.message_id, job.key, job.result, status, dead_letter=dead_letter, note=note,
                                   reopenable=reopenable, call=call, **fields)

    def _write_outcome(self, message_id: str, key: str, result: ResultSlot | None, status: MessageStatus, *,
                       dead_letter: bool = False, note: str = "", reopenable: bool = False,
                       call: tuple[str, bool, bool] | None = None, **fields: Any) -> Outcome:
        update = self.records.prepared(message_id, status, note=note, **fields)
        circuit = None
        if call is not None:
            circuit = self.circuits.record_args(call[0], now=self.clock(), failed=call[1], probe=call[2])
        values, event = self.ledger.finish(key, update, reopenable=reopenable, dead_letter=dead_letter,
                                           result=result, circuit=circuit)
        if call is not None and event == "closed":
            log.warning("circuit of %s closed: %d probes went through", call[0], self.settings.circuit_probes,
                        extra=logs.fields(gateway=call[0]))
        elif call is not None and event == "opened":
            log.warning("circuit of %s opened: a slow call", call[0], extra=logs.fields(gateway=call[0]))
        return Outcome(self.records.result_from_fields(values), stored=result is not None)

    def reject(self, record_id: str, task_id: str, kwargs: dict, code: str, reason: str) -> dict:
        """A submission refused before any gateway call. Never overwrite another submission's record:
        if `record_id` belongs to a different task (same key, earlier producer), use the task id."""
        existing = self.records.get(record_id)
        if existing and existing.get("task_id") not in (None, task_id):
            record_id = task_id
        key = kwargs.get("idempotency_key")
        usable = isinstance(key, str) and len(key) <= MAX_IDEMPOTENCY_KEY_CHARS    # an oversized one is not kept
        self.records.update(record_id, MessageStatus.FAILED, error=_error(code, reason), task_id=task_id,
                            attempts=0,
                            idempotency_key=key if usable else task_id)
        return self._recorded_result(record_id)

    def _recorded_result(self, message_id: str) -> dict[str, Any]:
        result = self.records.result(message_id)
        if result is None:  # expired or deleted by hand: say so rather than invent an outcome
            return {"message_id": message_id, "status": None, "gateway": None, "gateway_message_id": None,
                    "attempts": None, "idempotency_key": None, "segments": None,
                    "error": _error("record_missing", "the ledger says this key is done but its record is gone")}
        return result


def _error(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}


def _code(error: BaseException) -> str:
    """The error code a record shows: the exception tree's, or `store_unavailable` for our Redis."""
    return getattr(error, "code", "store_unavailable")


def _with_skips(note: str, skipped: list[str]) -> str:
    if not skipped:
        return note
    return (note + "; " if note else "") + "skipped " + "; ".join(skipped)
