"""The examples against the real thing: a real Redis, a real `celery worker` started from each example's
own worker module (which calls smsdispatch.configure as the web app does), and the fake Eskiz. A
sign-up sends exactly one SMS; a sign-up rolled back sends none (not even a `queued` record)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import redis

import smsdispatch
from smsdispatch import worker as sms_worker
from smsdispatch.devtools.processes import WorkerProcess
from smsdispatch.dispatch import message_id_for
from smsdispatch.keys import Keys

from .conftest import wait_until, worker_settings

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 30


def flask_client(settings: dict[str, str]):
    from examples.flask_app import create_app
    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": "sqlite://", **settings})
    return app.test_client()


def fastapi_client(settings: dict[str, str]):
    from fastapi.testclient import TestClient

    from examples.fastapi_app import AppSettings, create_app
    sms = {k.removeprefix("SMSDISPATCH_"): v for k, v in settings.items()}
    return TestClient(create_app(AppSettings(database_url="sqlite://", sms=sms)))


EXAMPLES = {
    # name: (worker module, the web app's test client, how its form is posted)
    "flask": ("examples.flask_app.worker", flask_client, "data"),
    "fastapi": ("examples.fastapi_app.worker", fastapi_client, "json"),
}


@pytest.fixture(scope="module", params=sorted(EXAMPLES))
def example(request, redis_url, fake_eskiz):
    module, client_for, body = EXAMPLES[request.param]
    settings = worker_settings(redis_url, fake_eskiz)
    started_from = type("ExampleWorker", (WorkerProcess,), {"app_module": module})
    own = {"FLASK_SQLALCHEMY_DATABASE_URI": "sqlite://", "APP_DATABASE_URL": "sqlite://", "PYTHONPATH": str(ROOT)}
    worker = started_from(settings | own)      # the web app's own variables, next to SMSDISPATCH_*
    yield settings, worker, client_for, body
    worker.stop()


@pytest.fixture
def web(example, monkeypatch):
    """The web app in this process, configured like its worker; the default app as it was afterwards."""
    settings, worker, client_for, body = example
    for name in list(os.environ):
        if name.startswith("SMSDISPATCH_"):
            monkeypatch.delenv(name)
    monkeypatch.setattr(sms_worker, "_default", None)
    return client_for(settings), body, settings, worker


def signup(web, phone: str) -> tuple[int, dict]:
    """POST /signup: (status, JSON body), from Flask's test client or FastAPI's alike."""
    client, body, _, _ = web
    response = client.post("/signup", **{body: {"phone": phone}})
    return response.status_code, response.get_json() if hasattr(response, "get_json") else response.json()


def new_phone() -> str:
    return f"+99890{uuid.uuid4().int % 10**7:07d}"


def accepted(user_id: str) -> bool:
    record = smsdispatch.get_message(message_id_for(f"signup-{user_id}", ""))
    return record is not None and record["status"] == "accepted"


def test_a_signup_sends_one_sms_through_the_worker(web, fake):
    phone = new_phone()
    status, body = signup(web, phone)
    assert status == 201
    assert wait_until(lambda: accepted(body["user_id"]), timeout=TIMEOUT), web[3].log[-3000:]
    [sms] = fake.accepted_for(to=phone)
    assert sms.text.startswith("Your code is ")


def test_a_rolled_back_signup_sends_nothing(web, fake):
    _, _, settings, _ = web
    phone, later = new_phone(), new_phone()
    assert signup(web, phone)[0] == 201
    store = redis.Redis.from_url(settings["SMSDISPATCH_REDIS_URL"])
    records = Keys(settings["SMSDISPATCH_KEY_PREFIX"]).message("*")
    before = len(store.keys(records))
    assert signup(web, phone)[0] == 409         # the number is taken: the transaction rolls back
    assert len(store.keys(records)) == before   # nothing was queued (every publish writes a record first)
    status, body = signup(web, later)           # a later sign-up goes through, and by the time it is sent
    assert status == 201 and wait_until(lambda: accepted(body["user_id"]), timeout=TIMEOUT)
    assert len(fake.accepted_for(to=phone)) == 1 and len(fake.accepted_for(to=later)) == 1
