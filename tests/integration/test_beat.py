"""Beat's work with a real worker, real `celery beat` processes and real Redis: reminders, ETAs,
delivery-status and balance polling."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from smsdispatch.devtools.processes import BeatProcess, WorkerProcess
from smsdispatch.dispatch import message_id_for

from .conftest import Producer, send_requests_for, worker_settings

TO = "+998901234567"


@pytest.fixture(scope="module")
def scheduled(redis_url, fake_eskiz, tmp_path_factory):
    """A worker and TWO beats (the deployment mistake periodic work must survive)."""
    settings = worker_settings(redis_url, fake_eskiz)        # horizon 5 s, release every 0.5 s
    schedule_dir = str(tmp_path_factory.mktemp("beat"))
    worker = WorkerProcess(settings, name="remind")
    beats = [BeatProcess(settings, schedule_dir=schedule_dir, name=f"beat{i}") for i in (1, 2)]
    yield Producer(settings), worker, beats
    for p in [*beats, worker]:
        p.stop()


def in_seconds(s: float) -> datetime:
    return datetime.now(timezone.utc) + timedelta(seconds=s)


def releases_so_far(beats) -> int:
    return sum(b.count(r"Sending due task smsdispatch-release-reminders") for b in beats)


def test_a_reminder_beyond_the_horizon_is_sent_once_on_time_despite_two_beats(scheduled, fake):
    producer, worker, beats = scheduled
    key = f"table-ready-{uuid.uuid4().hex[:6]}"
    scheduled_at = time.monotonic()
    rid = producer.app.runtime.schedule_reminder({"to": TO, "text": "Your table is ready",
                                                      "idempotency_key": key}, in_seconds(7))
    assert producer.app.runtime.reminders.get(rid)["state"] == "scheduled"     # waiting in Redis
    mid = message_id_for(key, "")
    assert fake.wait_for(lambda f: len(f.sends_for(mid)) == 1, timeout=30)
    sent_after = fake.sends_for(mid)[0].received_at - scheduled_at
    assert sent_after >= 6.9                                   # not early (ETA honoured)
    # let both beats release a few more times: still exactly one send
    now = releases_so_far(beats)
    assert all(b.wait_for(r"Sending due task smsdispatch-release-reminders", count=b.count(
        r"Sending due task smsdispatch-release-reminders") + 2, timeout=10) for b in beats)
    assert releases_so_far(beats) >= now + 4
    assert len(send_requests_for(fake, mid)) == 1
    assert producer.app.runtime.reminders.get(rid)["state"] == "done"


def test_a_cancelled_reminder_never_sends(scheduled, fake):
    producer, worker, beats = scheduled
    runtime = producer.app.runtime
    doomed = runtime.schedule_reminder({"to": TO, "text": "Cancel me", "idempotency_key": f"c-{uuid.uuid4()}"},
                                       in_seconds(6))
    canary_key = f"canary-{uuid.uuid4()}"
    runtime.schedule_reminder({"to": TO, "text": "Later", "idempotency_key": canary_key}, in_seconds(7))
    assert runtime.reminders.cancel(doomed) is True
    canary = message_id_for(canary_key, "")
    assert fake.wait_for(lambda f: len(f.sends_for(canary)) == 1, timeout=30)   # later one went out ...
    assert [s for s in fake.sent if s.message == "Cancel me"] == []            # ... the cancelled one not
    assert runtime.reminders.get(doomed)["state"] == "cancelled"


def test_a_reminder_inside_the_horizon_is_published_at_once_with_an_eta(redis_url, fake):
    """No beat runs here (own key prefix and queue), so only `schedule_reminder` itself can have
    published it. With beats running, a beat may take it first and hold it in `releasing` for a
    moment, which is why this does not use the `scheduled` fixture."""
    settings = worker_settings(redis_url, fake)
    producer = Producer(settings)
    worker = WorkerProcess(settings, name="soon")
    try:
        key = f"soon-{uuid.uuid4().hex[:6]}"
        scheduled_at = time.monotonic()
        rid = producer.app.runtime.schedule_reminder({"to": TO, "text": "Soon", "idempotency_key": key},
                                                         in_seconds(2))
        assert producer.app.runtime.reminders.get(rid)["state"] in ("queued", "sending", "done")
        mid = message_id_for(key, "")
        assert fake.wait_for(lambda f: len(f.sends_for(mid)) == 1, timeout=20)
        assert fake.sends_for(mid)[0].received_at - scheduled_at >= 1.9      # the ETA was honoured
    finally:
        worker.stop()


def test_naive_times_and_bad_numbers_are_refused_at_scheduling(scheduled):
    producer = scheduled[0]
    from smsdispatch.errors import ValidationError
    with pytest.raises(ValidationError, match="timezone-aware"):
        producer.app.runtime.schedule_reminder({"to": TO, "text": "x"}, datetime(2030, 1, 1, 9))
    with pytest.raises(ValidationError, match="not a valid number"):
        producer.app.runtime.schedule_reminder({"to": "+99890", "text": "x"}, in_seconds(60))


def test_an_eta_beyond_the_visibility_timeout_is_redelivered_but_sent_once(redis_url, fake):
    """docs/celery-redis.md H1: kombu redelivers an ETA task held past the visibility timeout; the
    ledger must turn every extra delivery into a no-op."""
    settings = worker_settings(redis_url, fake, VISIBILITY_TIMEOUT="10", HTTP_CONNECT_TIMEOUT="0.5",
                               HTTP_READ_TIMEOUT="0.5", CLAIM_LEASE="4", BACKOFF_MAX="4", REMINDER_HORIZON="5")
    producer = Producer(settings)
    worker = WorkerProcess(settings, name="eta")
    try:
        handle = producer.send_sms.apply_async((TO, "Booked for 25 s from now"), eta=in_seconds(25))
        result = handle.get(timeout=60)
        # every copy the worker received has ended: succeeded, or found the key busy and retried
        # (a retry comes back as one more "received" copy)
        ended = rf"send_sms\[{handle.id}\] (succeeded|retry)"
        assert worker.wait_for(ended, count=worker.count(rf"send_sms\[{handle.id}\] received"), timeout=30), \
            "\n".join(line for line in worker.lines if handle.id in line)
    finally:
        worker.stop()
    deliveries = worker.count(rf"send_sms\[{handle.id}\] received")
    assert deliveries >= 2, worker.log                          # the hazard really happened
    assert result["status"] == "accepted"
    assert len(send_requests_for(fake, handle.id)) == 1         # and the gateway saw it once


def test_beat_polls_delivery_status_and_the_record_follows(scheduled, fake):
    producer, worker, beats = scheduled
    result = producer.send_sms.delay(TO, "Did it arrive?").get(timeout=30)
    assert result["status"] == "accepted"
    fake.set_status(result["gateway_message_id"], "DELIVERED")
    assert worker.wait_for(r"poll_delivery_status\[.*\] succeeded.*'delivered': 1", timeout=30), worker.log[-3000:]
    record = producer.record(result["message_id"])
    assert record["status"] == "delivered" and record["raw_status"] == "DELIVERED"
    assert [h["status"] for h in producer.history(result["message_id"])][-2:] == ["accepted", "delivered"]


def test_beat_keeps_balances_and_alerts_below_the_threshold(scheduled, fake):
    producer, worker, beats = scheduled
    funds, fake.balance = fake.balance, 500                    # the threshold is 1000
    try:
        polls = worker.count(r"poll_balance\[.*\] succeeded.*'alert': True")
        assert worker.wait_for(r"poll_balance\[.*\] succeeded.*'alert': True", count=polls + 1, timeout=30)
    finally:
        fake.balance = funds                                   # the session's fake serves other modules
    poller = producer.app.runtime.poller
    assert poller.balances()["eskiz"]["amount"] == 500
    assert poller.alerts()[-1]["gateway"] == "eskiz" and poller.alerts()[-1]["threshold"] == 1000
    assert "balance of eskiz is 500" in worker.log


def test_the_sweeper_publishes_again_a_message_whose_publish_was_lost(scheduled, fake):
    producer, worker, beats = scheduled
    task_id = str(uuid.uuid4())
    # The producer recorded the message and died before publishing it (docs/celery-redis.md H6).
    mid = producer.dispatcher.record_queued({"to": TO, "text": "Lost in the post"}, task_id=task_id)
    assert fake.wait_for(lambda f: len(f.sends_for(mid)) == 1, timeout=30)
    assert worker.wait_for(rf"send_sms\[{task_id}\] succeeded", timeout=30)
    assert producer.record(mid)["status"] == "accepted"
    assert len(send_requests_for(fake, mid)) == 1


def test_a_reminder_survives_a_redis_restart_under_a_running_worker_and_beat(fake, tmp_path):
    """The schedule lives in Redis (AOF on). Redis restarts under a running worker and beat; whichever
    of them exits is started again, as compose's restart policy would; the reminder goes out once."""
    from smsdispatch.devtools.redis_server import EmbeddedRedis
    server = EmbeddedRedis(appendonly=True).start()
    settings = worker_settings(server.url, fake)
    procs = {"worker": WorkerProcess(settings, name="before"),
             "beat": BeatProcess(settings, schedule_dir=str(tmp_path), name="before")}
    try:
        producer = Producer(settings)
        key = f"after-restart-{uuid.uuid4().hex[:6]}"
        rid = producer.app.runtime.schedule_reminder({"to": TO, "text": "Still here", "idempotency_key": key},
                                                         in_seconds(12))
        server.restart()
        assert producer.app.runtime.reminders.get(rid)["state"] == "scheduled"   # it came back from the AOF
        # Any that died with Redis gets replaced (supervisor's job), the others reconnect by themselves.
        for name, proc in procs.items():
            if proc.proc.poll() is not None:
                procs[name] = (WorkerProcess(settings, name="after") if name == "worker"
                               else BeatProcess(settings, schedule_dir=str(tmp_path), name="after"))
        mid = message_id_for(key, "")
        assert fake.wait_for(lambda f: len(f.sends_for(mid)) == 1, timeout=60), procs["worker"].log[-3000:]
        beat = procs["beat"]
        assert beat.wait_for(r"Sending due task smsdispatch-release-reminders",
                             count=beat.count(r"Sending due task smsdispatch-release-reminders") + 3, timeout=20)
        assert len(send_requests_for(fake, mid)) == 1
        assert producer.app.runtime.reminders.get(rid)["state"] == "done"
    finally:
        for proc in procs.values():
            proc.stop()
        server.stop()


