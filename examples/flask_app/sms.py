"""Publish an SMS only once the database transaction commits (SQLAlchemy session events).

`send_after_commit(session, to, text, **options)` keeps the message with the session; `after_commit`
publishes it (`smsdispatch.send_sms.delay`), and a transaction that ends any other way (rollback, or a
session closed without a commit) drops it. So no SMS goes out for a row that was not saved, and a view
may ask for the SMS anywhere inside the transaction. (A savepoint rolled back inside a transaction
that commits does not drop what was asked for inside it.)

If Redis cannot take the message, `commit()` raises after the row is committed: the view answers 500,
the user is saved and the code is not queued. Sending it again under the same idempotency key (a
"send the code again" action) sends it at most once. This is not a transactional outbox.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction, scoped_session

import smsdispatch

PENDING = "smsdispatch_pending"


def send_after_commit(session: Any, to: str, text: str, **options: Any) -> None:
    """`smsdispatch.send_sms.delay(to, text, **options)` once `session` commits; never if it rolls back."""
    if isinstance(session, scoped_session):     # Flask-SQLAlchemy's db.session: this request's session
        session = session()
    if session.get_transaction() is None:
        session.begin()                 # so that a rollback before any query still ends a transaction
    session.info.setdefault(PENDING, []).append((to, text, options))


@event.listens_for(Session, "after_commit")
def _publish(session: Session) -> None:
    for to, text, options in session.info.pop(PENDING, []):
        smsdispatch.send_sms.delay(to, text, **options)


@event.listens_for(Session, "after_transaction_end")
def _drop(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:      # the outermost transaction ended; after a commit nothing is left
        session.info.pop(PENDING, None)
