import pytest

from smsdispatch.errors import ValidationError
from smsdispatch.phone import mask, normalise


@pytest.mark.parametrize("raw, region, e164", [
    ("+998 90 123-45-67", None, "+998901234567"),
    ("00998901234567", None, "+998901234567"),
    ("90 123 45 67", "UZ", "+998901234567"),
    ("082 123 4567", "ZA", "+27821234567"),
    ("+44 7911 123456", "UZ", "+447911123456"),
])
def test_normalise_to_e164(raw, region, e164):
    assert normalise(raw, region) == e164


@pytest.mark.parametrize("raw, region, reason", [
    ("", None, "empty"),
    ("   ", "UZ", "empty"),
    ("901234567", None, "no country code"),
    ("+998 12", None, "not a valid number"),
    ("call me", "UZ", "cannot be parsed"),
    ("+1 555 0100 999 999 999", None, "not a valid number"),
])
def test_bad_numbers_raise_a_readable_validation_error(raw, region, reason):
    with pytest.raises(ValidationError, match=reason):
        normalise(raw, region)


def test_errors_never_contain_the_full_number():
    with pytest.raises(ValidationError) as e:
        normalise("901234567")
    assert "901234567" not in str(e.value)


def test_mask_keeps_prefix_and_last_two_digits():
    assert mask("+998901234567") == "+998*******67"
    assert mask("+27821234567") == "+278******67"
    assert mask("123") == "***"


def _mask_digit_by_digit(text: str) -> str:
    """mask's rule spelled out: the first three and the last two digits stay, other digits become '*'."""
    digits = [i for i, c in enumerate(text) if c.isdigit()]
    if len(digits) <= 5:
        return "*" * len(text)
    keep = set(digits[:3] + digits[-2:])
    return "".join(c if i in keep or not c.isdigit() else "*" for i, c in enumerate(text))


@pytest.mark.parametrize("number", ["+", "+1", "+12345", "+123456", "+1234567", "+998901234567",
                                    "+9989012345678901", "+\u0669\u0669\u0668\u0669\u0660\u0661\u0662\u0663",
                                    "+12\u00b2345678", "998901234567", "+998 90 123-45-67", "+99890123456a"])
def test_mask_of_an_e164_number_follows_the_digit_by_digit_rule(number):
    assert mask(number) == _mask_digit_by_digit(number)


def test_normalise_remembers_valid_numbers_per_region_and_never_a_refusal():
    from smsdispatch import phone
    phone._normalise.cache_clear()
    assert normalise("+998 90 123-45-67") == normalise("+998 90 123-45-67") == "+998901234567"
    assert phone._normalise.cache_info().hits == 1
    # the region is part of what is remembered: the same digits read in another region differ
    assert normalise("90 123 45 67", "UZ") == "+998901234567"
    with pytest.raises(ValidationError, match="no country code"):
        normalise("90 123 45 67")
    for _ in range(2):            # a refused number is refused every time, nothing cached for it
        with pytest.raises(ValidationError, match="not a valid number"):
            normalise("+998 12")
    assert phone._normalise.cache_info().currsize == 2
    with pytest.raises(ValidationError, match="empty"):
        normalise(["+998901234567"])          # not a string: refused before the cache (unhashable)
