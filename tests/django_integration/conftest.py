"""Fixtures for smsdispatch.contrib.django against real parts: PostgreSQL, Redis, a `celery worker`
(and beat) started from smsdispatch.contrib.django.worker with the test project (tests/djangoproject)
loaded, and the fake Eskiz.

PostgreSQL: SMSDISPATCH_TEST_POSTGRES_URL (a server and a user that may create databases), else
postgresql://postgres@127.0.0.1:5432/postgres. The session creates a database of its own with a unique
name, migrates it, and drops it at the end. With CI=true a missing PostgreSQL (or Django, psycopg) fails
the run instead of skipping it, as a missing Redis does.

Django is set up once in the test process (django.setup() cannot be undone), with DJANGO_SETTINGS_MODULE
set only meanwhile: Celery apps built later in this session (other tests' producers) get no Django
fix-up, and the workers other tests start do not load the project. The project's AppConfig makes its
app smsdispatch's default one; the default app is that app only during these tests.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote, urlparse

import pytest

from smsdispatch.devtools.processes import BeatProcess, WorkerProcess
from tests.integration.conftest import fake_eskiz, redis_url, wait_until, worker_settings  # noqa: F401

from ..unavailable import unavailable

SETTINGS_MODULE = "tests.djangoproject.settings"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/django_integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


def _unavailable(reason: str) -> None:
    unavailable(reason)


@pytest.fixture(scope="session")
def postgres() -> Iterator[dict[str, str]]:
    """A fresh database for this session: the TESTPROJECT_DB_* variables the project's settings read."""
    try:
        import django  # noqa: F401
        import psycopg
    except ImportError as e:
        _unavailable(f"the Django tests need the django extra: {e}")
    url = os.environ.get("SMSDISPATCH_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    try:
        admin = psycopg.connect(url, autocommit=True, connect_timeout=5)
    except psycopg.Error as e:
        _unavailable(f"no PostgreSQL for the Django tests at {urlparse(url).hostname}: {e}")
    name = f"smsdispatch_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    parsed = urlparse(url)
    yield {"TESTPROJECT_DB_NAME": name, "TESTPROJECT_DB_HOST": parsed.hostname or "127.0.0.1",
           "TESTPROJECT_DB_PORT": str(parsed.port or 5432), "TESTPROJECT_DB_USER": unquote(parsed.username or ""),
           "TESTPROJECT_DB_PASSWORD": unquote(parsed.password or "")}
    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture(scope="session")
def project_env(postgres, redis_url, fake_eskiz) -> dict[str, str]:  # noqa: F811
    """The environment of every process of the project: database, smsdispatch settings, settings module."""
    smsdispatch = worker_settings(redis_url, fake_eskiz, OUTBOX_RELAY_INTERVAL="0.5")
    mapping = {k.removeprefix("SMSDISPATCH_"): v for k, v in smsdispatch.items()}
    return {**postgres, "TESTPROJECT_SMSDISPATCH": json.dumps(mapping), "DJANGO_SETTINGS_MODULE": SETTINGS_MODULE}


@pytest.fixture(scope="session")
def django_app(project_env):
    """Django set up in this process on the session's database, migrated; returns the smsdispatch app
    the project's AppConfig configured."""
    import django
    from django.core.management import call_command

    from smsdispatch import worker

    before = worker._default
    saved = {k: os.environ.get(k) for k in project_env}
    os.environ.update(project_env)
    try:
        django.setup()
        call_command("migrate", verbosity=0)
        app = worker.default_app()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        worker._default = before
    yield app
    from django.db import connections
    connections.close_all()


@pytest.fixture(autouse=True)
def project_default_app(django_app, monkeypatch):
    """During each test, smsdispatch's default app (smsdispatch.send_sms, ...) is the project's."""
    from smsdispatch import worker
    monkeypatch.setattr(worker, "_default", django_app)
    return django_app


class DjangoWorker(WorkerProcess):
    app_module = "smsdispatch.contrib.django.worker"


class DjangoBeat(BeatProcess):
    app_module = "smsdispatch.contrib.django.worker"


@pytest.fixture(scope="module")
def worker(project_env, django_app) -> Iterator[DjangoWorker]:
    """`celery -A smsdispatch.contrib.django.worker worker` with the project loaded."""
    process = DjangoWorker(project_env)
    yield process
    process.stop()


@pytest.fixture
def beat(project_env, django_app, tmp_path) -> Iterator[DjangoBeat]:
    process = DjangoBeat(project_env, schedule_dir=str(tmp_path))
    yield process
    process.stop()


@pytest.fixture
def fake(fake_eskiz):  # noqa: F811
    fake_eskiz.reset()
    return fake_eskiz


def accepted(message_id: str, timeout: float = 20.0) -> dict[str, Any]:
    """The message's record once it is final, `accepted` (fails the test otherwise)."""
    from smsdispatch import get_message
    assert wait_until(lambda: (get_message(message_id) or {}).get("status") == "accepted", timeout=timeout), \
        get_message(message_id)
    record = get_message(message_id)
    assert record is not None
    return record


def numbers() -> Iterator[str]:
    """Distinct Uzbek mobile numbers, so each test's messages are told apart at the fake gateway."""
    base = int(time.time() * 1000) % 10_000_000
    n = 0
    while True:
        n += 1
        yield f"+99890{(base + n) % 10_000_000:07d}"
