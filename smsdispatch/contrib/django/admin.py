"""The Django admin's view of the outbox: each row with its message's record, read from Redis.

Read only: rows are written by the outbox and settled by the relay. Phone numbers are masked
everywhere here (phone.py `mask`), in the arguments as in the record and its history.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html

from ...phone import mask
from ...redact import redact
from .models import OutboxMessage

MASKED_FIELDS = ("to",)


def masked(value: Any) -> Any:
    """`value` with every phone number field (`to`, in messages and batch entries alike) masked."""
    if isinstance(value, dict):
        return {k: mask(v) if k in MASKED_FIELDS and v is not None else masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v) for v in value]
    return value


@admin.register(OutboxMessage)
class OutboxMessageAdmin(admin.ModelAdmin):
    list_display = ("id", "kind", "message_id", "recipient", "created_at", "published_at", "attempts", "last_error")
    list_filter = ("kind", ("published_at", admin.EmptyFieldListFilter))
    search_fields = ("=message_id", "=idempotency_key")
    fields = ("kind", "message_id", "idempotency_key", "arguments", "created_at", "published_at", "attempts",
              "last_error", "record")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: OutboxMessage | None = None) -> bool:
        return False

    @admin.display(description="to")
    def recipient(self, row: OutboxMessage) -> str:
        if row.kind == OutboxMessage.Kind.BATCH:
            return f"{len(row.kwargs.get('messages') or [])} messages"
        return mask(row.kwargs.get("to", ""))

    @admin.display(description="arguments")
    def arguments(self, row: OutboxMessage) -> str:
        return format_html("<pre>{}</pre>", redact(json.dumps(masked(row.kwargs), ensure_ascii=False, indent=2)))

    @admin.display(description="record in Redis")
    def record(self, row: OutboxMessage) -> str:
        import smsdispatch
        if row.kind == OutboxMessage.Kind.BATCH:
            found: Any = smsdispatch.get_batch(row.message_id)
        else:
            record = smsdispatch.get_message(row.message_id)
            found = record and {"record": masked(record), "history": masked(smsdispatch.get_history(row.message_id))}
        if not found:
            return "none yet" if row.published_at is None else "none (expired, or not yet taken by a worker)"
        return format_html("<pre>{}</pre>", redact(json.dumps(found, ensure_ascii=False, indent=2, default=str)))
