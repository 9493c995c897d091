"""Gateway adapters, built once per worker process from settings (one file per gateway)."""

from __future__ import annotations

import threading

import redis

from ..config import GATEWAY_NAMES, Settings
from ..errors import UnknownGatewayError
from ..keys import Keys
from .base import Gateway
from .console import ConsoleGateway
from .eskiz import EskizGateway


def build_gateway(name: str, settings: Settings, client: redis.Redis, keys: Keys) -> Gateway:
    """One adapter, from settings. Secrets are passed as SecretStr; adapters read no globals."""
    s = settings
    http = {"connect_timeout": s.http_connect_timeout, "read_timeout": s.http_read_timeout,
            "total_timeout": s.http_total_timeout}
    shared = {"redis_client": client, "keys": keys}     # for gateways that cache tokens in Redis
    if name == "console":
        return ConsoleGateway()
    if name == "eskiz":
        return EskizGateway(email=s.eskiz_email, password=s.eskiz_password, sender=s.eskiz_sender,
                            base_url=s.eskiz_base_url, **shared, **http)
    if name == "devsms":
        from .devsms import DevSmsGateway
        return DevSmsGateway(token=s.devsms_token, sender=s.devsms_sender, base_url=s.devsms_base_url, **http)
    if name == "smsflow":
        from .smsflow import SmsFlowGateway
        return SmsFlowGateway(client_id=s.smsflow_client_id, client_secret=s.smsflow_client_secret,
                              campaign=s.smsflow_campaign, base_url=s.smsflow_base_url, **shared, **http)
    if name == "smscx":
        from .smscx import SmsCxGateway
        return SmsCxGateway(api_key=s.smscx_api_key, client_id=s.smscx_client_id,
                            client_secret=s.smscx_client_secret, sender=s.smscx_sender,
                            base_url=s.smscx_base_url, **shared, **http)
    if name == "smspm":
        from .smspm import SmsPmGateway
        return SmsPmGateway(hash=s.smspm_hash, token=s.smspm_token, sender=s.smspm_sender,
                            base_url=s.smspm_base_url, **http)
    raise UnknownGatewayError(f"unknown gateway {name!r}; known: {', '.join(GATEWAY_NAMES)}")


class Gateways:
    """The configured gateways of this process; each adapter (and its HTTP pool) is built once."""

    def __init__(self, settings: Settings, client: redis.Redis, keys: Keys) -> None:
        self.settings, self.redis, self.keys = settings, client, keys
        self._built: dict[str, Gateway] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Gateway:
        if name not in self.settings.configured_gateways():
            known = ", ".join(self.settings.configured_gateways())
            raise UnknownGatewayError(f"gateway {name!r} is not configured here (configured: {known})")
        with self._lock:
            if name not in self._built:
                self._built[name] = build_gateway(name, self.settings, self.redis, self.keys)
            return self._built[name]
