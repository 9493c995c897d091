"""A worker killed (SIGKILL) in the middle of a gateway call: the message is neither lost nor resent."""

from __future__ import annotations

import time

from smsdispatch.devtools.processes import WorkerProcess

from .conftest import Producer, killed_mid_call, send_requests_for, worker_settings

TO = "+998901234567"


def test_worker_killed_after_the_gateway_accepted_is_reconciled_not_resent(redis_url, fake):
    # VT 20 s: Celery hands the killed worker's message to the next worker about 20-25 s later.
    settings = worker_settings(redis_url, fake, VISIBILITY_TIMEOUT="20")
    producer = Producer(settings)
    # Eskiz accepts; its answer is slow, and the worker dies before it arrives
    handle = killed_mid_call(settings, producer, fake, "Kill me mid-call", accept=True)
    assert producer.record(handle.id)["status"] == "sending"   # nothing recorded the acceptance

    survivor = WorkerProcess(settings, name="survivor")
    try:
        result = handle.get(timeout=90)
    finally:
        survivor.stop()
    assert result["status"] == "accepted"
    assert result["gateway_message_id"] == fake.sends_for(handle.id)[0].request_id
    assert len(send_requests_for(fake, handle.id)) == 1           # the gateway saw it once
    notes = [h.get("note", "") for h in producer.history(handle.id)]
    assert any("reconciled: found at eskiz" in n for n in notes), notes


def test_worker_killed_before_the_gateway_got_it_sends_exactly_once(redis_url, fake):
    settings = worker_settings(redis_url, fake, VISIBILITY_TIMEOUT="20")
    producer = Producer(settings)
    # the request hangs and is never processed; the worker dies meanwhile
    handle = killed_mid_call(settings, producer, fake, "Kill me before Eskiz has it", accept=False)

    survivor = WorkerProcess(settings, name="survivor")
    try:
        result = handle.get(timeout=90)
    finally:
        survivor.stop()
    assert result["status"] == "accepted" and result["attempts"] == 2
    assert len(fake.sends_for(handle.id)) == 1                     # accepted exactly once
    notes = [h.get("note", "") for h in producer.history(handle.id)]
    assert any("reconciled: eskiz has no such message" in n for n in notes), notes


def test_a_killed_workers_messages_come_back_in_seconds_not_after_the_visibility_timeout(redis_url, fake):
    """kombu hands a dead worker's unacknowledged messages out again only after the visibility timeout (an
    hour by default). A live worker that finds the dead one's heartbeat silent for WORKER_LOST_AFTER puts
    them back at once; each is then reconciled (its call may have gone out) and sent exactly once."""
    settings = worker_settings(redis_url, fake, VISIBILITY_TIMEOUT="120", WORKER_LOST_AFTER="4")
    producer = Producer(settings)
    doomed = WorkerProcess(settings, name="doomed", concurrency=8)
    fake.hang_next(8, seconds=60, accept=False)           # the doomed worker's 8 calls hang unanswered
    try:
        handles = [producer.send_sms.delay(TO, f"Held by a dying worker {n}") for n in range(12)]
        assert fake.wait_for(lambda f: len(f.send_calls()) == 8, timeout=30)   # it holds 8, 4 still queued
        doomed.kill()
        killed_at = time.monotonic()
    finally:
        doomed.stop()
        fake.clear_faults()
    survivor = WorkerProcess(settings, name="survivor")
    try:
        results = [h.get(timeout=60) for h in handles]
        settled_after = time.monotonic() - killed_at
        assert survivor.wait_for(r"put back the 8 message\(s\) it held unacknowledged", timeout=5)
    finally:
        survivor.stop()
    assert all(r["status"] == "accepted" for r in results), results
    assert settled_after < 60, settled_after              # the visibility timeout is 120 s
    assert all(len(fake.sends_for(h.id)) == 1 for h in handles)    # each accepted exactly once
