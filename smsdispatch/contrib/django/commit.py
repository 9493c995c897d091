"""Run something once the caller's database transaction commits: Django's `transaction.on_commit`,
behind one function that says plainly what is missing when Django is not there.

Django's rules apply: inside `atomic()` the callback runs after the outermost block commits and never
if it rolls back (a savepoint rolled back drops the callbacks registered inside it); outside any
transaction (autocommit) it runs at once.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

from ...errors import ConfigError


def on_commit(callback: Callable[[], object], *, using: str | None = None, robust: bool = False) -> None:
    """Call `callback` when the transaction of database `using` (Django's default one if None)
    commits. Raises ConfigError when Django is not installed or its settings are not configured.
    `robust`: an exception of the callback is logged by Django instead of raised from the commit."""
    _transaction().on_commit(callback, using=using, robust=robust)


def check() -> None:
    """Raise ConfigError unless on_commit can work: what an on-commit call checks before anything else,
    so a project without Django hears so whatever the arguments."""
    _transaction()


def _transaction() -> ModuleType:
    try:
        from django.conf import settings
        from django.db import transaction
    except ImportError:
        raise ConfigError("on_commit sends wait for a Django database transaction to commit: they need "
                          "Django (pip install 'smsdispatch[django]')") from None
    if not settings.configured:
        raise ConfigError("on_commit sends wait for a Django database transaction to commit: Django's "
                          "settings are not configured (set DJANGO_SETTINGS_MODULE, or call from the "
                          "Django project)")
    return transaction
