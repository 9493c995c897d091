"""A gateway access token shared by every worker through Redis, renewed single-flight.

Eskiz, SMSFlow and SMS.CX (OAuth2) hand out tokens. Each worker process asking for its own would
multiply logins; so the token lives in Redis (keys.gateway_token), and when it is refused, whoever
takes the Redis lock (keys.gateway_lock) gets a new one while the others wait and then reuse it.

Each process also keeps the token it last saw for LOCAL_SECONDS, so a send does not read Redis for it
every time (one round trip per message, bench/). A token that expired meanwhile is answered 401,
which renews it as usual (and picks up a token another worker already renewed).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

import redis
import requests

from ..errors import AuthError, GatewayUnavailable
from ..keys import Keys
from ..redisclient import text

LOCAL_SECONDS = 30.0

#: Obtain a new token: given the token just refused (None when there was none), return
#: (token, seconds it may be kept). A gateway with a refresh endpoint can use the stale one.
Fetch = Callable[[str | None], tuple[str, int]]


class SharedToken:
    def __init__(self, client: redis.Redis, keys: Keys, *, gateway: str, account: str, fetch: Fetch,
                 lock_wait: float) -> None:
        """`account` tells accounts apart (e.g. base URL + user); it is hashed into the key name."""
        digest = hashlib.sha256(account.encode()).hexdigest()[:12]
        self.redis, self.gateway, self.fetch, self.lock_wait = client, gateway, fetch, lock_wait
        self.key = keys.gateway_token(gateway, digest)
        self.lock_key = keys.gateway_lock(gateway, digest)
        self._local: tuple[str, float] | None = None     # (token, keep until time.monotonic())

    def get(self) -> str:
        local = self._local
        if local is not None and time.monotonic() < local[1]:
            return local[0]
        cached = self.redis.get(self.key)
        return self._keep(text(cached)) if cached else self.renew(stale=None)

    def _keep(self, token: str) -> str:
        self._local = (token, time.monotonic() + LOCAL_SECONDS)
        return token

    def renew(self, *, stale: str | None) -> str:
        lock = self.redis.lock(self.lock_key, timeout=self.lock_wait + 5, blocking_timeout=self.lock_wait)
        if not lock.acquire():
            raise GatewayUnavailable(f"waited too long for another worker's {self.gateway} token",
                                     gateway=self.gateway)
        try:
            current = self.redis.get(self.key)
            if current and text(current) != stale:
                return self._keep(text(current))      # another worker renewed it while we waited
            token, ttl = self.fetch(stale)
            self.redis.set(self.key, token, ex=max(1, int(ttl)))
            return self._keep(token)
        finally:
            try:
                lock.release()
            except redis.exceptions.LockError:   # it expired while we waited on the gateway: harmless
                pass

    def authorized(self, call: Callable[[str], requests.Response]) -> requests.Response:
        """`call(token)`; on a 401 renew the token once and call again; still 401 → AuthError."""
        token = self.get()
        response = call(token)
        if response.status_code == 401:
            response = call(self.renew(stale=token))
            if response.status_code == 401:
                raise AuthError(f"{self.gateway} refused a freshly renewed token", gateway=self.gateway,
                                status=401)
        return response
