"""smsdispatch: send SMS from web apps through Celery, exactly once, with records in Redis.

    from smsdispatch import send_sms, get_message
    result = send_sms.delay("+998901234567", "Your code is 1234", idempotency_key="otp-42")
    get_message(result.get()["message_id"])

Attributes are resolved lazily so that importing a submodule (records, ledger, ...) needs no settings.
"""

from __future__ import annotations

from typing import Any

__all__ = ["send_sms", "send_batch", "schedule_reminder", "cancel_reminder", "get_reminder", "get_message",
           "get_history", "get_batch", "get_balances", "app"]


def get_message(message_id: str) -> dict[str, Any] | None:
    """The record of one message (the answer to "what happened to message X?"), or None."""
    from .worker import app
    return app.smsdispatch.dispatcher.records.get(message_id)


def get_history(message_id: str) -> list[dict[str, Any]]:
    """Every status change of one message, oldest first."""
    from .worker import app
    return app.smsdispatch.dispatcher.records.history(message_id)


def schedule_reminder(to: str, text: str | None, send_at: Any, *, idempotency_key: str | None = None,
                      gateway: str | None = None, sender: str | None = None, metadata: dict | None = None,
                      options: dict | None = None) -> str:
    """Send `text` to `to` at `send_at` (a timezone-aware datetime or ISO 8601 string with an offset;
    a past time sends now). Returns the reminder id. Raises ValidationError for bad input, here."""
    from .worker import app
    kwargs = {"to": to, "text": text, "idempotency_key": idempotency_key, "gateway": gateway, "sender": sender,
              "metadata": metadata, "options": options}
    return app.smsdispatch.schedule_reminder({k: v for k, v in kwargs.items() if v is not None}, send_at)


def cancel_reminder(reminder_id: str) -> bool:
    """True: it will never be sent. False: too late, it is being sent or was sent."""
    from .worker import app
    return app.smsdispatch.reminders.cancel(reminder_id)


def get_reminder(reminder_id: str) -> dict[str, Any] | None:
    """{reminder_id, state, send_at, message_id, result}, or None."""
    from .worker import app
    return app.smsdispatch.reminders.get(reminder_id)


def get_balances() -> dict[str, dict[str, Any]]:
    """The last balance beat read from each gateway: {gateway: {amount, currency, at}}."""
    from .worker import app
    return app.smsdispatch.poller.balances()


def get_batch(batch_id: str) -> dict[str, Any] | None:
    """A batch's progress: {batch_id, status, total, accepted, failed, unknown, pending, ...}, or None."""
    from .worker import app
    return app.smsdispatch.batches.get(batch_id)


def __getattr__(name: str):
    if name == "app":
        from .worker import app
        return app
    if name in ("send_sms", "send_batch"):
        from .tasks import SEND_BATCH, SEND_SMS
        from .worker import app
        return app.tasks[SEND_SMS if name == "send_sms" else SEND_BATCH]
    raise AttributeError(f"module 'smsdispatch' has no attribute {name!r}")
