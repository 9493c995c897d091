"""Hypothesis strategies for send_sms / schedule_reminder input that is malformed BY CONSTRUCTION.

Every call drawn here starts from a valid message (VALID_TO, VALID_TEXT, through the default
gateway) and gets at least one defect, and no defect is ever undone by another: a field is replaced
by a bad value or removed, never restored, so every example must be refused. Used by
tests/unit/test_bad_input.py (eager task, fakeredis) and tests/integration/test_bad_input.py (a real
worker), so both throw the same shapes.

A defect is (field, value); `MISSING` removes the field. The kinds:
  wrong types for every field, empty and whitespace-only strings, texts beyond MAX_TEXT_CHARS,
  unicode edge cases in `to` and `text` (lone surrogates, direction marks, zero-width characters,
  emoji, NUL), invalid numbers, missing `to`/`text`, unknown or unconfigured gateways, oversized
  keys/senders/metadata/options, non-http callback URLs, values that are not JSON (naive datetimes,
  bytes, sets), extra positional arguments, unexpected keyword arguments (including `self`), and
  `to` given both by position and by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from hypothesis import strategies as st

from smsdispatch.errors import ValidationError
from smsdispatch.sendrequest import FIELDS, MAX_METADATA_BYTES, MAX_TEXT_CHARS, check_bounds, merge_arguments

VALID_TO = "+998901234567"
VALID_TEXT = "Salom, dunyo"
#: Digits of VALID_TO: they must never show up in an error message.
VALID_DIGITS = VALID_TO.lstrip("+")

GATEWAY_NAMES = ("console", "eskiz", "devsms", "smsflow", "smscx", "smspm", "stub")   # stub: the unit tests' gateway


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING = _Missing()


@dataclass
class BadCall:
    """One malformed send_sms call: positional args, keyword args, and what is wrong with it."""
    args: tuple = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    defects: list[str] = field(default_factory=list)
    #: Defect kinds (field names, "extra-positional", "twice", "unexpected", "text-missing", "options-any").
    kinds: set[str] = field(default_factory=set)
    #: True when something in it cannot even be JSON-encoded or recorded (a datetime, a lone
    #: surrogate, ...): a producer may refuse it at once.
    unencodable: bool = False

    @property
    def producer_refuses(self) -> bool:
        """What the producer refuses at once, before Redis holds any of it: what cannot be recorded
        (unencodable, an argument given twice) and what is beyond a size or form limit
        (message.check_bounds: text, metadata, options, idempotency key, callback URL)."""
        if self.unencodable or "twice" in self.kinds:
            return True
        try:
            check_bounds(merge_arguments(self.args, self.kwargs))
        except ValidationError:
            return True
        return False

    def __repr__(self) -> str:      # what hypothesis prints for a falsifying example
        return f"BadCall(args={self.args!r}, kwargs={self.kwargs!r}, defects={self.defects})"


# ------------------------------------------------------------------ building blocks

LONE_SURROGATES = st.integers(0xD800, 0xDFFF).map(chr)
DIRECTION_MARKS = st.sampled_from(["\u200e", "\u200f", "\u202a", "\u202b", "\u202c", "\u202d", "\u202e",
                                   "\u2066", "\u2067", "\u2068", "\u2069", "\u061c"])
ZERO_WIDTH = st.sampled_from(["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u180e"])
EMOJI = st.sampled_from(["😀", "👍🏽", "👨‍👩‍👧", "🇺🇿", "❤️", "🔥", "\U0001f9ff"])
CONTROLS = st.sampled_from(["\x00", "\x01", "\x07", "\x1b", "\x7f", "\x85"])
LETTERS = st.sampled_from(["e", "x", "ext", "A", "tel:", "O", "l", "ж", "ا"])
JUNK_IN_NUMBER = st.one_of(LONE_SURROGATES, DIRECTION_MARKS, ZERO_WIDTH, EMOJI, CONTROLS, LETTERS)

#: Values of a type no string field accepts (None is not here: None means "absent").
NOT_A_STRING = st.one_of(
    st.integers(-10**20, 10**20), st.floats(allow_nan=False), st.booleans(),
    st.lists(st.integers(0, 9), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
    st.just([VALID_TO]), st.just({"number": VALID_TO}),
)
#: Values of a type an object field (metadata, options) does not accept.
NOT_AN_OBJECT = st.one_of(
    st.integers(-10**6, 10**6), st.booleans(), st.text(max_size=20), st.lists(st.integers(), max_size=3),
    st.floats(allow_nan=False),
)
BLANK = st.sampled_from(["", " ", "   ", "\t", "\n", "\r\n", "\u3000", "\u00a0"])
INVISIBLE_ONLY = st.lists(st.one_of(BLANK, DIRECTION_MARKS, ZERO_WIDTH, st.just("\u2063")),
                          min_size=1, max_size=8).map("".join)

#: JSON values (what may travel in a task message); small.
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


@st.composite
def not_json(draw) -> Any:
    """Something json.dumps refuses: a naive (or aware) datetime, a date, bytes, a set, a Decimal."""
    naive = datetime(2026, 1, 1) + timedelta(seconds=draw(st.integers(0, 10**8)))
    return draw(st.sampled_from([
        naive, naive.replace(tzinfo=timezone.utc), date(2026, 5, 1), b"\x00bytes", {1, 2}, frozenset({"a"}),
        Decimal("1.5"),
    ]))


def _insert(text: str, junk: str, at: int) -> str:
    at = at % (len(text) + 1)
    return text[:at] + junk + text[at:]


@st.composite
def bad_numbers(draw) -> tuple[str, str]:
    """(a `to` string that is no valid phone number, why)."""
    kind = draw(st.sampled_from(["junk", "short", "long", "no-plus", "blank", "no-digits"]))
    if kind == "junk":                     # a valid number with one character no number has
        junk = draw(JUNK_IN_NUMBER)
        return _insert(VALID_TO, junk, draw(st.integers(0, 20))), f"to with {junk!r}"
    if kind == "short":                    # no number in the world has 5 digits or fewer with its country code
        return "+" + draw(st.text("0123456789", min_size=0, max_size=5)), "to too short"
    if kind == "long":   # E.164 allows 15 digits, but stripped national prefixes let up to 20 parse as valid
        return "+" + draw(st.text("0123456789", min_size=24, max_size=60)), "to too long"
    if kind == "no-plus":                  # no country code and no SMSDISPATCH_DEFAULT_REGION ("00" would be one)
        digits = draw(st.text("0123456789", min_size=1, max_size=15).filter(lambda d: not d.startswith("00")))
        return digits, "to without country code"
    if kind == "blank":
        return draw(BLANK), "to blank"
    return draw(st.text(st.characters(exclude_categories=["Nd", "Cs"]), min_size=1, max_size=15)
                .filter(lambda t: t.strip())), "to without digits"


@st.composite
def bad_texts(draw) -> tuple[Any, str]:
    kind = draw(st.sampled_from(["type", "blank", "invisible", "huge", "nul", "surrogate"]))
    if kind == "type":
        return draw(NOT_A_STRING), "text not a string"
    if kind == "blank":
        return draw(BLANK), "text blank"
    if kind == "invisible":
        return draw(INVISIBLE_ONLY), "text only invisible characters"
    if kind == "huge":
        unit = draw(st.sampled_from(["a", "Salom ", "Привет ", "😀", "€", "\u200f"]))
        chars = draw(st.integers(MAX_TEXT_CHARS + 1, MAX_TEXT_CHARS * 12))
        return (unit * (chars // len(unit) + 1))[:chars], f"text of {chars} chars"
    junk = "\x00" if kind == "nul" else draw(LONE_SURROGATES)
    return _insert(VALID_TEXT, junk, draw(st.integers(0, 20))), f"text with {junk!r}"


@st.composite
def bad_short_strings(draw, name: str, max_len: int) -> tuple[Any, str]:
    """For sender (max 20) and idempotency_key (max 200): wrong type, empty, too long, a surrogate."""
    kind = draw(st.sampled_from(["type", "empty", "long", "surrogate"] + (["control"] if name == "sender" else [])))
    if kind == "type":
        return draw(NOT_A_STRING), f"{name} not a string"
    if kind == "empty":
        return "", f"{name} empty"
    if kind == "long":
        return draw(st.text("abcXYZ-_", min_size=max_len + 1, max_size=max_len * 3)), f"{name} too long"
    if kind == "control":
        return _insert("Shop", draw(st.one_of(CONTROLS, ZERO_WIDTH, DIRECTION_MARKS)), draw(st.integers(0, 4))), \
            f"{name} with a control or invisible character"
    return _insert("key", draw(LONE_SURROGATES), draw(st.integers(0, 3))), f"{name} with a lone surrogate"


def _not_retry(text: str) -> bool:
    # Names end up in error messages and log lines; the test counts log lines matching "retry".
    return "retry" not in text.lower()


@st.composite
def bad_gateways(draw) -> tuple[Any, str]:
    kind = draw(st.sampled_from(["type", "empty", "unknown", "unconfigured", "case", "surrogate"]))
    if kind == "type":
        return draw(NOT_A_STRING), "gateway not a string"
    if kind == "empty":
        return "", "gateway empty"
    if kind == "unconfigured":             # a real gateway name whose credentials this worker does not have
        return draw(st.sampled_from(["devsms", "smsflow", "smscx", "smspm"])), "gateway not configured"
    if kind == "case":                     # names are exact
        return draw(st.sampled_from(["Eskiz", "ESKIZ", " eskiz", "eskiz ", "eskiz\u200b"])), "gateway name variant"
    if kind == "surrogate":
        return "eskiz" + draw(LONE_SURROGATES), "gateway with a lone surrogate"
    name = draw(st.text(min_size=1, max_size=30).filter(lambda t: t not in GATEWAY_NAMES and _not_retry(t)))
    return name, "gateway unknown"


@st.composite
def bad_callbacks(draw) -> tuple[Any, str]:
    kind = draw(st.sampled_from(["type", "empty", "scheme", "no-host", "no-scheme"]))
    if kind == "type":
        return draw(NOT_A_STRING), "callback_url not a string"
    if kind == "empty":
        return "", "callback_url empty"
    host = draw(st.sampled_from(["example.com", "127.0.0.1:8080", "hooks.example.com/sms"]))
    if kind == "scheme":
        scheme = draw(st.sampled_from(["ftp", "file", "javascript", "data", "gopher", "ws", "mailto", "httpx"]))
        return f"{scheme}://{host}", "callback_url not http(s)"
    if kind == "no-host":
        return draw(st.sampled_from(["http://", "https://", "http:/" + host, "https:///path"])), "callback_url no host"
    return draw(st.sampled_from([host, "//" + host, "/relative/path"])), "callback_url no scheme"


@st.composite
def bad_objects(draw, name: str) -> tuple[Any, str, bool]:
    """For metadata and options: wrong type, too big, not JSON, a lone surrogate; options: any at all
    (the default gateway, Eskiz, takes none). Returns (value, why, only_wrong_for_the_gateway)."""
    kinds = ["type", "huge", "not-json", "surrogate"] + (["any"] if name == "options" else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "type":
        return draw(NOT_AN_OBJECT), f"{name} not an object", False
    if kind == "huge":
        size = draw(st.integers(MAX_METADATA_BYTES + 1, MAX_METADATA_BYTES * 4))
        return {"blob": "x" * size}, f"{name} over {MAX_METADATA_BYTES} bytes", False
    if kind == "not-json":
        return {"at": draw(not_json())}, f"{name} holds a value that is not JSON", False
    if kind == "surrogate":
        if draw(st.booleans()):
            return {"k" + draw(LONE_SURROGATES): 1}, f"{name} key with a lone surrogate", False
        return {"k": ["ok", "v" + draw(LONE_SURROGATES)]}, f"{name} value with a lone surrogate", False
    return draw(st.dictionaries(st.text(min_size=1, max_size=8), JSON_VALUES, min_size=1, max_size=3)), \
        "options for a gateway that takes none", True


def _encodable(value: Any) -> bool:
    import json
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError, UnicodeEncodeError):
        return False
    return True


UNEXPECTED_NAMES = st.one_of(
    st.sampled_from(["self", "args", "kwargs", "task_id", "message", "phone", "body", "from", "unicode",
                     "eta", "countdown", "_extra_args", "TO", "Text", "to ", ""]),
    st.text(min_size=1, max_size=20),
).filter(lambda n: n not in FIELDS and _not_retry(n))


# ------------------------------------------------------------------ whole calls

@st.composite
def bad_send_calls(draw) -> BadCall:
    """A send_sms call (positional args, keyword args) with at least one defect."""
    kwargs: dict[str, Any] = {"to": VALID_TO, "text": VALID_TEXT}
    if draw(st.booleans()):                                   # valid optional fields, for variety
        kwargs["sender"] = draw(st.sampled_from(["MyShop", "4546", "Clinic-7"]))
    if draw(st.booleans()):
        kwargs["metadata"] = {"order": draw(st.integers(1, 10**6))}
    call = BadCall(kwargs=kwargs)

    def defect(kind: str, why: str) -> None:
        call.kinds.add(kind)
        call.defects.append(why)

    for d in draw(st.lists(st.sampled_from(
            ["to", "to-missing", "text", "text-missing", "sender", "gateway", "idempotency_key", "callback_url",
             "metadata", "options", "not-json"]), min_size=0, max_size=3, unique=True)):
        if d == "to":
            value, why = draw(bad_numbers()) if draw(st.integers(0, 3)) else (draw(NOT_A_STRING), "to not a string")
            kwargs["to"] = value
            defect("to", why)
        elif d == "to-missing":
            kwargs.pop("to", None)
            defect("to", "to missing")
        elif d == "text":
            kwargs["text"], why = draw(bad_texts())
            defect("text", why)
        elif d == "text-missing":           # Eskiz, the default gateway, needs a text
            kwargs.pop("text", None)
            defect("text-missing", "text missing")
        elif d in ("sender", "idempotency_key"):
            kwargs[d], why = draw(bad_short_strings(d, 20 if d == "sender" else 200))
            defect(d, why)
        elif d == "gateway":
            kwargs["gateway"], why = draw(bad_gateways())
            defect("gateway", why)
        elif d == "callback_url":
            kwargs["callback_url"], why = draw(bad_callbacks())
            defect("callback_url", why)
        elif d in ("metadata", "options"):
            kwargs[d], why, only_for_gateway = draw(bad_objects(d))
            defect("options-any" if only_for_gateway else d, why)
        else:                               # a naive datetime (or another non-JSON value) in any field
            target = draw(st.sampled_from(FIELDS))
            kwargs[target] = draw(not_json())
            defect(target, f"{target} is a {type(kwargs[target]).__name__}")

    unexpected = draw(st.dictionaries(UNEXPECTED_NAMES, JSON_VALUES, max_size=3))
    if unexpected:
        kwargs.update(unexpected)
        defect("unexpected", f"unexpected {sorted(unexpected)}")

    shape = draw(st.sampled_from(["kwargs", "kwargs", "kwargs", "positional", "extra-positional", "twice"]))
    if shape in ("positional", "extra-positional") and "to" in kwargs and "text" in kwargs:
        call.args = (kwargs.pop("to"), kwargs.pop("text"))
        if shape == "extra-positional":
            call.args += tuple(draw(st.lists(JSON_VALUES, min_size=1, max_size=3)))
            defect("extra-positional", f"{len(call.args) - 2} extra positional")
    elif shape == "twice" and "to" in kwargs:
        call.args = (draw(st.sampled_from([VALID_TO, "+998907654321"])),)
        defect("twice", "to given by position and by name")

    if not call.defects:                    # nothing wrong yet: add one sure defect
        extras = tuple(draw(st.lists(JSON_VALUES, min_size=1, max_size=2)))
        if not call.args:
            call.args = (kwargs.pop("to"), kwargs.pop("text"))
        call.args += extras
        defect("extra-positional", f"{len(extras)} extra positional")

    named = ["to", "text"][:len(call.args)] + (["_extra_args"] if len(call.args) > 2 else [])
    if any(name in kwargs for name in named):          # e.g. an unexpected kwarg "_extra_args" as well
        call.kinds.add("twice")
    call.unencodable = not _encodable(list(call.args)) or not all(
        _encodable(k) and _encodable(v) for k, v in kwargs.items())
    return call


@st.composite
def bad_send_at(draw) -> tuple[Any, str]:
    """A send_at that is not a timezone-aware moment."""
    kind = draw(st.sampled_from(["naive", "naive", "naive-iso", "type", "garbage"]))
    naive = datetime(2026, 1, 1) + timedelta(seconds=draw(st.integers(-10**8, 10**9)))
    if kind == "naive":
        return naive, "naive datetime"
    if kind == "naive-iso":
        return naive.isoformat(), "ISO string without offset"
    if kind == "type":
        return draw(st.one_of(st.integers(), st.floats(allow_nan=False), st.none(), st.booleans(),
                              st.lists(st.integers(), max_size=2), st.just(date(2026, 12, 1)))), "not a datetime"
    return draw(st.text(max_size=25).filter(lambda t: not _iso_with_offset(t))), "not ISO 8601"


def _iso_with_offset(text: str) -> bool:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return value.tzinfo is not None


#: Defects that scheduling a reminder does not check (the send, days later, would refuse them):
#: see tests/unit/test_bad_input.py's xfails. Reminder examples with one of them get a bad number too.
UNCHECKED_BY_SCHEDULE = {"gateway", "text-missing", "options-any", "extra-positional", "twice"}


@st.composite
def bad_reminders(draw) -> tuple[dict[str, Any], Any, list[str]]:
    """(kwargs, send_at, defects) for Runtime.schedule_reminder: a bad send_at with good fields, or bad
    fields with a good (aware, future) send_at, or both."""
    good_at = datetime.now(timezone.utc) + timedelta(days=draw(st.integers(1, 30)))
    kind = draw(st.sampled_from(["send_at", "fields", "both"]))
    if kind == "send_at":
        send_at, why = draw(bad_send_at())
        return {"to": VALID_TO, "text": VALID_TEXT}, send_at, [why]
    call = draw(bad_send_calls())
    kwargs = dict(call.kwargs)
    kwargs.update(zip(("to", "text"), call.args, strict=False))
    defects = list(call.defects)
    if call.kinds & UNCHECKED_BY_SCHEDULE:
        kwargs["to"], why = draw(bad_numbers())
        defects.append(why)
    if kind == "fields":
        return kwargs, good_at, defects
    send_at, why = draw(bad_send_at())
    return kwargs, send_at, [*defects, why]


# ------------------------------------------------------------------ the verdict

def refusal_problems(result: Any, record: dict[str, Any] | None) -> list[str]:
    """What is wrong with how a malformed message ended (empty: refused cleanly): the result must be
    `failed` with error {code: validation, message: non-empty, no full number}, and the record the same,
    with 0 attempts."""
    problems = []
    if not isinstance(result, dict):
        return [f"result is {type(result).__name__}, not a dict: {result!r}"[:300]]
    error = result.get("error") or {}
    if result.get("status") != "failed":
        problems.append(f"status {result.get('status')!r}, not 'failed'")
    if error.get("code") != "validation":
        problems.append(f"error code {error.get('code')!r}, not 'validation'")
    if not isinstance(error.get("message"), str) or not error["message"].strip():
        problems.append(f"error message {error.get('message')!r} is empty")
    elif VALID_DIGITS in error["message"]:
        problems.append("the error message shows the full number")
    if record is None:
        problems.append(f"no record for message {result.get('message_id')}")
    else:
        if record.get("status") != "failed":
            problems.append(f"record status {record.get('status')!r}, not 'failed'")
        if record.get("error") != result.get("error"):
            problems.append(f"record error {record.get('error')!r} differs from the result's")
        if record.get("attempts") != 0:
            problems.append(f"record attempts {record.get('attempts')!r}, not 0")
    return problems
