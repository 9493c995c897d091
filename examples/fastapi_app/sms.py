"""The SMS producer a FastAPI endpoint gets (dependency `get_sms`): smsdispatch's send_sms, awaitable.

`send_sms.delay` is blocking I/O: it writes the message's `queued` record in Redis, then publishes the
task (a round trip or two: about a millisecond on a nearby Redis, but as long as Redis takes when it
is slow or away). Called in an `async def` endpoint it would stall the event loop, and every request
with it. `Sms.send` runs it in Starlette's threadpool and awaits it, so:

- the loop stays free while Redis answers;
- the response waits for the publish: a message that could not be queued fails the request, so the
  client knows the code is not coming (and can ask for it again; the idempotency key keeps that from
  sending twice), instead of it vanishing after a 201.

BackgroundTasks would answer sooner, but publish after the response is sent: a failure is then only a
log line, and the client was already told the code is on its way. Use them for notifications that must
never slow down or fail a request, not for a code the user waits for. (A plain `def` endpoint already
runs in the threadpool: there, `send_sms.delay` can be called directly.)
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from smsdispatch.worker import SmsApp


class Sms:
    def __init__(self, app: SmsApp) -> None:
        self.app = app

    async def send(self, to: str, text: str, **options: Any) -> str:
        """Queue one SMS (`send_sms.delay`, off the event loop); returns its task id."""
        handle = await run_in_threadpool(self.app.send_sms.delay, to, text, **options)
        return handle.id


def get_sms(request: Request) -> Sms:
    return request.app.state.sms
