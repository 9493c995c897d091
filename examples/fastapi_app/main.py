"""A FastAPI app that texts a sign-up code once the new user is committed.

    uvicorn --factory examples.fastapi_app.main:create_app
    celery -A examples.fastapi_app.worker worker --pool threads --loglevel INFO

Settings come from the environment: APP_DATABASE_URL, and APP_SMS, smsdispatch's settings as JSON
(names without the SMSDISPATCH_ prefix: APP_SMS='{"REDIS_URL": "redis://redis:6379/0"}'); what APP_SMS
leaves out comes from SMSDISPATCH_* variables, for the web app and for its worker alike.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from pydantic import BaseModel
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import String, create_engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.pool import StaticPool
from starlette.concurrency import run_in_threadpool

import smsdispatch

from .sms import Sms, get_sms


class AppSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="APP_")

    database_url: str = "sqlite:///fastapi_app.db"
    sms: dict[str, Any] = {}


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    phone: Mapped[str] = mapped_column(String(32), unique=True)
    code: Mapped[str] = mapped_column(String(8))      # a real app keeps a hash, with an expiry


class Signup(BaseModel):
    phone: str


router = APIRouter()


def create_app(settings: AppSettings | None = None) -> FastAPI:
    settings = settings or AppSettings()
    app = FastAPI()
    engine = _engine(settings.database_url)
    Base.metadata.create_all(engine)
    app.state.sessions = sessionmaker(engine, expire_on_commit=False)
    app.state.sms = Sms(smsdispatch.configure(settings.sms))
    app.include_router(router)
    return app


def get_db(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


@router.post("/signup", status_code=201)
async def signup(body: Signup, db: Annotated[Session, Depends(get_db)],
                 sms: Annotated[Sms, Depends(get_sms)]) -> dict[str, str]:
    user = User(id=uuid.uuid4().hex, phone=body.phone, code=f"{secrets.randbelow(10**4):04d}")
    try:
        await run_in_threadpool(_save, db, user)       # blocking database I/O, off the event loop too
    except IntegrityError:                             # the number is taken: rolled back, nothing sent
        raise HTTPException(409, "this number is already registered") from None
    # Committed: now, and only now, the SMS (awaited: see sms.py for why not BackgroundTasks).
    await sms.send(user.phone, f"Your code is {user.code}", idempotency_key=f"signup-{user.id}")
    return {"user_id": user.id}


def _save(db: Session, user: User) -> None:
    db.add(user)
    try:
        db.commit()
    except IntegrityError:
        db.rollback()
        raise


def _engine(url: str):
    if not url.startswith("sqlite"):
        return create_engine(url)
    # SQLite's connections are used by the threadpool's threads; an in-memory database is one connection.
    memory = url in ("sqlite://", "sqlite:///:memory:")
    return create_engine(url, connect_args={"check_same_thread": False},
                         **({"poolclass": StaticPool} if memory else {}))
