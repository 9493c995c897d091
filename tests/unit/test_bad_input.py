"""Malformed send_sms input, fast: the task run eagerly over a real Dispatcher on fakeredis and a stub
gateway. The same strategies (bad_inputs.py) are thrown at a real worker in
tests/integration/test_bad_input.py; here there are more examples per second, and one regression test
per bug that bad input found."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import fakeredis
import pytest
from hypothesis import HealthCheck, given, settings
from kombu.exceptions import EncodeError
from kombu.utils.json import dumps as kombu_dumps
from kombu.utils.json import loads as kombu_loads

from smsdispatch.config import load_settings
from smsdispatch.dispatch import Dispatcher
from smsdispatch.errors import ValidationError
from smsdispatch.reminders import Reminders
from smsdispatch.sendrequest import check_encodable, merge_arguments, parse_send
from smsdispatch.tasks import SEND_SMS
from smsdispatch.worker import Runtime, create_app

from .bad_inputs import VALID_DIGITS, VALID_TEXT, VALID_TO, BadCall, bad_reminders, bad_send_calls, refusal_problems
from .conftest import StubGateway, StubGateways

#: Examples per property here (the integration test runs its own 1,000+ against a real worker).
UNIT_EXAMPLES = 200


class Harness:
    """An app whose task runs in-process over a fakeredis Dispatcher; counts dispatcher runs."""

    def __init__(self) -> None:
        self.settings = load_settings(redis_url="redis://127.0.0.1:1/0", backoff_base=0.01)
        self.app = create_app(self.settings)
        self.app.conf.task_always_eager = True          # apply_async: producer side, then the task inline
        self.stub = StubGateway()
        self.redis = fakeredis.FakeRedis()
        self.dispatcher = Dispatcher(self.settings, self.redis, gateways=StubGateways(self.stub))
        self.app.runtime = Runtime(self.settings, self.app, dispatcher=self.dispatcher)
        self.task = self.app.tasks[SEND_SMS]
        self.runs = 0
        send = self.dispatcher.send

        def counting_send(kwargs, *, task_id, **options):
            self.runs += 1
            return send(kwargs, task_id=task_id, **options)
        self.dispatcher.send = counting_send

    def reset(self) -> Harness:
        self.redis.flushall()
        self.stub.calls.clear()
        self.runs = 0
        return self


_shared: list[Harness] = []


def shared() -> Harness:
    """One harness for all examples of a property (building a Celery app per example is slow)."""
    if not _shared:
        _shared.append(Harness())
    return _shared[0].reset()


@pytest.fixture
def h() -> Harness:
    return shared()


def run_by_name(h: Harness, call: BadCall):
    """What a worker gets from `send_task(SEND_SMS, args, kwargs)`: the arguments after kombu's JSON.
    Returns the eager result, or None when kombu refuses to encode them (a clear producer error)."""
    try:
        args, kwargs = kombu_loads(kombu_dumps([list(call.args), call.kwargs]))
    except EncodeError:
        return None
    except (TypeError, ValueError):      # kombu's dumps raises these itself; the producer wraps them
        return None
    return h.task.apply(args, kwargs, task_id=str(uuid.uuid4()))


# ------------------------------------------------------------------ properties

@settings(max_examples=UNIT_EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(call=bad_send_calls())
def test_malformed_calls_through_the_producer_are_refused_or_fail_validation_without_a_gateway_call(call):
    h = shared()
    try:
        result = h.task.apply_async(call.args, call.kwargs)
    except ValidationError as e:
        assert call.producer_refuses, f"refused at the producer: {e}"
        assert str(e) and VALID_DIGITS not in str(e)
        assert h.runs == 0 and h.redis.dbsize() == 0           # nothing recorded, nothing published
        return
    assert not call.producer_refuses, "the producer should have refused it"
    assert result.state == "SUCCESS", result.traceback
    assert refusal_problems(result.result, h.dispatcher.records.get(result.result["message_id"])) == []
    assert h.stub.calls == [] and h.runs <= 1


@settings(max_examples=UNIT_EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(call=bad_send_calls())
def test_malformed_calls_by_name_fail_validation_in_the_task_without_a_gateway_call(call):
    h = shared()
    result = run_by_name(h, call)
    if result is None:
        return
    assert result.state == "SUCCESS", result.traceback
    assert refusal_problems(result.result, h.dispatcher.records.get(result.result["message_id"])) == []
    assert h.stub.calls == [] and h.runs <= 1


@settings(max_examples=UNIT_EXAMPLES // 2, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(case=bad_reminders())
def test_malformed_reminders_are_refused_when_scheduled(case):
    kwargs, send_at, _defects = case
    h = shared()
    reminders = Reminders(h.redis, h.dispatcher.keys, default_region=None, ttl=0)
    with pytest.raises(ValidationError):
        reminders.schedule(kwargs, send_at, now=datetime.now(timezone.utc).timestamp())
    assert h.redis.dbsize() == 0


# ------------------------------------------------------------------ the bugs it found, one by one

@pytest.mark.parametrize("to", [
    VALID_TO + "\u200b",        # zero-width space: phonenumbers reads it as punctuation
    "\u200f" + VALID_TO,        # a right-to-left mark
    VALID_TO + "😀",            # trailing junk is stripped by phonenumbers
    VALID_TO + "\x00",
    VALID_TO + " ext. 5",       # an extension: E.164 drops it, the SMS would go to the main line
    "tel:" + VALID_TO,
    VALID_TO[:5] + "\ud800" + VALID_TO[5:],
])
def test_a_number_with_anything_but_digits_spaces_and_separators_is_refused_without_showing_it(to):
    with pytest.raises(ValidationError) as e:
        parse_send({"to": to, "text": "Hi"}, default_region=None)
    assert str(e.value).startswith("to: ") and VALID_DIGITS not in str(e.value)


@pytest.mark.parametrize("to", ["+998 (90) 123-45-67", "+998.90.123.45.67", "+998/90/1234567", VALID_TO + "\n",
                                "  " + VALID_TO, "+998\u00a090\u00a01234567", "+٩٩٨٩٠١٢٣٤٥٦٧",
                                "00998901234567"])
def test_numbers_written_the_usual_ways_are_still_accepted(to):
    assert parse_send({"to": to, "text": "Hi"}, default_region=None).to == VALID_TO


@pytest.mark.parametrize("text", ["\u200b", "\u200f\u200e", "\ufeff", " \u2060 \n", "\u00ad"])
def test_a_text_of_only_invisible_characters_is_empty(text):
    with pytest.raises(ValidationError, match="text: must not be empty"):
        parse_send({"to": VALID_TO, "text": text}, default_region=None)


@pytest.mark.parametrize("text", ["\u200fשלום", "👨‍👩‍👧", "a\u200bb", "\u2066Salom\u2069"])
def test_texts_with_invisible_characters_among_visible_ones_are_fine(text):
    assert parse_send({"to": VALID_TO, "text": text}, default_region=None).text == text


def test_an_empty_gateway_name_is_refused_instead_of_meaning_the_default_route():
    with pytest.raises(ValidationError, match="gateway: "):
        parse_send({"to": VALID_TO, "text": "Hi", "gateway": ""}, default_region=None)


@pytest.mark.parametrize("sender", ["My\x00Shop", "Shop\n", "\u200bShop"])
def test_a_sender_with_control_or_invisible_characters_is_refused(sender):
    with pytest.raises(ValidationError, match="sender: must not contain control"):
        parse_send({"to": VALID_TO, "text": "Hi", "sender": sender}, default_region=None)


@pytest.mark.parametrize("field,value", [
    ("metadata", {"at": datetime(2026, 1, 1)}), ("options", {"b": b"x"}), ("metadata", {"s": {1}}),
    ("text", datetime(2026, 1, 1)), ("unexpected", {1, 2}),
])
def test_a_value_that_is_not_json_is_a_validation_error_not_a_type_error(field, value):
    with pytest.raises(ValidationError, match=f"^{field}: must be plain JSON"):
        parse_send({"to": VALID_TO, "text": "Hi", field: value}, default_region=None)


@pytest.mark.parametrize("kwargs,where", [
    ({"idempotency_key": "k\ud800"}, "idempotency_key"), ({"metadata": {"k\udfff": 1}}, "metadata"),
    ({"options": {"k": ["\ud83d"]}}, "options"), ({"text": "hi\udc00"}, "text"), ({"x\ud800": 1}, "'x\\ud800'"),
])
def test_a_lone_surrogate_anywhere_is_named_by_its_argument(kwargs, where):
    with pytest.raises(ValidationError) as e:
        check_encodable({"to": VALID_TO, **kwargs})
    assert str(e.value).startswith(where + ": ")
    str(e.value).encode("utf-8")     # the message itself can be logged and stored


def test_arguments_given_twice_or_in_the_wrong_shape_are_refused():
    assert merge_arguments(("a", "b", "c"), {"x": 1}) == {"x": 1, "to": "a", "text": "b", "_extra_args": ["c"]}
    with pytest.raises(ValidationError, match="^to: given both by position and by name"):
        merge_arguments((VALID_TO,), {"to": VALID_TO})
    with pytest.raises(ValidationError, match="positional arguments must be a list"):
        merge_arguments("+998901234567", {})
    with pytest.raises(ValidationError, match="keyword arguments must be a mapping"):
        merge_arguments((), [("to", VALID_TO)])


@pytest.mark.parametrize("args,kwargs", [
    ((), {"to": VALID_TO, "text": "Hi", "self": "me"}),             # was: TypeError in the task
    ((VALID_TO, "Hi"), {"to": "+998907654321"}),                   # was: TypeError in the task
    ((), {"to": VALID_TO, "text": "Hi", "idempotency_key": "k\ud800"}),   # was: UnicodeEncodeError
    ((), {"to": VALID_TO, "text": "Hi", "metadata": {"at": datetime(2026, 1, 1)}}),   # was: TypeError
    ((), {"to": VALID_TO, "text": "Hi", "metadata": {"k\ud800": 1}}),   # was: UnicodeEncodeError in Redis
])
def test_the_task_records_a_validation_failure_for_input_that_used_to_crash_it(h, args, kwargs):
    task_id = str(uuid.uuid4())
    result = h.task.apply(args, kwargs, task_id=task_id)
    assert result.state == "SUCCESS", result.traceback
    assert refusal_problems(result.result, h.dispatcher.records.get(result.result["message_id"])) == []
    assert h.stub.calls == []


def test_a_key_that_is_not_valid_unicode_gives_the_task_id_as_message_id(h):
    result = h.task.apply((), {"to": VALID_TO, "text": "Hi", "idempotency_key": "k\ud800"}, task_id="t-1").get()
    assert result["message_id"] == "t-1" and result["idempotency_key"] == "t-1"
    assert "idempotency_key: must be valid Unicode" in result["error"]["message"]


@pytest.mark.parametrize("args,kwargs,match", [
    ((VALID_TO, "Hi"), {"metadata": {"at": datetime(2026, 1, 1)}}, "^metadata: must be plain JSON"),
    ((VALID_TO, "Hi\ud800"), {}, "^text: must be valid Unicode"),
    ((VALID_TO, "Hi"), {"to": VALID_TO}, "^to: given both"),
    ((), {"to": VALID_TO, "text": "Hi", "idempotency_key": "\udc00"}, "^idempotency_key: must be valid Unicode"),
])
def test_the_producer_refuses_what_it_cannot_record_before_recording_or_publishing_anything(h, args, kwargs, match):
    with pytest.raises(ValidationError, match=match):
        h.task.apply_async(args, kwargs)
    assert h.redis.dbsize() == 0 and h.runs == 0


def test_a_valid_message_still_goes_through_the_same_harness(h):
    result = h.task.apply_async((VALID_TO, VALID_TEXT)).get()
    assert result["status"] == "accepted" and len(h.stub.calls) == 1
    assert refusal_problems(result, h.dispatcher.records.get(result["message_id"])) != []   # the check can fail


# ------------------------------------------------------------------ scheduling checks what sending would

def _schedule(kwargs, send_at=None):
    redis = fakeredis.FakeRedis()
    settings = load_settings(redis_url="redis://unused:6379/0")
    from smsdispatch.dispatch import Dispatcher
    dispatcher = Dispatcher(settings, redis)
    reminders = Reminders(redis, dispatcher.keys, default_region=None, ttl=0,
                          validate=lambda kw: dispatcher.prepare(kw, "check"))     # as the worker wires it
    send_at = send_at or datetime.now(timezone.utc) + timedelta(days=1)
    return reminders.schedule(kwargs, send_at, now=datetime.now(timezone.utc).timestamp())


def test_a_naive_send_at_is_refused():
    with pytest.raises(ValidationError, match="timezone-aware"):
        _schedule({"to": VALID_TO, "text": "Hi"}, datetime(2026, 12, 1, 9, 0))


def test_reminder_kwargs_that_are_not_a_dict_are_a_validation_error():
    with pytest.raises(ValidationError):
        _schedule([("to", VALID_TO)])


@pytest.mark.parametrize("gateway", [datetime(2026, 1, 1), "eskiz\ud800"])
def test_a_reminder_gateway_that_is_not_a_string_is_a_validation_error(gateway):
    with pytest.raises(ValidationError):
        _schedule({"to": VALID_TO, "text": "Hi", "gateway": gateway})


@pytest.mark.parametrize("kwargs", [{"to": VALID_TO}, {"to": VALID_TO, "text": "Hi", "options": {"x": 1}},
                                    {"to": VALID_TO, "text": "Hi", "gateway": 5}])
def test_a_reminder_the_gateway_would_refuse_is_refused_when_scheduled(kwargs):
    with pytest.raises(ValidationError):
        _schedule(kwargs)
