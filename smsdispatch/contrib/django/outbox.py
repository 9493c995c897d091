"""The transactional outbox: a message is a row written in the caller's database transaction, and a
relay publishes the rows that committed.

    send_sms / send_batch   check the arguments (what apply_async refuses raises ValidationError here,
                            inside the caller's transaction), give the message an idempotency key if it
                            has none, and INSERT one OutboxMessage row; nothing touches Redis. After
                            the commit, Django runs the fast path: `relay(ids=[row])` in the same
                            process, so a message does not wait for beat. Rolled back: no row, nothing.
    relay                   in a transaction of its own: SELECT the unpublished rows FOR UPDATE SKIP
                            LOCKED (in id order, OUTBOX_RELAY_LIMIT at a time), publish each with its
                            key (`publish`: the task's apply_async, which records it `queued` first),
                            set published_at, COMMIT. Beat runs it every OUTBOX_RELAY_INTERVAL
                            (tasks.py RelayOutbox), on the periodic queue.

Exactly once, whatever dies where:

    the web process dies after the commit, before the fast path   the row is there, unpublished: the
                                                                  next relay run publishes it
    a relay dies after publishing, before its COMMIT              the row is still unpublished (its
                                                                  lock goes with the connection) and
                                                                  is published again: same key, same
                                                                  message id uuid5(key); the record
                                                                  exists already and the worker's
                                                                  ledger answers the copy, no send
    two relays at once (beat's and a fast path, two beats)        SKIP LOCKED: each row goes to one
    two rows with the same key (a retried request)                both are published, one is sent
    Redis away while relaying                                     attempts + 1, last_error; the row
                                                                  stays for the next run, which
                                                                  begins with the rows still waiting

A row the task refuses at publish time (only if settings changed since the write, e.g. a lower
MAX_TEXT_CHARS) is settled: published_at set, last_error "refused: ...", and a send_sms message
recorded `failed` (`validation`), as the worker records what it refuses.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from django.db import router, transaction
from django.utils import timezone

from ...dispatch import message_id_for
from ...errors import ValidationError
from ...tasks import PUBLISH_ERRORS
from . import commit
from .models import OutboxMessage

if TYPE_CHECKING:
    from ...worker import SmsApp

log = logging.getLogger("smsdispatch.outbox")

MAX_ERROR_CHARS = 1000


def send_sms(to: str, text: str | None, *, sender: str | None = None, gateway: str | None = None,
             idempotency_key: str | None = None, callback_url: str | None = None,
             metadata: dict[str, Any] | None = None, options: dict[str, Any] | None = None,
             using: str | None = None, relay_on_commit: bool = True, app: SmsApp | None = None) -> str:
    """`send_sms.delay(...)` through the outbox: a row in the current transaction of database `using`
    (the outbox model's write database if None), published once that commits. Returns the message id,
    uuid5 of the idempotency key (one is made when none is given), for `smsdispatch.get_message`.
    Raises ValidationError here for what apply_async refuses at the producer; the rest (the number,
    the gateway) the worker checks and records, as for `delay`. `relay_on_commit=False` leaves the row
    to beat's relay (for many rows in one transaction: one relay pass instead of one per row)."""
    app = app or _default_app()
    key = idempotency_key or f"outbox:{uuid.uuid4()}"
    given = {"to": to, "text": text, "sender": sender, "gateway": gateway, "idempotency_key": key,
             "callback_url": callback_url, "metadata": metadata, "options": options}
    _, kwargs = app.send_sms.checked((), {k: v for k, v in given.items() if v is not None}, None)
    message_id = message_id_for(key, "")
    _write(OutboxMessage.Kind.SMS, key, message_id, kwargs, using, app if relay_on_commit else None)
    return message_id


def send_batch(messages: list[dict[str, Any]], *, batch_id: str | None = None, gateway: str | None = None,
               sender: str | None = None, idempotency_key: str | None = None, using: str | None = None,
               relay_on_commit: bool = True, app: SmsApp | None = None) -> str:
    """`send_batch.delay(...)` through the outbox: the whole batch in one row (its entries as JSON),
    published once the transaction commits. Returns the batch id (one is made when neither a batch id
    nor a key is given), for `smsdispatch.get_batch`. A malformed batch raises ValidationError here."""
    app = app or _default_app()
    if not batch_id and not idempotency_key:
        batch_id = str(uuid.uuid4())
    given = {"messages": messages, "batch_id": batch_id, "gateway": gateway, "sender": sender,
             "idempotency_key": idempotency_key}
    _, kwargs, _checked = app.send_batch.checked((), {k: v for k, v in given.items() if v is not None}, None)
    kwargs["messages"] = messages
    key = idempotency_key or kwargs["batch_id"]      # the batch key, as batch.py derives entry keys from it
    _write(OutboxMessage.Kind.BATCH, key, kwargs["batch_id"], kwargs, using, app if relay_on_commit else None)
    return str(kwargs["batch_id"])


def relay(app: SmsApp | None = None, *, using: str | None = None, ids: Iterable[int] | None = None,
          limit: int | None = None) -> int:
    """Publish committed, unpublished outbox rows (all of them, or those of `ids`), `limit` rows per
    transaction (OUTBOX_RELAY_LIMIT); returns how many were published. Rows another relay holds are
    skipped, not waited for. Stops at the first broker or Redis error (the row keeps it as last_error)."""
    app = app or _default_app()
    using = using or router.db_for_write(OutboxMessage)
    limit = limit or app.runtime.settings.outbox_relay_limit
    wanted = list(ids) if ids is not None else None
    published, after = 0, 0
    while True:
        with transaction.atomic(using=using):
            rows = OutboxMessage.objects.using(using).select_for_update(skip_locked=True).filter(
                published_at__isnull=True, id__gt=after)
            if wanted is not None:
                rows = rows.filter(id__in=wanted)
            batch = list(rows.order_by("id")[:limit])
            done, broker_down = _publish_rows(app, batch, using)
        published += done
        if broker_down or len(batch) < limit:
            return published
        after = batch[-1].id      # rows that failed stay for the next run; this one goes on past them


def publish(app: SmsApp, row: OutboxMessage) -> None:
    """Hand one row to the broker: the task's apply_async with the row's kwargs, its key among them
    (send_sms records the message `queued` first; send_batch stores its entries first)."""
    if row.kind == OutboxMessage.Kind.SMS:
        app.send_sms.apply_async(kwargs=row.kwargs)
    elif row.kind == OutboxMessage.Kind.BATCH:
        app.send_batch.apply_async(kwargs=row.kwargs)
    else:
        raise ValidationError(f"outbox row {row.id}: unknown kind {row.kind!r}")


def _write(kind: Any, key: str, message_id: str, kwargs: dict[str, Any], using: str | None,
           relay_with: SmsApp | None) -> None:
    """INSERT the row in the caller's transaction; with `relay_with`, publish it right after the commit."""
    if "\\u0000" in json.dumps(kwargs):
        raise ValidationError("arguments: must not contain NUL characters (a database cannot store them)")
    using = using or router.db_for_write(OutboxMessage)
    row = OutboxMessage.objects.using(using).create(kind=kind, idempotency_key=key, message_id=message_id,
                                                    kwargs=kwargs)
    if relay_with is not None:
        # The fast path, after the commit. robust: a failure is logged by Django; beat's relay takes the row.
        commit.on_commit(lambda: relay(relay_with, using=using, ids=[row.id]), using=using, robust=True)


def _publish_rows(app: SmsApp, rows: list[OutboxMessage], using: str) -> tuple[int, bool]:
    """Publish `rows` (locked by the caller's transaction) and mark each. Returns (published, whether
    the broker or Redis failed, which ends the run)."""
    published = 0
    for row in rows:
        row.attempts += 1
        try:
            publish(app, row)
        except ValidationError as e:
            _refused(app, row, str(e))
        except PUBLISH_ERRORS as e:
            row.last_error = _error(e)
            row.save(using=using, update_fields=["attempts", "last_error"])
            log.warning("outbox row %s (%s %s) not published, will retry: %s", row.id, row.kind, row.message_id,
                        row.last_error)
            return published, True
        except Exception as e:      # a bug: kept on the row (the admin shows it), the next rows go on
            row.last_error = _error(e)
            row.save(using=using, update_fields=["attempts", "last_error"])
            log.exception("outbox row %s (%s %s) not published", row.id, row.kind, row.message_id)
            continue
        else:
            row.last_error = ""
            published += 1
        row.published_at = timezone.now()
        row.save(using=using, update_fields=["attempts", "last_error", "published_at"])
    return published, False


def _refused(app: SmsApp, row: OutboxMessage, reason: str) -> None:
    row.last_error = f"refused: {reason}"[:MAX_ERROR_CHARS]
    log.warning("outbox row %s (%s %s) refused: %s", row.id, row.kind, row.message_id, reason)
    if row.kind == OutboxMessage.Kind.SMS:
        app.runtime.dispatcher.reject(row.message_id, f"outbox-{row.id}", {"idempotency_key": row.idempotency_key},
                                      "validation", reason)


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"[:MAX_ERROR_CHARS]


def _default_app() -> SmsApp:
    from ...worker import default_app
    return default_app()
