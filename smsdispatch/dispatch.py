"""The send path, without Celery: validate → claim the key → (reconcile) → send → record.

`Dispatcher.send` is called by the thin task in tasks.py with the raw kwargs and the task id, and
answers with an `Outcome`: either a final result (the task returns it) or a delay after which the
task must run again. Every decision is recorded, so "what happened to message X?" has an answer.

Identity: a message sent with an explicit idempotency key has the id uuid5(key), so every producer of
that key gets the same message id and the same result; without a key, the key and the message id are
the Celery task id, so a redelivered task message is recognised as the same message.

What happens on each kind of error (errors.py):

    PermanentError                → failed, after exactly one gateway call
    TransientError                → retried with backoff; after MAX_ATTEMPTS: failed, retries_exhausted,
                                    and the id pushed on the dead-letter list
    AmbiguousError (may be sent)  → gateway can_lookup: retried, and the next run asks the gateway
                                    first (reconcile); can_dedupe: repeated with the same reference;
                                    otherwise: unknown, never resent
    HTTP 500/502 (maybe_sent)     → on a can_lookup gateway, looked up before it is resent;
                                    elsewhere retried like any TransientError
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable

import redis

from .config import Settings
from .errors import AmbiguousError, GatewayError, PermanentError, TransientError, ValidationError
from .gateways import Gateways
from .gateways.base import Gateway, OutboundSms
from .keys import Keys
from .ledger import Claim, ClaimResult, Ledger, fingerprint
from .message import SendRequest, parse_send
from .phone import mask
from .records import MessageStatus, Records
from .retry import compute_backoff

log = logging.getLogger("smsdispatch.dispatch")

#: Namespace of message ids derived from idempotency keys (fixed forever: ids must stay stable).
MESSAGE_ID_NAMESPACE = uuid.UUID("6f1c2a52-3b0e-4d7e-9a41-5c0de5d15a7c")

BALANCE_CACHE_SECONDS = 5.0

#: A duplicate that finds the key claimed looks again this often (or when the lease ends, if sooner).
BUSY_POLL = 2.0


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


@dataclass(frozen=True)
class _Job:
    """One execution's view of a message: what to send, through which gateway, under which claim."""
    message_id: str
    key: str
    request: SendRequest
    gateway: Gateway
    sms: OutboundSms
    claim: ClaimResult


