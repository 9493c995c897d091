"""The pytest plugin of smsdispatch.testing (entry point `pytest11`: installed with the package).

It only defines two fixtures, `sms_outbox` and `sms_eager`; nothing is imported, patched or started
until a test asks for one of them (loading it imports `smsdispatch` and this module: about 4 ms). A
suite that uses neither runs as without the plugin (`-p no:smsdispatch` turns it off all the same).
One thing pytest does for any installed package with a pytest11 entry point: it imports the package's
modules through its assertion rewriting, so an `assert` inside smsdispatch that fails would say more.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .eager import EagerSms
    from .outbox import Outbox


@pytest.fixture
def sms_outbox() -> Iterator[Outbox]:
    """What the app asked smsdispatch to send in this test (send_sms, send_batch, schedule_reminder),
    captured instead of sent: `len(sms_outbox)`, `sms_outbox[0].to`, `.text`, `.idempotency_key`, ..."""
    from . import capture_sms
    with capture_sms() as outbox:
        yield outbox


@pytest.fixture
def sms_eager() -> Iterator[EagerSms]:
    """smsdispatch's tasks run at once, on fakeredis, through memory gateways: `sms_eager.sent` is what
    the gateways got; records and results (`smsdispatch.get_message`) are as in production."""
    from . import eager_sms
    with eager_sms() as sms:
        yield sms
