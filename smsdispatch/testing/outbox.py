"""The outbox: every message a test's app asked smsdispatch to send, in the order it asked.

One `OutboxSms` per message: a `send_sms` call, each entry of a `send_batch`, each `schedule_reminder`.
Numbers and texts are test data, shown in full in reprs and assertion messages (the kit's log lines
mask them, as every smsdispatch logger does).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, overload

from ..errors import ValidationError
from ..phone import normalise

#: Kinds of submission, as the app made them.
SMS, BATCH, REMINDER = "sms", "batch", "reminder"


@dataclass(frozen=True)
class OutboxSms:
    """One message the app asked to send, with what the worker would make of it.

    to, text, ...       the arguments as the app gave them (`to` unnormalised)
    kind                "sms" (send_sms), "batch" (one entry of send_batch), "reminder" (schedule_reminder)
    message_id          the id of its record (`smsdispatch.get_message`); a reminder's once it is sent
    task_id             the Celery task id of the submission (send_sms, send_batch)
    eta                 when it is to go out: `apply_async(eta=/countdown=)`, a reminder's `send_at` (UTC)
    number              `to` in E.164, as the gateway would get it; None when the worker would refuse it
    rejection           why the worker would record it `failed` (code `validation`), or None
    """

    to: Any
    text: Any
    kind: str = SMS
    idempotency_key: str | None = None
    gateway: str | None = None
    sender: str | None = None
    callback_url: str | None = None
    metadata: dict | None = None
    options: dict | None = None
    message_id: str | None = None
    task_id: str | None = None
    batch_id: str | None = None
    reminder_id: str | None = None
    eta: datetime | None = None
    number: str | None = None
    rejection: str | None = None
    queue: str | None = None

    #: Shown in the repr when set (besides `to` and `text`): what a test author compares.
    _SHOWN = ("kind", "idempotency_key", "gateway", "sender", "metadata", "options", "batch_id", "reminder_id",
              "eta", "rejection")

    def __repr__(self) -> str:
        shown = [f"to={self.to!r}", f"text={self.text!r}"]
        shown += [f"{name}={getattr(self, name)!r}" for name in self._SHOWN
                  if getattr(self, name) not in (None, SMS)]
        return f"OutboxSms({', '.join(shown)})"

    @property
    def valid(self) -> bool:
        """Whether the worker would send it (False: it would be recorded `failed`, see `rejection`)."""
        return self.rejection is None



class Outbox(Sequence[OutboxSms]):
    """What the app asked to send, oldest first: a read-only list of `OutboxSms` (thread-safe)."""

    def __init__(self) -> None:
        self._items: list[OutboxSms] = []
        self._lock = threading.Lock()

    @overload
    def __getitem__(self, index: int) -> OutboxSms: ...
    @overload
    def __getitem__(self, index: slice) -> list[OutboxSms]: ...

    def __getitem__(self, index: int | slice) -> OutboxSms | list[OutboxSms]:
        with self._lock:
            return self._items[index]

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __iter__(self) -> Iterator[OutboxSms]:
        with self._lock:
            return iter(list(self._items))

    def __repr__(self) -> str:
        items = list(self)
        if not items:
            return "Outbox([])"
        return "Outbox([\n" + "".join(f"  {item!r},\n" for item in items) + "])"

    def clear(self) -> None:
        """Forget what was captured so far (e.g. what a test's set-up sent)."""
        with self._lock:
            self._items.clear()

    def to(self, number: str) -> list[OutboxSms]:
        """The messages to `number`, whether the app wrote it in E.164 or as it was typed."""
        wanted = {number, _e164(number)} - {None}
        return [m for m in self if m.to in wanted or (m.number is not None and m.number in wanted)]

    @property
    def texts(self) -> list[Any]:
        """Every message's text, in order."""
        return [m.text for m in self]

    def add(self, items: list[OutboxSms]) -> None:
        """Append (the harness does, as the app publishes)."""
        with self._lock:
            self._items.extend(items)


def _e164(number: str) -> str | None:
    try:
        return normalise(number)
    except ValidationError:
        return None
