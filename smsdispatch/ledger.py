"""The idempotency ledger: one Redis hash per key, claimed atomically before any gateway call.

Entry fields: ``message_id``, ``fp`` (fingerprint of what would be sent), ``state``, ``owner`` (the
execution holding the claim), ``lease_until`` and ``first_claimed_at`` (ms since the epoch).

States and what `claim()` answers when it finds them:

    (absent)   → claimed, answer CLAIMED
               → DONE, when the message's record is settled (accepted, delivered, failed, unknown,
                 expired, after an attempt): the entry expired, the record wins, nothing is resent;
                 but a provably unsent `failed` asked by another submission is claimed (a replay)
    pending    → claimed, answer CLAIMED          a transient error proved nothing was sent
    claimed    → BUSY while the lease runs        another execution is talking to the gateway
               → re-claimed, answer RECONCILE     lease over: its worker died mid-call, maybe after sending
    ambiguous  → re-claimed, answer RECONCILE     the last call may have been accepted (read timeout)
    done       → DONE                             the outcome is recorded; never call the gateway again
               → re-claimed, answer REOPENED      only if it was marked `reopenable` (retries exhausted:
                                                  provably not sent) and a *new submission* asks
    any, other fingerprint → CONFLICT

A submission is one request to send: the task id of a single send (its Celery retries keep it), or
the id of one send_batch call. Re-submitting a batch thus retries what ran out of attempts, while a
redelivered task never does.

The lease is longer than the longest possible in-flight call (config.py enforces it), so an expired
lease means the holder is gone. RECONCILE tells the caller to ask the gateway whether the message got
through before sending again (dispatch.py).

A single send costs two round trips here, each one script that carries the record's write with it
(lua/lib/update_record.lua): `begin` (the claim; on a first attempt the `sending` update; the record and
circuits read back) and `finish` (the outcome, `done`, and the task's result for Celery).

Each step is a script in smsdispatch/lua/ (ledger_*.lua; the claim itself is lua/lib/claim.lua), whose
header lists its KEYS and ARGV.

Claims that survive a failover (`Durability`, SMSDISPATCH_CLAIM_REPLICAS). Redis replicates
asynchronously: a primary that dies right after a claim may not have passed it on, the promoted
replica has no claim, and the task message (still in the queue there, or restored) claims and sends
again. With CLAIM_REPLICAS = n > 0, `begin` and `claim_many` send Redis's ``WAIT n timeout`` in the
same pipeline as the claim script, on the same connection (WAIT counts the replicas that have every
write *this connection* made, the claim included): no extra round trip, but the answer comes once the
replicas acknowledged it, or after CLAIM_REPLICA_TIMEOUT. A claim taken (claimed, reopened, reconcile)
that fewer replicas acknowledged comes back with ``durable=False``, and the caller does not call the
gateway: it gives the claim back and runs the message again later (dispatch.py, batch.py). WAITAOF
(Redis 7.2+: the claim also fsynced to the AOF) is not used: the Redis this is tested with (7.0) has
no WAITAOF, and replication is what a failover needs.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, replace
from enum import Enum

import redis
from redis.typing import EncodableT

from . import scripts
from .celery_results import ResultSlot
from .keys import Keys
from .records import RecordUpdate
from .redisclient import RawHash, text


class Claim(str, Enum):
    CLAIMED = "claimed"
    REOPENED = "reopened"
    RECONCILE = "reconcile"
    BUSY = "busy"
    DONE = "done"
    CONFLICT = "conflict"


@dataclass(frozen=True)
class ClaimResult:
    answer: Claim
    message_id: str
    owner: str
    lease_until: float = 0.0        # BUSY: when the other holder's lease ends (s since the epoch)
    first_claimed_at: float = 0.0   # CLAIMED / RECONCILE: when the first send of this key began
    started: bool = False           # the claim also wrote the record's `sending` update (begin)
    #: A claim taken (CLAIMED, REOPENED, RECONCILE) reached CLAIM_REPLICAS replicas in time (always
    #: True when none are asked for). False: no gateway call may follow, a failover could lose it.
    durable: bool = True
    replicas_acked: int | None = None   # what WAIT answered (None: not asked)

    @property
    def taken(self) -> bool:
        """This execution holds the claim: the gateway may be called (if durable)."""
        return self.answer in (Claim.CLAIMED, Claim.REOPENED, Claim.RECONCILE)


@dataclass(frozen=True)
class Begun:
    """What `Ledger.begin` found: the claim, the record's fields read (raw, as HGETALL would give
    them; empty when there is no record) and the circuits' open_until."""
    claim: ClaimResult
    record: RawHash
    open_until: list[bytes | None]


