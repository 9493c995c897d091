"""`delay_on_commit` & co. check at the call and defer only the record and the publish.

Django's on_commit is replaced by a list of the callbacks it was handed (contrib/django/commit.py is the
one place the tasks reach Django), so what happens at the call and what waits for the commit are told
apart without a database; fakeredis holds the records. The real transaction (PostgreSQL, a worker) is
tests/django_integration's. Without Django: subprocesses, so this process's Django stays as it is.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest
from celery import Task

import smsdispatch
from smsdispatch import worker
from smsdispatch.config import load_settings
from smsdispatch.contrib.django import commit
from smsdispatch.dispatch import message_id_for
from smsdispatch.errors import ValidationError
from smsdispatch.tasks import SEND_BATCH, SEND_SMS
from smsdispatch.worker import Runtime, create_app

ROOT = Path(__file__).resolve().parents[2]
TO = "+998901234567"


class Deferred(list):
    """What on_commit was handed: (callback, using, robust) each."""

    def __call__(self, callback, *, using=None, robust=False):
        self.append((callback, using, robust))

    def commit(self):
        for callback, _, _ in self:
            callback()


@pytest.fixture
def deferred(monkeypatch) -> Deferred:
    hooks = Deferred()
    monkeypatch.setattr(commit, "check", lambda: None)
    monkeypatch.setattr(commit, "on_commit", hooks)
    return hooks


@pytest.fixture
def app(dispatcher, monkeypatch):
    app = create_app(load_settings(redis_url="redis://127.0.0.1:1/0"))
    app.runtime = Runtime(app.runtime.settings, app, dispatcher=dispatcher, redis=dispatcher.records.redis)
    published = []

    def publish(task, args=None, kwargs=None, task_id=None, **options):      # Celery's own publish, below ours
        published.append((task.name, args, {"kwargs": kwargs, "task_id": task_id, **options}))
        return SimpleNamespace(id=task_id)
    monkeypatch.setattr(Task, "apply_async", publish)
    app.published = published
    monkeypatch.setattr(worker, "_default", app)
    return app


def keys(app) -> list[bytes]:
    return sorted(app.runtime.redis.keys("*"))


@pytest.mark.parametrize("args, kwargs, words", [
    ((TO, "x" * 1531), {}, "text: at most 1530"),
    ((TO, "Hi"), {"metadata": {"when": datetime.now(timezone.utc)}}, "metadata: must be plain JSON"),
    ((TO, "Hi"), {"idempotency_key": "k" * 201}, "idempotency_key: at most 200"),
    ((TO, "Hi"), {"callback_url": "http://example.com/cb"}, "callback_url"),
    ((TO, "Hi"), {"text": "again"}, "given both by position and by name"),
    ((TO, "Hi \ud800"), {}, "valid Unicode"),
])
def test_send_sms_delay_on_commit_refuses_at_the_call_and_defers_nothing(app, deferred, args, kwargs, words):
    with pytest.raises(ValidationError, match=words):
        app.send_sms.delay_on_commit(*args, **kwargs)
    assert deferred == [] and keys(app) == [] and app.published == []


def test_a_bad_task_id_or_eta_is_refused_at_the_call(app, deferred):
    with pytest.raises(ValidationError, match="task_id"):
        app.send_sms.apply_async_on_commit((TO, "Hi"), task_id="a:b")
    with pytest.raises(ValueError):
        app.send_sms.apply_async_on_commit((TO, "Hi"), eta="next tuesday")
    assert deferred == [] and keys(app) == []


def test_send_sms_delay_on_commit_records_and_publishes_only_at_the_commit(app, deferred):
    metadata = {"order": 1001}
    message_id = app.send_sms.delay_on_commit(TO, "Order 1001 confirmed", idempotency_key="order-1001",
                                              metadata=metadata)
    assert message_id == message_id_for("order-1001", "")
    assert len(deferred) == 1 and deferred[0][1:] == (None, False)
    assert keys(app) == [] and app.published == []
    metadata["order"] = 9999            # changed after the call: the message is what was checked
    deferred.commit()
    record = app.runtime.dispatcher.records.get(message_id)
    assert record["status"] == "queued" and record["payload"]["metadata"] == {"order": 1001}
    [(name, _, published)] = app.published
    assert name == SEND_SMS and published["kwargs"]["idempotency_key"] == "order-1001"


def test_the_database_is_handed_to_on_commit(app, deferred):
    app.send_sms.apply_async_on_commit((TO, "Hi"), using="orders")
    app.send_batch.apply_async_on_commit(([{"to": TO, "text": "Hi"}],), using="orders")
    assert [using for _, using, _ in deferred] == ["orders", "orders"]
    for task in (app.send_sms, app.send_batch):     # not a task argument the worker would refuse later
        with pytest.raises(TypeError, match="apply_async_on_commit"):
            task.delay_on_commit(TO, "Hi", using="orders")
    assert len(deferred) == 2


@pytest.mark.parametrize("messages, words", [
    ([], "non-empty list"),
    ("not a list", "non-empty list"),
    ([{"to": TO, "text": "x" * 1531}], r"messages\[0\]\.text: at most"),
    ([{"to": TO, "text": "Hi", "metadata": {"b": b"bytes"}}], "not plain JSON"),
])
def test_send_batch_delay_on_commit_refuses_at_the_call(app, deferred, messages, words):
    with pytest.raises(ValidationError, match=words):
        app.send_batch.delay_on_commit(messages, batch_id="b-1")
    assert deferred == [] and keys(app) == []
    with pytest.raises(ValidationError, match="batch_id"):
        app.send_batch.delay_on_commit([{"to": TO, "text": "Hi"}], batch_id="a:b")


def test_send_batch_delay_on_commit_stores_its_entries_only_at_the_commit(app, deferred):
    entries = [{"to": TO, "text": "Sale starts today"}]
    batch_id = app.send_batch.delay_on_commit(entries, batch_id="sale-42")
    assert batch_id == "sale-42" and keys(app) == [] and app.published == []
    entries.append({"to": TO, "text": "added after the call"})
    deferred.commit()
    assert app.runtime.batches.get("sale-42")["total"] == 1
    [(name, _, published)] = app.published
    assert name == SEND_BATCH and published["kwargs"] == {"batch_id": "sale-42"}


def test_schedule_reminder_on_commit_refuses_at_the_call_and_stores_at_the_commit(app, deferred):
    naive = datetime.now() + timedelta(days=1)
    with pytest.raises(ValidationError, match="timezone-aware"):
        smsdispatch.schedule_reminder_on_commit(TO, "Tomorrow at 10", naive)
    with pytest.raises(ValidationError):
        smsdispatch.schedule_reminder_on_commit("not a number", "Tomorrow at 10", naive.astimezone(timezone.utc))
    assert deferred == [] and keys(app) == []
    later = datetime.now(timezone.utc) + timedelta(days=1)
    reminder_id = smsdispatch.schedule_reminder_on_commit(TO, "Tomorrow at 10", later, idempotency_key="appt-1")
    assert keys(app) == [] and smsdispatch.get_reminder(reminder_id) is None
    deferred.commit()
    assert smsdispatch.get_reminder(reminder_id)["state"] == "scheduled"


BLOCK_DJANGO = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "django":
            raise ImportError(f"{name} is not installed (blocked)")
sys.meta_path.insert(0, Block())
"""

