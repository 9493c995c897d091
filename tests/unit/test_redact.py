import logging

from smsdispatch.redact import RedactPhones, redact


def test_numbers_are_masked_and_other_text_survives():
    line = "body: {'to': '+998901234567', 'alt': '27821234567'} took 0.0123s id=3f2a-9c1b uuid 12345678"
    out = redact(line)
    assert "+998*******67" in out and "278******67" in out
    assert "998901234567" not in out and "27821234567" not in out
    assert "0.0123s" in out and "3f2a-9c1b" in out and "12345678" in out   # short runs untouched


def test_filter_rewrites_formatted_records():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "sending to %s", ("+998901234567",), None)
    assert RedactPhones().filter(record)
    assert record.getMessage() == "sending to +998*******67"
