"""The counters the Lua scripts keep in sms:metrics (each counts what happened, once), and the
collector that exports them with the state Redis holds (metrics.py), on fakeredis with Lua."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from smsdispatch.batch import Batches
from smsdispatch.errors import GatewayUnavailable, RecipientRejected
from smsdispatch.metrics import LATENCY_BUCKETS, Metrics, Snapshot, families
from smsdispatch.records import MessageStatus

from .conftest import StubGateways
from .test_batch import BatchStub, entries
from .test_failover import Named, make

TO = "+998901234567"
LUA = Path(__file__).resolve().parents[2] / "smsdispatch" / "lua"


def counters(d) -> dict[str, float]:
    return {k.decode(): float(v) for k, v in d.records.redis.hgetall(d.keys.metrics()).items()}


def scrape(d) -> dict[tuple[str, tuple], float]:
    """The exposition as Prometheus reads it: (sample name, sorted labels) → value."""
    text = Metrics(d.records.redis, d.keys, d.settings).exposition().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_the_latency_buckets_in_lua_are_the_collectors():
    text = (LUA / "lib" / "update_record.lua").read_text()
    bounds = re.search(r"local LATENCY_BUCKETS = \{([^}]*)\}", text).group(1)
    assert tuple(float(b) for b in bounds.split(",")) == LATENCY_BUCKETS


def test_a_send_counts_its_attempt_and_acceptance_once_and_a_duplicate_counts_nothing(dispatcher):
    d = dispatcher
    d.record_queued({"to": TO, "text": "hi", "gateway": "stub"}, task_id="t1")
    assert d.send({"to": TO, "text": "hi", "gateway": "stub"}, task_id="t1").result["status"] == "accepted"
    first = counters(d)
    assert first["enqueued"] == 1 and first["attempts|stub"] == 1 and first["messages|stub|accepted"] == 1
    assert first["latency_sum|stub"] >= 0 and sum(v for k, v in first.items() if k.startswith("latency|stub|")) == 1
    d.record_queued({"to": TO, "text": "hi", "gateway": "stub"}, task_id="t1")       # a second producer
    d.send({"to": TO, "text": "hi", "gateway": "stub"}, task_id="t1")                  # a redelivery
    assert counters(d) == first


def test_a_retry_counts_a_retry_and_a_second_attempt(dispatcher, stub):
    stub.script = [GatewayUnavailable("down", gateway="stub")]
    assert dispatcher.send({"to": TO, "text": "x", "gateway": "stub"}, task_id="t2").retry_in is not None
    assert dispatcher.send({"to": TO, "text": "x", "gateway": "stub"}, task_id="t2").result["status"] == "accepted"
    c = counters(dispatcher)
    assert c["attempts|stub"] == 2 and c["retries|stub"] == 1 and c["messages|stub|accepted"] == 1


def test_exhausted_retries_count_a_failure_and_a_dead_letter(dispatcher, stub, settings):
    stub.script = [GatewayUnavailable("down", gateway="stub")] * settings.max_attempts
    for _ in range(settings.max_attempts):
        out = dispatcher.send({"to": TO, "text": "x", "gateway": "stub"}, task_id="t3")
    assert out.result["error"]["code"] == "retries_exhausted"
    c = counters(dispatcher)
    assert c["attempts|stub"] == settings.max_attempts and c["retries|stub"] == settings.max_attempts - 1
    assert c["messages|stub|failed"] == 1 and c["dead_letters|stub"] == 1


def test_a_refusal_before_any_gateway_counts_under_none_once(dispatcher):
    for _ in range(2):      # the same bad task delivered twice
        assert dispatcher.send({"to": "not a number", "text": "x"}, task_id="t4").result["status"] == "failed"
    assert counters(dispatcher) == {"messages|none|failed": 1}


def test_a_refused_number_fails_without_a_retry(dispatcher, stub):
    stub.script = [RecipientRejected("blacklisted", gateway="stub")]
    dispatcher.send({"to": TO, "text": "x", "gateway": "stub"}, task_id="t5")
    assert counters(dispatcher) == {"attempts|stub": 1, "messages|stub|failed": 1}


def test_delivery_reports_count_once_whatever_their_number(dispatcher):
    dispatcher.send({"to": TO, "text": "x", "gateway": "stub"}, task_id="t6")
    for _ in range(3):          # a poll and two callbacks
        dispatcher.records.advance("t6", MessageStatus.DELIVERED)
    assert counters(dispatcher)["messages|stub|delivered"] == 1


def test_a_failover_counts_the_gateway_left_and_the_one_taken(settings, redis_client, clock):
    a, b = Named("eskiz"), Named("smscx", can_lookup=False, can_dedupe=True)
    d = make(settings, redis_client, clock, a, b)
    a.script = [GatewayUnavailable("cannot connect: refused", gateway="eskiz")]
    assert d.send({"to": TO, "text": "x"}, task_id="t7").result["gateway"] == "smscx"
    c = counters(d)
    assert c["failovers|eskiz|smscx"] == 1 and c["attempts|eskiz"] == 1 and c["attempts|smscx"] == 1
    assert c["messages|smscx|accepted"] == 1 and "retries|eskiz" not in c


def test_an_opened_circuit_counts_once(settings, redis_client, clock):
    a = Named("eskiz")
    d = make(settings, redis_client, clock, a)          # opens on 2 calls, half of them failed
    a.script = [GatewayUnavailable("down", gateway="eskiz")] * 2
    d.send({"to": TO, "text": "x"}, task_id="t8")
    d.send({"to": TO, "text": "y"}, task_id="t9")
    assert d.circuits.state("eskiz", now=clock()) == "open"
    assert counters(d)["circuit_opens|eskiz"] == 1
    assert scrape(d)[("smsdispatch_circuit_state", (("gateway", "eskiz"), ("state", "open")))] == 1


def test_a_rate_limit_wait_counts_the_wait_and_its_seconds(settings, redis_client, clock):
    a = Named("eskiz")
    d = make(settings, redis_client, clock, a, rate_limits={"eskiz": 0.1})
    d.send({"to": TO, "text": "x"}, task_id="t10")      # takes the bucket's one token
    assert d.send({"to": TO, "text": "y"}, task_id="t11").retry_in is not None    # its turn is 10 s away
    c = counters(d)
    assert c["ratelimit_waits|eskiz"] == 1 and c["ratelimit_wait_seconds|eskiz"] == pytest.approx(10.0)


def test_a_batch_counts_each_entry(settings, redis_client, clock):
    stub = BatchStub(max_batch=3)
    b = Batches(make(settings, redis_client, clock, stub, batch_chunk_size=4, default_gateway="console"))
    b.d.gateways = StubGateways(stub)
    chunks = b.store("b1", entries(6) + [{"to": "nope", "text": "x"}], gateway="stub", sender=None,
                     idempotency_key=None, submission="s1")
    for n in range(chunks):
        b.run_chunk("b1", n, submission="s1")
    c = counters(b.d)
    assert c["attempts|bstub"] == 6 and c["messages|bstub|accepted"] == 6 and c["messages|none|failed"] == 1


def test_the_exposition_reads_counters_and_state():
    snap = Snapshot(now=1000.0, counters={
        "enqueued": 5, "messages|eskiz|accepted": 4, "messages|none|failed": 1, "attempts|eskiz": 6,
        "failovers|eskiz|smscx": 2, "latency|eskiz|0.25": 3, "latency|eskiz|+Inf": 1, "latency_sum|eskiz": 3601.5,
        "from_a_newer_version|x": 9, "messages|too|many|labels": 1},
        in_flight=4, unsettled=2, dead_letters=1, queues={"sms": 7, "sms.retry": 1, "sms.periodic": 0},
        unacked=3, beat_tick=999.0, circuits={"eskiz": "half_open"},
        balances={"eskiz": {"amount": 120.5, "currency": "UZS", "at": 990.0}})
    from prometheus_client import CollectorRegistry, generate_latest

    class Fixed:
        def collect(self):
            return iter(families(snap, _settings(balance_thresholds={"eskiz": 1000})))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Fixed())          # type: ignore[arg-type]
    got = {(s.name, tuple(sorted(s.labels.items()))): s.value
           for f in text_string_to_metric_families(generate_latest(registry).decode()) for s in f.samples}
    assert got[("smsdispatch_messages_enqueued_total", ())] == 5
    assert got[("smsdispatch_messages_total", (("gateway", "eskiz"), ("status", "accepted")))] == 4
    assert got[("smsdispatch_messages_total", (("gateway", "none"), ("status", "failed")))] == 1
    assert got[("smsdispatch_failovers_total", (("gateway", "eskiz"), ("to", "smscx")))] == 2
    bucket = "smsdispatch_accept_latency_seconds_bucket"
    assert got[(bucket, (("gateway", "eskiz"), ("le", "0.1")))] == 0
    assert got[(bucket, (("gateway", "eskiz"), ("le", "0.25")))] == 3          # cumulative from here
    assert got[(bucket, (("gateway", "eskiz"), ("le", "3600")))] == 3
    assert got[(bucket, (("gateway", "eskiz"), ("le", "+Inf")))] == 4
    assert got[("smsdispatch_accept_latency_seconds_count", (("gateway", "eskiz"),))] == 4
    assert got[("smsdispatch_circuit_state", (("gateway", "eskiz"), ("state", "half_open")))] == 1
    assert got[("smsdispatch_circuit_state", (("gateway", "eskiz"), ("state", "closed")))] == 0
    assert got[("smsdispatch_gateway_balance", (("currency", "UZS"), ("gateway", "eskiz")))] == 120.5
    assert got[("smsdispatch_gateway_balance_threshold", (("gateway", "eskiz"),))] == 1000
    assert got[("smsdispatch_queue_length", (("queue", "sms"),))] == 7
    for name, value in [("messages_in_flight", 4), ("messages_unsettled", 2), ("dead_letters_waiting", 1),
                        ("queue_unacked", 3), ("beat_last_tick_timestamp_seconds", 999)]:
        assert got[(f"smsdispatch_{name}", ())] == value, name
    assert not [k for k in got if "newer" in k[0] or ("status", "many") in k[1]]     # unknown fields: left out


def test_the_state_is_read_from_redis(dispatcher, redis_client):
    k = dispatcher.keys
    redis_client.lpush("sms", "m1", "m2")
    redis_client.lpush("sms\x06\x163", "m3")                    # kombu's list for priority 3
    redis_client.lpush("sms.retry", "m4")
    redis_client.rpush(k.dead_letters(), "d1")
    redis_client.hset(k.balance("console"), mapping={"amount": 42, "currency": "", "at": 1})
    redis_client.hset(k.circuit("console"), "open_until", 10**10)
    redis_client.set(k.beat(), "123.5")
    snap = Metrics(redis_client, k, dispatcher.settings).read()
    assert snap.queues == {"sms": 3, "sms.retry": 1, "sms.periodic": 0} and snap.dead_letters == 1
    assert snap.balances["console"]["amount"] == 42 and snap.circuits["console"] == "open"
    assert snap.beat_tick == 123.5


def test_the_page_answers_the_exposition_503_without_redis_and_501_without_prometheus_client(
        dispatcher, monkeypatch):
    from smsdispatch.redisclient import connect
    page = Metrics(dispatcher.records.redis, dispatcher.keys, dispatcher.settings)
    status, headers, body = _call(page, "/metrics")
    assert status.startswith("200") and "text/plain" in headers["Content-Type"]
    assert b"smsdispatch_messages_total" in body
    assert _call(page, "/metrics", method="POST")[0].startswith("405")
    broken = Metrics(connect("redis://127.0.0.1:1/0"), dispatcher.keys, dispatcher.settings)     # nobody there
    assert _call(broken, "/metrics")[0].startswith("503")
    monkeypatch.setitem(__import__("sys").modules, "prometheus_client", None)     # not installed
    status, _, body = _call(page, "/metrics")
    assert status.startswith("501") and b"smsdispatch[metrics]" in body


def _call(app, path: str, *, method: str = "GET", query: str = "") -> tuple[str, dict, bytes]:
    seen: dict = {}

    def start_response(status, headers):
        seen["status"], seen["headers"] = status, dict(headers)
    body = b"".join(app({"PATH_INFO": path, "REQUEST_METHOD": method, "QUERY_STRING": query}, start_response))
    return seen["status"], seen["headers"], body


def _settings(**update):
    from smsdispatch.config import load_settings
    return load_settings(redis_url="redis://unused:6379/0").model_copy(update=update)