def fingerprint(payload: dict) -> str:
    """A stable hash of what would be sent, to tell a duplicate from a different message."""
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Durability:
    """How many replicas must hold a claim before its gateway call (CLAIM_REPLICAS; 0: not asked), and
    how long a claim waits for them (CLAIM_REPLICA_TIMEOUT, seconds)."""
    replicas: int = 0
    timeout: float = 0.5

    def ask(self, pipe: redis.client.Pipeline) -> None:
        """Queue WAIT after the claim, in its pipeline: its answer is the number of replicas that
        acknowledged every write of the connection so far."""
        pipe.execute_command("WAIT", self.replicas, max(1, round(self.timeout * 1000)))

    def judge(self, claim: ClaimResult, acked: object) -> ClaimResult:
        count = int(acked)  # type: ignore[call-overload]   # WAIT answers an integer
        return replace(claim, durable=not claim.taken or count >= self.replicas, replicas_acked=count)


class Ledger:
    def __init__(self, client: redis.Redis, keys: Keys, *, lease: float, ttl: int,
                 durability: Durability | None = None) -> None:
        self.redis = client
        self.keys = keys
        self.lease_ms = int(lease * 1000)
        self.ttl = ttl
        self.durability = durability or Durability()
        self._claim = scripts.register(client, "ledger_claim")
        self._begin = scripts.register(client, "ledger_begin")
        self._finish = scripts.register(client, "ledger_finish")
        self._claim_many = scripts.register(client, "ledger_claim_many")
        self._finish_many = scripts.register(client, "ledger_finish_many")
        self._release = scripts.register(client, "ledger_release")
        self._force = scripts.register(client, "ledger_force_reopenable")

    def claim(self, key: str, *, fp: str, message_id: str, now: float, submission: str = "",
              pipe: redis.client.Pipeline | None = None) -> ClaimResult | str:
        """Claim one key. With `pipe`, the call is queued and its owner returned; turn each raw
        pipeline reply into a ClaimResult with `parse`."""
        owner = uuid.uuid4().hex
        args: list[EncodableT] = [fp, message_id, owner, int(now * 1000), self.lease_ms, self.ttl, submission]
        if pipe is not None:
            self._claim(keys=[self.keys.idempotency(key), self.keys.message(message_id)], args=args, client=pipe)
            return owner
        return self.parse(self._claim(keys=[self.keys.idempotency(key), self.keys.message(message_id)], args=args),
                          owner)

    def begin(self, key: str, *, fp: str, message_id: str, now: float, submission: str, start: RecordUpdate,
              write_start: bool, circuits: list[str], fields: tuple[str, ...]) -> Begun:
        """The claim of one send, in one round trip (lua/ledger_begin.lua): with `write_start`, a first
        claim also writes `start` (the record's `sending` update, Records.prepared) unless the first
        circuit of `circuits` (that of the gateway the update names) is open; then the record's
        `fields` as they stand and the `open_until` of each circuit are read. With CLAIM_REPLICAS, the
        claim says whether it is durable (`Durability`)."""
        owner = uuid.uuid4().hex
        keys = [self.keys.idempotency(key), *start.keys, *circuits]
        args = [fp, message_id, owner, int(now * 1000), self.lease_ms, self.ttl, submission,
                "1" if write_start else "0", *start.args, *fields]
        reply, acked = self._with_wait(self._begin, keys, args)
        record: RawHash = {name.encode(): v for name, v in zip(fields, reply[4], strict=True) if v is not None}
        claim = self.parse(reply[:4], owner)
        return Begun(claim if acked is None else self.durability.judge(claim, acked), record, list(reply[5]))

    def _with_wait(self, script, keys: list, args: list) -> tuple[list, object]:
        """Run a claiming script; with CLAIM_REPLICAS, WAIT in the same pipeline (one round trip, on
        the claim's connection). Returns the script's reply and WAIT's (None when not asked)."""
        if not self.durability.replicas:
            return script(keys=keys, args=args), None
        pipe = self.redis.pipeline(transaction=False)
        script(keys=keys, args=args, client=pipe)
        self.durability.ask(pipe)
        reply, acked = pipe.execute()
        return reply, acked

    def claim_many(self, claims: list[tuple[str, str, str]], *, now: float, submission: str,
                   fields: tuple[str, ...] = ()) -> list[tuple[ClaimResult, dict[str, bytes | None]]]:
        """Claim many keys in one call: (key, fp, message_id) each. Returns each claim with its
        record's `fields` as they stand (raw; None where absent). With CLAIM_REPLICAS, one WAIT for
        them all: each claim taken is durable, or none is."""
        if not claims:
            return []
        owners = [uuid.uuid4().hex for _ in claims]
        keys: list[str] = []
        args: list = [int(now * 1000), self.lease_ms, self.ttl, submission, len(fields), *fields]
        for (key, fp, message_id), owner in zip(claims, owners, strict=True):
            keys += [self.keys.idempotency(key), self.keys.message(message_id)]
            args += [fp, message_id, owner]
        flat, acked = self._with_wait(self._claim_many, keys, args)
        width = 4 + len(fields)
        claimed = [self.parse(flat[i * width:i * width + 4], owner) for i, owner in enumerate(owners)]
        return [(claim if acked is None else self.durability.judge(claim, acked),
                 dict(zip(fields, flat[i * width + 4:(i + 1) * width], strict=True)))
                for i, claim in enumerate(claimed)]

    def finish_many(self, done: list[tuple[str, RecordUpdate]], update: RecordUpdate, *, reopenable: bool = False,
                    dead_letter: bool = False, pipe: redis.client.Pipeline | None = None) -> None:
        """Outcomes of many keys in one call (lua/ledger_finish_many.lua): `done` holds (key, that
        message's update) per message, `update` the part they share (Records.prepared_many)."""
        if not done:
            return
        keys: list[str] = [*update.keys, self.keys.dead_letters()]
        args: list = [int(reopenable), int(dead_letter), *update.args]
        for key, each in done:
            keys += [self.keys.idempotency(key), *each.keys]
            args += each.args
        self._finish_many(keys=keys, args=args, client=pipe or self.redis)

    @staticmethod
    def parse(reply: list, owner: str) -> ClaimResult:
        raw_answer, raw_mid, raw_t, fresh = reply
        answer, mid, t = Claim(text(raw_answer)), text(raw_mid), int(raw_t) / 1000
        if answer is Claim.BUSY:
            return ClaimResult(answer, mid, owner, lease_until=t)
        return ClaimResult(answer, mid, owner, first_claimed_at=t, started=int(fresh) == 2)

    def finish(self, key: str, update: RecordUpdate, *, reopenable: bool = False, dead_letter: bool = False,
               result: ResultSlot | None = None, circuit: tuple[list[str], list] | None = None
               ) -> tuple[list, str]:
        """The outcome in one atomic step (lua/ledger_finish.lua): the record's update (`update`:
        Records.prepared), the key marked done (`reopenable`: provably not sent, retries exhausted, so
        a new submission may try again), the id pushed on the dead letters, the task's result stored
        for Celery's result backend, and (`circuit`: Circuits.record_args) the gateway call counted for
        its circuit. Returns the record's raw RESULT_FIELDS (for Records.result_from_fields) and the
        circuit's event ("opened", "closed" or "")."""
        keys = [self.keys.idempotency(key), *update.keys, self.keys.dead_letters(), result.key if result else ""]
        args = [int(reopenable), int(dead_letter), result.ttl if result else 0, result.task_id if result else "",
                result.date_done if result else "", *update.args]
        if circuit is not None:
            keys += circuit[0]
            args += circuit[1]
        *values, event = self._finish(keys=keys, args=args)
        return values, text(event)

    def force_reopenable(self, key: str) -> bool:
        """An operator's forced replay (`dead-letters --replay --force`): let the next submission of
        this done key send again although it may have been sent. False if the entry is gone."""
        return bool(self._force(keys=[self.keys.idempotency(key)]))

    def release(self, key: str, owner: str, *, ambiguous: bool, pipe: redis.client.Pipeline | None = None) -> bool:
        """Give the claim up after a failed call: `pending` (nothing sent) or `ambiguous` (maybe sent)."""
        state = "ambiguous" if ambiguous else "pending"
        if pipe is not None:
            self._release(keys=[self.keys.idempotency(key)], args=[owner, state], client=pipe)
            return True
        return bool(self._release(keys=[self.keys.idempotency(key)], args=[owner, state]))

    def complete(self, key: str, pipe: redis.client.Pipeline | None = None, *, reopenable: bool = False) -> None:
        """Mark the key done: its outcome is recorded and this submission never calls a gateway for it
        again. `reopenable`: provably not sent (retries exhausted), so a new submission may try again."""
        (pipe if pipe is not None else self.redis).hset(
            self.keys.idempotency(key), mapping={"state": "done", "reopenable": int(reopenable)})

    def state(self, key: str) -> str | None:
        value = self.redis.hget(self.keys.idempotency(key), "state")
        return text(value) if value else None
