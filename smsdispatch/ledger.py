"""The idempotency ledger: one Redis hash per key, claimed atomically before any gateway call.

Entry fields: ``message_id``, ``fp`` (fingerprint of what would be sent), ``state``, ``owner`` (the
execution holding the claim), ``lease_until`` and ``first_claimed_at`` (ms since the epoch).

States and what `claim()` answers when it finds them:

    (absent)   → claimed, answer CLAIMED
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
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from enum import Enum

import redis

from .keys import Keys

# KEYS[1] entry; ARGV: fp, message_id, owner, now_ms, lease_ms, ttl_s, submission.
# Returns {answer, message_id, lease_until or first_claimed_at}.
_CLAIM = """
local e = redis.call('HMGET', KEYS[1], 'fp', 'state', 'lease_until', 'message_id', 'first_claimed_at',
                     'reopenable', 'submission')
local fp, mid, owner, now, lease, ttl = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local submission = ARGV[7]
local function take(answer, first)
  redis.call('HSET', KEYS[1], 'fp', fp, 'state', 'claimed', 'owner', owner, 'submission', submission,
             'lease_until', now + lease, 'message_id', mid, 'first_claimed_at', first, 'reopenable', 0)
  redis.call('EXPIRE', KEYS[1], ttl)
  return {answer, mid, first}
end
if not e[2] then return take('claimed', now) end
if e[1] ~= fp then return {'conflict', e[4], 0} end
if e[2] == 'done' then
  if e[6] == '1' and e[7] ~= submission then return take('reopened', now) end
  return {'done', e[4], 0}
end
if e[2] == 'pending' then return take('claimed', tonumber(e[5])) end
if e[2] == 'claimed' and tonumber(e[3]) > now then return {'busy', e[4], tonumber(e[3])} end
return take('reconcile', tonumber(e[5]))
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
        self._release = client.register_script(_RELEASE)

    def claim(self, key: str, *, fp: str, message_id: str, now: float, submission: str = "",
              pipe: redis.client.Pipeline | None = None) -> ClaimResult | str:
        """Claim one key. With `pipe`, the call is queued and its owner returned; turn each raw
        pipeline reply into a ClaimResult with `parse`."""
        owner = uuid.uuid4().hex
        args = [fp, message_id, owner, int(now * 1000), self.lease_ms, self.ttl, submission]
        if pipe is not None:
            self._claim(keys=[self.keys.idempotency(key)], args=args, client=pipe)
            return owner
        return self.parse(self._claim(keys=[self.keys.idempotency(key)], args=args), owner)

    @staticmethod
    def parse(reply: list, owner: str) -> ClaimResult:
        answer, mid, t = reply
        answer = Claim(answer.decode() if isinstance(answer, bytes) else answer)
        mid = mid.decode() if isinstance(mid, bytes) else mid
        t = int(t) / 1000
        if answer is Claim.BUSY:
            return ClaimResult(answer, mid, owner, lease_until=t)
        return ClaimResult(answer, mid, owner, first_claimed_at=t)

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
