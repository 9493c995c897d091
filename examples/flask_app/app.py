"""A Flask app that texts a sign-up code, published only once the new user is committed.

    flask --app examples.flask_app run
    celery -A examples.flask_app.worker worker --pool threads --loglevel INFO

smsdispatch's settings live in the app's config, as SMSDISPATCH_* keys (a config file, or
FLASK_SMSDISPATCH_REDIS_URL=... in the environment); what the config leaves out comes from
SMSDISPATCH_* variables, for the web app and for its worker alike.
"""

from __future__ import annotations

import secrets
import uuid
from typing import Any

from flask import Blueprint, Flask, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import String
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import smsdispatch

from .sms import send_after_commit


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
views = Blueprint("signup", __name__)


class User(db.Model):  # type: ignore[name-defined]
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    phone: Mapped[str] = mapped_column(String(32), unique=True)
    code: Mapped[str] = mapped_column(String(8))      # a real app keeps a hash, with an expiry


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.from_mapping(SQLALCHEMY_DATABASE_URI="sqlite:///flask_app.db")
    app.config.from_prefixed_env()          # FLASK_SMSDISPATCH_REDIS_URL=... -> SMSDISPATCH_REDIS_URL
    app.config.from_mapping(config or {})
    app.extensions["smsdispatch"] = smsdispatch.configure(app.config.get_namespace("SMSDISPATCH_"))
    db.init_app(app)
    app.register_blueprint(views)
    with app.app_context():
        db.create_all()
    return app


@views.post("/signup")
def signup() -> tuple[dict[str, str], int]:
    user = User(id=uuid.uuid4().hex, phone=request.form["phone"], code=f"{secrets.randbelow(10**4):04d}")
    db.session.add(user)
    send_after_commit(db.session, user.phone, f"Your code is {user.code}", idempotency_key=f"signup-{user.id}")
    try:
        db.session.commit()                 # the SMS is published here, once the user is saved
    except IntegrityError:                  # the number is taken: rolled back, and nothing is sent
        db.session.rollback()
        return {"error": "this number is already registered"}, 409
    return {"user_id": user.id}, 201
