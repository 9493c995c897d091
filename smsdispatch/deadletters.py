"""Dead letters: messages whose retries ran out (`sms:dead`), and replaying them. One decision for the
command line (`smsdispatch dead-letters --replay [--force]`) and the status page's replay action.

    not `failed`, or no number         refused: nothing to send
    maybe_sent, not forced             refused: an earlier call may have reached the gateway, and a
                                       resend may reach the recipient twice; only an operator who
                                       accepts that (--force, the page's second confirmation) resends
    maybe_sent, forced                 the ledger entry is made reopenable, then as below
    provably unsent                    submitted again: a new submission of the same arguments, which
                                       the ledger reopens (its retries ran out, nothing was sent)
    no longer a dead letter            refused (someone replayed it meanwhile)

A replay takes the message off the list first (LREM) and publishes after: two operators replaying the
same message at once publish it once. If the publish fails, it goes back on the list.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .dispatch import message_id_for
from .ledger import Ledger
from .phone import mask
from .records import Records
from .tasks import SEND_SMS

if TYPE_CHECKING:
    from .worker import Runtime

NOTHING_TO_SEND = "not a failed message with a number: nothing to send"
MAYBE_SENT = ("may have been sent (an earlier call may have reached the gateway); not replayed: "
              "--replay --force resends it, and its recipient may get it twice")
GONE = "no longer among the dead letters (replayed already?)"


@dataclass(frozen=True)
class Replay:
    """What a replay did: `replayed`, or why not (`reason`); `message_id` of the new submission."""
    replayed: bool
    reason: str = ""
    message_id: str | None = None


def refusal(record: dict[str, Any], *, force: bool) -> str | None:
    """Why this dead letter must not be replayed (None: it may)."""
    if record.get("status") != "failed" or not record.get("to"):
        return NOTHING_TO_SEND
    if record.get("maybe_sent") and not force:
        return MAYBE_SENT
    return None


def resend_arguments(record: dict[str, Any]) -> dict[str, Any]:
    """Exactly what was asked the first time (the requested gateway, not the one routing chose), so
    the fingerprint matches and the ledger reopens the key."""
    kwargs = {"to": record["to"], "text": record.get("text"), "gateway": record.get("requested_gateway"),
              "sender": record.get("sender"), "idempotency_key": record.get("idempotency_key"),
              "metadata": record.get("metadata"), "options": record.get("options")}
    return {k: v for k, v in kwargs.items() if v is not None}


class DeadLetters:
    """`publish(**send_sms kwargs) -> task id`: how a replay is submitted (send_sms.delay in the app)."""

    def __init__(self, records: Records, ledger: Ledger, publish: Callable[..., str]) -> None:
        self.records, self.ledger, self.publish = records, ledger, publish
        self.redis, self.key = records.redis, records.keys.dead_letters()

    @classmethod
    def of(cls, runtime: Runtime) -> DeadLetters:
        """The dead letters of an app, replayed through its send_sms."""
        send = runtime.app.tasks[SEND_SMS]
        return cls(runtime.dispatcher.records, runtime.dispatcher.ledger, lambda **kwargs: send.delay(**kwargs).id)

    def count(self) -> int:
        return int(self.redis.llen(self.key))

    def listing(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The dead letters, oldest first (the newest `limit` of them): id, status, error, maybe_sent and
        the number masked."""
        ids = self.records.dead_letters(newest=limit)
        out = []
        for mid in ids:
            record = self.records.get(mid) or {}
            out.append({"message_id": mid, "status": record.get("status"), "error": record.get("error"),
                        "maybe_sent": bool(record.get("maybe_sent")),
                        "to": mask(record["to"]) if record.get("to") else None,
                        "updated_at": record.get("updated_at")})
        return out

    def replay(self, message_id: str, *, force: bool = False) -> Replay:
        record = self.records.get(message_id) or {}
        why = refusal(record, force=force)
        if why:
            return Replay(False, why)
        if not self.redis.lrem(self.key, 1, message_id):
            return Replay(False, GONE)
        kwargs = resend_arguments(record)
        key = kwargs.get("idempotency_key")
        try:
            if record.get("maybe_sent") and key:
                self.ledger.force_reopenable(f"key:{key}")     # the operator's decision: let the key send again
            task_id = self.publish(**kwargs)
        except BaseException:
            self.redis.rpush(self.key, message_id)
            raise
        return Replay(True, message_id=message_id_for(key, task_id))
