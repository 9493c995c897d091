"""smsdispatch: send SMS from web apps through Celery, exactly once, with records in Redis.

    from smsdispatch import send_sms, get_message
    result = send_sms.delay("+998901234567", "Your code is 1234", idempotency_key="otp-42")
    get_message(result.get()["message_id"])

`send_sms`, `send_batch` and `app` stand for the default app's (smsdispatch.worker.default_app), which
is built from the environment on first use: importing the package or a submodule needs no settings. A
web app with settings of its own hands them over once, where it starts:

    smsdispatch.configure({"REDIS_URL": "redis://cache:6379/2", "DEFAULT_GATEWAY": "eskiz", ...})

(or a `Settings`; what the mapping does not name still comes from SMSDISPATCH_* variables). Several
apps in one process: `smsdispatch.worker.create_app(settings)` each, sending with `app.send_sms`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from celery.local import Proxy

if TYPE_CHECKING:
    from .config import Settings
    from .tasks import SendBatch, SendSms
    from .worker import SmsApp

__all__ = ["configure", "Settings", "send_sms", "send_batch", "schedule_reminder", "schedule_reminder_on_commit",
           "cancel_reminder", "get_reminder", "get_message",
           "get_history", "get_batch", "get_balances", "app"]


def configure(settings: Settings | Mapping[str, Any] | None = None, /, **overrides: Any) -> SmsApp:
    """Build the default app from the host app's settings (a mapping like Django's ``SMSDISPATCH``, or a
    `Settings`), validated as the environment is; returns it. Raises ConfigError naming a bad value."""
    from .worker import configure as configure_default
    return configure_default(settings, **overrides)


def get_message(message_id: str) -> dict[str, Any] | None:
    """The record of one message (the answer to "what happened to message X?"), or None."""
    return _app().runtime.dispatcher.records.get(message_id)


def get_history(message_id: str) -> list[dict[str, Any]]:
    """Every status change of one message, oldest first."""
    return _app().runtime.dispatcher.records.history(message_id)


def schedule_reminder(to: str, text: str | None, send_at: Any, *, idempotency_key: str | None = None,
                      gateway: str | None = None, sender: str | None = None, metadata: dict | None = None,
                      options: dict | None = None) -> str:
    """Send `text` to `to` at `send_at` (a timezone-aware datetime or ISO 8601 string with an offset;
    a past time sends now). Returns the reminder id. Raises ValidationError for bad input, here."""
    kwargs = {"to": to, "text": text, "idempotency_key": idempotency_key, "gateway": gateway, "sender": sender,
              "metadata": metadata, "options": options}
    return _app().runtime.schedule_reminder({k: v for k, v in kwargs.items() if v is not None}, send_at)


def schedule_reminder_on_commit(to: str, text: str | None, send_at: Any, *, idempotency_key: str | None = None,
                                gateway: str | None = None, sender: str | None = None,
                                metadata: dict | None = None, options: dict | None = None,
                                using: str | None = None) -> str:
    """`schedule_reminder`, stored once the caller's Django database transaction (of database `using`)
    commits, and never if it rolls back. Bad input raises ValidationError here, at the call; returns
    the reminder id it will have. Without Django: ConfigError."""
    from .contrib.django import commit
    commit.check()
    kwargs = {"to": to, "text": text, "idempotency_key": idempotency_key, "gateway": gateway, "sender": sender,
              "metadata": metadata, "options": options}
    runtime = _app().runtime
    reminder = runtime.reminders.check({k: v for k, v in kwargs.items() if v is not None}, send_at)
    commit.on_commit(lambda: runtime.store_reminder(reminder), using=using)
    return reminder.reminder_id


def cancel_reminder(reminder_id: str) -> bool:
    """True: it will never be sent. False: too late, it is being sent or was sent."""
    return _app().runtime.reminders.cancel(reminder_id)


def get_reminder(reminder_id: str) -> dict[str, Any] | None:
    """{reminder_id, state, send_at, message_id, result}, or None."""
    return _app().runtime.reminders.get(reminder_id)


def get_balances() -> dict[str, dict[str, Any]]:
    """The last balance beat read from each gateway: {gateway: {amount, currency, at}}."""
    return _app().runtime.poller.balances()


def get_batch(batch_id: str) -> dict[str, Any] | None:
    """A batch's progress: {batch_id, status, total, accepted, failed, unknown, pending, ...}, or None."""
    return _app().runtime.batches.get(batch_id)


def _app() -> SmsApp:
    from .worker import default_app
    return default_app()


#: Celery's own lazy proxies (as `shared_task` returns): the object is the default app's on first use.
app = cast("SmsApp", Proxy(_app))
send_sms = cast("SendSms", Proxy(lambda: _app().send_sms))
send_batch = cast("SendBatch", Proxy(lambda: _app().send_batch))


def __getattr__(name: str) -> Any:
    if name == "Settings":      # imported on use: `import smsdispatch` stays light (no pydantic, no phonenumbers)
        from .config import Settings
        return Settings
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
