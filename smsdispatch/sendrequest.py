"""What a producer may ask for: the validated form of `send_sms` kwargs."""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator
from pydantic import ValidationError as PydanticValidationError
from pydantic_core import ErrorDetails

from . import phone, segments
from .errors import ValidationError

#: The default of SMSDISPATCH_MAX_TEXT_CHARS: ten concatenated GSM-7 segments of 153 characters, about
#: what gateways accept in one message (a UCS-2 text of this length is 23 segments).
MAX_TEXT_CHARS = 1530
MAX_METADATA_BYTES = 4096   # metadata, and options, each as UTF-8 JSON
MAX_CALLBACK_URL_CHARS = 2048
MAX_IDEMPOTENCY_KEY_CHARS = 200
#: Batch ids and task ids become parts of Redis key names: ASCII letters, digits, '.', '_', '-' only
#: (no ':', which would reach into another key's name), at most this long.
MAX_ID_CHARS = 128
_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
#: All arguments of one message together, as UTF-8 JSON: room for the longest text in 4-byte
#: characters, metadata, options and a callback URL, and not much more.
MAX_PAYLOAD_BYTES = 32 * 1024

#: The task's named arguments (in the order `send_sms(to, text, ...)` takes them by position).
FIELDS = ("to", "text", "sender", "gateway", "idempotency_key", "callback_url", "metadata", "options")
POSITIONAL = ("to", "text")
#: json.dumps(value, ensure_ascii=False), the same text, without building an encoder per call (json.dumps
#: does that whenever an option is not its default): every argument of every message is encoded.
_dumps = json.JSONEncoder(ensure_ascii=False).encode
EXTRA_ARGS = "_extra_args"     # positional arguments beyond `to` and `text` (always refused)

#: What a phone number may be written with besides digits (any script's decimal digits) and spaces:
#: "+998 (90) 123-45-67", "+998.90.123/45/67". Anything else (letters, control, invisible or
#: direction marks, emoji) is refused instead of silently dropped by the parser.
_PHONE_PUNCTUATION = frozenset("+./")
_PHONE_CATEGORIES = frozenset({"Nd", "Zs", "Pd", "Ps", "Pe"})


def merge_arguments(args: Any, kwargs: Any) -> dict[str, Any]:
    """One dict of send_sms arguments from a call's positional and keyword arguments: the first two
    positions are `to` and `text`, any more go under EXTRA_ARGS (refused by validation). Raises
    ValidationError when they are not a sequence and a mapping, or when an argument is given twice."""
    if args is None:
        args = ()
    if kwargs is None:
        kwargs = {}
    if isinstance(args, (str, bytes)) or not isinstance(args, Sequence):
        raise ValidationError(f"arguments: positional arguments must be a list, not {type(args).__name__}")
    if not isinstance(kwargs, Mapping):
        raise ValidationError(f"arguments: keyword arguments must be a mapping, not {type(kwargs).__name__}")
    merged = dict(kwargs)
    named = dict(zip(POSITIONAL, args, strict=False))
    if len(args) > len(POSITIONAL):
        named[EXTRA_ARGS] = list(args[len(POSITIONAL):])
    twice = sorted(str(k) for k in named if k in merged)
    if twice:
        raise ValidationError(f"{', '.join(twice)}: given both by position and by name")
    return merged | named


def check_encodable(kwargs: Mapping[str, Any]) -> None:
    """Raise ValidationError, naming the argument, unless every value is plain JSON (str, number, bool,
    None, list, object with string keys) and every string is valid Unicode (no lone surrogates): what
    the record, the ledger and every gateway need. A datetime, bytes or a set is refused here rather
    than failing later in json or Redis."""
    for name, value in kwargs.items():
        if not isinstance(name, str) or not valid_unicode(name):
            raise ValidationError(f"{name!r}: an argument name must be valid Unicode text")
        try:
            encoded = _dumps(value)
        except (TypeError, ValueError, RecursionError) as e:
            raise ValidationError(f"{name}: must be plain JSON ({_json_problem(e)})") from None
        if not valid_unicode(encoded):
            raise ValidationError(f"{name}: must be valid Unicode text (it holds a lone surrogate)")


