"""Message records: one Redis hash per message plus a list of its status changes.

A record is the answer to "what happened to message X?": it outlives Celery's result backend
(which expires results after a day) and is written by the same code path that talks to gateways.
Every write takes an optional pipeline so a caller can group it with a ledger change atomically.
The scripts are smsdispatch/lua/records_*.lua; the update the ledger's scripts also carry out is
lua/lib/update_record.lua, and a record's result read back in a script lua/lib/record_result.lua.

Messages are also filed by the last NUMBER_INDEX_DIGITS digits of their number (`by_number`, for the
status page's search): a sorted set per four digits, written by the same script that writes the number
(the producer's `create`, a worker's `sending` update: lua/lib/index_number.lua), so it costs no round
trip, and trimmed to RECORD_TTL like the records it points to. The alternative, scanning every record's
`to`, reads the whole keyspace for one search.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from enum import Enum
from typing import Any

import redis
from redis.commands.core import Script

from . import scripts
from .keys import Keys
from .redisclient import RawHash, members, text

#: How many trailing digits of a number the index files a message under; a search needs at least these.
NUMBER_INDEX_DIGITS = 4
#: A search by number reads at most this many of the newest entries of its index, a page at a time.
NUMBER_SEARCH_SCAN = 2000
_SCAN_PAGE = 200
#: What a list of messages (a search's results) reads of each record.
LISTED_FIELDS = ("message_id", "status", "to", "payload", "gateway", "created_at", "updated_at", "batch_id",
                 "idempotency_key", "error")


class MessageStatus(str, Enum):
    QUEUED = "queued"          # published by a producer, not yet picked up
    SENDING = "sending"        # a worker holds the claim and is talking to the gateway
    RETRYING = "retrying"      # a transient error; a retry is scheduled
    ACCEPTED = "accepted"      # the gateway took it; delivery not yet known
    DELIVERED = "delivered"    # the gateway reported delivery
    FAILED = "failed"          # terminal: not sent, with a reason
    UNKNOWN = "unknown"        # terminal for us: it may or may not have been sent; a person must look
    EXPIRED = "expired"        # accepted, but no delivery report came within STATUS_EXPIRY

    @property
    def terminal(self) -> bool:
        return self in (MessageStatus.DELIVERED, MessageStatus.FAILED, MessageStatus.UNKNOWN,
                        MessageStatus.EXPIRED)


#: Fields returned to callers as the task result (the public contract of smsdispatch.send_sms).
#: lua/lib/record_result.lua names them too (with their types: INT_FIELDS, JSON_FIELDS below).
RESULT_FIELDS = ("message_id", "status", "gateway", "gateway_message_id", "attempts",
                 "idempotency_key", "segments", "error")


def now() -> float:
    return round(time.time(), 3)


@dataclass(frozen=True)
class RecordUpdate:
    """An update's KEYS and ARGV, for a script that calls update_record (lua/lib/update_record.lua).
    From `prepared`, one whole update: keys (record, history, gateway-id or '', number index or '',
    inflight, pending, metrics) and args (ttl, now, message id, status, history entry, fields JSON,
    pending). From `prepared_many`, the part many updates share (keys: inflight, pending, metrics; args:
    ttl, now) and each message's own part (keys: record, history, gateway-id or '', number index or '';
    args: the five from message id on)."""
    keys: list[str]
    args: list


@dataclass(frozen=True)
class RecordCreate:
    """A `create` prepared (Records.create_call), not yet run: its script, KEYS (without the queue key)
    and ARGV (the four before the message, then the fields). `run` carries it out: alone, or with a
    broker message the same script pushes onto `queue` after the record (the producer's one round trip,
    redis_transport.Channel._put)."""
    script: Script
    message_id: str
    keys: list[str]
    args: list
    fields: list[str]

    def run(self, client: redis.Redis | None = None, *, queue: str = "", message: str = "") -> bool:
        """True when the record was created, False when it existed already. With `queue`, `message` is
        pushed (LPUSH) there in the same script, whether or not the record existed."""
        return bool(self.script(keys=[*self.keys, queue], args=[*self.args, message, *self.fields], client=client))


class Records:
    def __init__(self, client: redis.Redis, keys: Keys, *, ttl: int = 0, queued_grace: float | None = None,
                 active_grace: float | None = None) -> None:
        """With the graces, messages not yet settled are indexed (sms:pending) with the time after
        which the sweeper should look at them: `queued_grace` after queueing, `active_grace` after
        the last attempt (sending/retrying)."""
        self.redis = client
        self.keys = keys
        self.ttl = ttl
        self.queued_grace, self.active_grace = queued_grace, active_grace
        self._create = scripts.register(client, "records_create")
        self._advance = scripts.register(client, "records_advance")
        self._update_many = scripts.register(client, "records_update_many")

    def create(self, message_id: str, fields: dict[str, Any], *, note: str = "", not_before: float | None = None,
               number: object = None) -> bool:
        """Write a new `queued` record; a no-op (False) when the message already has one. A message
        published with an ETA (`not_before`) is not due to the sweeper before its ETA + the grace.
        `number`: the number as the producer gave it, filed in the number index (not yet normalised:
        its last digits are the same)."""
        return self.create_call(message_id, fields, note=note, not_before=not_before, number=number).run()

    def create_call(self, message_id: str, fields: dict[str, Any], *, note: str = "",
                    not_before: float | None = None, number: object = None) -> RecordCreate:
        """`create`, prepared and not run (RecordCreate.run runs it, on its own or with a publish)."""
        at = now()
        fields = {"message_id": message_id, "status": MessageStatus.QUEUED.value,
                  "created_at": at, "updated_at": at, "attempts": 0, **fields}
        entry = _entry(MessageStatus.QUEUED, at, note)
        flat = [x for kv in _encode(fields).items() for x in kv]
        keys = [self.keys.message(message_id), self.keys.history(message_id), self.keys.pending(),
                self._number_index(number), self.keys.metrics()]
        deadline = max(at, not_before or 0) + self.queued_grace if self.queued_grace is not None else ""
        return RecordCreate(self._create, message_id, keys, [self.ttl, entry, deadline, message_id], flat)

    def update(self, message_id: str, status: MessageStatus, *, note: str = "",
               pipe: redis.client.Pipeline | None = None, **fields: Any) -> None:
        """Set the status (and any fields) and append the change to the history: one script call,
        atomic on its own; with `pipe`, queued there (grouped with the caller's other changes)."""
        self.update_many([(message_id, status, note, fields)], pipe=pipe)

    def update_args(self, message_id: str, status: MessageStatus, note: str, fields: dict[str, Any],
                    at: float, shared: str = "") -> RecordUpdate:
        """One message's own part of an update: its keys (record, history, gateway-id or '') and its
        five values (message id, status, history entry, fields JSON, pending). `shared`: more fields,
        written alike for many messages and encoded once (`shared_fields`); none of them in `fields`."""
        grace = {MessageStatus.QUEUED: self.queued_grace, MessageStatus.SENDING: self.active_grace,
                 MessageStatus.RETRYING: self.active_grace}.get(status)
        pending = at + grace if grace is not None else ("rem" if self.active_grace is not None else "")
        # accepted: webhooks that carry only the gateway's id find the message through this key, kept
        # per gateway (two gateways may hand out the same id), so the accepting gateway must be named
        gwid = fields.get("gateway_message_id") if status is MessageStatus.ACCEPTED else None
        if gwid and not fields.get("gateway"):
            raise ValueError(f"message {message_id}: an accepted update with a gateway_message_id must name "
                             "the gateway that accepted it")
        return RecordUpdate(
            [self.keys.message(message_id), self.keys.history(message_id),
             self.keys.gateway_id(fields["gateway"], gwid) if gwid else "", self._number_index(fields.get("to"))],
            [message_id, status.value, _entry(status, at, note, fields.get("error")),
             _with_shared(_dumps(_encode(fields)), shared), pending])

    def prepared(self, message_id: str, status: MessageStatus, *, note: str = "", **fields: Any) -> RecordUpdate:
        """`update`'s write, to be carried out by a ledger step (begin or finish) in the same script."""
        common, (own,) = self.prepared_many([(message_id, status, note, fields)])
        return RecordUpdate([*own.keys, *common.keys], [*common.args, *own.args])

    def prepared_many(self, updates: list[tuple[str, MessageStatus, str, dict[str, Any]]],
                      shared: list[str] | None = None) -> tuple[RecordUpdate, list[RecordUpdate]]:
        """Many updates for a ledger step (Ledger.finish_many): the part they share (index keys; ttl,
        time) and each message's own part, in order. `shared`: per update, fields encoded once for
        many (`shared_fields`, '' for none)."""
        at = now()
        common = RecordUpdate([self.keys.inflight(), self.keys.pending(), self.keys.metrics()], [self.ttl, at])
        return common, [self.update_args(message_id, status, note, fields, at, more) for (message_id, status, note,
                        fields), more in zip(updates, shared or [""] * len(updates), strict=True)]

    def update_many(self, updates: list[tuple[str, MessageStatus, str, dict[str, Any]]], *,
                    pipe: redis.client.Pipeline | None = None, shared: list[str] | None = None) -> None:
        """`update` for many messages in one script call: (message_id, status, note, fields) each;
        `shared` as prepared_many takes it."""
        if not updates:
            return
        common, own = self.prepared_many(updates, shared)
        self._update_many(keys=[*common.keys, *(k for each in own for k in each.keys)],
                          args=[*common.args, *(v for each in own for v in each.args)], client=pipe or self.redis)

    def advance(self, message_id: str, status: MessageStatus, *, note: str = "", **fields: Any) -> bool:
        """accepted → delivered / failed / expired, atomically; False if the message is not (or no
        longer) `accepted`, so an old report can never undo a newer one."""
        at = now()
        flat = [x for kv in _encode(fields).items() for x in kv]
        return bool(self._advance(
            keys=[self.keys.message(message_id), self.keys.history(message_id), self.keys.inflight(),
                  self.keys.metrics()],
            args=[message_id, status.value, at, _entry(status, at, note, fields.get("error")), *flat]))

    def by_gateway_id(self, gateway: str, gateway_message_id: str) -> str | None:
        """Our message id for a gateway's id. Records accepted by earlier versions are only in the
        index shared by all gateways (until RECORD_TTL expires them): a hit there is returned only if
        that message went through `gateway`, since another gateway may have used the same id."""
        found = self.redis.get(self.keys.gateway_id(gateway, gateway_message_id))
        if found:
            return text(found)
        legacy = self.redis.get(self.keys.legacy_gateway_id(gateway_message_id))
        if legacy and self.gateway_of(text(legacy)) == gateway:
            return text(legacy)
        return None

    def _number_index(self, number: object) -> str:
        """The index key a message to `number` is filed under; '' when it has too few digits to file."""
        tail = number_tail(number)
        return self.keys.number_index(tail) if tail else ""

    def by_number(self, digits: str, *, limit: int = 50) -> list[dict[str, Any]]:
        """The newest records (at most `limit`) whose number ends in `digits` (at least
        NUMBER_INDEX_DIGITS of them; other characters are ignored), newest first, with the fields of
        LISTED_FIELDS. Reads the index newest first, a page at a time, with the candidates' fields in
        one pipeline per page, up to NUMBER_SEARCH_SCAN entries; an entry whose record has gone is skipped."""
        wanted = ascii_digits(digits)
        tail = number_tail(wanted)
        if tail is None:
            return []
        found: list[dict[str, Any]] = []
        for start in range(0, NUMBER_SEARCH_SCAN, _SCAN_PAGE):
            ids = members(self.redis.zrevrange(self.keys.number_index(tail), start, start + _SCAN_PAGE - 1))
            pipe = self.redis.pipeline(transaction=False)
            for message_id in ids:
                pipe.hmget(self.keys.message(message_id), *LISTED_FIELDS)
            for values in pipe.execute() if ids else []:
                record = _decode({k.encode(): v for k, v in zip(LISTED_FIELDS, values, strict=True) if v is not None})
                payload = record.get("payload")
                number = record.get("to") or (payload.get("to") if isinstance(payload, dict) else None)
                if record and isinstance(number, str) and ascii_digits(number).endswith(wanted):
                    found.append(record)
                    if len(found) >= limit:
                        return found
            if len(ids) < _SCAN_PAGE:
                break
        return found

    def gateway_of(self, message_id: str) -> str | None:
        """The gateway a message went through (last tried, or the one that accepted it)."""
        found = self.redis.hget(self.keys.message(message_id), "gateway")
        return text(found) if found else None

    def increment(self, message_id: str, field: str) -> int:
        """Count one more `attempts` (gateway sends) or `lookups` (reconciliation queries)."""
        return int(self.redis.hincrby(self.keys.message(message_id), field, 1))

    def reopen(self, message_id: str, *, note: str) -> None:
        """A new submission of a message whose attempts ran out: count its attempts afresh."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.keys.message(message_id), mapping={"attempts": 0, "lookups": 0})
        self.update(message_id, MessageStatus.QUEUED, note=note, pipe=pipe)
        pipe.execute()

    def get(self, message_id: str) -> dict[str, Any] | None:
        raw = self.redis.hgetall(self.keys.message(message_id))
        return _decode(raw) if raw else None

    def history(self, message_id: str) -> list[dict[str, Any]]:
        return [json.loads(x) for x in self.redis.lrange(self.keys.history(message_id), 0, -1)]

    def result(self, message_id: str) -> dict[str, Any] | None:
        """The public result dict (RESULT_FIELDS) of a record."""
        return self.result_from(self.redis.hgetall(self.keys.message(message_id)))

    @staticmethod
    def decode(raw: RawHash) -> dict[str, Any] | None:
        """A record from the raw HGETALL reply (e.g. read inside a pipeline)."""
        return _decode(raw) if raw else None

    @staticmethod
    def result_from_fields(values: list) -> dict[str, Any] | None:
        """The result from the raw RESULT_FIELDS values (HMGET order); None if the record is gone."""
        raw: RawHash = {name.encode(): v for name, v in zip(RESULT_FIELDS, values, strict=True) if v is not None}
        return Records.result_from(raw) if raw else None

    @staticmethod
    def result_from(raw: RawHash) -> dict[str, Any] | None:
        record = _decode(raw) if raw else None
        return None if record is None else {f: record.get(f) for f in RESULT_FIELDS}

    def dead_letters(self, newest: int | None = None) -> list[str]:
        """The dead-lettered message ids, oldest first (only the `newest` ones, if given)."""
        return [text(x) for x in self.redis.lrange(self.keys.dead_letters(), -newest if newest else 0, -1)]


def number_tail(number: object) -> str | None:
    """The last NUMBER_INDEX_DIGITS digits of a number, or None if it has fewer (or is no string)."""
    if not isinstance(number, str):
        return None
    digits = ascii_digits(number)
    return digits[-NUMBER_INDEX_DIGITS:] if len(digits) >= NUMBER_INDEX_DIGITS else None


def ascii_digits(text: str) -> str:
    """The digits 0-9 of a text, in order (``"+998 90 123-45-67"`` → ``"998901234567"``)."""
    return "".join(c for c in text if "0" <= c <= "9")


def _entry(status: MessageStatus, at: float, note: str, error: dict | None = None) -> str:
    entry: dict[str, Any] = {"status": status.value, "at": at}
    if note:
        entry["note"] = note
    if error:
        entry["error"] = error
    return _dumps(entry)


#: json.dumps(value, ensure_ascii=False), the same text, without building an encoder per call (json.dumps
#: does that whenever an option is not its default): records are written several times per message.
_dumps = json.JSONEncoder(ensure_ascii=False).encode

# Hash values are strings; structured fields are stored as JSON and typed fields converted back.
JSON_FIELDS = {"error", "metadata", "payload", "options"}
INT_FIELDS = {"attempts", "segments", "lookups", "maybe_sent"}
_FLOAT_FIELDS = {"created_at", "updated_at", "accepted_at"}


def shared_fields(fields: dict[str, Any]) -> str:
    """Fields many updates write alike (a batch call's gateway, call_ref, batch, ...), encoded once for
    `Records.update_many(shared=...)`: the inside of their JSON object."""
    return _dumps(_encode(fields))[1:-1]


def _with_shared(own: str, shared: str) -> str:
    """One JSON object of a message's own fields (encoded) and shared ones (`shared_fields`)."""
    if not shared:
        return own
    return "{" + shared + "}" if own == "{}" else own[:-1] + ", " + shared + "}"


def _encode(fields: dict[str, Any]) -> dict[str, str]:
    out = {}
    for k, v in fields.items():
        if k in JSON_FIELDS:
            out[k] = _dumps(v)
        elif isinstance(v, Enum):
            out[k] = v.value
        else:
            out[k] = "" if v is None else str(v)
    return out


def _decode(raw: RawHash) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in raw.items():
        key, val = text(k), text(v)
        if key in JSON_FIELDS:
            out[key] = json.loads(val) if val else None
        elif key in INT_FIELDS:
            out[key] = int(val) if val else 0
        elif key in _FLOAT_FIELDS:
            out[key] = float(val) if val else None
        else:
            out[key] = val or None
    return out
