"""What the status page reads, beyond Records and Batches: a search, and the counts on its first page.

A search of `q` tries, and lists, everything it can be:

    a message id               the record sms:msg:<q>
    an idempotency key         the message its ledger entry names (sms:idem:key:<q>), else the one whose
                               id the key gives (uuid5: the entry expires before the record does)
    a batch id                 the batch sms:batch:<q>
    the end of a number        4 or more digits (with + - . ( ) or spaces between them, nothing else):
                               the newest messages whose number ends so (Records.by_number, an index)

Nothing is scanned: each is one read, the number a read of its index and the records it names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import redis

from ..batch import Batches
from ..dispatch import message_id_for
from ..records import NUMBER_INDEX_DIGITS, Records, ascii_digits
from ..redisclient import text

MAX_QUERY = 200
NUMBER_RESULTS = 50
_NUMBERISH = re.compile(r"^\+?[\d\s().-]+$")


@dataclass
class Found:
    messages: list[dict[str, Any]] = field(default_factory=list)
    batches: list[dict[str, Any]] = field(default_factory=list)
    by_number: bool = False         # the messages include those found by the end of their number


class Lookup:
    def __init__(self, records: Records, batches: Batches) -> None:
        self.records, self.batches = records, batches
        self.redis, self.keys = records.redis, records.keys

    def search(self, q: str) -> Found:
        q = q.strip()[:MAX_QUERY]
        found = Found()
        if not q:
            return found
        seen: set[str] = set()

        def add(record: dict[str, Any] | None) -> None:
            if record and record.get("message_id") not in seen:
                seen.add(record["message_id"])
                found.messages.append(record)

        add(self.message(q))
        entry = self._read(lambda: self.redis.hget(self.keys.idempotency(f"key:{q}"), "message_id"))
        if entry:
            add(self.message(text(entry)))
        add(self.message(message_id_for(q, "")))
        batch = self._read(lambda: self.batches.get(q))
        if batch:
            found.batches.append(batch)
        if _NUMBERISH.match(q) and len(ascii_digits(q)) >= NUMBER_INDEX_DIGITS:
            found.by_number = True
            for record in self.records.by_number(q, limit=NUMBER_RESULTS):
                add(record)
        return found

    def message(self, message_id: str) -> dict[str, Any] | None:
        return self._read(lambda: self.records.get(message_id))

    def is_dead_letter(self, message_id: str) -> bool:
        return self.redis.lpos(self.keys.dead_letters(), message_id) is not None

    def counts(self) -> dict[str, int]:
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcard(self.keys.inflight())
        pipe.zcard(self.keys.pending())
        pipe.llen(self.keys.dead_letters())
        inflight, pending, dead = pipe.execute()
        return {"inflight": inflight, "pending": pending, "dead": dead}

    @staticmethod
    def _read(read):
        """A read of a key the query names; None where that key holds something else (WRONGTYPE: the
        query named, say, a history list)."""
        try:
            return read()
        except redis.ResponseError:
            return None
