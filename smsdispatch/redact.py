"""A logging filter that masks phone numbers and credentials in every log line, whoever wrote it.

Our own code logs numbers through `phone.mask` already; this catches the rest, e.g. Celery's dump of
a message body it refused to decode, the `argsrepr`/`kwargsrepr` Celery builds for a task sent by name
(`'+998 93 741 52 86'`: nothing masked it at the producer), or a library's exception text.

What is masked:
- a run of 9 to 15 digits, optionally after "+" (`998937415286`);
- a number written with separators (spaces, - . / and parentheses) when that is unambiguous: it
  starts with "+" (`+998 93 741-52-86`), or it is a whole quoted string with at least one separator
  other than a dot (`'93 741 52 86'`, `"(93) 741-52-86"`, as in a repr or JSON). Dates, times,
  versions, decimals and ids are left alone;
- the userinfo of a URL (`redis://:password@host` → `redis://:***@host`);
- every secret value the process's settings hold (config.Settings registers them: gateway keys,
  passwords, the Redis password), wherever it appears, e.g. echoed in a gateway's error body;
- a JSON Web Token (a gateway's bearer token), with or without "Bearer";
- the value of a credential in a URL's query (`?hash=…&token=…`), and a bearer or basic credential
  (`Authorization: Bearer …`).
Exception tracebacks attached to a record are masked the same way, and so is every field a log call
passes with `extra=` (message ids, gateways, Celery's `data`: whatever they hold; logs.py's JSON lines
show them).
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import quote

from .phone import mask

# 9 to 15 digits (E.164 allows 15), optionally after "+", not inside a longer run of digits or a word,
# nor the last group of a UUID (message and task ids: about one in 300 has twelve digits there, and a
# masked id could not be found in the logs).
_UUID_HEAD = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
PHONE_LIKE = re.compile(rf"(?<![\w.])(?<!{_UUID_HEAD})\+?\d{{9,15}}(?![\w.])")

_SEPARATORS = " \u00a0\\-./()"
# "+" then digits and separators, ending in a digit; not glued to a word before or after.
PLUS_NUMBER = re.compile(rf"(?<![\w+])\+\(?\d[\d{_SEPARATORS}]*\d(?!\w)")
# A whole quoted string of digits and separators.
QUOTED_NUMBER = re.compile(rf"(?P<q>['\"])(?P<n>\+?[\d{_SEPARATORS}]*\d)(?P=q)")

# Credentials in a URL query, and HTTP credentials.
_CREDENTIAL_NAMES = ("hash", "token", "access_token", "refresh_token", "api_key", "apikey", "key", "secret",
                     "client_secret", "password", "passwd", "pwd", "signature", "sig", "auth")
QUERY_CREDENTIAL = re.compile(rf"(?P<k>[?&](?:{'|'.join(_CREDENTIAL_NAMES)})=)[^&\s'\"#]+", re.IGNORECASE)
HTTP_CREDENTIAL = re.compile(r"(?P<k>\b(?:Bearer|Basic)\s+)[A-Za-z0-9._~+/=-]{16,}")
# A JSON Web Token (Eskiz's and SMSFlow's bearer tokens), wherever it appears, with or without "Bearer".
JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")
# A URL's userinfo: `redis://:password@host`, `https://user:token@host`, `amqp://token@host`.
URL_USERINFO = re.compile(r"(?P<k>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<u>[^\s/@:'\"]*)(?P<p>:[^\s/@'\"]*)?@")

MASKED = "***"


def _digits(text: str) -> int:
    return sum(c.isdigit() for c in text)


def _mask_plus(m: re.Match) -> str:
    return mask(m.group()) if 9 <= _digits(m.group()) <= 15 else m.group()


def _mask_quoted(m: re.Match) -> str:
    number = m.group("n")
    separated = any(c in number for c in " \u00a0-/()") or number.startswith("+")
    if separated and number[0] in "+(0123456789" and 9 <= _digits(number) <= 15:
        return m.group("q") + mask(number) + m.group("q")
    return m.group()


# A pattern runs only where the text has what it cannot match without (it runs on every log line).
_NINE_DIGITS = re.compile(r"\d{9}")


def _mask_userinfo(m: re.Match) -> str:
    if m.group("p") is None:                    # a lone name before "@" may itself be the token
        return m.group("k") + MASKED + "@"
    return m.group("k") + m.group("u") + ":" + MASKED + "@"


def redact_url(url: str) -> str:
    """`redis://:pw@host:6379/0` → `redis://:***@host:6379/0` (credentials in its query masked too)."""
    return redact(url)


#: Secret values this process knows (our settings' credentials, the Redis password): masked wherever
#: they appear, e.g. in a gateway's error body that echoes our key. Only values of 8+ characters.
_KNOWN_SECRETS: set[str] = set()
MIN_KNOWN_SECRET = 8


def remember_secrets(*values: str | None) -> None:
    """Mask these values in every redacted text from now on (config.Settings registers its secrets)."""
    for value in values:
        if value and len(value) >= MIN_KNOWN_SECRET:
            _KNOWN_SECRETS.add(value)
            # URL-encoded too: it may travel in a query string or a form body
            _KNOWN_SECRETS.add(quote(value, safe=""))


def redact(text: str) -> str:
    for known in _KNOWN_SECRETS:
        if known in text:
            text = text.replace(known, MASKED)
    if "://" in text and "@" in text:
        text = URL_USERINFO.sub(_mask_userinfo, text)
    if "eyJ" in text:
        text = JWT.sub(MASKED, text)
    if "=" in text:
        text = QUERY_CREDENTIAL.sub(lambda m: m.group("k") + MASKED, text)
    if "Bearer" in text or "Basic" in text:
        text = HTTP_CREDENTIAL.sub(lambda m: m.group("k") + MASKED, text)
    if "'" in text or '"' in text:
        text = QUOTED_NUMBER.sub(_mask_quoted, text)
    if "+" in text:
        text = PLUS_NUMBER.sub(_mask_plus, text)
    if _NINE_DIGITS.search(text):
        text = PHONE_LIKE.sub(lambda m: mask(m.group()), text)
    return text


def redact_value(value: Any, depth: int = 0) -> Any:
    """`redact` applied to every string inside a value (dicts, lists, tuples); a number that reads as a
    phone number becomes its masked string. Other values are returned as they are."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        masked = redact(str(value))
        return value if masked == str(value) else masked
    if depth >= _MAX_DEPTH:
        return "<…>"
    if isinstance(value, dict):
        return {k: redact_value(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_value(v, depth + 1) for v in value]
    return redact(str(value))


#: The attributes every LogRecord has; any other came with the call's `extra=` (a field).
STANDARD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class RedactPhones(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, ()
        fields = vars(record)
        for name in fields.keys() - STANDARD_FIELDS:        # the fields given with `extra=`, masked alike
            value = fields[name]
            if value is not None:
                setattr(record, name, redact_value(value))
        if record.exc_info and not record.exc_text:
            # Formatters use exc_text when it is set: format the traceback once, masked.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install(logger: logging.Logger) -> None:
    """Add the filter to every handler of `logger` (handlers filter records from child loggers too)."""
    for handler in logger.handlers:
        if not any(isinstance(f, RedactPhones) for f in handler.filters):
            handler.addFilter(RedactPhones())


# ------------------------------------------------------------------ task arguments as people see them

#: Argument names whose string values are shown as they are (ids and routing, no personal data).
SHOWN_ARGUMENTS = frozenset({"idempotency_key", "gateway", "sender", "batch_id", "callback_url", "index",
                             "submission", "reminder_id", "message_id", "task_id"})
#: Argument names that hold a phone number: shown masked.
NUMBER_ARGUMENTS = frozenset({"to", "phone", "recipient"})
_MAX_DEPTH = 8


def _shown(value, name=None, depth: int = 0):
    if depth > _MAX_DEPTH:
        return "<…>"
    if name in NUMBER_ARGUMENTS and isinstance(value, (str, int)) and not isinstance(value, bool):
        return mask(value)
    if isinstance(value, dict):
        return {k: _shown(v, k if isinstance(k, str) else None, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_shown(v, None, depth + 1) for v in value]
    if isinstance(value, str):
        return value if name in SHOWN_ARGUMENTS else f"<{len(value)} chars>"
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return f"<{type(value).__name__}>"


def shown_arguments(args, kwargs, *, positional: tuple[str, ...] = ()) -> tuple[str, str]:
    """(argsrepr, kwargsrepr) of a task call for Flower, `celery inspect` and the worker's log lines:
    numbers masked, every other string (a text, metadata) replaced by its length, ids and routing shown.
    Positional arguments named in `positional` are shown under their names in kwargsrepr. Whatever the
    shape of the arguments (a by-name producer sends anything), nothing raises and no text passes."""
    try:
        args = list(args or ())
        kwargs = dict(kwargs or {})
    except (TypeError, ValueError):
        return "<?>", "<?>"
    named = dict(zip(positional, args, strict=False))
    rest = args[len(named):]
    shown = {**{k: v for k, v in kwargs.items() if k not in named}, **named}
    return redact(repr(tuple(_shown(rest)))), redact(repr(_shown(shown)))
