"""Log lines as JSON (LOG_FORMAT=json, logs.py), every field redacted, also in text lines (redact.py)."""

from __future__ import annotations

import io
import itertools
import json
import logging

import pytest

from smsdispatch.config import load_settings
from smsdispatch.logs import JsonFormatter, install
from smsdispatch.redact import RedactPhones, remember_secrets

SECRET = "s3cret-value-in-a-field-0042"
_names = itertools.count()


@pytest.fixture
def lines():
    """A logger writing to a buffer: (logger, function returning what was written)."""
    buffer = io.StringIO()
    logger = logging.getLogger(f"test.logs.{next(_names)}")
    logger.handlers[:] = [logging.StreamHandler(buffer)]
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    return logger, buffer.getvalue


def test_a_json_line_carries_the_send_fields(lines):
    logger, written = lines
    install(logger, "json")
    logger.info("message %s accepted by %s", "m-1", "eskiz",
                extra={"message_id": "m-1", "gateway": "eskiz", "attempt": 2, "status": "accepted"})
    line = json.loads(written())
    assert line["message"] == "message m-1 accepted by eskiz" and line["level"] == "INFO"
    assert {k: line[k] for k in ("message_id", "gateway", "attempt", "status")} == {
        "message_id": "m-1", "gateway": "eskiz", "attempt": 2, "status": "accepted"}
    assert line["time"].endswith("+00:00") and line["logger"] == logger.name


def test_a_number_or_a_secret_in_any_field_is_masked_in_json_lines(lines):
    logger, written = lines
    remember_secrets(SECRET)
    install(logger, "json")
    logger.warning("odd answer", extra={"to": "+998901234567", "raw": 998901234567,
                                        "body": {"echo": f"token={SECRET}", "numbers": ["+27 82 639 4175"]}})
    text = written()
    line = json.loads(text)
    assert line["to"] == "+998*******67" and line["raw"] == "998*******67"
    assert SECRET not in text and "639 4175" not in text and "998901234567" not in text
    assert "***" in line["body"]["echo"]


def test_fields_are_masked_for_text_formatters_too():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", (), None)
    record.to = "+998901234567"
    record.data = {"kwargs": "{'to': '+998 90 123 45 67'}"}
    assert RedactPhones().filter(record)
    assert record.to == "+998*******67" and "123 45" not in record.data["kwargs"]


def test_exceptions_and_celerys_received_lines_in_json(lines):
    logger, written = lines
    install(logger, "json")
    try:
        raise ValueError("gateway said +998901234567")
    except ValueError:
        logger.exception("failed")
    logger.info("Task %(name)s[%(id)s] received", {"name": "smsdispatch.send_sms", "id": "t-9"},
                extra={"data": {"name": "smsdispatch.send_sms", "id": "t-9", "kwargs": "{'to': '+998*******67'}"}})
    failed, received = (json.loads(x) for x in written().splitlines() if x.startswith("{"))
    assert "ValueError" in failed["exception"] and "998901234567" not in failed["exception"]
    assert received["task_id"] == "t-9" and received["task_name"] == "smsdispatch.send_sms"
    assert "data" not in received                   # Celery's formatting context: already in the message


def test_text_stays_the_default(lines):
    logger, written = lines
    install(logger)
    logger.info("plain %s", "+998901234567")
    assert written() == "plain +998*******67\n"
    assert not isinstance(logger.handlers[0].formatter, JsonFormatter)


def test_the_worker_formats_its_logs_as_the_setting_says(monkeypatch):
    from smsdispatch import worker
    monkeypatch.setattr(worker, "_default", worker.create_app(load_settings(log_format="json")))
    logger = logging.getLogger("test.logs.worker")
    logger.handlers[:] = [logging.StreamHandler(io.StringIO())]
    worker._worker_logs(logger)          # what Celery's after_setup_logger signal calls
    assert isinstance(logger.handlers[0].formatter, JsonFormatter)
    assert any(isinstance(f, RedactPhones) for f in logger.handlers[0].filters)


def test_the_send_paths_lines_name_message_gateway_attempt_and_status(dispatcher, stub, caplog):
    from smsdispatch.errors import GatewayUnavailable
    caplog.set_level(logging.INFO, logger="smsdispatch.dispatch")
    stub.script = [GatewayUnavailable("down", gateway="stub")]
    dispatcher.send({"to": "+998901234567", "text": "x", "gateway": "stub"}, task_id="t1")
    dispatcher.send({"to": "+998901234567", "text": "x", "gateway": "stub"}, task_id="t1")
    dispatcher.send({"to": "12", "text": "x"}, task_id="t2")
    seen = [(r.message_id, getattr(r, "gateway", None), getattr(r, "attempt", None), r.status)
            for r in caplog.records if hasattr(r, "message_id")]
    assert seen == [("t1", "stub", 1, "retrying"), ("t1", "stub", 2, "accepted"), ("t2", None, None, "failed")]
