"""The testing kit for host apps (smsdispatch.testing): capturing (`sms_outbox`) and eager (`sms_eager`).

Every app here points at redis://127.0.0.1:1, where nothing listens: a test that passes touched no
Redis but the kit's fakeredis.
"""

from __future__ import annotations

import logging
import os
import re
from datetime import datetime, timedelta, timezone

import pytest
from celery.exceptions import TimeoutError as CeleryTimeout

import smsdispatch
from smsdispatch import worker
from smsdispatch.config import settings_from
from smsdispatch.dispatch import message_id_for
from smsdispatch.errors import ValidationError
from smsdispatch.testing import capture_sms, eager_sms
from smsdispatch.testing.harness import Harness
from smsdispatch.worker import Runtime, SmsApp, create_app

NOWHERE = "redis://127.0.0.1:1/0"
ESKIZ = {"ESKIZ_EMAIL": "kit@example.com", "ESKIZ_PASSWORD": "kit-password"}
DEVSMS = {"DEVSMS_TOKEN": "kit-token"}
SMSCX = {"SMSCX_API_KEY": "kit-key"}
NUMBER, OTHER = "+998901234567", "+998907654321"


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    for name in list(os.environ):
        if name.startswith("SMSDISPATCH_"):
            monkeypatch.delenv(name)
    monkeypatch.setattr(worker, "_default", None)


def configure(**settings):
    return smsdispatch.configure({"REDIS_URL": NOWHERE, **settings})


# --- capturing: sms_outbox ------------------------------------------------------------------------


def test_the_outbox_holds_what_the_app_sent_and_nothing_is_run():
    configure()
    with capture_sms() as outbox:
        handle = smsdispatch.send_sms.delay(NUMBER, "Your code is 4821", idempotency_key="otp-1", sender="Shop",
                                            metadata={"user": 7})
        assert len(outbox) == 1
        sms = outbox[0]
        assert (sms.to, sms.text, sms.idempotency_key, sms.sender, sms.metadata) == \
               (NUMBER, "Your code is 4821", "otp-1", "Shop", {"user": 7})
        assert sms.kind == "sms" and sms.valid and sms.number == NUMBER
        assert sms.task_id == handle.id and sms.message_id == message_id_for("otp-1", handle.id)
        assert smsdispatch.get_message(sms.message_id)["status"] == "queued"     # as production's producer
        assert handle.state == "PENDING" and not handle.ready()
        with pytest.raises(CeleryTimeout, match="sms_outbox captures messages and runs nothing"):
            handle.get(timeout=1)


def test_the_producers_checks_still_raise_and_capture_nothing():
    configure(MAX_TEXT_CHARS=20)
    with capture_sms() as outbox:
        with pytest.raises(ValidationError, match="text"):
            smsdispatch.send_sms.delay(NUMBER, "x" * 21)
        with pytest.raises(ValidationError):
            smsdispatch.send_sms.delay(NUMBER, "hi", metadata={"at": datetime.now()})    # not JSON
        with pytest.raises(ValidationError, match="messages"):
            smsdispatch.send_batch.delay([])
        with pytest.raises(ValidationError, match="timezone-aware"):
            smsdispatch.schedule_reminder(NUMBER, "hi", datetime(2030, 1, 1))
        assert len(outbox) == 0


def test_each_message_says_what_the_worker_would_make_of_it():
    configure(DEFAULT_REGION="UZ")
    with capture_sms() as outbox:
        smsdispatch.send_sms.delay("90 123-45-67", "typed by a person")
        smsdispatch.send_sms.delay("+99890", "too short")
        smsdispatch.send_sms.delay(NUMBER, "through a gateway not configured here", gateway="eskiz")
    assert [m.number for m in outbox] == [NUMBER, None, None]
    assert outbox[0].valid and outbox[0].rejection is None
    assert "not a valid number" in outbox[1].rejection
    assert "eskiz" in outbox[2].rejection and not outbox[2].valid
    assert outbox.to("+998 90 123 45 67") == [outbox[0], outbox[2]] and outbox.to("+99890") == [outbox[1]]


