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
(records.UPDATE_FUNCTION): `begin` (the claim; on a first attempt the `sending` update; the record and
circuits read back) and `finish` (the outcome, `done`, and the task's result for Celery).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from enum import Enum

import redis

from .circuit import RECORD_FUNCTION
from .keys import Keys
from .records import INT_FIELDS, JSON_FIELDS, RESULT_FIELDS, UPDATE_FUNCTION, RecordUpdate
from .results import ResultSlot

# The claim, as a Lua function (the scripts below include it). Arguments: entry key, fp, message_id,
# owner, now_ms, lease_ms, ttl_s, submission, the message's record key. Returns {answer, message_id,
# lease_until or first_claimed_at, fresh}: fresh is 1 when the key had no entry at all (a first attempt).
# No entry but a settled record (`settled`): the entry expired (IDEMPOTENCY_TTL) after an outcome
# was recorded, and the record wins: DONE, never a second send; except a provably unsent failure asked
# again by another submission (a replayed dead letter), which may send. Read only when the entry is absent.
CLAIM_FUNCTION = """
local function settled(rec, submission)
  local r = redis.call('HMGET', rec, 'status', 'attempts', 'maybe_sent', 'task_id')
  local terminal = {accepted = true, delivered = true, failed = true, unknown = true, expired = true}
  -- a refusal before any attempt (validation, balance guard) never held the key: it may be claimed
  if not (terminal[r[1]] == true and (tonumber(r[2]) or 0) > 0) then return nil end
  -- failed and provably unsent, asked again by another submission (a dead letter replayed): reopened,
  -- as a reopenable entry would be; its own task coming back gets the record
  if r[1] == 'failed' and r[3] ~= '1' and r[4] ~= submission then return 'reopen' end
  return 'done'
end
local function claim(key, fp, mid, owner, now, lease, ttl, submission, rec)
  local e = redis.call('HMGET', key, 'fp', 'state', 'lease_until', 'message_id', 'first_claimed_at',
                       'reopenable', 'submission')
  local function take(answer, first, fresh)
    redis.call('HSET', key, 'fp', fp, 'state', 'claimed', 'owner', owner, 'submission', submission,
               'lease_until', now + lease, 'message_id', mid, 'first_claimed_at', first, 'reopenable', 0)
    redis.call('EXPIRE', key, ttl)
    return {answer, mid, first, fresh}
  end
  if not e[2] then
    local after = settled(rec, submission)
    if after == 'done' then return {'done', mid, 0, 0} end
    if after == 'reopen' then return take('reopened', now, 0) end
    return take('claimed', now, 1)
  end
  if e[1] ~= fp then return {'conflict', e[4], 0, 0} end
  if e[2] == 'done' then
    if e[6] == '1' and e[7] ~= submission then return take('reopened', now, 0) end
    return {'done', e[4], 0, 0}
  end
  if e[2] == 'pending' then return take('claimed', tonumber(e[5]), 0) end
  if e[2] == 'claimed' and tonumber(e[3]) > now then return {'busy', e[4], tonumber(e[3]), 0} end
  return take('reconcile', tonumber(e[5]), 0)
end
"""

# KEYS[1] entry, KEYS[2] record; ARGV: fp, message_id, owner, now_ms, lease_ms, ttl_s, submission.
_CLAIM = CLAIM_FUNCTION + """
return claim(KEYS[1], ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6], ARGV[7], KEYS[2])
"""

# The send path's first step, one script: the claim; when it is a first attempt (no entry, no
# attempt on the record) through a gateway whose circuit is closed, the record's `sending` update;
# then what the caller decides on: the record as it stands after that, and the route's circuits.
# KEYS: entry, circuit of the first gateway, inflight, pending, record, then the circuits of the
# route. ARGV: the claim's 7; '1' to write the update (else '0'); the record's ttl, now and the 8
# values of the update (Records.update_args; the record key first); then the record fields to read.
# Returns {answer, message_id, lease_until or first_claimed_at, fresh (2 when the update was
# written), the record fields (false where absent), each circuit's open_until (false if closed)}.
_BEGIN = CLAIM_FUNCTION + UPDATE_FUNCTION + """
local r = claim(KEYS[1], ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6], ARGV[7], KEYS[5])
if ARGV[8] == '1' and r[4] == 1 then
  local attempts = redis.call('HGET', KEYS[5], 'attempts')
  if (not attempts or attempts == '0' or attempts == '') and redis.call('HEXISTS', KEYS[2], 'open_until') == 0 then
    update_record(tonumber(ARGV[9]), ARGV[10], KEYS[3], KEYS[4], unpack(ARGV, 11, 18))
    r[4] = 2
  end
end
local circuits = {}
for i = 6, #KEYS do circuits[#circuits + 1] = redis.call('HGET', KEYS[i], 'open_until') end
r[5] = redis.call('HMGET', KEYS[5], unpack(ARGV, 19))
r[6] = circuits
return r
"""

# The outcome, in one step: the record's update, the entry marked done, the dead letter, the task's
# result where Celery's Redis result backend keeps it, in its format (results.py), built from the
# updated record, and the gateway call's result counted for its circuit (circuit.py).
# KEYS: entry, inflight, pending, dead letters, result key ('' = none), then the circuit hash and its
# calls hash (or none). ARGV: reopenable (0/1), dead letter (0/1), result ttl, task id, date_done, the
# record's ttl, now, the 8 update values, then the circuit's 8 arguments (Circuits.record_args) if
# KEYS has them. Returns the record's RESULT_FIELDS, raw (false where absent), then what the call did
# to its circuit ('opened', 'closed' or '').
_FINISH = UPDATE_FUNCTION + RECORD_FUNCTION + """
local circuit = ''
if #KEYS >= 7 then
  circuit = circuit_record(KEYS[6], KEYS[7], tonumber(ARGV[16]), ARGV[17] == '1', ARGV[18] == '1',
                           tonumber(ARGV[19]), tonumber(ARGV[20]), tonumber(ARGV[21]), tonumber(ARGV[22]),
                           tonumber(ARGV[23]))[1]
end
update_record(tonumber(ARGV[6]), ARGV[7], KEYS[2], KEYS[3], unpack(ARGV, 8, 15))
redis.call('HSET', KEYS[1], 'state', 'done', 'reopenable', ARGV[1])
if ARGV[2] == '1' then redis.call('RPUSH', KEYS[4], ARGV[10]) end
local names = {%(names)s}
local f = redis.call('HMGET', ARGV[8], unpack(names))
if KEYS[5] ~= '' then
  local ints, json = {%(ints)s}, {%(json)s}
  local result = {}
  for i, name in ipairs(names) do
    local v = f[i]
    if v == false or (v == '' and not ints[name]) then result[name] = cjson.null
    elseif ints[name] then result[name] = tonumber(v) or 0
    elseif json[name] then result[name] = cjson.decode(v)
    else result[name] = v end
  end
  local meta = '{"status":"SUCCESS","result":' .. cjson.encode(result) .. ',"traceback":null,"children":[],' ..
               '"date_done":' .. cjson.encode(ARGV[5]) .. ',"task_id":' .. cjson.encode(ARGV[4]) .. '}'
  redis.call('SETEX', KEYS[5], ARGV[3], meta)
  redis.call('PUBLISH', KEYS[5], meta)
end
f[#names + 1] = circuit
return f
""" % {"names": ", ".join(f"'{n}'" for n in RESULT_FIELDS),
       "ints": ", ".join(f"{n} = true" for n in RESULT_FIELDS if n in INT_FIELDS),
       "json": ", ".join(f"{n} = true" for n in RESULT_FIELDS if n in JSON_FIELDS)}

# Many claims in one call (a batch chunk), each with some fields of its record read back.
# KEYS: per message its entry and its record. ARGV: now_ms, lease_ms, ttl_s, submission, the number
# of fields n, the n field names, then per message fp, message_id, owner. Returns per message the 4
# values of a claim and the n fields (false where absent), flat.
_CLAIM_MANY = CLAIM_FUNCTION + """
local now, lease, ttl, submission, n = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4], tonumber(ARGV[5])
local out = {}
local m = 0
for i = 6 + n, #ARGV, 3 do
  m = m + 1
  local r = claim(KEYS[2 * m - 1], ARGV[i], ARGV[i + 1], ARGV[i + 2], now, lease, ttl, submission, KEYS[2 * m])
  for j = 1, 4 do out[#out + 1] = r[j] end
  if n > 0 then
    local f = redis.call('HMGET', KEYS[2 * m], unpack(ARGV, 6, 5 + n))
    for j = 1, n do out[#out + 1] = f[j] end
  end
end
return out
"""

# Many outcomes in one call (a batch's settled messages): each record's update and its entry done.
# KEYS: inflight, pending, dead letters. ARGV: reopenable (0/1), dead letter (0/1), the records' ttl,
# now, then per message its entry key and the 8 update values (Records.update_args).
_FINISH_MANY = UPDATE_FUNCTION + """
local ttl, at = tonumber(ARGV[3]), ARGV[4]
for i = 5, #ARGV, 9 do
  update_record(ttl, at, KEYS[1], KEYS[2], unpack(ARGV, i + 1, i + 8))
  redis.call('HSET', ARGV[i], 'state', 'done', 'reopenable', ARGV[1])
  if ARGV[2] == '1' then redis.call('RPUSH', KEYS[3], ARGV[i + 3]) end
end
return (#ARGV - 4) / 9
"""

# KEYS[1] entry. A done entry becomes reopenable (an operator's forced replay); 0 if it is not done.
_FORCE = """
if redis.call('HGET', KEYS[1], 'state') ~= 'done' then return 0 end
redis.call('HSET', KEYS[1], 'reopenable', 1)
return 1
"""

# KEYS[1] entry; ARGV: owner, new state. Only the holder may release; returns 1 if it did.
_RELEASE = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'lease_until', 0)
return 1
"""


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


@dataclass(frozen=True)
class Begun:
    """What `Ledger.begin` found: the claim, the record's fields read (raw, as HGETALL would give
    them; empty when there is no record) and the circuits' open_until."""
    claim: ClaimResult
    record: dict[bytes, bytes]
    open_until: list[bytes | None]