def test_beats_work_runs_while_a_backlog_of_sends_waits(redis_url, fake, tmp_path):
    """Beat's tasks have a queue of their own: behind 1,500 sends on the send queue they waited and
    expired unrun (the chaos run under faults lost 93 of 95 sweeps that way)."""
    settings = worker_settings(redis_url, fake)
    producer = Producer(settings)
    fake.hang_next(10_000, seconds=0.2)                  # a slow gateway: the backlog drains slowly
    handles = [producer.send_sms.delay(TO, f"Backlog {n}") for n in range(1500)]
    queue = settings["SMSDISPATCH_QUEUE"]
    worker = WorkerProcess(settings, name="backlog", concurrency=2)
    beat = BeatProcess(settings, schedule_dir=str(tmp_path))
    try:
        assert worker.wait_for(r"smsdispatch\.sweep_stuck_messages\[.*\] succeeded", count=3, timeout=30)
        assert worker.wait_for(r"smsdispatch\.release_due_reminders\[.*\] succeeded", timeout=5)
        backlog = producer.app.runtime.redis.llen(queue)
        assert backlog > 1000, backlog                     # the sends are still waiting
        assert worker.count(r"Discarding revoked task: smsdispatch\.sweep") == 0
    finally:
        beat.stop()
        worker.stop()
        fake.clear_faults()
        producer.app.runtime.redis.delete(queue)       # the rest of the backlog is not this test's
    assert all(h.id for h in handles)
