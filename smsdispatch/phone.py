"""Phone numbers: E.164 normalisation (with Google's libphonenumber metadata) and masking for logs."""

from __future__ import annotations

import functools

import phonenumbers

from .errors import ValidationError


def normalise(raw: str, default_region: str | None = None) -> str:
    """``"+998 90 123-45-67"`` → ``"+998901234567"``. Raises ValidationError with a readable reason.

    A number without a leading ``+`` (or ``00``) is read in `default_region`; without one it is an
    error, because guessing a country would send to the wrong person.
    """
    if not isinstance(raw, str) or not raw.strip():
        raise ValidationError("phone number is empty")
    return _normalise(raw, default_region)


#: How many distinct (number, region) pairs `normalise` remembers per process: a batch names a number
#: once per entry, and a chunk run again (a retry, a resubmission) names the same ones again.
NORMALISE_CACHE = 16384


@functools.lru_cache(maxsize=NORMALISE_CACHE)
def _normalise(raw: str, default_region: str | None) -> str:
    """`normalise` of a non-empty string, remembered: a valid number's E.164 form is cached; a refused
    one raises every time (lru_cache keeps no exceptions)."""
    text = raw.strip()
    if text.startswith("00"):
        text = "+" + text[2:]
    if not text.startswith("+") and default_region is None:
        raise ValidationError(
            f"phone number {mask(text)} has no country code and SMSDISPATCH_DEFAULT_REGION is not set"
        )
    try:
        number = phonenumbers.parse(text, None if text.startswith("+") else default_region)
    except phonenumbers.NumberParseException as e:
        raise ValidationError(f"phone number {mask(text)} cannot be parsed: {e._msg}") from None
    if not phonenumbers.is_valid_number(number):
        raise ValidationError(f"phone number {mask(text)} is not a valid number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def mask(number: object) -> str:
    """Keep the country-ish prefix and the last two digits: ``+998901234567`` → ``+998*******67``."""
    text = str(number)
    if len(text) > 6 and text[0] == "+" and text[1:].isdigit():   # E.164, the usual case: the same, faster
        return text[:4] + "*" * (len(text) - 6) + text[-2:]
    digits = [i for i, c in enumerate(text) if c.isdigit()]
    if len(digits) <= 5:
        return "*" * len(text)
    keep = set(digits[:3] + digits[-2:])
    return "".join(c if (i in keep or not c.isdigit()) else "*" for i, c in enumerate(text))
