"""The app's shape: a web app builds its own (`create_app(settings)`), the default one is built on first
use (not when `smsdispatch.worker` is imported), and the package's public tasks are real, typed objects."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from smsdispatch.config import load_settings
from smsdispatch.tasks import TASKS, SendSms, StoreRetry
from smsdispatch.worker import Runtime, SmsApp, create_app

ROOT = Path(__file__).resolve().parents[2]


def run(code: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SMSDISPATCH_")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env=clean | env)


def test_importing_the_worker_module_reads_no_settings_the_default_app_is_built_on_use():
    proc = run("""
import smsdispatch.worker as worker
from smsdispatch import send_sms
from smsdispatch.errors import ConfigError
try:
    worker.app
except ConfigError as e:
    print("ConfigError", e)
""", SMSDISPATCH_VISIBILITY_TIMEOUT="soon")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("ConfigError") and "SMSDISPATCH_VISIBILITY_TIMEOUT" in proc.stdout


def test_the_public_send_sms_is_the_default_apps_task():
    proc = run("""
import smsdispatch
from smsdispatch import send_batch, send_sms
from smsdispatch.tasks import SendBatch, SendSms
from smsdispatch.worker import app
assert isinstance(send_sms, SendSms) and isinstance(send_batch, SendBatch)
assert send_sms._get_current_object() is app.tasks["smsdispatch.send_sms"] is app.send_sms
assert smsdispatch.app._get_current_object() is app
print("ok")
""", SMSDISPATCH_REDIS_URL="redis://127.0.0.1:1/0")
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_each_app_has_its_own_tasks_and_runtime():
    one = create_app(load_settings(redis_url="redis://127.0.0.1:1/0", backoff_base=0.5))
    two = create_app(load_settings(redis_url="redis://127.0.0.1:1/1", backoff_base=2.0))
    assert isinstance(one, SmsApp) and isinstance(one.runtime, Runtime)
    assert {cls.name for cls in TASKS} <= set(one.tasks)
    assert one.send_sms is not two.send_sms and isinstance(one.send_sms, SendSms)
    assert one.send_sms.app is one and two.send_sms.app is two
    assert one.send_sms.runtime.settings.backoff_base == 0.5 and two.send_sms.runtime.settings.backoff_base == 2.0
    assert isinstance(one.tasks["smsdispatch.send_chunk"], StoreRetry)


def test_a_runtime_uses_the_parts_it_is_given():
    app = create_app(load_settings(redis_url="redis://127.0.0.1:1/0"))
    stand_in = object()
    app.runtime = Runtime(app.runtime.settings, app, dispatcher=stand_in)  # type: ignore[arg-type]
    assert app.send_sms.runtime.dispatcher is stand_in
