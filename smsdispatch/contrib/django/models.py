"""The transactional outbox: one row per message (or batch) a caller wrote in its own transaction.

A row is written by outbox.py `send_sms` / `send_batch` inside the caller's transaction, so it exists
exactly when the caller's own rows do. Until `published_at` is set, the relay (outbox.py `relay`)
will publish it; publishing it twice is harmless, because it carries its idempotency key: the message
id is uuid5(key) and the worker's ledger answers a second copy from the record.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone


class OutboxMessage(models.Model):
    class Kind(models.TextChoices):
        SMS = "sms", "send_sms"
        BATCH = "batch", "send_batch"

    id = models.BigAutoField(primary_key=True)
    kind = models.CharField(max_length=8, choices=Kind.choices)
    #: The message's key (send_sms), or the batch key (its idempotency key, else its batch id). Not
    #: unique: a second row with the same key (a retried request) is published too, and sends nothing.
    idempotency_key = models.CharField(max_length=200, db_index=True)
    #: What `smsdispatch.get_message` (send_sms) or `smsdispatch.get_batch` (send_batch) is asked with.
    message_id = models.CharField(max_length=128, db_index=True)
    #: The task's keyword arguments as checked at the call (send_batch's entries included).
    kwargs = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now)
    #: Set in the relay's transaction once the task message was handed to the broker (or refused).
    published_at = models.DateTimeField(null=True, blank=True)
    #: Publish attempts; `last_error` says why the last one failed (empty once published).
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")

    class Meta:
        db_table = "smsdispatch_outbox"
        verbose_name = "outbox message"
        ordering = ["-id"]
        indexes = [
            # What the relay scans: only rows still to publish, in id order.
            models.Index(fields=["id"], condition=Q(published_at__isnull=True), name="smsdispatch_outbox_pending"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.message_id}"