CALLS = """
import os
os.environ.pop("DJANGO_SETTINGS_MODULE", None)
import smsdispatch, smsdispatch.outbox
from datetime import datetime, timezone
from smsdispatch.errors import ConfigError
smsdispatch.configure({"REDIS_URL": "redis://127.0.0.1:1/0"})     # nothing listens: nothing may connect
for call in (lambda: smsdispatch.send_sms.delay_on_commit("+998901234567", "Hi"),
             lambda: smsdispatch.send_sms.delay_on_commit("+998901234567", "x" * 2000),
             lambda: smsdispatch.send_batch.delay_on_commit([{"to": "+998901234567", "text": "Hi"}]),
             lambda: smsdispatch.schedule_reminder_on_commit("+998901234567", "Hi", datetime.now(timezone.utc)),
             lambda: smsdispatch.outbox.send_sms("+998901234567", "Hi")):
    try:
        call()
    except ConfigError as e:
        print("ConfigError:", e)
"""


@pytest.mark.parametrize("prelude, words", [
    (BLOCK_DJANGO, "pip install 'smsdispatch[django]'"),
    ("", "not configured"),
])
def test_without_django_each_on_commit_call_says_what_is_missing_first(prelude, words):
    """ConfigError before anything else (bad arguments included), and without touching Redis."""
    out = subprocess.run([sys.executable, "-c", prelude + CALLS], capture_output=True, text=True, cwd=ROOT,
                         timeout=60)
    lines = out.stdout.splitlines()
    assert out.returncode == 0, out.stderr[-2000:]
    assert len(lines) == 5 and all(line.startswith("ConfigError:") for line in lines), out.stdout
    assert all(words in line for line in lines), lines
