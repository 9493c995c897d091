"""A testing kit for apps that send through smsdispatch: no Redis, no worker, no network.

With pytest (`pip install 'smsdispatch[testing]'`, the plugin registers itself), two fixtures:

    def test_signup_sends_code(client, sms_outbox):
        client.post("/signup", data={"phone": "+998901234567"})
        assert len(sms_outbox) == 1
        assert sms_outbox[0].to == "+998901234567"

- `sms_outbox` (an `Outbox`) captures what the app asks to send, through `send_sms.delay` /
  `apply_async`, `send_batch.delay` and `schedule_reminder`, and sends nothing. The producer's own
  checks still run (a call that raises in production raises in the test), and each `OutboxSms` says
  what the worker would make of it (`number` in E.164, or the `rejection` it would record).
- `sms_eager` (an `EagerSms`) runs the real dispatcher at once, on fakeredis, with a memory gateway in
  place of each configured gateway: records, results, `get_message`, batches and reminders work as in
  production. It shows what the gateways got (`sent`), and can make them fail (`fail_next`).

Without pytest, the same as context managers: ``with capture_sms() as outbox:``,
``with eager_sms() as sms:``. Only one of them is active at a time in a process.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .eager import EagerSms
    from .memory import MemoryGateway, SentSms
    from .outbox import Outbox, OutboxSms

__all__ = ["capture_sms", "eager_sms", "Outbox", "OutboxSms", "EagerSms", "MemoryGateway", "SentSms"]


@contextmanager
def capture_sms() -> Iterator[Outbox]:
    """Capture what every smsdispatch app in this process is asked to send; send nothing."""
    from .harness import Harness
    with Harness(eager=False) as harness:
        yield harness.outbox


@contextmanager
def eager_sms() -> Iterator[EagerSms]:
    """Run every smsdispatch app's tasks at once, on fakeredis, through memory gateways."""
    from .eager import EagerSms
    from .harness import Harness
    with Harness(eager=True) as harness:
        yield EagerSms(harness)


_LAZY = {"Outbox": "outbox", "OutboxSms": "outbox", "EagerSms": "eager", "MemoryGateway": "memory",
         "SentSms": "memory"}


def __getattr__(name: str) -> Any:
    # On use: the pytest plugin imports this package in every test run of a host app, and must cost nothing.
    if name in _LAZY:
        from importlib import import_module
        return getattr(import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
