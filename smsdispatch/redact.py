"""A logging filter that masks phone numbers in every log line, whoever wrote it.

Our own code logs numbers through `phone.mask` already; this catches the rest, e.g. Celery's dump of
a message body it refused to decode, or a library's exception text.
"""

from __future__ import annotations

import logging
import re

from .phone import mask

# 9 to 15 digits (E.164 allows 15), optionally after "+", not inside a longer run of digits or a word.
PHONE_LIKE = re.compile(r"(?<![\w.])\+?\d{9,15}(?![\w.])")


def redact(text: str) -> str:
    return PHONE_LIKE.sub(lambda m: mask(m.group()), text)


class RedactPhones(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, ()
        return True


def install(logger: logging.Logger) -> None:
    """Add the filter to every handler of `logger` (handlers filter records from child loggers too)."""
    for handler in logger.handlers:
        if not any(isinstance(f, RedactPhones) for f in handler.filters):
            handler.addFilter(RedactPhones())
