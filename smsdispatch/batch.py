"""Batches: many messages in one request, stored in Redis and worked off in chunks.

    producer   store(): the entries go to Redis as JSON chunks (BATCH_CHUNK_SIZE entries each) and a
               batch hash with zeroed counts; only the batch id travels in the task message.
    send_batch (task) publishes one send_chunk task per chunk.
    send_chunk (task) run_chunk(): validate each entry; claim every key in one pipeline; reconcile
               what may have been sent; group the rest into the gateway's native batch calls (one text
               per call where the gateway needs it, at most max_batch numbers); send the calls
               concurrently over the gateway's pooled session; record each message and count it once.
               After a failed call, each of its messages gets the same decision a single send would
               (policy.py): those that fail over are called again on their next gateway in the same run.

A chunk does a fixed handful of Redis round trips whatever its size, and its gateway calls are bounded
by the HTTP timeouts, so no task carries a large message or runs anywhere near the visibility timeout.

Every entry is its own message with its own idempotency key: the entry's `idempotency_key`, else
"<batch key>:<index>" (batch key = the batch's idempotency_key, else its batch_id). Re-submitting a
batch (same batch_id or idempotency_key) therefore sends only what was not sent: accepted entries are
answered from their records, and entries whose retries ran out get a fresh try.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import redis

from . import logs, scripts
from .dispatch import Dispatcher, Route, message_id_for
from .errors import (
    AmbiguousError,
    GatewayError,
    PermanentError,
    ValidationError,
)
from .gateways.base import Gateway, ItemResult, OutboundSms
from .ledger import Claim, ClaimResult
from .policy import Action, after_failure
from .records import MessageStatus, now, shared_fields
from .redisclient import members as member_texts
from .redisclient import text, text_fields
from .sendrequest import SendRequest, check_bounds, check_id

log = logging.getLogger("smsdispatch.batch")

MAX_BATCH_MESSAGES = 1_000_000
ENTRY_FIELDS = ("to", "text", "metadata")       # besides idempotency_key; anything else is refused
CALL_THREADS = 8
CALL_REF_NAMESPACE = uuid.UUID("0b7e4c1e-52a4-4c55-8a8b-6f3e2d6a9c11")

_OUTCOME_FIELD = {MessageStatus.ACCEPTED: "accepted", MessageStatus.DELIVERED: "accepted",
                  MessageStatus.FAILED: "failed", MessageStatus.UNKNOWN: "unknown"}


def batch_id_for(batch_id: object, idempotency_key: object, task_id: str) -> str:
    """The caller's batch id, else one derived from the batch's idempotency key, else the task id."""
    if isinstance(batch_id, str) and batch_id:
        return batch_id
    if isinstance(idempotency_key, str) and idempotency_key:
        return str(uuid.uuid5(CALL_REF_NAMESPACE, f"batch:{idempotency_key}"))
    return task_id


def entry_key(entry: Any, index: int, batch_key: str) -> str:
    """The idempotency key of a batch's entry number `index`: its own, else `<batch key>:<index>`."""
    own = entry.get("idempotency_key") if isinstance(entry, dict) else None
    return own if isinstance(own, str) and own else f"{batch_key}:{index}"


#: What a chunk reads of each record with its claim: the state of earlier attempts.
_STATE_FIELDS = ("attempts", "lookups", "call_ref", "gateway", "pinned_gateway", "maybe_sent")


@dataclass
class _Item:
    index: int
    message_id: str
    key: str
    request: SendRequest
    gateway: Gateway
    sms: OutboundSms
    fp: str
    routes: list[Route] = field(default_factory=list)
    claim: ClaimResult | None = None
    call_ref: str | None = None
    attempts: int = 0
    lookups: int = 0
    last_gateway: str | None = None     # the gateway of the latest attempt (a reconcile asks it)
    pinned: str | None = None           # possibly sent there: it must not move to another gateway
    maybe_sent: bool = False            # an earlier call may have reached a gateway (policy.py)

    @property
    def claimed(self) -> ClaimResult:
        """The claim `Batches._claim` made (every item past it has one)."""
        if self.claim is None:
            raise RuntimeError(f"message {self.message_id} used before it was claimed")
        return self.claim

    def use(self, route: Route) -> None:
        self.gateway, self.sms = route.gateway, route.sms

    def next_route(self) -> Route | None:
        """The gateway after the current one on this message's route (None if last, or if pinned)."""
        if self.pinned:
            return None
        names = [r.gateway.name for r in self.routes]
        at = names.index(self.gateway.name) if self.gateway.name in names else len(names)
        return self.routes[at + 1] if at + 1 < len(self.routes) else None