def check_bounds(kwargs: Mapping[str, Any], *, max_text_chars: int = MAX_TEXT_CHARS) -> None:
    """Raise ValidationError, naming the argument, for a message too large to store: checked by the
    producer before anything is written to Redis, and again by the worker (parse_send) for a message
    sent by name. Cheap sizes only; the rest of validation is SendRequest's. Call after
    check_encodable (every value is plain JSON)."""
    text_value = kwargs.get("text")
    if isinstance(text_value, str) and len(text_value) > max_text_chars:
        raise ValidationError(f"text: at most {max_text_chars} characters (SMSDISPATCH_MAX_TEXT_CHARS), "
                              f"got {len(text_value)}")
    for name in ("metadata", "options"):
        if kwargs.get(name) is not None and _json_bytes(kwargs[name]) > MAX_METADATA_BYTES:
            raise ValidationError(f"{name}: must encode to at most {MAX_METADATA_BYTES} bytes of JSON")
    key = kwargs.get("idempotency_key")
    if isinstance(key, str):
        if len(key) > MAX_IDEMPOTENCY_KEY_CHARS:
            raise ValidationError(f"idempotency_key: at most {MAX_IDEMPOTENCY_KEY_CHARS} characters, got {len(key)}")
        if any(_invisible(ch) for ch in key):
            raise ValidationError("idempotency_key: must not contain spaces, control or invisible characters")
    url = kwargs.get("callback_url")
    if isinstance(url, str):
        check_callback_url(url)
    if _json_bytes(dict(kwargs)) > MAX_PAYLOAD_BYTES:
        raise ValidationError(f"arguments: must encode to at most {MAX_PAYLOAD_BYTES} bytes of JSON together")


def check_callback_url(url: str) -> None:
    """A producer's callback URL: https, a host, no user:password part, at most MAX_CALLBACK_URL_CHARS."""
    if len(url) > MAX_CALLBACK_URL_CHARS:
        raise ValidationError(f"callback_url: at most {MAX_CALLBACK_URL_CHARS} characters, got {len(url)}")
    try:
        parsed = urlparse(url)
        userinfo = "@" in parsed.netloc or parsed.username is not None or parsed.password is not None
        parsed.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise ValidationError("callback_url: not a valid URL") from None
    if parsed.scheme != "https" or not parsed.hostname:
        raise ValidationError("callback_url: must be an https:// URL with a host")
    if userinfo:
        raise ValidationError("callback_url: must not carry a user name or password")
    if any(_invisible(ch) for ch in url):
        raise ValidationError("callback_url: must not contain spaces, control or invisible characters")


def check_id(name: str, value: object) -> None:
    """A caller-chosen batch id or task id (None: we make one). Raises ValidationError naming `name`."""
    if value is None:
        return
    if not isinstance(value, str) or not value or len(value) > MAX_ID_CHARS or not set(value) <= _ID_CHARS:
        raise ValidationError(f"{name}: must be 1 to {MAX_ID_CHARS} ASCII letters, digits, '.', '_' or '-'")


def _json_bytes(value: Any) -> int:
    try:
        return len(_dumps(value).encode("utf-8", "surrogatepass"))
    except (TypeError, ValueError, RecursionError):
        return 0            # not JSON: check_encodable and SendRequest say why


