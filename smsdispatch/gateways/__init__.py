"""Gateway adapters, built once per worker process from settings (one file per gateway, each declaring
its `GatewaySpec`; registry.py finds them, and third-party ones through an entry point)."""

from __future__ import annotations

import threading

import redis

from ..config import Settings
from ..errors import UnknownGatewayError
from ..keys import Keys
from . import registry
from .base import Gateway


def build_gateway(name: str, settings: Settings, client: redis.Redis, keys: Keys) -> Gateway:
    """One adapter, from settings. Secrets are passed as SecretStr; adapters read no globals."""
    return registry.build(name, settings, client, keys)


class Gateways:
    """The configured gateways of this process; each adapter (and its HTTP pool) is built once."""

    def __init__(self, settings: Settings, client: redis.Redis, keys: Keys) -> None:
        self.settings, self.redis, self.keys = settings, client, keys
        self._built: dict[str, Gateway] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Gateway:
        built = self._built.get(name)     # built once, so configured: no settings walk per message
        if built is not None:
            return built
        if name not in self.settings.configured_gateways():
            known = ", ".join(self.settings.configured_gateways())
            raise UnknownGatewayError(f"gateway {name!r} is not configured here (configured: {known})")
        with self._lock:
            if name not in self._built:
                self._built[name] = build_gateway(name, self.settings, self.redis, self.keys)
            return self._built[name]