@dataclass
class _Call:
    """One native call of a chunk: its messages and its reference (`call_ref`, every message's), its
    rate-limit wait, whether it probes a half-open circuit, and (after it went through) whether it was
    slow enough to count as a failure."""
    items: list[_Item]
    ref: str
    wait: float = 0.0
    probe: bool = False
    slow: bool = False


@dataclass(frozen=True)
class CheckedBatch:
    """A batch that passed the producer's checks (`Batches.check`): its entries as JSON chunks."""
    batch_id: str
    chunks: tuple[str, ...]
    total: int
    chunk_size: int
    gateway: str | None
    sender: str | None
    idempotency_key: str | None
    submission: str


@dataclass
class ChunkOutcome:
    retry_in: float | None = None                   # some messages need another run
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))


class Batches:
    def __init__(self, dispatcher: Dispatcher) -> None:
        self.d = dispatcher
        self.settings = dispatcher.settings
        self.redis = dispatcher.records.redis
        self.keys = dispatcher.keys
        self._count = scripts.register(self.redis, "batch_count")   # each outcome counted once

    # --- producer side ------------------------------------------------------------------------

    def store(self, batch_id: str, messages: Any, *, gateway: str | None, sender: str | None,
              idempotency_key: str | None, submission: str) -> int:
        """Put a batch in Redis; returns its number of chunks. Raises ValidationError for a batch that
        is not a list of 1..MAX_BATCH_MESSAGES entries (entries themselves are checked one by one later)."""
        return self.write(self.check(batch_id, messages, gateway=gateway, sender=sender,
                                     idempotency_key=idempotency_key, submission=submission))

    def check(self, batch_id: str, messages: Any, *, gateway: str | None, sender: str | None,
              idempotency_key: str | None, submission: str) -> CheckedBatch:
        """`store`'s checks without the write: raises ValidationError as `store` does, and returns the
        batch cut into chunks, for `write` (now, or once a database transaction commits)."""
        if not isinstance(messages, list) or not messages:
            raise ValidationError("messages: must be a non-empty list of {to, text, idempotency_key?, metadata?}")
        check_id("batch_id", batch_id)
        check_id("task_id", submission)
        check_bounds({"idempotency_key": idempotency_key, "sender": sender, "gateway": gateway})
        limit = min(MAX_BATCH_MESSAGES, self.settings.max_batch_messages)
        if len(messages) > limit:
            raise ValidationError(f"messages: at most {limit:,} per batch (SMSDISPATCH_MAX_BATCH_MESSAGES), "
                                  f"got {len(messages):,}")
        size = self.settings.batch_chunk_size
        try:
            blobs = [json.dumps(messages[i:i + size], ensure_ascii=False) for i in range(0, len(messages), size)]
            total = sum(len(blob.encode("utf-8")) for blob in blobs)
        except (TypeError, ValueError, RecursionError) as e:      # UnicodeEncodeError: a lone surrogate
            raise ValidationError(f"messages: not plain JSON text ({str(e)[:120]})") from None
        if total > self.settings.max_batch_bytes:
            raise ValidationError(f"messages: at most {self.settings.max_batch_bytes:,} bytes of JSON per batch "
                                  f"(SMSDISPATCH_MAX_BATCH_BYTES), got {total:,}")
        for n, entry in enumerate(messages):     # sizes only: each entry is validated when its chunk runs
            if isinstance(entry, dict):
                try:
                    check_bounds(entry, max_text_chars=self.settings.max_text_chars)
                except ValidationError as e:
                    raise ValidationError(f"messages[{n}].{e}") from None
        return CheckedBatch(batch_id, tuple(blobs), len(messages), size, gateway, sender, idempotency_key,
                            submission)

    def write(self, batch: CheckedBatch) -> int:
        """Write a checked batch to Redis (its chunks and a batch hash with zeroed counts); returns its
        number of chunks."""
        at = now()
        key, chunks = self.keys.batch(batch.batch_id), self.keys.batch_chunks(batch.batch_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(chunks)
        for i in range(0, len(batch.chunks), 50):
            pipe.rpush(chunks, *batch.chunks[i:i + 50])
        pipe.delete(key)
        pipe.hset(key, mapping={
            "batch_id": batch.batch_id, "total": batch.total, "chunks": len(batch.chunks),
            "chunk_size": batch.chunk_size, "gateway": batch.gateway or "", "sender": batch.sender or "",
            "idempotency_key": batch.idempotency_key or "", "submission": batch.submission, "status": "queued",
            "accepted": 0, "failed": 0, "unknown": 0, "created_at": at})
        pipe.zadd(self.keys.batches(), {batch.batch_id: at})       # the status page's list, newest last
        if self.settings.record_ttl:
            pipe.expire(key, self.settings.record_ttl)
            pipe.expire(chunks, self.settings.record_ttl)
            pipe.zremrangebyscore(self.keys.batches(), "-inf", f"({at - self.settings.record_ttl}")
            pipe.expire(self.keys.batches(), self.settings.record_ttl)
        pipe.execute()
        return len(batch.chunks)

    def get(self, batch_id: str) -> dict[str, Any] | None:
        return _batch(self.redis.hgetall(self.keys.batch(batch_id)))

    def recent(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest batches (at most `limit`), newest first, each as `get` gives it; one that has
        expired since it was listed is left out."""
        ids = member_texts(self.redis.zrevrange(self.keys.batches(), 0, limit - 1))
        pipe = self.redis.pipeline(transaction=False)
        for batch_id in ids:
            pipe.hgetall(self.keys.batch(batch_id))
        return [b for b in (_batch(raw) for raw in (pipe.execute() if ids else [])) if b is not None]

    def entries(self, batch_id: str, start: int, count: int) -> list[tuple[int, str, Any]]:
        """Entries `start`.. (at most `count`) of a stored batch as (index, message id, entry), read
        from its chunks; the message ids are those `run_chunk` gives them. Empty when the batch is gone."""
        meta = self.redis.hmget(self.keys.batch(batch_id), "chunk_size", "idempotency_key")
        if meta[0] is None or count <= 0 or start < 0:
            return []
        size, batch_key = int(meta[0]), (text(meta[1]) if meta[1] else "") or batch_id
        first, last = start // size, (start + count - 1) // size
        blobs = self.redis.lrange(self.keys.batch_chunks(batch_id), first, last)
        out = []
        for n, blob in enumerate(blobs, start=first):
            for offset, entry in enumerate(json.loads(blob)):
                index = n * size + offset
                if start <= index < start + count:
                    out.append((index, entry_message_id(entry, index, batch_key), entry))
        return out

    # --- worker side --------------------------------------------------------------------------

    def run_chunk(self, batch_id: str, index: int, *, submission: str, poisoned: int = 0) -> ChunkOutcome:
        """Work off one chunk. `poisoned`: its task was handed out this many times without finishing
        (MAX_DELIVERIES passed): every message of it not yet settled ends `failed` (poison_message) and
        is dead-lettered, without a gateway call."""
        meta = text_fields(self.redis.hgetall(self.keys.batch(batch_id)))
        blob = self.redis.lindex(self.keys.batch_chunks(batch_id), index)
        if not meta or blob is None:
            log.warning("batch %s chunk %s: not in Redis (expired?); nothing to do", batch_id, index)
            return ChunkOutcome()
        if meta.get("submission") != submission:
            log.info("batch %s chunk %s: superseded by a newer submission", batch_id, index)
            return ChunkOutcome()
        out = ChunkOutcome()
        base = index * int(meta["chunk_size"])
        batch_key = meta.get("idempotency_key") or batch_id
        items = self._validate(json.loads(blob), base, batch_key, meta, batch_id, submission, out)
        to_send = self._claim(items, batch_id, submission, out)
        if any(not i.claimed.durable for i in items if i.claim):
            self._not_durable([i for i in items if i.claim and i.claim.taken], out)
            return out
        if poisoned:
            self._poison(to_send + [i for i in items if i.claim and i.claim.answer is Claim.RECONCILE], poisoned,
                         batch_id, submission, out)
            return out
        to_send += self._reconcile([i for i in items if i.claim and i.claim.answer is Claim.RECONCILE],
                                   batch_id, submission, out)
        pending = self._drop_exhausted(to_send, batch_id, submission, out)
        while pending:          # a round of calls; messages that fail over go round again, on their next gateway
            calls = self._admit(self._plan_calls(pending), out)
            try:
                self._mark_sending([c.items for c in calls], batch_id, submission)
            except BaseException:       # Redis failed: no call goes out; give back the slots _admit took
                for c in calls:
                    self.d.slots.release(c.items[0].gateway.name)
                raise
            pending = []
            if calls:
                with ThreadPoolExecutor(min(CALL_THREADS, len(calls))) as pool:
                    results = list(pool.map(self._call, calls))
                for call, result in zip(calls, results, strict=True):
                    pending += self._settle(call, result, batch_id, submission, out)
        return out

    def _validate(self, entries: list, base: int, batch_key: str, meta: dict, batch_id: str,
                  submission: str, out: ChunkOutcome) -> list[_Item]:
        items, rejected = [], []
        states: dict[str, bool] = {}

        def circuit_open(gateway: str) -> bool:       # asked once per gateway and chunk
            if gateway not in states:
                states[gateway] = self.d.circuits.state(gateway, now=self.d.clock()) == "open"
            return states[gateway]

        for offset, entry in enumerate(entries):
            n = base + offset
            key = entry_key(entry, n, batch_key)
            mid = message_id_for(key, "")
            try:
                request, routes, fp = self.prepare_entry(entry, meta, mid)
            except ValidationError as e:
                rejected.append((mid, key, str(e), "validation"))
                continue
            usable, skipped = self.d.available(routes)
            if not usable:
                rejected.append((mid, key, "; ".join(skipped), "insufficient_balance"))
                continue
            # the first gateway of the route whose circuit is not open (failover at chunk level)
            route = next((r for r in usable if not circuit_open(r.gateway.name)), usable[0])
            items.append(_Item(n, mid, f"key:{key}", request, route.gateway, route.sms, fp, usable))
        for mid, key, reason, code in rejected:
            result = self.d.reject(mid, submission, {"idempotency_key": key}, code, f"batch {batch_id} entry: {reason}")
            self._count_one(batch_id, submission, result["message_id"], MessageStatus.FAILED, out)
        return items

    def prepare_entry(self, entry: Any, meta: dict, message_id: str) -> tuple[SendRequest, list[Route], str]:
        """One entry as the message it stands for (Dispatcher.prepare), with the batch's gateway and
        sender (`meta`); raises ValidationError for an entry the worker records `failed`."""
        if not isinstance(entry, dict):
            raise ValidationError("entry: must be an object {to, text, idempotency_key?, metadata?}")
        kwargs = {k: v for k, v in entry.items() if k != "idempotency_key"}
        extra = sorted(set(kwargs) - set(ENTRY_FIELDS))
        if extra:
            raise ValidationError("; ".join(f"{k}: unexpected argument" for k in extra))
        kwargs.update({k: meta[k] for k in ("gateway", "sender") if meta.get(k)})
        return self.d.prepare(kwargs, message_id)

    def _claim(self, items: list[_Item], batch_id: str, submission: str, out: ChunkOutcome) -> list[_Item]:
        """Claim every item in one script, reading back what its record says of earlier attempts."""
        claimed = self.d.ledger.claim_many([(i.key, i.fp, i.message_id) for i in items], now=self.d.clock(),
                                           submission=submission, fields=_STATE_FIELDS)
        for item, (claim, state) in zip(items, claimed, strict=True):
            item.claim = claim
            item.attempts, item.lookups = int(state["attempts"] or 0), int(state["lookups"] or 0)
            item.call_ref = text(state["call_ref"]) if state["call_ref"] else None
            item.last_gateway = text(state["gateway"]) if state["gateway"] else None
            item.pinned = text(state["pinned_gateway"]) if state["pinned_gateway"] else None
            item.maybe_sent = bool(int(state["maybe_sent"] or 0)) or claim.answer is Claim.RECONCILE
        done = [i for i in items if i.claimed.answer is Claim.DONE]
        if done:
            pipe = self.redis.pipeline(transaction=False)
            for i in done:
                pipe.hget(self.keys.message(i.message_id), "status")
            for i, status in zip(done, pipe.execute(), strict=True):
                self._count_one(batch_id, submission, i.message_id,
                                MessageStatus(text(status)) if status else MessageStatus.UNKNOWN, out)
        for i in items:
            if i.claimed.answer is Claim.CONFLICT:
                reason = (f"batch {batch_id} entry {i.index}: idempotency key already used by message "
                          f"{i.claimed.message_id} with a different payload; nothing sent")
                result = self.d.reject(f"{batch_id}-{i.index}", submission, {}, "idempotency_conflict", reason)
                self._count_one(batch_id, submission, result["message_id"], MessageStatus.FAILED, out)
            elif i.claimed.answer is Claim.BUSY:
                out.retry_in = min(out.retry_in or 2.0, 2.0)       # someone else is sending it now
            elif i.claimed.answer is Claim.REOPENED:
                self.d.records.reopen(i.message_id, note="batch resubmitted after retries_exhausted")
                i.attempts = i.lookups = 0
        return [i for i in items if i.claimed.answer in (Claim.CLAIMED, Claim.REOPENED)]

    def _not_durable(self, items: list[_Item], out: ChunkOutcome) -> None:
        """The chunk's claims reached fewer than CLAIM_REPLICAS replicas in time (Dispatcher.not_durable):
        no gateway call; each claim is given back as taken (a reconcile stays to be done) and the chunk
        runs again in 1 to 3 s, without using an attempt."""
        durability = self.d.ledger.durability
        acked = items[0].claimed.replicas_acked if items else None
        delay = 1.0 + self.d.rng.uniform(0, 2)
        note = (f"claim not durable: {acked} of {durability.replicas} replicas acknowledged it within "
                f"{durability.timeout:g}s (SMSDISPATCH_CLAIM_REPLICAS); not sent, again in {delay:.1f}s")
        log.warning("%d messages of a batch chunk: %s", len(items), note)
        for ambiguous in (False, True):
            self._release([i for i in items if (i.claimed.answer is Claim.RECONCILE) is ambiguous],
                          ambiguous=ambiguous, note=note)
        out.retry_in = _sooner(out.retry_in, delay)

    def _stick(self, items: list[_Item], name_of, batch_id: str, submission: str, out: ChunkOutcome) -> list[_Item]:
        """Move each item to the gateway `name_of(item)` names (None: keep its choice); an item whose
        gateway is not configured any more cannot be checked there and ends `unknown`."""
        kept, lost = [], []
        for i in items:
            name = name_of(i)
            if name and name != i.gateway.name:
                route = self.d.route_for(i.request, i.message_id, i.routes, name)
                if route is None:
                    lost.append((i, MessageStatus.UNKNOWN, {"maybe_sent": 1, "error": _error(
                        "unknown", f"may have been accepted by {name}, which is not configured any more; "
                                   f"not resent")}))
                    continue
                i.use(route)
            kept.append(i)
        self._finish(batch_id, submission, out, lost)
        return kept

    def _reconcile(self, items: list[_Item], batch_id: str, submission: str, out: ChunkOutcome) -> list[_Item]:
        """Messages a dead worker or a lost answer may have sent: look them up (by call where the
        gateway can), repeat the call where it dedupes, otherwise end them `unknown`."""
        if not items:
            return []
        items = self._stick(items, lambda i: i.last_gateway, batch_id, submission, out)
        resend: list[_Item] = []
        groups: dict[tuple[str, str | None], list[_Item]] = defaultdict(list)
        for i in items:
            if i.gateway.can_lookup:
                groups[(i.gateway.name, i.call_ref)].append(i)
            elif i.gateway.can_dedupe:
                resend.append(i)
            else:
                self._finish(batch_id, submission, out, [(i, MessageStatus.UNKNOWN, {"maybe_sent": 1, "error": _error(
                    "unknown", f"an earlier call to {i.gateway.name} may have been accepted and it cannot "
                               f"look messages up; not resent to avoid a duplicate")})])
        for (_, call_ref), group in groups.items():
            gw = group[0].gateway
            try:
                found = gw.lookup_batch([i.sms for i in group], call_ref=call_ref,
                                        since=min(i.claimed.first_claimed_at for i in group))
            except GatewayError as e:
                self._lookup_failed(group, e, batch_id, submission, out)
                continue
            settled = []
            for i in group:
                hit = found.get(i.message_id)
                if hit is not None and hit.found:
                    settled.append((i, MessageStatus.ACCEPTED, {"gateway_message_id": hit.gateway_message_id,
                                                                "gateway": gw.name, "error": None}))
                else:
                    i.maybe_sent = False        # the gateway does not have it: provably unsent again
                    resend.append(i)
            self._finish(batch_id, submission, out, settled, note=f"reconciled: found at {gw.name}, not resent")
        return resend

    def _lookup_failed(self, group: list[_Item], e: GatewayError, batch_id: str, submission: str,
                       out: ChunkOutcome) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for i in group:
            pipe.hincrby(self.keys.message(i.message_id), "lookups", 1)
        counts = pipe.execute()
        give_up = [(i, MessageStatus.UNKNOWN, {"maybe_sent": 1, "error": _error(
            "unknown", f"may have been sent; {n} lookups at {i.gateway.name} failed, last: {e}")})
            for i, n in zip(group, counts, strict=True) if n >= self.settings.max_attempts or
            isinstance(e, PermanentError)]
        self._finish(batch_id, submission, out, give_up)
        gone = {id(g[0]) for g in give_up}
        again = [i for i in group if id(i) not in gone]
        self._release(again, ambiguous=True, error=e)
        if again:
            out.retry_in = _sooner(out.retry_in, self.d.backoff(max(counts), e))

    def _drop_exhausted(self, items: list[_Item], batch_id: str, submission: str, out: ChunkOutcome) -> list[_Item]:
        if not items:
            return []
        items = self._stick(items, lambda i: i.pinned, batch_id, submission, out)
        self._exhausted(batch_id, submission, out, [i for i in items if i.attempts >= self.settings.max_attempts],
                        f"{self.settings.max_attempts} attempts failed")
        return [i for i in items if i.attempts < self.settings.max_attempts]

    def _exhausted(self, batch_id: str, submission: str, out: ChunkOutcome, items: list[_Item], why: str,
                   code: str = "retries_exhausted") -> None:
        """Retries ran out: `failed` and dead-lettered; reopenable by a new submission only when provably
        unsent (policy.py)."""
        for maybe in (False, True):
            self._finish(batch_id, submission, out, [
                (i, MessageStatus.FAILED, {"maybe_sent": int(maybe), "error": _error(code, why)})
                for i in items if i.maybe_sent is maybe], dead_letter=True, reopenable=not maybe)

    def _poison(self, items: list[_Item], deliveries: int, batch_id: str, submission: str, out: ChunkOutcome) -> None:
        log.error("batch %s: a chunk task was handed out %d times without finishing; its %d unsettled messages are "
                  "dead-lettered as poison", batch_id, deliveries, len(items))
        self._exhausted(batch_id, submission, out, items, code="poison_message", why=(
            f"its chunk's task was handed out {deliveries} times and no worker finished it "
            f"(SMSDISPATCH_MAX_DELIVERIES={self.settings.max_deliveries}); not run again"))

    def _mark_sending(self, calls: list[list[_Item]], batch_id: str, submission: str) -> None:
        """Every message's `sending` update, in one script. What a call's messages write alike (its
        gateway and call_ref, the batch, the request's gateway, sender and options) is encoded once
        per distinct value; the rest (number, text, ...) per message."""
        updates, shared = [], []
        encoded: dict[tuple, str] = {}
        segments: dict[str | None, int | None] = {}
        for call in calls:
            for i in call:
                i.attempts += 1
                r = i.request
                alike = (i.gateway.name, i.call_ref, r.gateway, r.sender, _options_key(r.options))
                if alike not in encoded:
                    encoded[alike] = shared_fields({
                        "call_ref": i.call_ref, "gateway": i.gateway.name, "requested_gateway": r.gateway,
                        "options": r.options, "sender": r.sender, "task_id": submission, "batch_id": batch_id})
                if r.text not in segments:
                    segments[r.text] = r.segments
                updates.append((i.message_id, MessageStatus.SENDING, f"attempt {i.attempts} via {i.gateway.name}", {
                    "attempts": i.attempts, "maybe_sent": int(i.maybe_sent), "to": r.to, "text": r.text,
                    "segments": segments[r.text], "idempotency_key": i.key.split(":", 1)[1],
                    "metadata": r.metadata}))
                shared.append(encoded[alike])
        self.d.records.update_many(updates, shared=shared)

    def _plan_calls(self, items: list[_Item]) -> list[_Call]:
        """Group into native calls; a replayed call (same call_ref) keeps exactly its members."""
        calls: list[list[_Item]] = []
        by_gateway: dict[str, list[_Item]] = defaultdict(list)
        for i in items:
            by_gateway[i.gateway.name].append(i)
        for group in by_gateway.values():
            gw = group[0].gateway
            limit = self.d.call_limit(gw)
            if limit == 1:
                calls += [[i] for i in group]
                continue
            replays: dict[str, list[_Item]] = defaultdict(list)
            fresh: dict[tuple, list[_Item]] = defaultdict(list)
            for i in group:
                if i.call_ref and gw.can_dedupe:
                    replays[i.call_ref].append(i)
                else:
                    s = i.sms
                    fresh[(s.text if gw.batch_same_text else None, s.sender, s.callback_url,
                           json.dumps(s.options, sort_keys=True))].append(i)
            calls += [sorted(members, key=lambda i: i.message_id) for members in replays.values()]
            for members in fresh.values():
                calls += _split(sorted(members, key=lambda i: i.message_id), limit,
                                unique_numbers=gw.batch_same_text)
        planned = []
        for call in calls:
            ref = call[0].call_ref if (call[0].call_ref and call[0].gateway.can_dedupe) else str(
                uuid.uuid5(CALL_REF_NAMESPACE, "|".join(i.message_id for i in call)))
            for i in call:
                i.call_ref = ref
            planned.append(_Call(call, ref))
        return planned

    def _admit(self, calls: list[_Call], out: ChunkOutcome) -> list[_Call]:
        """The calls that may go now, each with its rate-limit wait. A call to a gateway whose circuit is
        open, or whose rate limit is used up for longer than a short wait, gives its claims back
        (nothing sent, no attempt counted) and the chunk runs again later."""
        admitted, deferred = [], []
        for call in calls:
            gw, t = call.items[0].gateway, self.d.clock()
            verdict = self.d.circuits.allow(gw.name, now=t)
            if not verdict.allowed:
                deferred.append((call, f"{gw.name}: circuit open",
                                 self.d.circuits.wait(verdict.open_until, now=t, cap=self.settings.backoff_max,
                                                      rng=self.d.rng)))
                continue
            if not self.d.slots.try_acquire(gw.name):       # released by _call
                deferred.append((call, f"{gw.name}: {self.d.slots.limit(gw.name)} calls in flight here "
                                       f"(GATEWAY_CONCURRENCY)", 0.5 + self.d.rng.uniform(0, 1)))
                continue
            permit = self.d.limiter.acquire(gw.name, len(call.items), now=t, max_wait=self.d.max_rate_wait)
            if not permit.granted:
                self.d.slots.release(gw.name)
                deferred.append((call, f"{gw.name}'s rate limit is used up",
                                 min(permit.wait, self.settings.backoff_max) + self.d.rng.uniform(0, 0.5)))
                continue
            call.wait, call.probe = permit.wait, verdict.probe
            admitted.append(call)
        for call, why, delay in deferred:
            self._release(call.items, ambiguous=False, note=f"{why}; again in {delay:.1f}s")
            out.retry_in = _sooner(out.retry_in, delay)
        return admitted

    def _call(self, call: _Call) -> list[ItemResult] | GatewayError | redis.RedisError:
        gw = call.items[0].gateway
        if call.wait > 0:
            time.sleep(call.wait)
        started = time.monotonic()
        try:
            if gw.max_batch == 1:
                accepted = gw.send(call.items[0].sms)
                results = [ItemResult(call.items[0].message_id, accepted.gateway_message_id)]
            else:
                results = gw.send_batch([i.sms for i in call.items], call_ref=call.ref)
        except (GatewayError, redis.RedisError) as e:   # a Redis error: our token store failed, nothing sent
            return e
        except Exception as e:  # a bug or an unexpected library error: the call may have gone out
            log.exception("batch call to %s failed unexpectedly", gw.name, extra=logs.fields(gateway=gw.name))
            return AmbiguousError(f"unexpected: {e!r}"[:300], gateway=gw.name)
        finally:
            self.d.slots.release(gw.name)              # taken by _admit
        call.slow = time.monotonic() - started > self.settings.circuit_slow_call
        return results

    def _settle(self, call: _Call, result: list[ItemResult] | GatewayError | redis.RedisError, batch_id: str,
                submission: str, out: ChunkOutcome) -> list[_Item]:
        """Record what a call did; returns the messages that fail over to their next gateway now."""
        gw = call.items[0].gateway
        if isinstance(result, list):
            self.d.circuits.record(gw.name, now=self.d.clock(), failed=call.slow, probe=call.probe)
            self._finish(batch_id, submission, out, [
                (i, MessageStatus.ACCEPTED, {"gateway_message_id": r.gateway_message_id, "gateway": gw.name,
                                             "error": None})
                if r.error is None else (i, MessageStatus.FAILED, {"error": _error(r.error.code, str(r.error))})
                for i, r in zip(call.items, result, strict=True)])
            return []
        e = result
        code = getattr(e, "code", "store_unavailable")
        # the same decision a single send gets (policy.py), message by message
        decided = [(i, after_failure(e, gw, attempts=i.attempts, max_attempts=self.settings.max_attempts,
                                     has_next=i.next_route() is not None, pinned=bool(i.pinned)))
                   for i in call.items]
        self.d.count_call(gw, e, decided[0][1], call.probe)       # health does not depend on the message
        by_action: dict[Action, list[tuple[_Item, Any]]] = defaultdict(list)
        for i, decision in decided:
            by_action[decision.action].append((i, decision))
        error = _error(code, str(e))
        self._finish(batch_id, submission, out, [(i, MessageStatus.FAILED, {"error": error, "maybe_sent": int(i.maybe_sent)})
                                                 for i, _ in by_action[Action.FAIL]])
        self._finish(batch_id, submission, out, [(i, MessageStatus.UNKNOWN, {"maybe_sent": 1, "error": _error(
            "unknown", f"{e}; {gw.name} may have accepted it and cannot look messages up: not resent")})
            for i, _ in by_action[Action.UNKNOWN]])
        for i, decision in by_action[Action.EXHAUSTED]:
            i.maybe_sent = i.maybe_sent or decision.maybe_sent
        self._exhausted(batch_id, submission, out, [i for i, _ in by_action[Action.EXHAUSTED]],
                        f"{self.settings.max_attempts} attempts failed (last: {e})")
        again = [(i, d) for action in (Action.RETRY, Action.REPEAT, Action.RECONCILE) for i, d in by_action[action]]
        for i, d in again:
            i.maybe_sent = i.maybe_sent or d.maybe_sent
        for ambiguous in (False, True):
            for pin in (False, True):
                self._release([i for i, d in again if (d.action is Action.RECONCILE) is ambiguous and d.pin is pin],
                              ambiguous=ambiguous, error=e, pin=gw.name if pin else None)
        if again:
            out.retry_in = _sooner(out.retry_in, self.d.backoff(max(i.attempts for i, _ in again), e))
        moved = []
        for i, _ in by_action[Action.FAILOVER]:
            log.info("batch %s message %s: %s did not send it (%s); failing over", batch_id, i.message_id, gw.name,
                     code, extra=logs.fields(i.message_id, gateway=gw.name, attempt=i.attempts, status="sending"))
            following = i.next_route()
            assert following is not None, "the policy fails over only where a next gateway exists"
            i.use(following)
            i.call_ref = None
            moved.append(i)
        return moved

    # --- recording ----------------------------------------------------------------------------

    def _release(self, items: list[_Item], *, ambiguous: bool, error: BaseException | None = None,
                 pin: str | None = None, note: str = "retry scheduled") -> None:
        if not items:
            return
        pipe = self.redis.pipeline(transaction=False)
        fields: dict[str, Any] = {"error": _error(getattr(error, "code", "store_unavailable"), str(error))} \
            if error else {}
        if pin:
            fields["pinned_gateway"] = pin
        note += "; will check the gateway first" if ambiguous else f"; stays on {pin}" if pin else ""
        for i in items:
            self.d.ledger.release(i.key, i.claimed.owner, ambiguous=ambiguous, pipe=pipe)
        self.d.records.update_many([(i.message_id, MessageStatus.RETRYING, note,
                                     {**fields, "maybe_sent": int(i.maybe_sent)}) for i in items], pipe=pipe)
        pipe.execute()

    def _finish(self, batch_id: str, submission: str, out: ChunkOutcome,
                settled: list[tuple[_Item, MessageStatus, dict]], *, note: str = "", dead_letter: bool = False,
                reopenable: bool = False) -> None:
        """Terminal writes for many messages at once: records, ledger and counts in one transaction."""
        if not settled:
            return
        pipe = self.redis.pipeline(transaction=True)
        common, values = self.d.records.prepared_many([(i.message_id, status, note, fields)
                                                       for i, status, fields in settled])
        self.d.ledger.finish_many([(i.key, v) for (i, _, _), v in zip(settled, values, strict=True)], common,
                                  reopenable=reopenable, dead_letter=dead_letter, pipe=pipe)
        self._count_many(batch_id, submission, [(i.message_id, status) for i, status, _ in settled], out, pipe=pipe)
        pipe.execute()

    def _count_one(self, batch_id: str, submission: str, message_id: str, status: MessageStatus,
                   out: ChunkOutcome, pipe=None) -> None:
        self._count_many(batch_id, submission, [(message_id, status)], out, pipe=pipe)

    def _count_many(self, batch_id: str, submission: str, outcomes: list[tuple[str, MessageStatus]],
                    out: ChunkOutcome, pipe=None) -> None:
        args: list[Any] = [now()]
        for message_id, status in outcomes:
            outcome = _OUTCOME_FIELD.get(status, "unknown")
            out.counts[outcome] += 1
            args += [message_id, outcome]
        self._count(keys=[self.keys.batch(batch_id), self.keys.batch_seen(batch_id, submission)],
                    args=args, client=pipe or self.redis)


def _batch(raw: Any) -> dict[str, Any] | None:
    """A batch's public view from its raw hash (None if there is none)."""
    if not raw:
        return None
    b = text_fields(raw)
    out: dict[str, Any] = {k: b.get(k) or None for k in ("batch_id", "status", "gateway", "idempotency_key")}
    for k in ("total", "accepted", "failed", "unknown", "chunks"):
        out[k] = int(b.get(k) or 0)
    out["pending"] = out["total"] - out["accepted"] - out["failed"] - out["unknown"]
    out["created_at"] = float(b["created_at"]) if b.get("created_at") else None
    out["finished_at"] = float(b["finished_at"]) if b.get("finished_at") else None
    return out


def entry_message_id(entry: Any, index: int, batch_key: str) -> str:
    """The message id `run_chunk` gives a batch's entry number `index`."""
    return message_id_for(entry_key(entry, index, batch_key), "")


def _split(items: list[_Item], size: int, *, unique_numbers: bool) -> list[list[_Item]]:
    """Calls of at most `size`; with unique_numbers a number appears once per call (the gateway
    answers per number, so two messages to one number in one call could not be told apart)."""
    calls: list[list[_Item]] = []
    numbers: list[set[str]] = []
    for i in items:
        for call, seen in zip(calls, numbers, strict=True):
            if len(call) < size and not (unique_numbers and i.sms.to in seen):
                call.append(i)
                seen.add(i.sms.to)
                break
        else:
            calls.append([i])
            numbers.append({i.sms.to})
    return calls


def _options_key(options: dict | None) -> str | None:
    """Gateway options as a key of equal values (None: none)."""
    return json.dumps(options, sort_keys=True) if options else None


def _sooner(a: float | None, b: float) -> float:
    return b if a is None else min(a, b)


def _error(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}
