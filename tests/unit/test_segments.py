import dataclasses
import math

import pytest

from smsdispatch.segments import Encoding, SegmentInfo, analyse, count_segments, is_gsm7

# The basic set written out independently of the module (3GPP TS 23.038, 127 printable + ESC).
BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
EXTENSION = "\f^{}\\[~]|€"


def test_empty_text():
    assert count_segments("") == 0
    assert analyse("") == SegmentInfo(Encoding.GSM7, 0, 0, 160)


@pytest.mark.parametrize("n, segments", [(1, 1), (160, 1), (161, 2), (306, 2), (307, 3)])
def test_plain_gsm7_boundaries(n, segments):
    info = analyse("a" * n)
    assert info.encoding is Encoding.GSM7
    assert info.units == n
    assert info.segments == segments
    assert info.per_segment == (160 if segments == 1 else 153)


def test_extension_chars_cost_two_septets():
    assert analyse("€" * 80) == SegmentInfo(Encoding.GSM7, 160, 1, 160)
    assert analyse("€" * 81) == SegmentInfo(Encoding.GSM7, 162, 2, 153)
    for ch in EXTENSION:
        assert analyse(ch).units == 2, repr(ch)


def test_extension_char_fits_single_segment_when_total_le_160():
    # 152 + 2 = 154 septets <= 160: still a single SMS.
    assert analyse("a" * 152 + "€") == SegmentInfo(Encoding.GSM7, 154, 1, 160)


def test_escape_pair_not_split():
    # 152 septets, then € (2) cannot go into the 153-septet segment 1.
    text = "a" * 152 + "€" + "a" * 152  # 306 septets
    info = analyse(text)
    assert info.units == 306
    assert math.ceil(info.units / 153) == 2  # naive answer
    assert info.segments == 3  # seg1: 152, seg2: € + 151 a = 153, seg3: 1 a
    # All-euro text: only 76 € (152 septets) fit into a 153-septet segment.
    assert analyse("€" * 153).segments == 3  # naive ceil(306/153) == 2
    assert count_segments("a" * 152 + "€" + "a" * 7) == 2  # 161 septets


@pytest.mark.parametrize("n, segments", [(1, 1), (70, 1), (71, 2), (134, 2), (135, 3)])
def test_cyrillic_is_ucs2(n, segments):
    info = analyse("я" * n)
    assert info.encoding is Encoding.UCS2
    assert info.units == n
    assert info.segments == segments
    assert info.per_segment == (70 if segments == 1 else 67)


def test_emoji_counts_two_units():
    assert analyse("😀") == SegmentInfo(Encoding.UCS2, 2, 1, 70)
    assert analyse("я" * 66 + "😀") == SegmentInfo(Encoding.UCS2, 68, 1, 70)
    assert analyse("я" * 68 + "😀") == SegmentInfo(Encoding.UCS2, 70, 1, 70)
    assert analyse("я" * 69 + "😀") == SegmentInfo(Encoding.UCS2, 71, 2, 67)


def test_surrogate_pair_not_split():
    text = "я" * 66 + "😀" + "я" * 66  # 134 units
    info = analyse(text)
    assert info.units == 134
    assert math.ceil(info.units / 67) == 2  # naive answer
    assert info.segments == 3  # seg1: 66 я, seg2: 😀 + 65 я, seg3: 1 я
    assert count_segments("😀" * 35) == 1  # 70 units: single SMS
    assert count_segments("😀" * 36) == 2  # 72 units; 33 emoji (66) per segment
    assert count_segments("😀" * 67) == 3  # 134 units, naive ceil == 2


@pytest.mark.parametrize("odd", ["ş", "ё", "“", "`", "ç", "\x1b"])
def test_one_non_gsm_char_switches_to_ucs2(odd):
    text = "Hello world " * 12 + odd  # 145 chars
    assert is_gsm7(text[:-1])
    info = analyse(text)
    assert info.encoding is Encoding.UCS2
    assert info.units == 145
    assert info.segments == 3 and info.per_segment == 67


def test_every_basic_char_is_gsm7():
    assert len(BASIC) == 127 and len(set(BASIC)) == 127
    for ch in BASIC:
        assert is_gsm7(ch), repr(ch)
        assert analyse(ch).units == 1, repr(ch)
    assert is_gsm7(BASIC + EXTENSION)


def test_is_gsm7_exact():
    assert is_gsm7("€")
    assert is_gsm7("")
    assert not is_gsm7("`")
    assert not is_gsm7("\x1b")  # the escape code itself is not a text character
    assert not is_gsm7("Salom, dunyo! Привет")
    assert not is_gsm7("e\u0301")  # decomposed é is not normalised


def test_encoding_values():
    assert Encoding.GSM7 == "GSM-7" and Encoding.UCS2 == "UCS-2"
    with pytest.raises(dataclasses.FrozenInstanceError):
        analyse("a").segments = 5  # frozen