def test_batches_and_reminders_are_captured_message_by_message():
    configure()
    send_at = datetime.now(timezone.utc) + timedelta(days=3)
    with capture_sms() as outbox:
        smsdispatch.send_batch.delay([{"to": NUMBER, "text": "Sale"}, {"to": "nope", "text": "Sale"},
                                      {"to": OTHER, "text": "Sale", "idempotency_key": "sale-9"}],
                                     batch_id="sale", sender="Shop")
        reminder_id = smsdispatch.schedule_reminder(OTHER, "See you tomorrow", send_at, idempotency_key="visit-3")
        assert smsdispatch.get_reminder(reminder_id)["state"] == "scheduled"
    assert [(m.kind, m.to) for m in outbox] == [("batch", NUMBER), ("batch", "nope"), ("batch", OTHER),
                                                ("reminder", OTHER)]
    first, bad, own, reminder = outbox
    assert first.batch_id == "sale" and first.sender == "Shop" and first.message_id == message_id_for("sale:0", "")
    assert bad.rejection and own.message_id == message_id_for("sale-9", "")
    assert reminder.reminder_id == reminder_id and reminder.eta == send_at
    assert reminder.idempotency_key == "visit-3" and reminder.message_id == message_id_for("visit-3", "")


def test_eta_sends_keep_their_time():
    configure()
    at = datetime.now(timezone.utc) + timedelta(minutes=20)
    with capture_sms() as outbox:
        smsdispatch.send_sms.apply_async((NUMBER, "Your table is ready"), eta=at)
    assert outbox[0].eta == at and outbox[0].to == NUMBER


def test_every_app_is_covered_built_before_during_or_after_the_kit_starts():
    before = create_app(settings_from({"REDIS_URL": NOWHERE, "QUEUE": "before"}))
    with capture_sms() as outbox:
        during = create_app(settings_from({"REDIS_URL": NOWHERE, "QUEUE": "during"}))
        configure(QUEUE="default")
        before.send_sms.delay(NUMBER, "one")
        during.send_sms.delay(NUMBER, "two")
        smsdispatch.send_sms.delay(NUMBER, "three")
        by_name = before.send_task("smsdispatch.send_sms", kwargs={"to": NUMBER, "text": "four"})
    assert outbox.texts == ["one", "two", "three", "four"]
    assert [m.queue for m in outbox] == [None, None, None, None] and by_name.id == outbox[3].task_id


def test_the_kit_leaves_nothing_behind():
    app = create_app(settings_from({"REDIS_URL": NOWHERE}))
    send_task, part = SmsApp.__dict__["send_task"], Runtime.__dict__["_part"]
    with capture_sms():
        app.send_sms.delay(NUMBER, "hi")
        assert SmsApp.__dict__["send_task"] is not send_task        # the kit's, while it is active
    assert SmsApp.__dict__["send_task"] is send_task and Runtime.__dict__["_part"] is part    # ours again
    assert Runtime.schedule_reminder.__qualname__ == "Runtime.schedule_reminder"
    assert app.runtime._redis is None and app.runtime._dispatcher is None    # its own parts were never built
    assert Harness._active is None


def test_one_kit_at_a_time():
    with capture_sms():
        with pytest.raises(RuntimeError, match="cannot be used together"):
            with eager_sms():
                pass


def test_each_kit_starts_empty():
    configure()
    with capture_sms() as outbox:
        smsdispatch.send_sms.delay(NUMBER, "hi", idempotency_key="same")
    with capture_sms() as again:
        assert len(again) == 0
        smsdispatch.send_sms.delay(NUMBER, "hi", idempotency_key="same")
        assert smsdispatch.get_message(again[0].message_id)["status"] == "queued"
    assert len(outbox) == 1


# --- eager: sms_eager ----------------------------------------------------------------------------


def test_eager_sends_through_the_real_dispatcher_and_records_it():
    configure()
    with eager_sms() as sms:
        result = smsdispatch.send_sms.delay(NUMBER, "Your code is 4821", idempotency_key="otp-2").get()
        assert result["status"] == "accepted" and result["gateway"] == "console"
        record = smsdispatch.get_message(result["message_id"])
        assert record["status"] == "accepted" and record["attempts"] == 1
        assert [h["status"] for h in smsdispatch.get_history(result["message_id"])] == ["queued", "sending",
                                                                                          "accepted"]
        again = smsdispatch.send_sms.delay(NUMBER, "Your code is 4821", idempotency_key="otp-2").get()
        assert again == result
        assert [(s.to, s.text, s.gateway) for s in sms.sent] == [(NUMBER, "Your code is 4821", "console")]
        assert len(sms.outbox) == 2


