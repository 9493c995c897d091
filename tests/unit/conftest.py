"""Unit-test fixtures: fakeredis (with Lua) and an in-memory gateway twin. No network, no worker."""

from __future__ import annotations

import fakeredis
import pytest

from smsdispatch.config import load_settings
from smsdispatch.dispatch import Dispatcher
from smsdispatch.gateways.base import Acceptance, Balance, DeliveryReport, Gateway, Lookup, OutboundSms
from smsdispatch.records import MessageStatus


class StubGateway(Gateway):
    """Scripted gateway: `script` holds exceptions to raise on the next sends; records every call."""

    name = "stub"

    def __init__(self, *, can_lookup: bool = True, can_dedupe: bool = False) -> None:
        self.can_lookup = can_lookup
        self.can_dedupe = can_dedupe
        self.script: list[Exception] = []
        self.calls: list[OutboundSms] = []
        self.accepted: dict[str, str] = {}       # our message id -> gateway id
        self.lookups: list[str] = []
        self.lookup_error: Exception | None = None

    def send(self, sms: OutboundSms) -> Acceptance:
        self.calls.append(sms)
        if self.script:
            raise self.script.pop(0)
        self.accepted[sms.message_id] = f"gw-{len(self.calls)}"
        return Acceptance(self.accepted[sms.message_id], "waiting")

    def lookup(self, sms: OutboundSms, *, since: float) -> Lookup:
        self.lookups.append(sms.message_id)
        if self.lookup_error:
            raise self.lookup_error
        gid = self.accepted.get(sms.message_id)
        return Lookup(gid is not None, gid, MessageStatus.ACCEPTED if gid else None)

    def status(self, gateway_message_id: str) -> DeliveryReport:
        return DeliveryReport(MessageStatus.ACCEPTED, "waiting")

    def balance(self) -> Balance:
        return Balance(100)


class StubGateways:
    def __init__(self, gateway: StubGateway) -> None:
        self.gateway = gateway

    def get(self, name: str) -> Gateway:
        from smsdispatch.errors import UnknownGatewayError
        if name not in ("stub", "console"):
            raise UnknownGatewayError(f"gateway {name!r} is not configured here")
        return self.gateway


@pytest.fixture
def redis_client():
    return fakeredis.FakeRedis()


@pytest.fixture
def settings():
    return load_settings(redis_url="redis://unused:6379/0", max_attempts=3, backoff_base=1,
                         backoff_max=10, claim_lease=60, http_connect_timeout=1, http_read_timeout=2)


@pytest.fixture
def stub():
    return StubGateway()


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def dispatcher(settings, redis_client, stub, clock):
    return Dispatcher(settings, redis_client, gateways=StubGateways(stub), clock=clock)
