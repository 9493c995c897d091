"""FastAPI + SQLAlchemy: a sign-up that texts a code once the user is committed (README.md)."""

from .main import AppSettings, create_app

__all__ = ["AppSettings", "create_app"]
