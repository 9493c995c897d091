"""The examples' own tests, written as a host app would write them: with the testing kit's fixtures
(`sms_outbox`, `sms_eager`), no Redis and no worker. Each app is configured with a Redis URL where
nothing listens, so a test that passes touched none but the kit's."""

from __future__ import annotations

import os

import pytest

from smsdispatch import worker

NOWHERE = "redis://127.0.0.1:1/0"


@pytest.fixture(autouse=True)
def _own_default_app(monkeypatch):
    """Each test configures the default app anew (as each app factory call does) and leaves it as it was."""
    for name in list(os.environ):
        if name.startswith("SMSDISPATCH_"):
            monkeypatch.delenv(name)
    monkeypatch.setattr(worker, "_default", None)
