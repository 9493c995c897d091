"""The health checks and /healthz's answers (health.py), what the webhook receiver and the metrics
server mount (pages.py), and beat's heartbeat (beat.py); on fakeredis with a stand-in ping.
tests/integration/test_observability.py runs them against a real Redis, worker and beat."""

from __future__ import annotations

import json

import fakeredis
import pytest
import redis

from smsdispatch import beat
from smsdispatch.config import load_settings
from smsdispatch.health import Health
from smsdispatch.pages import Pages
from smsdispatch.redisclient import connect
from smsdispatch.webhooks import Webhooks

from .test_metrics import _call


def pong(*names):
    calls = []

    def ping(**kw):
        calls.append(kw)
        return [{name: {"ok": "pong"}} for name in names]
    ping.calls = calls
    return ping


@pytest.fixture
def health(redis_client, dispatcher):
    return Health(redis_client, dispatcher.keys, dispatcher.settings, ping=pong("w1@host"))


def test_all_healthy_answers_200_and_names_each_check(health, redis_client, dispatcher):
    redis_client.set(dispatcher.keys.beat(), "1700000000.5", ex=60)
    status, headers, body = _call(health, "/healthz")
    answer = json.loads(body)
    assert status.startswith("200") and headers["Content-Type"] == "application/json"
    assert answer["healthy"] is True and set(answer["checks"]) == {"redis", "workers", "beat"}
    assert "w1@host answered" in answer["checks"]["workers"]["detail"]
    assert redis_client.ttl(dispatcher.keys.health()) > 0        # the write that proves Redis takes writes


def test_a_beat_without_a_recent_tick_is_unhealthy(health):
    status, _, body = _call(health, "/healthz")       # no tick: its key expired or was never written
    answer = json.loads(body)
    assert status.startswith("503") and answer["healthy"] is False
    assert answer["checks"]["beat"]["ok"] is False and "BEAT_STALE_AFTER" in answer["checks"]["beat"]["detail"]
    assert answer["checks"]["redis"]["ok"] and answer["checks"]["workers"]["ok"]


def test_only_the_checks_asked_run(health):
    status, _, body = _call(health, "/healthz", query="check=redis")
    assert status.startswith("200") and set(json.loads(body)["checks"]) == {"redis"}
    assert health.ping.calls == []
    assert _call(health, "/healthz", query="check=redis,nope")[0].startswith("400")
    assert _call(health, "/healthz", method="POST")[0].startswith("405")


def test_no_worker_answering_is_unhealthy_and_a_node_is_pinged_alone(health, dispatcher, redis_client):
    silent = Health(redis_client, dispatcher.keys, dispatcher.settings, ping=pong())
    check = silent.workers_check(node="celery@box", timeout=0.5)
    assert not check.ok and "celery@box" in check.detail
    assert silent.ping.calls == [{"destination": ["celery@box"], "timeout": 0.5, "limit": 1}]

    def unreachable(**kw):
        raise OSError("broker gone")
    assert not Health(redis_client, dispatcher.keys, dispatcher.settings, ping=unreachable).workers_check().ok


def test_redis_down_is_unhealthy_within_the_timeout(dispatcher):
    down = Health(connect("redis://127.0.0.1:1/0"), dispatcher.keys, dispatcher.settings, ping=pong("w"))
    healthy, answer = down.run(["redis", "beat"])
    assert not healthy and not answer["checks"]["redis"]["ok"] and not answer["checks"]["beat"]["ok"]
    assert "ConnectionError" in answer["checks"]["redis"]["detail"]


def test_the_receiver_serves_the_pages_and_its_reports_as_before(dispatcher, health):
    hooks = Webhooks(load_settings(webhook_secret="s" * 24), dispatcher.records, mounts={"/healthz": health})
    assert json.loads(_call(hooks, "/healthz", query="check=redis")[2])["healthy"] is True
    assert _call(hooks, "/metrics")[0].startswith("404")        # not mounted here: a report route, not found
    assert _call(hooks, "/eskiz/" + "s" * 24, method="GET")[0].startswith("405")    # the report route is there
    pages = Pages({"/healthz": health})
    assert _call(pages, "/healthz", query="check=redis")[0].startswith("200")
    assert _call(pages, "/eskiz/x")[0].startswith("404")


def test_the_pages_an_app_serves():
    from smsdispatch.metrics import Metrics
    from smsdispatch.pages import pages
    from smsdispatch.worker import create_app
    routes = pages(create_app(load_settings(redis_url="redis://127.0.0.1:1/0")).runtime)     # nothing connects
    assert isinstance(routes["/metrics"], Metrics) and isinstance(routes["/healthz"], Health)
    assert set(routes) == {"/metrics", "/healthz"}


# --- beat's heartbeat -----------------------------------------------------------------------------

class Beat(beat.Scheduler):
    """The scheduler's heartbeat alone, without Celery's schedule machinery."""

    def __init__(self, app, client) -> None:        # not super().__init__: it would open the schedule file
        self.app, self._client = app, client


def test_beat_writes_its_tick_with_the_stale_time_as_ttl_at_most_once_a_second(monkeypatch):
    from smsdispatch.worker import create_app
    app = create_app(load_settings(beat_stale_after=30))
    client = fakeredis.FakeRedis()
    scheduler = Beat(app, client)
    written = []
    monkeypatch.setattr(client, "set", lambda *a, **kw: written.append((a, kw)) or fakeredis.FakeRedis.set(
        client, *a, **kw))
    for now in (100.0, 100.4, 101.5):          # beat's loop, ticking once per due task
        scheduler.touch(now)
    key = "sms:beat"
    assert len(written) == 2 and client.get(key) is not None and 25 < client.ttl(key) <= 30
    assert app.conf.beat_max_loop_interval == 7.5           # an idle beat still ticks well within 30 s
    assert app.conf.beat_scheduler == "smsdispatch.beat:Scheduler"


def test_beat_survives_a_redis_failure(caplog):
    from smsdispatch.worker import create_app

    class Down:
        def set(self, *a, **kw):
            raise redis.ConnectionError("gone")
    scheduler = Beat(create_app(load_settings()), Down())
    scheduler.touch(10.0)
    scheduler.touch(20.0)
    assert [r.getMessage() for r in caplog.records].count(
        "beat's heartbeat not written (Redis failed: ConnectionError); retried every tick") == 1