def valid_unicode(text: str) -> bool:
    """True if `text` encodes to UTF-8 (it holds no lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _json_problem(e: Exception) -> str:
    if isinstance(e, RecursionError):
        return "nested too deeply"
    message = str(e)
    if message.startswith("Object of type "):       # "Object of type datetime is not JSON serializable"
        kind = message.removeprefix("Object of type ").split(" ", 1)[0]
        hint = "; send an ISO 8601 string with an offset" if kind in ("datetime", "date", "time") else ""
        return f"a {kind} is not JSON{hint}"
    return message.split(";")[0]


def _invisible(ch: str) -> bool:
    return ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf")


class SendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    to: StrictStr
    text: StrictStr | None = None     # a gateway template may supply it; its length: check_bounds
    sender: StrictStr | None = Field(None, min_length=1, max_length=20)
    gateway: StrictStr | None = Field(None, min_length=1)     # omit it (or None) for the route's gateways
    idempotency_key: StrictStr | None = Field(None, min_length=1, max_length=MAX_IDEMPOTENCY_KEY_CHARS)
    callback_url: StrictStr | None = None
    metadata: dict[str, Any] | None = None
    options: dict[str, Any] | None = None      # gateway-specific (e.g. DevSMS universal OTP)

    @field_validator("to")
    @classmethod
    def _to(cls, value: str) -> str:
        for ch in value.strip(" \t\r\n"):     # a line ending copied along is harmless
            if not (ch in _PHONE_PUNCTUATION or unicodedata.category(ch) in _PHONE_CATEGORIES):
                raise ValueError(f"{_describe_char(ch)} is not allowed in a phone number "
                                 f"(digits, spaces and + - ( ) . / only)")
        return value

    @field_validator("text")
    @classmethod
    def _text(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if all(_invisible(ch) for ch in value):
            raise ValueError("must not be empty (or only spaces and invisible characters)")
        if "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value

    @field_validator("sender")
    @classmethod
    def _sender(cls, value: str | None) -> str | None:
        if value is not None and any(unicodedata.category(ch) in ("Cc", "Cf") for ch in value):
            raise ValueError("must not contain control or invisible characters")
        return value

    @field_validator("callback_url")
    @classmethod
    def _callback(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                check_callback_url(value)
            except ValidationError as e:
                raise ValueError(str(e).removeprefix("callback_url: ")) from None
        return value

    @field_validator("metadata", "options")
    @classmethod
    def _metadata(cls, value: dict | None) -> dict | None:
        if value is None:
            return value
        try:
            encoded = _dumps(value)
        except (TypeError, ValueError, RecursionError) as e:
            raise ValueError(f"must be plain JSON ({_json_problem(e)})") from None
        if len(encoded.encode("utf-8", "surrogatepass")) > MAX_METADATA_BYTES:
            raise ValueError(f"must encode to at most {MAX_METADATA_BYTES} bytes of JSON")
        return value

    @property
    def segments(self) -> int | None:
        return segments.count_segments(self.text) if self.text is not None else None


def parse_send(kwargs: dict[str, Any], *, default_region: str | None,
               max_text_chars: int = MAX_TEXT_CHARS) -> SendRequest:
    """Validate raw task kwargs; `to` comes back in E.164. Raises ValidationError, never leaks the number."""
    check_encodable(kwargs)
    check_bounds(kwargs, max_text_chars=max_text_chars)
    try:
        request = SendRequest(**kwargs)
    except PydanticValidationError as e:
        raise ValidationError("; ".join(_describe(err) for err in e.errors())) from None
    return request.model_copy(update={"to": phone.normalise(request.to, default_region)})


def _describe(err: ErrorDetails) -> str:
    where = ".".join(str(p) for p in err["loc"]) or "arguments"
    if err["type"] == "extra_forbidden" and where == EXTRA_ARGS:
        return f"arguments: {len(err['input']) if isinstance(err['input'], list) else 'some'} unexpected " \
               f"positional argument(s) after to and text"
    if err["type"] == "extra_forbidden":
        return f"{where}: unexpected argument"
    if err["type"] == "missing":
        return f"{where}: required"
    return f"{where}: {err['msg'].removeprefix('Value error, ')}"


def _describe_char(ch: str) -> str:
    name = unicodedata.name(ch, "")
    return f"U+{ord(ch):04X}" + (f" {name}" if name else "")
