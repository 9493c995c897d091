"""Beat's outbox relay: a task of the app the Django project configured (apps.py installs it).

`install(app)` registers RelayOutbox on the app under its public name, routes it to the periodic queue
(with beat's other work, never behind a backlog of sends) and adds it to beat's schedule every
OUTBOX_RELAY_INTERVAL seconds. The worker and beat started from smsdispatch.contrib.django.worker load
the project, so both have it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...tasks import SmsTask, queue_names

if TYPE_CHECKING:
    from ...worker import SmsApp

RELAY_OUTBOX = "smsdispatch.relay_outbox"
SCHEDULE_ENTRY = "smsdispatch-relay-outbox"


class RelayOutbox(SmsTask):
    """Beat: publish committed outbox rows nothing has published yet. Safe to run twice at once (rows
    are locked with SKIP LOCKED, and a row published twice sends once)."""

    name = RELAY_OUTBOX

    def run(self) -> int:
        from .outbox import relay
        return relay(self.app)


def install(app: SmsApp) -> SmsApp:
    """Give `app` the relay task, its route and its beat entry (once; a second call changes nothing)."""
    if RELAY_OUTBOX not in app.tasks:
        # a subclass per app, as tasks.register_tasks does: Celery binds a task class to one app
        app.register_task(type(RelayOutbox.__name__, (RelayOutbox,),
                               {"__module__": RelayOutbox.__module__, "__doc__": RelayOutbox.__doc__})())
    periodic = queue_names(app.runtime.settings.queue)[2]
    every = app.runtime.settings.outbox_relay_interval
    app.conf.task_routes = {**(app.conf.task_routes or {}), RELAY_OUTBOX: {"queue": periodic}}
    app.conf.beat_schedule = {**(app.conf.beat_schedule or {}), SCHEDULE_ENTRY: {
        "task": RELAY_OUTBOX, "schedule": every, "options": {"expires": max(every * 2, 10)}}}
    return app
