"""The Redis client of workers and producers: every Lua script is on the server before a connection
is used, so a pipeline does not ask.

redis-py sends ``SCRIPT EXISTS`` before executing any pipeline that holds a script: one more round
trip on every claim and every outcome of the send path (bench/, part e). A script leaves a Redis
server only when the server restarts (or on a ``SCRIPT FLUSH``), and a restart drops every
connection. So `ScriptPool` loads every script registered with the client on each new connection,
and on each reconnect, before the connection is handed out; a script registered later is loaded
at once. A pipeline that still meets ``NOSCRIPT`` (someone ran ``SCRIPT FLUSH``) reloads them all
and raises: its caller retries, as after any Redis error. Plain `redis.Redis` clients (fakeredis in
the unit tests) work too; they just keep redis-py's check.

Behind Sentinel (a ``sentinel://`` URL, sentinel.py) the pool is redis-py's SentinelConnectionPool with
the same loading: a connection asks the Sentinels for the primary each time it connects, so after a
failover every connection reconnects to the promoted replica and loads the scripts there (a replica's
script cache is its own: scripts are not replicated, only what they write). A plain script call that
still meets ``NOSCRIPT`` loads it and runs again (redis-py's Script does); a pipeline raises as above.

Replies: redis-py types every string reply `bytes | str`, since it cannot know whether a client was
made with ``decode_responses``. Ours are not: they answer bytes (UTF-8). `text`, `text_fields` and
`members` read a reply as text either way, so the types say what the code relies on.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import redis
from redis.client import Pipeline as _Pipeline
from redis.exceptions import NoScriptError
from redis.sentinel import Sentinel, SentinelConnectionPool

from . import sentinel

if TYPE_CHECKING:
    from .config import Settings


class ScriptPool(redis.ConnectionPool):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.scripts: dict[str, bytes] = {}       # sha -> source
        self._scripts_lock = threading.Lock()

    def make_connection(self):
        connection = super().make_connection()
        connection.register_connect_callback(self._load_scripts)
        return connection

    def _load_scripts(self, connection) -> None:
        with self._scripts_lock:
            sources = list(self.scripts.values())
        try:
            for source in sources:
                connection.send_command("SCRIPT", "LOAD", source)
            for _ in sources:
                connection.read_response()
        except Exception:
            connection.disconnect()    # never hand out a connection whose server may lack a script
            raise

    def add(self, script: Any) -> bool:
        with self._scripts_lock:
            if script.sha in self.scripts:
                return False
            self.scripts[script.sha] = script.script if isinstance(script.script, bytes) else script.script.encode()
            return True


class SentinelScriptPool(ScriptPool, SentinelConnectionPool):
    """The primary's pool behind Sentinel (found anew on each connect), loading our scripts likewise."""


class Pipeline(_Pipeline):
    def load_scripts(self) -> None:
        if not isinstance(self.connection_pool, ScriptPool):
            super().load_scripts()

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        try:
            return super().execute(raise_on_error)
        except NoScriptError:
            if isinstance(self.connection_pool, ScriptPool):
                for source in list(self.connection_pool.scripts.values()):
                    self.immediate_execute_command("SCRIPT LOAD", source)
            raise


class Client(redis.Redis):
    def register_script(self, script):
        registered = super().register_script(script)
        pool = self.connection_pool
        if isinstance(pool, ScriptPool) and pool.add(registered):
            self.script_load(registered.script)      # connections made before now have not loaded it
        return registered

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Pipeline:
        return Pipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)


#: The name our connections give themselves (CLIENT SETNAME): `redis-cli CLIENT LIST` tells them from
#: Celery's, and bench/ counts their round trips apart.
CLIENT_NAME = "smsdispatch"


#: Behind Sentinel, a command waits at most this long for its answer: a primary that vanished without
#: closing its connections (a host gone, not a process) is given up and the Sentinels asked again.
#: Above SMSDISPATCH_CLAIM_REPLICA_TIMEOUT's maximum (config.py), which a WAIT may take.
SENTINEL_COMMAND_TIMEOUT = 15.0


def connect(url: str, *, sentinel_master: str | None = None, sentinel_password: str | None = None,
            **kwargs: Any) -> Client:
    """A client for `url` whose connections load our scripts (kwargs as for redis.Redis.from_url). A
    ``sentinel://`` URL (sentinel.py) needs `sentinel_master`, and `sentinel_password` if the Sentinels
    have one."""
    kwargs.setdefault("client_name", CLIENT_NAME)
    if not sentinel.is_sentinel(url):
        return Client(connection_pool=ScriptPool.from_url(url, **kwargs))
    if not sentinel_master:
        raise ValueError("a sentinel:// URL needs the primary's name (SMSDISPATCH_SENTINEL_MASTER)")
    parsed = sentinel.parse(url)
    kwargs.setdefault("socket_timeout", SENTINEL_COMMAND_TIMEOUT)
    kwargs.setdefault("socket_connect_timeout", sentinel.SENTINEL_SOCKET_TIMEOUT * 5)
    manager = Sentinel(list(parsed.addresses), sentinel_kwargs=sentinel.sentinel_kwargs(sentinel_password))
    pool = SentinelScriptPool(sentinel_master, manager, is_master=True, db=parsed.db, username=parsed.username,
                              password=parsed.password, **kwargs)
    return Client(connection_pool=pool)


def connect_to(settings: Settings, **kwargs: Any) -> Client:
    """`connect` to the deployment's REDIS_URL, with its Sentinel settings: every client of ours is built
    here (the worker's, beat's heartbeat, the receiver's pages), so none can forget the Sentinels."""
    password = settings.sentinel_password.get_secret_value() if settings.sentinel_password else None
    return connect(settings.redis_url, sentinel_master=settings.sentinel_master, sentinel_password=password,
                   **kwargs)


#: An HGETALL reply as redis-py types it (bytes from our clients).
RawHash = Mapping[bytes | str, bytes | str]


def text(reply: bytes | str) -> str:
    """A string reply as text (UTF-8)."""
    return reply.decode() if isinstance(reply, bytes) else reply


def text_fields(raw: RawHash) -> dict[str, str]:
    """A hash reply (HGETALL) as text: field -> value."""
    return {text(k): text(v) for k, v in raw.items()}


def members(reply: Iterable[object]) -> list[str]:
    """A sorted set's range read without scores (ZRANGEBYSCORE), as text. redis-py types its elements
    as members or (member, score) pairs alike: the type cannot tell whether scores were asked for."""
    out = []
    for member in reply:
        if not isinstance(member, (bytes, str)):
            raise TypeError(f"expected a member, got {member!r} (read with scores?)")
        out.append(text(member))
    return out
