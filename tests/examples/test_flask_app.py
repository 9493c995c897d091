"""examples/flask_app, tested as its authors would: the testing kit's fixtures and Flask's test client."""

from __future__ import annotations

import pytest

import smsdispatch
from examples.flask_app import create_app

from .conftest import NOWHERE


@pytest.fixture
def app():
    return create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": "sqlite://", "SMSDISPATCH_REDIS_URL": NOWHERE})


@pytest.fixture
def client(app):
    return app.test_client()


def test_signup_sends_code(client, sms_outbox):
    client.post("/signup", data={"phone": "+998901234567"})
    assert len(sms_outbox) == 1
    assert sms_outbox[0].to == "+998901234567"


def test_the_code_is_the_users_and_its_key_the_signups(app, client, sms_outbox):
    from examples.flask_app.app import User, db
    response = client.post("/signup", data={"phone": "+998901234567"})
    assert response.status_code == 201
    with app.app_context():
        user = db.session.get(User, response.json["user_id"])
    assert sms_outbox[0].text == f"Your code is {user.code}"
    assert sms_outbox[0].idempotency_key == f"signup-{user.id}" and sms_outbox[0].valid


def test_a_rolled_back_signup_sends_nothing(client, sms_outbox):
    assert client.post("/signup", data={"phone": "+998901234567"}).status_code == 201
    assert client.post("/signup", data={"phone": "+998901234567"}).status_code == 409
    assert len(sms_outbox) == 1


def test_a_message_asked_for_in_a_rolled_back_transaction_is_never_sent(app, sms_outbox):
    from examples.flask_app.app import User, db
    from examples.flask_app.sms import send_after_commit
    with app.app_context():
        send_after_commit(db.session, "+998901234567", "dropped")
        db.session.rollback()
        db.session.add(User(id="u1", phone="+998907654321", code="1234"))
        send_after_commit(db.session, "+998907654321", "kept")
        assert sms_outbox.texts == []
        db.session.commit()
    assert sms_outbox.texts == ["kept"]


def test_the_message_is_sent_and_recorded(client, sms_eager):
    client.post("/signup", data={"phone": "+998901234567"})
    assert [s.to for s in sms_eager.sent] == ["+998901234567"]
    assert smsdispatch.get_message(sms_eager.outbox[0].message_id)["status"] == "accepted"


def test_the_app_is_configured_from_its_config(app):
    settings = app.extensions["smsdispatch"].runtime.settings
    assert settings.redis_url == NOWHERE and smsdispatch.app.runtime.settings is settings


def test_a_gateway_outage_is_retried(client, sms_eager):
    sms_eager.fail_next("unavailable")
    client.post("/signup", data={"phone": "+998901234567"})
    message_id = sms_eager.outbox[0].message_id
    assert smsdispatch.get_message(message_id)["status"] == "retrying"
    sms_eager.run_scheduled()           # the retry's time has come
    assert smsdispatch.get_message(message_id)["status"] == "accepted"
    assert len(sms_eager.sent) == 1
