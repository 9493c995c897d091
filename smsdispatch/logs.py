"""How log lines look: text (the default) or one JSON object per line (SMSDISPATCH_LOG_FORMAT=json).

A JSON line carries the time (UTC, ISO 8601), level, logger, message and, where they apply, the task
(`task_id`, `task_name`: Celery's current task, or the task a "received" line is about), the process,
the exception, and every field the code passed with `extra=`: the send path names `message_id`,
`gateway`, `attempt` and `status` (dispatch.py, batch.py). Every value is redacted (redact.py), not
only the message: a phone number or a secret in any field is masked, whatever its type.

`install(logger, fmt)` sets it up on a logger's handlers, with the redaction filter; the worker and
beat (worker.py, through Celery's logging signals), the CLI and the webhook server (cli.py) call it.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any

from .redact import STANDARD_FIELDS, redact, redact_value
from .redact import install as install_redaction


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "message": redact(record.getMessage()),
            "process": record.process,
        }
        out.update(_task(record))
        for name, value in vars(record).items():
            if name not in STANDARD_FIELDS and name != "data" and value is not None and not name.startswith("_"):
                out[name] = redact_value(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exception"] = redact(record.exc_text)
        if record.stack_info:
            out["stack"] = redact(record.stack_info)
        return json.dumps(out, ensure_ascii=False, default=lambda v: redact(str(v)))


def _task(record: logging.LogRecord) -> dict[str, Any]:
    """The Celery task a line belongs to: the one running in this thread, or the one Celery's
    "Task ... received/succeeded" lines describe in their `data`."""
    data = getattr(record, "data", None)
    if isinstance(data, dict) and data.get("id"):
        return {"task_id": str(data["id"]), "task_name": str(data.get("name") or "")}
    try:
        from celery._state import get_current_task
        task = get_current_task()
    except ImportError:         # pragma: no cover - celery is a dependency; a defensive import
        return {}
    if task is None or task.request.id is None:
        return {}
    return {"task_id": task.request.id, "task_name": task.name}


def fields(message_id: str | None = None, *, gateway: str | None = None, attempt: int | None = None,
           status: str | None = None) -> dict[str, Any]:
    """The `extra=` of a send path's log line: the fields it names (a JSON line shows them)."""
    given = {"message_id": message_id, "gateway": gateway, "attempt": attempt, "status": status}
    return {k: v for k, v in given.items() if v is not None}


def install(logger: logging.Logger, fmt: str = "text") -> None:
    """The redaction filter on every handler of `logger`; with `fmt` "json", the JSON formatter too."""
    install_redaction(logger)
    if fmt == "json":
        for handler in logger.handlers:
            handler.setFormatter(JsonFormatter())
