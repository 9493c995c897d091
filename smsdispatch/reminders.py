"""Reminders: an SMS to send at a given time, possibly days ahead, exactly once, cancellable.

A reminder is written to Redis before anything else (a hash plus an entry in the `due` sorted set,
scored by send_at), so it survives worker restarts and, with AOF, Redis restarts. It is *released*
when it comes within the horizon: atomically moved from `due` to `inflight` and published as a
`send_reminder` task with an ETA (beat does this every REMINDER_POLL_INTERVAL; `schedule` does it at
once for a reminder already inside the horizon). Entries left in `inflight` by a crash between the
move and the publish are moved back by the next release. Publishing twice is harmless: the send goes
through the idempotency ledger under the reminder's key.

States, each change one Lua script (lua/reminders_*.lua):

    scheduled → releasing → queued → sending → done        (`finish`: the message settled; its
        │           │          │                            result, accepted or failed, is kept)
        └───────────┴──────────┴→ cancelled                 (`cancel`: True, and it never sends)
                                  sending/done: `cancel` answers False (too late)
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

import redis

from . import scripts
from .errors import ValidationError
from .keys import Keys
from .redisclient import text, text_fields
from .sendrequest import parse_send

NAMESPACE = uuid.UUID("3c1f5d0e-8f7a-4d3b-9c55-2a7e4b1d6f90")


@dataclass(frozen=True)
class Due:
    reminder_id: str
    send_at: float


def parse_send_at(value: Any) -> float:
    """A timezone-aware datetime, or an ISO 8601 string with an offset → epoch seconds."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValidationError(f"send_at: {value!r} is not an ISO 8601 date-time") from None
    if not isinstance(value, datetime):
        raise ValidationError("send_at: must be a timezone-aware datetime or an ISO 8601 string with an offset")
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise ValidationError("send_at: must be timezone-aware (e.g. 2026-12-01T09:00:00+05:00); "
                              "a naive time would be read in some server's local zone")
    return value.astimezone(timezone.utc).timestamp()


@dataclass(frozen=True)
class NewReminder:
    """A reminder that passed validation (`Reminders.check`), not yet stored."""
    reminder_id: str
    send_at: float
    payload: str        # the send_sms arguments as JSON, its idempotency key included


class Reminders:
    def __init__(self, client: redis.Redis, keys: Keys, *, default_region: str | None, ttl: int,
                 validate: Callable[[dict[str, Any]], Any] | None = None) -> None:
        """`validate(kwargs)` raises ValidationError for a message that could not be sent (the worker
        passes the dispatcher's full check, gateway and its options included); by default only the
        message itself is checked."""
        self.redis, self.keys, self.default_region, self.ttl = client, keys, default_region, ttl
        self.validate = validate or (lambda kwargs: parse_send(kwargs, default_region=default_region))
        self._store = scripts.register(client, "reminders_store")
        self._claim_due = scripts.register(client, "reminders_claim_due")
        self._recover = scripts.register(client, "reminders_recover")
        self._published = scripts.register(client, "reminders_published")
        self._cancel = scripts.register(client, "reminders_cancel")
        self._begin = scripts.register(client, "reminders_begin_send")

    def schedule(self, kwargs: dict[str, Any], send_at: Any, *, now: float) -> tuple[str, float]:
        """Validate (a bad number or text raises here, at the producer) and store a reminder;
        returns (reminder_id, send_at). The same idempotency key gives the same reminder, once."""
        reminder = self.check(kwargs, send_at)
        self.store(reminder, now=now)
        return reminder.reminder_id, reminder.send_at

    def check(self, kwargs: dict[str, Any], send_at: Any) -> NewReminder:
        """`schedule`'s validation without the write: raises ValidationError as `schedule` does, and
        returns the reminder with its id, for `store` (now, or once a database transaction commits)."""
        when = parse_send_at(send_at)
        if not isinstance(kwargs, dict):
            raise ValidationError(f"reminder: the message must be a dict of send_sms arguments, "
                                  f"not {type(kwargs).__name__}")
        self.validate(kwargs)       # refused now, at the producer, not days later when it is due
        key = kwargs.get("idempotency_key")
        reminder_id = str(uuid.uuid5(NAMESPACE, key)) if isinstance(key, str) and key else str(uuid.uuid4())
        payload = dict(kwargs, idempotency_key=key or f"reminder:{reminder_id}")
        return NewReminder(reminder_id, when, json.dumps(payload, ensure_ascii=False))

    def store(self, reminder: NewReminder, *, now: float) -> None:
        """Write a checked reminder: its hash and its entry in the `due` set (a past time: due now)."""
        self._store(keys=[self.keys.reminder(reminder.reminder_id), self.keys.reminders_due()],
                    args=[reminder.reminder_id, max(reminder.send_at, now), reminder.payload, now])
        if self.ttl:
            self.redis.expire(self.keys.reminder(reminder.reminder_id), self.ttl + max(0, int(reminder.send_at - now)))

    def claim_due(self, *, until: float, now: float, limit: int = 1000) -> list[Due]:
        """Atomically take the reminders due by `until` (two beats never take the same one)."""
        flat = self._claim_due(keys=[self.keys.reminders_due(), self.keys.reminders_inflight()],
                               args=[until, now, limit, self.keys.reminder("")])
        return [Due(text(flat[i]), float(flat[i + 1])) for i in range(0, len(flat), 2)]

    def published(self, reminder_id: str) -> None:
        self._published(keys=[self.keys.reminder(reminder_id), self.keys.reminders_inflight()], args=[reminder_id])

    def recover(self, *, older_than: float) -> int:
        """Releases interrupted between claim and publish go back to `due`."""
        return int(self._recover(keys=[self.keys.reminders_inflight(), self.keys.reminders_due()],
                                 args=[older_than, self.keys.reminder("")]))

    def cancel(self, reminder_id: str) -> bool:
        answer = int(self._cancel(keys=[self.keys.reminder(reminder_id), self.keys.reminders_due(),
                                        self.keys.reminders_inflight()], args=[reminder_id]))
        if answer < 0:
            raise ValidationError(f"no reminder {reminder_id}")
        return bool(answer)

    def begin_send(self, reminder_id: str) -> dict[str, Any] | None:
        """The payload to send, or None if the reminder was cancelled (or never existed)."""
        raw = self._begin(keys=[self.keys.reminder(reminder_id)])
        return json.loads(raw) if raw else None

    def finish(self, reminder_id: str, result: dict[str, Any]) -> None:
        self.redis.hset(self.keys.reminder(reminder_id),
                        mapping={"state": "done", "message_id": result.get("message_id") or "",
                                 "result": json.dumps(result, ensure_ascii=False)})

    def get(self, reminder_id: str) -> dict[str, Any] | None:
        raw = self.redis.hgetall(self.keys.reminder(reminder_id))
        if not raw:
            return None
        r = text_fields(raw)
        return {"reminder_id": r["reminder_id"], "state": r["state"], "send_at": float(r["send_at"]),
                "message_id": r.get("message_id") or None,
                "result": json.loads(r["result"]) if r.get("result") else None}
