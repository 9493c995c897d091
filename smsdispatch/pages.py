"""The operators' pages: `/metrics` (metrics.py) and `/healthz` (health.py), as WSGI apps.

The webhook receiver mounts them beside its report routes (webhooks.make_app: a report's path has two
parts, `/<gateway>/<secret>`, a page's one), and `smsdispatch metrics` serves them alone (`Pages`), for
a deployment without webhooks or one that keeps the receiver's port public and these private. They
read Redis through connections of their own with short timeouts and one retry, so a scrape or a health
check answers (503) within seconds when Redis does not.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from redis.backoff import NoBackoff
from redis.retry import Retry

from .health import Health, celery_ping
from .keys import Keys
from .metrics import Metrics
from .redisclient import connect_to

if TYPE_CHECKING:
    from .worker import Runtime

WsgiApp = Callable[[dict, Callable], Iterable[bytes]]

#: Socket timeouts (s) of the pages' Redis connection.
REDIS_TIMEOUT = 2.0


def pages(runtime: Runtime) -> dict[str, WsgiApp]:
    """Path → page, for the receiver's mount and for `smsdispatch metrics`."""
    client = connect_to(runtime.settings, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT,
                        retry=Retry(NoBackoff(), 1))    # once more at once (a connection Redis dropped), no more
    keys = Keys(runtime.settings.key_prefix)
    return {"/metrics": Metrics(client, keys, runtime.settings),
            "/healthz": Health(client, keys, runtime.settings, ping=celery_ping(runtime.app))}


class Pages:
    """A WSGI app of pages only: each path its page, anything else 404."""

    def __init__(self, routes: Mapping[str, WsgiApp]) -> None:
        self.routes = dict(routes)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        page = self.routes.get(environ.get("PATH_INFO", ""))
        if page is not None:
            return page(environ, start_response)
        body: dict[str, Any] = {"error": "not found", "pages": sorted(self.routes)}
        data = json.dumps(body).encode()
        start_response("404 Not Found", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]
