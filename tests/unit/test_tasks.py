"""The thin task's own glue: argument hand-over and retry decisions (behaviour is proven with a real
worker in tests/integration; here the dispatcher is a stand-in)."""

import pytest
import redis

from smsdispatch.config import load_settings
from smsdispatch.dispatch import Outcome
from smsdispatch.tasks import SEND_SMS
from smsdispatch.worker import Runtime, create_app


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
    app.runtime = Runtime(app.runtime.settings, app, dispatcher=dispatcher)


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


def test_a_send_is_retried_past_celerys_default_of_three_retries(app):
    d = ScriptedDispatcher(*[Outcome(retry_in=0.01)] * 5, redis.ConnectionError("blip"),
                           Outcome(result={"status": "accepted"}))
    use(app, d)
    assert app.tasks[SEND_SMS].apply(kwargs={"to": "x", "text": "y"}).get() == {"status": "accepted"}
    assert len(d.calls) == 7


def test_the_eta_of_a_publish_is_understood_in_every_form_celery_takes():
    import time
    from datetime import datetime, timedelta, timezone

    from smsdispatch.tasks import _not_before
    at = datetime(2030, 1, 1, 9, tzinfo=timezone(timedelta(hours=5)))
    assert _not_before({"eta": at}) == at.timestamp()
    assert _not_before({"eta": at.isoformat()}) == at.timestamp()
    assert abs(_not_before({"countdown": 60}) - (time.time() + 60)) < 1
    assert _not_before({}) is None and _not_before({"countdown": 0}) is None


# --- a retry that cannot be published (RetryOrRequeue) --------------------------------------------

class BrokerDown:
    """Stands in for a publish that fails, as Task.retry's `S.apply_async()` meets it."""

    def __init__(self, error):
        self.error, self.calls = error, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        raise self.error


@pytest.fixture
def paused(monkeypatch):
    import smsdispatch.tasks as tasks
    pauses = []
    monkeypatch.setattr(tasks.time, "sleep", pauses.append)
    return pauses


def in_worker(task, **request):
    """Run with a request as a worker gives one (not eager, not called directly)."""
    task.push_request(id="t-1", called_directly=False, is_eager=False, retries=0, **request)
    return task


def plain_task():
    from celery import Celery

    from smsdispatch.tasks import RetryOrRequeue
    app = Celery("unit", set_as_current=False)

    @app.task(bind=True, base=RetryOrRequeue, name="unit.plain", max_retries=None, shared=False)
    def plain(self):
        return None
    return plain


def test_celery_discards_a_message_whose_retry_could_not_be_published():
    from celery import Task
    from celery.exceptions import Reject
    task = plain_task()
    task.apply_async = BrokerDown(redis.ConnectionError("Error 111 connecting"))
    in_worker(task)
    with pytest.raises(Reject) as raised:
        Task.retry(task, countdown=0.5)                     # Celery's own retry, underneath ours
    assert raised.value.requeue is False


def test_a_retry_that_cannot_be_published_requeues_the_message_after_its_countdown(paused):
    from celery.exceptions import Reject
    from kombu.exceptions import OperationalError
    for error in (redis.ConnectionError("Error 111 connecting"), OperationalError("broker down"),
                  redis.ResponseError("OOM command not allowed")):
        task = plain_task()
        task.apply_async = BrokerDown(error)
        in_worker(task)
        with pytest.raises(Reject) as raised:
            task.retry(exc=redis.ConnectionError("store down"), countdown=0.5)
        assert raised.value.requeue is True and raised.value.reason is error
        assert task.apply_async.calls == 1
    assert paused == [0.5, 0.5, 0.5]                          # never a requeue at full speed


def test_the_pause_before_a_requeue_is_capped(paused):
    from celery.exceptions import Reject

    from smsdispatch.tasks import REQUEUE_PAUSE_MAX
    task = in_worker(plain_task())
    task.apply_async = BrokerDown(redis.ConnectionError("down"))
    with pytest.raises(Reject):
        task.retry(countdown=300)
    assert paused == [REQUEUE_PAUSE_MAX]


def test_a_published_retry_is_the_ordinary_countdown_retry(paused):
    from celery.exceptions import Retry
    task = in_worker(plain_task())
    published = []
    task.apply_async = lambda *a, **kw: published.append(kw)
    with pytest.raises(Retry):
        task.retry(exc=redis.ResponseError("READONLY"), countdown=0.5)
    assert len(published) == 1 and published[0]["countdown"] == 0.5 and paused == []


def test_a_publish_failing_for_another_reason_stays_celerys_reject(paused):
    from celery.exceptions import Reject
    task = in_worker(plain_task())
    task.apply_async = BrokerDown(ValueError("a bug"))
    with pytest.raises(Reject) as raised:
        task.retry(countdown=0.5)
    assert raised.value.requeue is False and paused == []


class UnreachableRecord:
    message_id = "m"

    def run(self, *args, **kwargs):
        raise redis.ConnectionError("Error 111 connecting")


class StoreDown(ScriptedDispatcher):
    """Redis away: the send fails, and so does the retry's publish, which writes the `queued` record
    (first, or in one script with the message)."""

    def queued_record(self, kwargs, *, task_id, not_before=None):
        return UnreachableRecord()


@pytest.mark.parametrize("name", ["smsdispatch.send_sms", "smsdispatch.send_chunk", "smsdispatch.send_reminder"])
def test_every_sending_task_requeues_when_redis_fails_under_it_and_under_its_retry(app, paused, monkeypatch, name):
    from celery.exceptions import Reject
    down = redis.ConnectionError("Error 111 connecting")
    parts = {part: type("Down", (), {"__getattr__": lambda self, n: BrokerDown(down)})()
             for part in ("batches", "reminders")}
    app.runtime = Runtime(app.runtime.settings, app, dispatcher=StoreDown(down), **parts)
    task = app.tasks[name]
    if name != SEND_SMS:    # send_sms's publish writes the `queued` record first, which fails already
        monkeypatch.setattr(task, "apply_async", BrokerDown(down))
    in_worker(task)
    kwargs = {SEND_SMS: {"to": "+998901234567", "text": "Hi"},
              "smsdispatch.send_chunk": {"batch_id": "b", "index": 0, "submission": "s"},
              "smsdispatch.send_reminder": {"reminder_id": "r"}}[name]
    try:
        with pytest.raises(Reject) as raised:
            task.run(**kwargs)
    finally:
        task.pop_request()
    assert raised.value.requeue is True and paused == [0.01]     # BACKOFF_BASE of the fixture
