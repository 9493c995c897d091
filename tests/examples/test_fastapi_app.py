"""examples/fastapi_app, tested as its authors would: the testing kit's fixtures and FastAPI's TestClient."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

import smsdispatch
from examples.fastapi_app import AppSettings, create_app

from .conftest import NOWHERE


@pytest.fixture
def app():
    return create_app(AppSettings(database_url="sqlite://", sms={"REDIS_URL": NOWHERE}))


@pytest.fixture
def client(app):
    with TestClient(app) as client:
        yield client


def test_signup_sends_code(client, sms_outbox):
    client.post("/signup", json={"phone": "+998901234567"})
    assert len(sms_outbox) == 1
    assert sms_outbox[0].to == "+998901234567"


def test_the_code_is_the_users_and_its_key_the_signups(app, client, sms_outbox):
    from examples.fastapi_app.main import User
    response = client.post("/signup", json={"phone": "+998901234567"})
    assert response.status_code == 201
    with app.state.sessions() as db:
        user = db.get(User, response.json()["user_id"])
    assert sms_outbox[0].text == f"Your code is {user.code}"
    assert sms_outbox[0].idempotency_key == f"signup-{user.id}" and sms_outbox[0].valid


def test_a_rolled_back_signup_sends_nothing(client, sms_outbox):
    assert client.post("/signup", json={"phone": "+998901234567"}).status_code == 201
    assert client.post("/signup", json={"phone": "+998901234567"}).status_code == 409
    assert len(sms_outbox) == 1


def test_the_message_is_sent_and_recorded(client, sms_eager):
    client.post("/signup", json={"phone": "+998901234567"})
    assert [s.to for s in sms_eager.sent] == ["+998901234567"]
    assert smsdispatch.get_message(sms_eager.outbox[0].message_id)["status"] == "accepted"


def test_the_send_runs_off_the_event_loop(client, sms_outbox, monkeypatch):
    import threading
    seen = []
    send = smsdispatch.app.send_sms.apply_async

    def spy(*args, **kwargs):
        seen.append(threading.current_thread().name)
        return send(*args, **kwargs)
    monkeypatch.setattr(smsdispatch.app.send_sms, "apply_async", spy)
    client.post("/signup", json={"phone": "+998901234567"})
    assert len(seen) == 1 and "AnyIO worker thread" in seen[0], seen
