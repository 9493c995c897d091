"""Flask + Flask-SQLAlchemy: a sign-up that texts a code once the user is committed (README.md)."""

from .app import create_app

__all__ = ["create_app"]
