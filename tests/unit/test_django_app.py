"""The Django app's wiring, in subprocesses (a process sets Django up once): the AppConfig configures
smsdispatch from SMSDISPATCH or, without it, from the environment, and installs beat's outbox relay;
smsdispatch.contrib.django.worker refuses to start without a project. No database is touched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SHOW_APP = """
import json
from smsdispatch.contrib.django.worker import app
entry = app.conf.beat_schedule["smsdispatch-relay-outbox"]
print(json.dumps({"queue": app.runtime.settings.queue, "prefix": app.runtime.settings.key_prefix,
                  "registered": "smsdispatch.relay_outbox" in app.tasks,
                  "route": app.conf.task_routes["smsdispatch.relay_outbox"], "entry": entry}))
"""


def run(code: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SMSDISPATCH_", "TESTPROJECT_", "DJANGO_"))}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60,
                          env=base | env)


def test_the_worker_module_loads_the_project_and_has_the_relay_on_the_periodic_queue():
    settings = {"QUEUE": "shop", "KEY_PREFIX": "shopsms", "OUTBOX_RELAY_INTERVAL": "2"}
    out = run(SHOW_APP, DJANGO_SETTINGS_MODULE="tests.djangoproject.settings",
              TESTPROJECT_SMSDISPATCH=json.dumps(settings), SMSDISPATCH_QUEUE="not-this-one")
    assert out.returncode == 0, out.stderr[-3000:]
    shown = json.loads(out.stdout.splitlines()[-1])
    assert (shown["queue"], shown["prefix"], shown["registered"]) == ("shop", "shopsms", True)
    assert shown["route"] == {"queue": "shop.periodic"}
    assert shown["entry"]["task"] == "smsdispatch.relay_outbox" and shown["entry"]["schedule"] == 2.0


def test_without_smsdispatch_in_the_settings_the_environment_is_read():
    out = run(SHOW_APP, DJANGO_SETTINGS_MODULE="tests.djangoproject.settings", SMSDISPATCH_QUEUE="fromenv")
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.splitlines()[-1])["queue"] == "fromenv"


def test_the_worker_module_says_what_is_missing():
    out = run("import smsdispatch.contrib.django.worker")
    assert out.returncode != 0 and "set DJANGO_SETTINGS_MODULE" in out.stderr
