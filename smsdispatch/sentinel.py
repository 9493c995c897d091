"""Redis Sentinel: one URL for the broker, Celery's result backend and our own client.

    SMSDISPATCH_REDIS_URL=sentinel://:data-password@10.0.0.1:26379/0;sentinel://10.0.0.2:26379;sentinel://10.0.0.3:26379
    SMSDISPATCH_SENTINEL_MASTER=mymaster      # the name the Sentinels monitor the primary under (required)
    SMSDISPATCH_SENTINEL_PASSWORD=...         # the Sentinels' own password, if they have one

The form is kombu's and Celery's: every Sentinel's address, ';' between them. The first one also
carries the database and the credentials of the Redis primary and its replicas (the *data* password,
their ``requirepass`` or ACL user); kombu and Celery read them from the first address only, so a later
address that names another database or password is refused here rather than ignored there. The
Sentinels' own password (``requirepass`` in sentinel.conf) is a setting of its own, since a URL
holds one password and the two are often different.

Who connects how:

- the broker: our kombu transport's Sentinel flavour (redis_transport.SentinelTransport: kombu's
  SentinelChannel with our channel's client reuse, heartbeats and restores), with the transport options
  `transport_options` gives (``master_name``, ``sentinel_kwargs``);
- Celery's result backend: celery.backends.redis.SentinelBackend (chosen by the scheme), same options;
- our client (redisclient.connect): redis-py's `redis.sentinel.Sentinel`, with a pool that loads our
  Lua scripts on every new connection, so on the new primary too after a failover.

Every one of them asks a Sentinel for the primary's address when it (re)connects, and a connection
to a primary that was demoted answers READONLY, which redis-py turns into a reconnect.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlparse

SCHEME = "sentinel"
DEFAULT_PORT = 26379
#: Sentinel queries are small and local: a Sentinel that does not answer within this is skipped
#: (redis-py asks the next), rather than hanging a failover's reconnect on a dead host.
SENTINEL_SOCKET_TIMEOUT = 1.0


@dataclass(frozen=True)
class SentinelUrl:
    addresses: tuple[tuple[str, int], ...]
    db: int = 0
    username: str | None = None
    password: str | None = None     # the primary's and replicas' (data) password


def is_sentinel(url: str) -> bool:
    return urlparse(url.split(";", 1)[0]).scheme == SCHEME


def parse(url: str) -> SentinelUrl:
    """The Sentinels' addresses, the database and the data credentials of a sentinel:// URL. Raises
    ValueError (never quoting a password) for anything kombu or Celery would read otherwise."""
    addresses: list[tuple[str, int]] = []
    first: tuple[int, str | None, str | None] | None = None
    for n, part in enumerate(p.strip() for p in url.split(";")):
        if not part:
            continue
        parsed = urlparse(part)
        if parsed.scheme != SCHEME:
            raise ValueError(f"address {n + 1} must be sentinel://host:port too (';' between Sentinels)")
        try:
            host, port = parsed.hostname, parsed.port or DEFAULT_PORT
        except ValueError:
            raise ValueError(f"address {n + 1}: the port must be a number") from None
        if not host:
            raise ValueError(f"address {n + 1} names no host")
        db_text = parsed.path.strip("/")
        if not (db_text.isdigit() or db_text == ""):
            raise ValueError(f"address {n + 1}: the database must be a number, as in sentinel://host:26379/0")
        username = unquote(parsed.username) if parsed.username else None
        password = unquote(parsed.password) if parsed.password else None
        given = (int(db_text) if db_text else None, username, password)
        if first is None:
            first = (given[0] or 0, username, password)
        elif (given[0] is not None and given[0] != first[0]) or (password and password != first[2]) \
                or (username and username != first[1]):
            raise ValueError("the database and the password go on the first address only (kombu and Celery "
                             "read them there): later ones are host:port")
        addresses.append((host, port))
    if first is None:
        raise ValueError("names no Sentinel")
    return SentinelUrl(tuple(addresses), first[0], first[1], first[2])


def sentinel_kwargs(password: str | None) -> dict[str, Any]:
    """redis-py's connection arguments for the Sentinels themselves (not the primary)."""
    kwargs: dict[str, Any] = {"socket_timeout": SENTINEL_SOCKET_TIMEOUT,
                              "socket_connect_timeout": SENTINEL_SOCKET_TIMEOUT}
    if password:
        kwargs["password"] = password
    return kwargs


def transport_options(master: str, password: str | None) -> dict[str, Any]:
    """What kombu's SentinelChannel and Celery's SentinelBackend read from their transport options."""
    return {"master_name": master, "sentinel_kwargs": sentinel_kwargs(password)}
