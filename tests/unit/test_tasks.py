"""The thin task's own glue: argument hand-over and retry decisions (behaviour is proven with a real
worker in tests/integration; here the dispatcher is a stand-in)."""

import pytest
import redis

from smsdispatch.config import load_settings
from smsdispatch.dispatch import Outcome
from smsdispatch.tasks import SEND_SMS
from smsdispatch.worker import create_app


class StoredResults:
    def __init__(self):
        self.stored = []

    def store(self, task_id, result):
        self.stored.append((task_id, result))


class ScriptedDispatcher:
    def __init__(self, *answers):
        self.answers = list(answers)
        self.calls = []
        self.results = StoredResults()

    def send(self, kwargs, *, task_id, store_result=False):
        assert store_result, "send_sms asks the dispatcher to store its result with the record"
        self.calls.append((kwargs, task_id))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.fixture
def app():
    return create_app(load_settings(redis_url="redis://127.0.0.1:1/0", backoff_base=0.01))


def use(app, dispatcher):
    app.smsdispatch.__dict__["dispatcher"] = dispatcher   # replaces the cached_property


def test_arguments_reach_the_dispatcher_as_given_including_unexpected_ones(app):
    d = ScriptedDispatcher(Outcome(result={"status": "failed"}))
    use(app, d)
    app.tasks[SEND_SMS].apply(("+998901234567", "Hi", "surplus"), {"sender": "Shop", "colour": "red"})
    kwargs, _ = d.calls[0]
    assert kwargs == {"to": "+998901234567", "text": "Hi", "sender": "Shop", "colour": "red",
                      "_extra_args": ["surplus"]}


def test_a_final_result_is_stored_once_as_the_tasks_celery_result(app):
    d = ScriptedDispatcher(Outcome(result={"status": "accepted"}))
    use(app, d)
    app.tasks[SEND_SMS].apply(kwargs={"to": "+998901234567", "text": "Hi"}, task_id="t-0")
    assert d.results.stored == [("t-0", {"status": "accepted"})]
    d = ScriptedDispatcher(Outcome(result={"status": "accepted"}, stored=True), Outcome(retry_in=0.01),
                           Outcome(result={"status": "failed"}, stored=True))
    use(app, d)
    app.tasks[SEND_SMS].apply(kwargs={"to": "+998901234567", "text": "Hi"}, task_id="t-1")
    app.tasks[SEND_SMS].apply(kwargs={"to": "+998901234567", "text": "Hi"}, task_id="t-2")
    assert d.results.stored == []       # stored with the record already, or not final


def test_a_redis_error_is_retried_under_the_same_task_id(app):
    d = ScriptedDispatcher(redis.ConnectionError("blip"), Outcome(result={"status": "accepted"}))
    use(app, d)
    result = app.tasks[SEND_SMS].apply(kwargs={"to": "+998901234567", "text": "Hi"}, task_id="t-1")
    assert result.get() == {"status": "accepted"}
    assert [task_id for _, task_id in d.calls] == ["t-1", "t-1"]


def test_a_retry_outcome_runs_the_task_again(app):
    d = ScriptedDispatcher(Outcome(retry_in=0.01), Outcome(result={"status": "accepted"}))
    use(app, d)
    assert app.tasks[SEND_SMS].apply(kwargs={"to": "x", "text": "y"}).get() == {"status": "accepted"}
    assert len(d.calls) == 2


def test_the_eta_of_a_publish_is_understood_in_every_form_celery_takes():
    import time
    from datetime import datetime, timedelta, timezone

    from smsdispatch.tasks import _not_before
    at = datetime(2030, 1, 1, 9, tzinfo=timezone(timedelta(hours=5)))
    assert _not_before({"eta": at}) == at.timestamp()
    assert _not_before({"eta": at.isoformat()}) == at.timestamp()
    assert abs(_not_before({"countdown": 60}) - (time.time() + 60)) < 1
    assert _not_before({}) is None and _not_before({"countdown": 0}) is None