class Dispatcher:
    def __init__(self, settings: Settings, client: redis.Redis, *, gateways: Gateways | None = None,
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None) -> None:
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self.records = Records(client, self.keys, ttl=settings.record_ttl, queued_grace=settings.queued_grace,
                               active_grace=settings.active_grace)
        self.ledger = Ledger(client, self.keys, lease=settings.claim_lease, ttl=settings.idempotency_ttl)
        self.gateways = gateways or Gateways(settings, client, self.keys)
        self.clock = clock
        self.rng = rng or random.Random()
        self._balances: dict[str, tuple[float | None, float]] = {}

    # --- producer side ------------------------------------------------------------------------

    def record_queued(self, kwargs: dict[str, Any], *, task_id: str, not_before: float | None = None) -> str:
        """Before publishing: a `queued` record holding the payload, so nothing can vanish unseen.
        `not_before`: the ETA it is published with (the sweeper must not send it earlier)."""
        key = kwargs.get("idempotency_key")
        message_id = message_id_for(key, task_id)
        fields = {"task_id": task_id, "payload": kwargs,
                  "idempotency_key": key if isinstance(key, str) and key else task_id}
        if not_before:
            fields["not_before"] = not_before
        self.records.create(message_id, fields, not_before=not_before)
        return message_id

    # --- worker side --------------------------------------------------------------------------

    def prepare(self, kwargs: dict[str, Any], message_id: str) -> tuple[SendRequest, Gateway, OutboundSms, str]:
        """Validate one message and pick its gateway: (request, gateway, outbound sms, fingerprint).
        Raises ValidationError (bad input, unknown or unconfigured gateway, bad gateway options)."""
        request = parse_send(kwargs, default_region=self.settings.default_region)
        gateway = self.gateways.get(request.gateway or self.settings.route(request.to))
        options = gateway.validate_options(request.options or {}, text=request.text)
        callback = request.callback_url or self.settings.callback_url(gateway.name)
        sms = OutboundSms(message_id, request.to, request.text or "", request.sender, callback, options or None)
        fp = fingerprint({"to": request.to, "text": request.text, "sender": request.sender,
                          "gateway": request.gateway, "options": options or None})
        return request, gateway, sms, fp

    def balance_refusal(self, gateway: str) -> str | None:
        """With BALANCE_GUARD: why `gateway` must not be called now (its last polled balance is
        below its threshold), else None. Read from Redis at most every few seconds per process."""
        threshold = self.settings.balance_thresholds.get(gateway)
        if not self.settings.balance_guard or threshold is None:
            return None
        cached = self._balances.get(gateway)
        if cached is None or time.monotonic() - cached[1] > BALANCE_CACHE_SECONDS:
            amount = self.records.redis.hget(self.keys.balance(gateway), "amount")
            cached = self._balances[gateway] = (float(amount) if amount is not None else None, time.monotonic())
        amount = cached[0]
        if amount is not None and amount < threshold:
            return (f"{gateway}'s last known balance {amount:g} is below its threshold {threshold:g} "
                    f"(SMSDISPATCH_BALANCE_GUARD); not sent")
        return None

    def send(self, kwargs: dict[str, Any], *, task_id: str) -> Outcome:
        raw_key = kwargs.get("idempotency_key")
        message_id = message_id_for(raw_key, task_id)
        key = ledger_key_for(raw_key, task_id)
        try:
            request, gateway, sms, fp = self.prepare(kwargs, message_id)
        except ValidationError as e:
            log.info("message %s rejected: %s", message_id, e)
            return Outcome(self.reject(message_id, task_id, kwargs, "validation", str(e)))

        refusal = self.balance_refusal(gateway.name)
        if refusal:
            return Outcome(self.reject(message_id, task_id, kwargs, "insufficient_balance", refusal))
        claim = self.ledger.claim(key, fp=fp, message_id=message_id, now=self.clock(), submission=task_id)
        if claim.answer is Claim.CONFLICT:
            reason = (f"idempotency key already used by message {claim.message_id} with a different "
                      f"payload; nothing sent")
            return Outcome(self.reject(task_id, task_id, kwargs, "idempotency_conflict", reason))
        if claim.answer is Claim.DONE:
            return Outcome(self._recorded_result(claim.message_id))
        if claim.answer is Claim.BUSY:
            # Another execution holds the claim (a duplicate delivery): look again soon; by the end
            # of its lease it has either recorded an outcome or died (then we reconcile).
            return Outcome(retry_in=min(BUSY_POLL, max(0.0, claim.lease_until - self.clock()) + 0.1))

        job = _Job(message_id, key, request, gateway, sms, claim)
        if claim.answer is Claim.REOPENED:
            self.records.reopen(message_id, note="resubmitted after retries_exhausted: trying again")
        if claim.answer is Claim.RECONCILE:
            outcome = self._reconcile(job)
            if outcome is not None:
                return outcome
        return self._attempt(job, task_id)

    # --- steps --------------------------------------------------------------------------------

    def _reconcile(self, job: _Job) -> Outcome | None:
        """An earlier call may have reached the gateway. Ask it; None means "not there: send"."""
        gw = job.gateway
        if not gw.can_lookup and gw.can_dedupe:
            self.records.update(job.message_id, MessageStatus.SENDING,
                                note=f"{gw.name} dedupes repeated calls: sending again with the same reference")
            return None
        if not gw.can_lookup:
            return self._finish(job, MessageStatus.UNKNOWN, error=_error(
                "unknown", f"an earlier call to {gw.name} may have been accepted (worker stopped or no "
                           f"answer) and {gw.name} cannot look messages up; not resent to avoid a duplicate"))
        lookups = self.records.increment(job.message_id, "lookups")
        try:
            found = gw.lookup(job.sms, since=job.claim.first_claimed_at)
        except (TransientError, AmbiguousError) as e:
            if lookups >= self.settings.max_attempts:
                return self._finish(job, MessageStatus.UNKNOWN, error=_error(
                    "unknown", f"may have been sent; {lookups} lookups at {gw.name} failed, last: {e}"))
            self.ledger.release(job.key, job.claim.owner, ambiguous=True)
            delay = self.backoff(lookups, e)
            self.records.update(job.message_id, MessageStatus.RETRYING, error=_error(e.code, str(e)),
                                note=f"lookup at {gw.name} failed; again in {delay:.1f}s")
            return Outcome(retry_in=delay)
        except PermanentError as e:
            return self._finish(job, MessageStatus.UNKNOWN, error=_error(
                "unknown", f"may have been sent; cannot check at {gw.name}: {e}"))
        if found.found:
            log.info("message %s reconciled: %s had accepted it", job.message_id, gw.name)
            status = found.status if found.status in (MessageStatus.DELIVERED, MessageStatus.FAILED) \
                else MessageStatus.ACCEPTED
            return self._finish(job, status, gateway_message_id=found.gateway_message_id, error=None,
                                note=f"reconciled: found at {gw.name}, not resent")
        self.records.update(job.message_id, MessageStatus.SENDING,
                            note=f"reconciled: {gw.name} has no such message; sending")
        return None

    def _attempt(self, job: _Job, task_id: str) -> Outcome:
        gw, mid = job.gateway, job.message_id
        record = self.records.get(mid) or {}
        if int(record.get("attempts") or 0) >= self.settings.max_attempts:
            return self._exhausted(job, record.get("error"))
        attempt = self.records.increment(mid, "attempts")
        self.records.update(mid, MessageStatus.SENDING, note=f"attempt {attempt} via {gw.name}",
                            to=job.request.to, text=job.request.text, gateway=gw.name,
                            requested_gateway=job.request.gateway, options=job.request.options,
                            sender=job.request.sender, segments=job.request.segments,
                            idempotency_key=job.key.split(":", 1)[1], task_id=task_id,
                            callback_url=job.request.callback_url, metadata=job.request.metadata)
        try:
            accepted = gw.send(job.sms)
        except PermanentError as e:
            log.info("message %s to %s failed at %s: %s", mid, mask(job.request.to), gw.name, e)
            return self._finish(job, MessageStatus.FAILED, error=_error(e.code, str(e)))
        except (TransientError, AmbiguousError) as e:
            return self._after_failed_call(job, attempt, e)
        except Exception as e:  # a bug or an unexpected library error: it may have been sent
            log.exception("message %s: unexpected error from %s", mid, gw.name)
            return self._after_failed_call(job, attempt, AmbiguousError(f"unexpected: {e!r}"[:300],
                                                                        gateway=gw.name))
        log.info("message %s to %s accepted by %s as %s", mid, mask(job.request.to), gw.name,
                 accepted.gateway_message_id)
        return self._finish(job, MessageStatus.ACCEPTED, gateway_message_id=accepted.gateway_message_id,
                            error=None)

    def _after_failed_call(self, job: _Job, attempt: int, e: GatewayError) -> Outcome:
        gw = job.gateway
        maybe_sent = isinstance(e, AmbiguousError) or getattr(e, "maybe_sent", False)
        if maybe_sent and not isinstance(e, AmbiguousError) and not gw.can_lookup:
            maybe_sent = False   # 500/502 elsewhere: retried like any transient error (documented risk)
        if maybe_sent and gw.can_dedupe:
            maybe_sent = False   # the repeat carries the same idempotency reference: the gateway dedupes
        error = _error(e.code, str(e))
        if maybe_sent and not gw.can_lookup:
            return self._finish(job, MessageStatus.UNKNOWN, error=_error(
                "unknown", f"{e}; {gw.name} may have accepted it and cannot look messages up: not resent"))
        if attempt >= self.settings.max_attempts and not maybe_sent:
            return self._exhausted(job, error)
        # With maybe_sent the next run reconciles first, and only then sends or gives up.
        self.ledger.release(job.key, job.claim.owner, ambiguous=maybe_sent)
        delay = self.backoff(attempt, e)
        log.info("message %s: %s on attempt %d; retry in %.1fs", job.message_id, e.code, attempt, delay)
        self.records.update(job.message_id, MessageStatus.RETRYING, error=error,
                            note=f"attempt {attempt} failed; retry in {delay:.1f}s"
                                 + ("; will check the gateway first" if maybe_sent else ""))
        return Outcome(retry_in=delay)

    def _exhausted(self, job: _Job, last_error: dict | None) -> Outcome:
        detail = f" (last: {last_error['message']})" if last_error else ""
        return self._finish(job, MessageStatus.FAILED, dead_letter=True, reopenable=True, error=_error(
            "retries_exhausted", f"{self.settings.max_attempts} attempts failed{detail}"))

    def backoff(self, attempt: int, e: GatewayError) -> float:
        s = self.settings
        return compute_backoff(attempt, base=s.backoff_base, cap=s.backoff_max, jitter=s.backoff_jitter,
                               retry_after=getattr(e, "retry_after", None), rng=self.rng)

    # --- recording ----------------------------------------------------------------------------

    def _finish(self, job: _Job, status: MessageStatus, *, dead_letter: bool = False, note: str = "",
                reopenable: bool = False, **fields: Any) -> Outcome:
        """The terminal write: record and ledger change together, in one transaction."""
        pipe = self.records.redis.pipeline(transaction=True)
        self.records.update(job.message_id, status, note=note, pipe=pipe, **fields)
        self.ledger.complete(job.key, pipe=pipe, reopenable=reopenable)
        if dead_letter:
            self.records.push_dead_letter(job.message_id, pipe=pipe)
        pipe.execute()
        return Outcome(self._recorded_result(job.message_id))

    def reject(self, record_id: str, task_id: str, kwargs: dict, code: str, reason: str) -> dict:
        """A submission refused before any gateway call. Never overwrite another submission's record:
        if `record_id` belongs to a different task (same key, earlier producer), use the task id."""
        existing = self.records.get(record_id)
        if existing and existing.get("task_id") not in (None, task_id):
            record_id = task_id
        key = kwargs.get("idempotency_key")
        self.records.update(record_id, MessageStatus.FAILED, error=_error(code, reason), task_id=task_id,
                            attempts=0,
                            idempotency_key=key if isinstance(key, str) else task_id)
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
