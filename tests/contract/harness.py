"""What a gateway case provides to the contract suite (test_contract.py).

Each `case_<gateway>.py` next to this file defines `CASE = ContractCase(...)`: how to start its fake
(a real HTTP server on 127.0.0.1, see smsdispatch/devtools/fakes/base.py) and how to build the adapter
against it. The suite then checks every gateway the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import redis

from smsdispatch.devtools.fakes.base import FakeGateway
from smsdispatch.gateways.base import Gateway


@dataclass(frozen=True)
class ContractCase:
    name: str
    make_fake: Callable[[], FakeGateway]                               # not started yet
    make_gateway: Callable[[FakeGateway, redis.Redis, bool], Gateway]  # (fake, redis, bad_credentials)
    numbers: tuple[str, str, str]                                      # valid E.164 numbers it serves
    delivered_word: str | None = None       # the fake's status word for "delivered" (None: no status API)
    failed_word: str | None = None
    per_message_rejections: bool = False    # a batch call reports refused numbers one by one
    auth_paths: tuple[str, ...] = ()        # the fake's token endpoints (login, refresh), if any

    @property
    def id(self) -> str:
        return self.name
