"""SMS text encoding and segment counting per 3GPP TS 23.038 (GSM 03.38).

A text is GSM-7 only if every character is in the GSM 7-bit default alphabet
(basic set) or its single-shift extension table; otherwise the whole message is
sent as UCS-2.  Cyrillic (e.g. Uzbek or Russian texts) is never GSM-7, so such
messages are always UCS-2 (70 / 67 characters per segment).  Gateways that need
an explicit "unicode" flag (e.g. Eskiz send-global) rely on ``is_gsm7`` being
exact, so nothing is transliterated or normalised here: code points are checked
as given.

Capacities: a single SMS holds 160 septets (GSM-7) or 70 UTF-16 code units
(UCS-2).  A concatenated SMS loses 6 bytes to the UDH, leaving 153 septets or
67 code units per segment.  An extension character (ESC + char, 2 septets) and
a UTF-16 surrogate pair (2 units) are never split across segments, so segments
are counted by greedy packing rather than ceil(units / per_segment).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = ["Encoding", "SegmentInfo", "analyse", "count_segments", "is_gsm7"]

# The GSM 7-bit default alphabet in code order 0x00..0x7F, 16 per line.
# Position 0x1B is the escape to the extension table, not a printable character;
# it is held by the placeholder "\x1b" only so that the table is 128 long and each
# index equals the septet value.  The placeholder is removed from the set of
# accepted characters below: a literal ESC in input text is NOT GSM-7.
GSM7_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
assert len(GSM7_BASIC) == 128 and len(set(GSM7_BASIC)) == 128, "GSM-7 basic table must have 128 distinct entries"
assert GSM7_BASIC[0x1B] == "\x1b"

# Extension table characters (each sent as ESC + char, i.e. 2 septets).
GSM7_EXTENSION = "\f^{}\\[~]|€"

_BASIC_CHARS = frozenset(GSM7_BASIC) - {"\x1b"}  # 127 printable/control chars
_EXT_CHARS = frozenset(GSM7_EXTENSION)
assert len(_BASIC_CHARS) == 127 and not (_BASIC_CHARS & _EXT_CHARS)

GSM7_SINGLE, GSM7_MULTI = 160, 153
UCS2_SINGLE, UCS2_MULTI = 70, 67


class Encoding(str, Enum):
    GSM7 = "GSM-7"
    UCS2 = "UCS-2"


@dataclass(frozen=True)
class SegmentInfo:
    encoding: Encoding
    units: int  # GSM-7: septets; UCS-2: UTF-16 code units
    segments: int  # 0 for empty text
    per_segment: int  # capacity per segment that applies (160/153 or 70/67)


def is_gsm7(text: str) -> bool:
    """True if every character is in the GSM-7 basic set or extension table."""
    return all(ch in _BASIC_CHARS or ch in _EXT_CHARS for ch in text)


def _gsm7_cost(ch: str) -> int:
    return 2 if ch in _EXT_CHARS else 1


def _ucs2_cost(ch: str) -> int:
    return 2 if ord(ch) > 0xFFFF else 1  # outside the BMP: a surrogate pair


def _pack(costs: list[int], capacity: int) -> int:
    """Number of segments when packing indivisible costs greedily in order."""
    segments, used = 1, 0
    for cost in costs:
        if used + cost > capacity:
            segments, used = segments + 1, 0
        used += cost
    return segments


def analyse(text: str) -> SegmentInfo:
    """Encoding, unit count and segment count of ``text``."""
    if is_gsm7(text):
        encoding, cost, single, multi = Encoding.GSM7, _gsm7_cost, GSM7_SINGLE, GSM7_MULTI
    else:
        encoding, cost, single, multi = Encoding.UCS2, _ucs2_cost, UCS2_SINGLE, UCS2_MULTI
    costs = [cost(ch) for ch in text]
    units = sum(costs)
    if units == 0:
        return SegmentInfo(encoding, 0, 0, single)
    if units <= single:
        return SegmentInfo(encoding, units, 1, single)
    return SegmentInfo(encoding, units, _pack(costs, multi), multi)


def count_segments(text: str) -> int:
    """Number of SMS segments needed for ``text`` (0 for empty text)."""
    return analyse(text).segments