def test_a_transient_failure_is_retried_when_the_test_says_time_has_passed():
    configure()
    with eager_sms() as sms:
        sms.fail_next("unavailable")
        handle = smsdispatch.send_sms.delay(NUMBER, "retry me")
        assert handle.state == "RETRY" and smsdispatch.get_message(handle.id)["status"] == "retrying"
        assert len(sms.scheduled) == 1 and sms.sent == []
        with pytest.raises(CeleryTimeout, match="run_scheduled"):
            handle.get()
        assert sms.run_scheduled() == 1
        assert handle.get()["status"] == "accepted" and handle.get()["attempts"] == 2
        assert len(sms.sent) == 1 and sms.scheduled == []


def test_a_permanent_failure_fails_at_once():
    configure()
    with eager_sms() as sms:
        sms.fail_next("rejected")
        result = smsdispatch.send_sms.delay(NUMBER, "no").get()
        assert result["status"] == "failed" and result["error"]["code"] == "recipient_rejected"
        assert sms.scheduled == []


def test_bad_input_ends_failed_in_the_worker_as_in_production():
    configure()
    with eager_sms() as sms:
        result = smsdispatch.send_sms.delay("+99890", "hi").get()
        assert result["status"] == "failed" and result["error"]["code"] == "validation"
        unconfigured = smsdispatch.send_sms.delay(NUMBER, "hi", gateway="eskiz").get()
        assert unconfigured["error"]["code"] == "validation" and "eskiz" in unconfigured["error"]["message"]
        assert sms.sent == []


@pytest.mark.parametrize("gateway, credentials, status, sends", [
    ("eskiz", ESKIZ, "accepted", 1),      # Eskiz can look messages up: found, not sent again
    ("devsms", DEVSMS, "unknown", 1),     # DevSMS cannot: unknown, never resent
    ("smscx", SMSCX, "accepted", 1),      # SMS.CX dedupes: the same call again, sent once
])
def test_memory_gateways_keep_the_real_gateways_guarantees(gateway, credentials, status, sends):
    configure(DEFAULT_GATEWAY=gateway, **credentials)
    with eager_sms() as sms:
        sms.gateway(gateway).fail_next("timeout_after_send")
        handle = smsdispatch.send_sms.delay(NUMBER, "maybe sent")
        sms.run_scheduled()
        assert smsdispatch.get_message(handle.id)["status"] == status
        assert len(sms.gateway(gateway).sent) == sends and sms.gateway(gateway).can_lookup is (gateway == "eskiz")
        assert sms.gateway(gateway).can_dedupe is (gateway == "smscx")


def test_an_ambiguous_call_the_gateway_never_got_is_sent_once_after_the_lookup():
    configure(DEFAULT_GATEWAY="eskiz", **ESKIZ)
    with eager_sms() as sms:
        sms.fail_next("timeout")
        handle = smsdispatch.send_sms.delay(NUMBER, "lost answer")
        sms.run_scheduled()
        assert handle.get()["status"] == "accepted" and len(sms.sent) == 1


def test_the_real_gateways_option_checks_apply():
    configure(DEFAULT_GATEWAY="devsms", **DEVSMS)
    with eager_sms() as sms:
        result = smsdispatch.send_sms.delay(NUMBER, None, options={"type": "universal_otp", "template_type": 99}).get()
        assert result["error"]["code"] == "validation" and sms.sent == []


