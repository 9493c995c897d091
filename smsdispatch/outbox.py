"""The transactional outbox: a message written as a row in the caller's database transaction, sent
once that transaction commits, never if it rolls back, and still sent if the process dies between the
commit and the publish (beat's relay publishes what committed). Its one implementation is Django's,
smsdispatch.contrib.django.outbox, whose table and relay these functions hand over to:

    from smsdispatch import outbox
    with transaction.atomic():
        order.save()
        outbox.send_sms(order.phone, f"Order {order.id} confirmed", idempotency_key=f"order-{order.id}")

Without Django installed, set up and ``"smsdispatch.contrib.django"`` in INSTALLED_APPS, each raises
ConfigError saying which is missing. (`send_sms.delay_on_commit` is the lighter way: nothing to
migrate, but a message whose process dies right after the commit is lost.)
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from .errors import ConfigError


def send_sms(to: str, text: str | None, **fields: Any) -> str:
    """A send_sms message in the current transaction; returns its message id. Arguments as send_sms,
    plus `using` (the database). See smsdispatch.contrib.django.outbox `send_sms`."""
    return _outbox().send_sms(to, text, **fields)


def send_batch(messages: list[dict[str, Any]], **fields: Any) -> str:
    """A send_batch message in the current transaction; returns its batch id. See
    smsdispatch.contrib.django.outbox `send_batch`."""
    return _outbox().send_batch(messages, **fields)


def relay(**fields: Any) -> int:
    """Publish committed outbox rows now (beat does this every OUTBOX_RELAY_INTERVAL)."""
    return _outbox().relay(**fields)


def _outbox() -> ModuleType:
    try:
        from django.apps import apps
        from django.conf import settings
    except ImportError:
        raise ConfigError("smsdispatch.outbox keeps messages in a Django database table: it needs Django "
                          "(pip install 'smsdispatch[django]')") from None
    if not settings.configured or not apps.ready:
        raise ConfigError("smsdispatch.outbox: Django is not configured and set up (DJANGO_SETTINGS_MODULE, "
                          "django.setup())")
    if not apps.is_installed("smsdispatch.contrib.django"):
        raise ConfigError('smsdispatch.outbox: add "smsdispatch.contrib.django" to INSTALLED_APPS (and migrate)')
    from .contrib.django import outbox
    return outbox
