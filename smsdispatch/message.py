"""What a producer may ask for: the validated form of `send_sms` kwargs."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator
from pydantic import ValidationError as PydanticValidationError

from . import phone, text
from .errors import ValidationError

MAX_TEXT_CHARS = 1600       # ten or more segments; gateways cap concatenated SMS around here
MAX_METADATA_BYTES = 4096


class SendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    to: StrictStr
    text: StrictStr | None = Field(None, max_length=MAX_TEXT_CHARS)   # a gateway template may supply it
    sender: StrictStr | None = Field(None, min_length=1, max_length=20)
    gateway: StrictStr | None = None
    idempotency_key: StrictStr | None = Field(None, min_length=1, max_length=200)
    callback_url: StrictStr | None = None
    metadata: dict[str, Any] | None = None
    options: dict[str, Any] | None = None      # gateway-specific (e.g. DevSMS universal OTP)

    @field_validator("text")
    @classmethod
    def _text(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not value.strip():
            raise ValueError("must not be empty")
        if "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value

    @field_validator("callback_url")
    @classmethod
    def _callback(cls, value: str | None) -> str | None:
        if value is not None and (urlparse(value).scheme not in ("http", "https") or not urlparse(value).netloc):
            raise ValueError("must be an http(s) URL")
        return value

    @field_validator("metadata", "options")
    @classmethod
    def _metadata(cls, value: dict | None) -> dict | None:
        if value is not None and len(json.dumps(value, ensure_ascii=False)) > MAX_METADATA_BYTES:
            raise ValueError(f"must encode to at most {MAX_METADATA_BYTES} bytes of JSON")
        return value

    @property
    def segments(self) -> int | None:
        return text.count_segments(self.text) if self.text is not None else None


def parse_send(kwargs: dict[str, Any], *, default_region: str | None) -> SendRequest:
    """Validate raw task kwargs; `to` comes back in E.164. Raises ValidationError, never leaks the number."""
    try:
        request = SendRequest(**kwargs)
    except PydanticValidationError as e:
        raise ValidationError("; ".join(_describe(err) for err in e.errors())) from None
    return request.model_copy(update={"to": phone.normalise(request.to, default_region)})


def _describe(err: dict) -> str:
    where = ".".join(str(p) for p in err["loc"]) or "arguments"
    if err["type"] == "extra_forbidden":
        return f"{where}: unexpected argument"
    if err["type"] == "missing":
        return f"{where}: required"
    return f"{where}: {err['msg'].removeprefix('Value error, ')}"
