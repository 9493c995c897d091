"""The status page: what happened to a message, a batch, a gateway, for a person with a browser.

Served by the webhook receiver under /status (webhooks.py mounts it; `smsdispatch webhooks` runs it)
when STATUS_USER and STATUS_PASSWORD are set; without them /status is a 404 like any unknown path.
Server-rendered HTML with one stylesheet and no script, readable on a phone.

    app.py      the WSGI app: routes, methods, security headers
    guard.py    HTTP basic auth and CSRF tokens
    views.py    the pages: what each reads and shows (numbers masked, everything escaped)
    lookup.py   the search (id, idempotency key, batch id, the end of a number) and the counts
    html.py     escaping by default, and the templates (templates/*.html, static/status.css)

It reads what the worker writes (records.py, batch.py, circuit.py, polling.py); its one action,
replaying a dead letter (STATUS_ACTIONS), is deadletters.py's, the same as the command line's.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .app import StatusPage
from .views import Views

if TYPE_CHECKING:
    from ..worker import Runtime

__all__ = ["StatusPage", "make"]


def make(runtime: Runtime) -> StatusPage | None:
    """The page for an app's runtime; None when its settings name no credentials (the page is off)."""
    from ..deadletters import DeadLetters

    settings = runtime.settings
    if not settings.status_page:
        return None
    d = runtime.dispatcher
    views = Views(settings, d.records, runtime.batches, d.circuits, runtime.poller, DeadLetters.of(runtime),
                  clock=time.time)
    return StatusPage(settings, views)