def fingerprint(payload: dict) -> str:
    """A stable hash of what would be sent, to tell a duplicate from a different message."""
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


class Ledger:
    def __init__(self, client: redis.Redis, keys: Keys, *, lease: float, ttl: int) -> None:
        self.redis = client
        self.keys = keys
        self.lease_ms = int(lease * 1000)
        self.ttl = ttl
        self._claim = client.register_script(_CLAIM)
        self._begin = client.register_script(_BEGIN)
        self._finish = client.register_script(_FINISH)
        self._claim_many = client.register_script(_CLAIM_MANY)
        self._finish_many = client.register_script(_FINISH_MANY)
        self._release = client.register_script(_RELEASE)
        self._force = client.register_script(_FORCE)

    def claim(self, key: str, *, fp: str, message_id: str, now: float, submission: str = "",
              pipe: redis.client.Pipeline | None = None) -> ClaimResult | str:
        """Claim one key. With `pipe`, the call is queued and its owner returned; turn each raw
        pipeline reply into a ClaimResult with `parse`."""
        owner = uuid.uuid4().hex
        args = [fp, message_id, owner, int(now * 1000), self.lease_ms, self.ttl, submission]
        if pipe is not None:
            self._claim(keys=[self.keys.idempotency(key), self.keys.message(message_id)], args=args, client=pipe)
            return owner
        return self.parse(self._claim(keys=[self.keys.idempotency(key), self.keys.message(message_id)], args=args),
                          owner)

    def begin(self, key: str, *, fp: str, message_id: str, now: float, submission: str, start: RecordUpdate,
              write_start: bool, unless_open: str, circuits: list[str], fields: tuple[str, ...]) -> Begun:
        """The claim of one send, in one round trip: with `write_start`, a first claim also writes
        `start` (the record's `sending` update) unless the circuit `unless_open` is open; then the
        record's `fields` as they stand and the `open_until` of each circuit in `circuits` are read."""
        owner = uuid.uuid4().hex
        record = self.keys.message(message_id)
        keys = [self.keys.idempotency(key), unless_open, *start.index_keys, record, *circuits]
        args = [fp, message_id, owner, int(now * 1000), self.lease_ms, self.ttl, submission,
                "1" if write_start else "0", *start.args, *fields]
        reply = self._begin(keys=keys, args=args)
        record = {name.encode(): v for name, v in zip(fields, reply[4], strict=True) if v is not None}
        return Begun(self.parse(reply[:4], owner), record, list(reply[5]))

    def claim_many(self, claims: list[tuple[str, str, str]], *, now: float, submission: str,
                   fields: tuple[str, ...] = ()) -> list[tuple[ClaimResult, dict[str, bytes | None]]]:
        """Claim many keys in one call: (key, fp, message_id) each. Returns each claim with its
        record's `fields` as they stand (raw; None where absent)."""
        if not claims:
            return []
        owners = [uuid.uuid4().hex for _ in claims]
        keys: list[str] = []
        args: list = [int(now * 1000), self.lease_ms, self.ttl, submission, len(fields), *fields]
        for (key, fp, message_id), owner in zip(claims, owners, strict=True):
            keys += [self.keys.idempotency(key), self.keys.message(message_id)]
            args += [fp, message_id, owner]
        flat = self._claim_many(keys=keys, args=args)
        width = 4 + len(fields)
        return [(self.parse(flat[i * width:i * width + 4], owner),
                 dict(zip(fields, flat[i * width + 4:(i + 1) * width], strict=True)))
                for i, owner in enumerate(owners)]

    def finish_many(self, done: list[tuple[str, list]], update: RecordUpdate, *, reopenable: bool = False,
                    dead_letter: bool = False, pipe: redis.client.Pipeline | None = None) -> None:
        """Outcomes of many keys in one call: `done` holds (key, the 8 update values) per message, `update`
        the records' ttl, time and index keys (Records.prepared_many)."""
        if not done:
            return
        args: list = [int(reopenable), int(dead_letter), *update.args]
        for key, values in done:
            args += [self.keys.idempotency(key), *values]
        self._finish_many(keys=[*update.index_keys, self.keys.dead_letters()], args=args, client=pipe or self.redis)

    @staticmethod
    def parse(reply: list, owner: str) -> ClaimResult:
        answer, mid, t, fresh = reply
        answer = Claim(answer.decode() if isinstance(answer, bytes) else answer)
        mid = mid.decode() if isinstance(mid, bytes) else mid
        t = int(t) / 1000
        if answer is Claim.BUSY:
            return ClaimResult(answer, mid, owner, lease_until=t)
        return ClaimResult(answer, mid, owner, first_claimed_at=t, started=int(fresh) == 2)

    def finish(self, key: str, update: RecordUpdate, *, reopenable: bool = False, dead_letter: bool = False,
               result: ResultSlot | None = None, circuit: tuple[list[str], list] | None = None
               ) -> tuple[list, str]:
        """The outcome in one atomic step: the record's update (`update`: Records.update_args), the key
        marked done (`reopenable`: provably not sent, retries exhausted, so a new submission may try
        again), the id pushed on the dead letters, the task's result stored for Celery's result
        backend, and (`circuit`: Circuits.record_args) the gateway call counted for its circuit.
        Returns the record's raw RESULT_FIELDS (for Records.result_from_fields) and the circuit's
        event ("opened", "closed" or "")."""
        keys = [self.keys.idempotency(key), *update.index_keys, self.keys.dead_letters(), result.key if result else ""]
        args = [int(reopenable), int(dead_letter), result.ttl if result else 0, result.task_id if result else "",
                result.date_done if result else "", *update.args]
        if circuit is not None:
            keys += circuit[0]
            args += circuit[1]
        *values, event = self._finish(keys=keys, args=args)
        return values, event.decode() if isinstance(event, bytes) else event

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
        return value.decode() if value else None