def test_eager_batches_and_reminders_run_to_their_records():
    configure()
    with eager_sms() as sms:
        summary = smsdispatch.send_batch.delay([{"to": NUMBER, "text": "a"}, {"to": "x", "text": "b"}],
                                               batch_id="b1").get()
        assert len(summary["chunk_tasks"]) == 1
        batch = smsdispatch.get_batch("b1")
        assert (batch["status"], batch["accepted"], batch["failed"]) == ("done", 1, 1)
        later = datetime.now(timezone.utc) + timedelta(days=2)
        kept = smsdispatch.schedule_reminder(OTHER, "tomorrow", later)
        dropped = smsdispatch.schedule_reminder(OTHER, "cancelled", later)
        assert smsdispatch.cancel_reminder(dropped) is True
        assert smsdispatch.get_reminder(kept)["state"] == "scheduled"
        sms.run_scheduled()
        assert smsdispatch.get_reminder(kept)["state"] == "done"
        assert smsdispatch.get_reminder(dropped)["state"] == "cancelled"
        assert [s.text for s in sms.sent] == ["a", "tomorrow"]


def test_a_reminder_already_due_is_sent_at_once():
    configure()
    with eager_sms() as sms:
        reminder_id = smsdispatch.schedule_reminder(NUMBER, "now", datetime.now(timezone.utc) - timedelta(minutes=1))
        assert smsdispatch.get_reminder(reminder_id)["state"] == "done" and len(sms.sent) == 1
        assert [m.kind for m in sms.outbox] == ["reminder"]      # its release is not the app's own send


def test_refused_numbers_fail_one_by_one_inside_a_batch():
    configure(DEFAULT_GATEWAY="eskiz", **ESKIZ)
    with eager_sms() as sms:
        sms.gateway("eskiz").refuse(OTHER)
        smsdispatch.send_batch.delay([{"to": NUMBER, "text": "a"}, {"to": OTHER, "text": "b"}], batch_id="b2")
        batch = smsdispatch.get_batch("b2")
        assert (batch["accepted"], batch["failed"]) == (1, 1) and [s.to for s in sms.sent] == [NUMBER]


def test_sends_from_other_threads_run_too():
    from concurrent.futures import ThreadPoolExecutor
    configure()
    with eager_sms() as sms:
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda n: smsdispatch.send_sms.delay(NUMBER, f"t{n}").get(), range(20)))
        assert {r["status"] for r in results} == {"accepted"} and len(sms.sent) == 20


# --- privacy -------------------------------------------------------------------------------------


def test_numbers_are_readable_in_reprs_but_never_logged_in_full(caplog):
    configure(DEFAULT_REGION="UZ")
    caplog.set_level(logging.DEBUG, logger="smsdispatch")
    with capture_sms() as outbox:
        smsdispatch.send_sms.delay(NUMBER, "captured")
        smsdispatch.send_sms.delay("+99890", "refused")
    with eager_sms() as sms:
        sms.fail_next("unavailable")
        smsdispatch.send_sms.delay(OTHER, "eager")
        smsdispatch.send_sms.delay("+99891", "refused")
        sms.gateway("console").refuse(NUMBER)
        smsdispatch.send_sms.delay(NUMBER, "refused by the gateway")
        sms.run_scheduled()
        shown = repr(sms) + repr(sms.sent)
    assert NUMBER in repr(outbox) and "+99890" in repr(outbox) and OTHER in shown
    logged = [r.getMessage() for r in caplog.records if r.name.startswith("smsdispatch")]
    assert any("+998*******" in line or "****" in line for line in logged), logged
    digits = re.compile(r"\+?99890\d*|\+?99891\d*|901234567|907654321")
    assert not [line for line in logged if digits.search(line)], logged


def test_a_task_that_raises_fails_its_result_and_its_log_line_shows_no_number(caplog, monkeypatch):
    from smsdispatch.dispatch import Dispatcher

    def broken(*args, **kwargs):
        raise RuntimeError(f"a bug near {NUMBER}")
    configure()
    caplog.set_level(logging.DEBUG, logger="smsdispatch")
    with eager_sms():
        monkeypatch.setattr(Dispatcher, "send", broken)
        handle = smsdispatch.send_sms.delay(NUMBER, "hi")
        assert handle.state == "FAILURE" and handle.failed()
        with pytest.raises(RuntimeError, match=re.escape(NUMBER)):     # the test sees it whole
            handle.get()
    assert "RuntimeError: a bug near +998" in caplog.text and NUMBER not in caplog.text
