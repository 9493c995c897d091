"""Task results where Celery's Redis result backend keeps them, for `send_sms`, written by us.

`send_sms` turns Celery's own result storing off (`ignore_result`): the result is written in the
same script as the record and the ledger (lua/ledger_finish.lua, with lua/lib/store_result.lua), so a result never disagrees with
its record, and a send costs one round trip less (Celery's backend reads the key, then writes and
publishes it). Paths that end without that script (a duplicate answered from the record, a refused
submission) store it with `Results.store`: SETEX and PUBLISH in one round trip, as the backend does
(celery.backends.redis.RedisBackend._set). `AsyncResult.get()`, `.state` and Flower read it as they
read any result.

The format is the backend's with result_extended off (celery.backends.base.Backend._get_result_meta):

    {"status": "SUCCESS", "result": {...}, "traceback": null, "children": [],
     "date_done": "2026-12-01T09:30:00.123456+00:00", "task_id": "..."}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import redis

from .keys import Keys

#: Celery's result_expires default (one day).
DEFAULT_TTL = 24 * 3600


@dataclass(frozen=True)
class ResultSlot:
    """Where and how one task's result is stored (for a script that writes it)."""
    key: str
    task_id: str
    ttl: int
    date_done: str


def date_done() -> str:
    return datetime.now(timezone.utc).isoformat()


def encode(task_id: str, result: Any, *, done: str | None = None) -> str:
    return json.dumps({"status": "SUCCESS", "result": result, "traceback": None, "children": [],
                       "date_done": done or date_done(), "task_id": task_id}, ensure_ascii=False)


class Results:
    def __init__(self, client: redis.Redis, keys: Keys, *, ttl: int = DEFAULT_TTL) -> None:
        self.redis, self.keys, self.ttl = client, keys, max(1, int(ttl))

    def slot(self, task_id: str) -> ResultSlot:
        return ResultSlot(self.keys.task_result(task_id), task_id, self.ttl, date_done())

    def store(self, task_id: str, result: Any) -> None:
        key, meta = self.keys.task_result(task_id), encode(task_id, result)
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(key, meta, ex=self.ttl)
        pipe.publish(key, meta)
        pipe.execute()
