import logging
import sys

import pytest

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


# --- numbers written with separators, credentials, tracebacks (tests/integration/test_privacy.py found
# a task sent by name with `to="+998 93 741 52 86"` shown whole in Celery's DEBUG argsrepr)


@pytest.mark.parametrize("line,hidden", [
    ("'argsrepr': \"['+998 93 741 52 86', 'By name']\"", "93 741 52"),
    ("{'to': '93 741 52 86', 'text': 'Hi'}", "93 741 52"),
    ('{"to": "(93) 741-52-86"}', "741-52"),
    ("kwargsrepr {'to': '+27 82 639 4175'}", "82 639"),
    ("sending to +998 (93) 741-52-86 now", "741-52"),
    ("to +49 1522 9384716, then", "1522 93847"),
    ('{"to": "082 639 4175"}', "082 639 41"),
])
def test_numbers_written_with_separators_are_masked(line, hidden):
    out = redact(line)
    assert hidden not in out and "*" in out


@pytest.mark.parametrize("line", [
    "[2026-11-22 10:00:00,123: INFO/MainProcess] status_date '2026-11-22 10:00:00'",
    "task 2fd76c61-1234-4cfa-9f71-022755b39032 succeeded in 0.0123s: {'amount': '12345678.90'}",
    "celery v5.7.0, version '5.7.0', ip 127.0.0.1:6379, took 937 ms, 415 sent, 286 left",
    "date '2026-11-22' and range 10-20 and '(1) 2'",
    "Basic authentication failed; Bearer tokens are refreshed",
])
def test_dates_versions_ids_and_short_numbers_are_left_alone(line):
    assert redact(line) == line


def test_a_uuid_whose_last_group_is_all_digits_stays_whole():
    """Message and task ids are UUIDs; about one in 300 ends in twelve digits, which read as a number
    (a worker's log then showed `send_sms[1174ed17-e18c-4ac9-a561-123*******12]`: not to be found)."""
    line = "Task smsdispatch.send_sms[1174ed17-e18c-4ac9-a561-123456789012] received"
    assert redact(line) == line
    assert redact('{"message_id": "1174ED17-E18C-4AC9-A561-998901234567"}').endswith('998901234567"}')
    # a number after a dash that is not a UUID's is still masked
    assert redact("call-998901234567") == "call-998*******67"
    assert redact("a561-998901234567") == "a561-998*******67"


def test_credentials_in_urls_and_authorization_headers_are_masked():
    line = ('http://127.0.0.1:8000 "GET /?hash=h4sh-v4lue-123&token=t0k3n_V4lue&to=x HTTP/1.1" 200; '
            "GET /get_status.php?sms_id=1&api_key=AbC123 ; Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIi.sig")
    out = redact(line)
    for secret in ("h4sh-v4lue-123", "t0k3n_V4lue", "AbC123", "eyJhbGciOiJIUzI1NiJ9"):
        assert secret not in out
    assert "?hash=***&token=***&to=x" in out and "sms_id=1" in out and "Bearer ***" in out


def test_a_traceback_attached_to_a_record_is_masked_too():
    try:
        raise RuntimeError("cannot reach http://gw/?token=s3cr3t-t0k3n for +998 93 741 52 86")
    except RuntimeError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    assert RedactPhones().filter(record)
    text = logging.Formatter().format(record)
    assert "s3cr3t-t0k3n" not in text and "93 741 52" not in text and "RuntimeError" in text


# --- task arguments as Flower, `celery inspect` and the worker's log lines show them


def test_shown_arguments_mask_numbers_hide_texts_and_keep_ids():
    from smsdispatch.redact import shown_arguments
    args, kwargs = shown_arguments(["+998 90 123 00 06", "secret code 4821"],
                                   {"idempotency_key": "k-1", "metadata": {"name": "Alice"}, "gateway": "eskiz"},
                                   positional=("to", "text"))
    assert args == "()"
    assert "'+998 ** *** ** 06'" in kwargs and "'<16 chars>'" in kwargs and "'k-1'" in kwargs
    assert "'eskiz'" in kwargs and "Alice" not in kwargs and "4821" not in kwargs
    # a batch by name carries its entries inline; an int number, odd shapes: never raise, never leak
    _, batch = shown_arguments([[{"to": 998901230006, "text": "hi there"}]], {}, positional=("messages",))
    assert "998*******06" in batch and "hi there" not in batch
    assert shown_arguments(["998901230006", b"bytes"], None)[0] == "('<12 chars>', '<bytes>')"
    assert shown_arguments(5, "not a mapping") == ("<?>", "<?>")
