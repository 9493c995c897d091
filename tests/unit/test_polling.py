"""Beat's polling on fakeredis: delivery status, expiry, balance, and one run per tick."""

from __future__ import annotations

import pytest

from smsdispatch.dispatch import Dispatcher
from smsdispatch.errors import GatewayUnavailable
from smsdispatch.gateways.base import Balance, DeliveryReport, Lookup
from smsdispatch.polling import Poller
from smsdispatch.records import MessageStatus

from .conftest import StubGateway, StubGateways


class StatusStub(StubGateway):
    def __init__(self):
        super().__init__()
        self.reports: dict[str, str] = {}
        self.asked: list[str] = []
        self.amount = 500.0
        self.fail_status = False
        self.bulk: list = []

    def status(self, gateway_message_id):
        self.asked.append(gateway_message_id)
        if self.fail_status:
            raise GatewayUnavailable("down")
        word = self.reports.get(gateway_message_id, "waiting")
        status = {"DELIVRD": MessageStatus.DELIVERED, "UNDELIV": MessageStatus.FAILED}.get(word, MessageStatus.ACCEPTED)
        return DeliveryReport(status, word)

    def balance(self):
        return Balance(self.amount, "UZS")

    def lookup_batch(self, messages, *, call_ref, since):
        self.bulk.append((call_ref, sorted(m.message_id for m in messages)))
        words = {m.message_id: self.reports.get(m.message_id, "waiting") for m in messages}
        status = {"DELIVRD": MessageStatus.DELIVERED, "UNDELIV": MessageStatus.FAILED}
        return {mid: Lookup(True, None, status.get(w, MessageStatus.ACCEPTED)) for mid, w in words.items()}


@pytest.fixture
def stub():
    return StatusStub()


@pytest.fixture
def poller(settings, redis_client, stub, clock):
    s = settings.model_copy(update={"status_poll_interval": 60, "status_expiry": 3600,
                                    "balance_thresholds": {"console": 1000}})
    return Poller(Dispatcher(s, redis_client, gateways=StubGateways(stub), clock=clock))


def accept(poller, mid, gid, gateway="stub"):
    poller.d.records.update(mid, MessageStatus.ACCEPTED, gateway=gateway, gateway_message_id=gid)


def soon_after(poller, mid):
    return poller.d.records.get(mid)["accepted_at"] + 5


def run(poller, at):
    poller.redis.delete(poller.keys.tick("status"))        # a new tick
    return poller.poll_status(at=at)


def test_reports_move_messages_forward_and_others_wait_for_the_next_poll(poller, stub):
    t = poller.d.records.get
    accept(poller, "m1", "g1"), accept(poller, "m2", "g2"), accept(poller, "m3", "g3")
    stub.reports = {"g1": "DELIVRD", "g2": "UNDELIV"}
    counts = run(poller, at=soon_after(poller, "m3"))
    assert counts == {"delivered": 1, "failed": 1, "accepted": 1}
    assert t("m1")["status"] == "delivered" and t("m2")["status"] == "failed"
    assert t("m2")["error"]["code"] == "undelivered" and t("m3")["status"] == "accepted"
    assert poller.redis.zrange(poller.keys.inflight(), 0, -1) == [b"m3"]
    stub.asked.clear()
    assert run(poller, at=poller.redis.zscore(poller.keys.inflight(), "m3") - 1) == {}   # not yet due
    assert stub.asked == []


def test_a_second_run_in_the_same_tick_does_nothing(poller, stub):
    accept(poller, "m1", "g1")
    run(poller, at=soon_after(poller, "m1"))
    assert poller.poll_status(at=soon_after(poller, "m1")) == {"skipped": 1} and stub.asked == ["g1"]


def test_too_old_to_wait_becomes_expired(poller, stub):
    accept(poller, "m1", "g1")
    accepted = poller.d.records.get("m1")["accepted_at"]
    assert run(poller, at=accepted + 3601) == {"expired": 1}
    assert poller.d.records.get("m1")["status"] == "expired" and stub.asked == []


def test_a_gateway_without_status_api_is_visited_only_to_expire(poller, stub):
    stub.supports_status = False
    accept(poller, "m1", "g1")
    accepted = poller.d.records.get("m1")["accepted_at"]
    assert run(poller, at=accepted + 5) == {"no_status_api": 1}
    assert poller.redis.zscore(poller.keys.inflight(), "m1") > accepted + 3600


def test_a_failed_status_call_is_asked_again_later(poller, stub):
    stub.fail_status = True
    accept(poller, "m1", "g1")
    assert run(poller, at=soon_after(poller, "m1")) == {"error": 1}
    assert poller.d.records.get("m1")["status"] == "accepted"


def test_balances_are_kept_with_their_time_and_a_low_one_raises_an_alert(poller, stub):
    poller.settings = poller.settings.model_copy(update={"balance_thresholds": {"console": 1000}})
    stub.amount = 250.0
    seen = poller.poll_balance(at=123.0)
    assert seen["console"] == {"amount": 250.0, "currency": "UZS", "alert": True}
    assert poller.balances() == {"console": {"amount": 250.0, "currency": "UZS", "at": 123.0}}
    assert poller.alerts()[0] | {} == {"kind": "low_balance", "gateway": "console", "amount": 250.0,
                                       "currency": "UZS", "threshold": 1000, "at": 123.0}
    assert poller.poll_balance(at=124.0) == {"skipped": True}


def new_tick(poller, job):
    poller.redis.delete(poller.keys.tick(job))


def test_the_sweeper_republishes_a_message_whose_publish_was_lost(poller):
    mid = poller.d.record_queued({"to": "+998901234567", "text": "Lost", "idempotency_key": "k1"}, task_id="t1")
    created = poller.d.records.get(mid)["created_at"]
    assert poller.sweep(at=created + 10) == []                            # within QUEUED_GRACE
    new_tick(poller, "sweep")
    again = poller.sweep(at=created + poller.settings.queued_grace + 1)
    assert again == [("t1", {"to": "+998901234567", "text": "Lost", "idempotency_key": "k1"})]
    new_tick(poller, "sweep")
    assert poller.sweep(at=created + poller.settings.queued_grace + 2) == []   # its deadline moved on


def test_the_sweeper_rebuilds_arguments_of_a_stuck_send_and_leaves_settled_ones(poller):
    poller.d.records.update("t2", MessageStatus.SENDING, to="+998901234567", text="Hi", task_id="t2",
                            idempotency_key="t2", requested_gateway=None)          # sent by name, no payload
    poller.d.records.update("t3", MessageStatus.SENDING, to="+998901234567", text="Hi", task_id="t3",
                            idempotency_key="k3")
    poller.d.records.update("t3", MessageStatus.ACCEPTED)
    again = poller.sweep(at=poller.d.records.get("t2")["updated_at"] + poller.settings.active_grace + 1)
    assert again == [("t2", {"to": "+998901234567", "text": "Hi"})]       # implicit key: the task id itself
    assert poller.redis.zscore(poller.keys.pending(), "t3") is None


def test_messages_of_one_batch_call_are_asked_about_in_one_query(poller, stub):
    for mid in ("b1", "b2", "b3"):
        poller.d.records.update(mid, MessageStatus.ACCEPTED, gateway="stub", gateway_message_id="req-1",
                                call_ref="call-9")
    stub.reports = {"b1": "DELIVRD", "b2": "UNDELIV"}
    counts = run(poller, at=soon_after(poller, "b3"))
    assert counts == {"delivered": 1, "failed": 1, "accepted": 1}
    assert stub.bulk == [("call-9", ["b1", "b2", "b3"])] and stub.asked == []      # no per-message calls
    assert [poller.d.records.get(m)["status"] for m in ("b1", "b2", "b3")] == ["delivered", "failed", "accepted"]


def test_the_sweeper_leaves_an_eta_message_alone_until_its_eta(poller):
    """A message published with eta=tomorrow is `queued` until then: republishing it earlier (without
    its ETA) would send it early."""
    created = 1_900_000_000.0
    mid = poller.d.record_queued({"to": "+998901234567", "text": "Tomorrow"}, task_id="t-eta",
                                 not_before=created + 86_400)
    assert poller.d.records.get(mid)["status"] == "queued"
    new_tick(poller, "sweep")
    assert poller.sweep(at=created + poller.settings.queued_grace + 10) == []
    new_tick(poller, "sweep")
    assert [t for t, _ in poller.sweep(at=created + 86_400 + poller.settings.queued_grace + 1)] == ["t-eta"]


def test_a_status_run_stops_asking_at_its_time_budget_and_leaves_the_rest_due(poller, stub, monkeypatch):
    """Runs of 500 slow questions overlapped and held worker threads the sends needed (chaos run)."""
    import smsdispatch.polling as polling
    monkeypatch.setattr(polling, "STATUS_RUN_BUDGET", 0.05)
    slow = stub.status

    def status(gid):
        import time
        time.sleep(0.03)             # a gateway answering slowly (this is the thing measured, not a wait)
        return slow(gid)
    stub.status = status
    for n in range(5):
        accept(poller, f"m{n}", f"g{n}")
    due = soon_after(poller, "m4")
    counts = run(poller, at=due)
    assert counts["deferred"] >= 2 and counts["accepted"] <= 3
    assert len(poller.redis.zrangebyscore(poller.keys.inflight(), "-inf", due)) == counts["deferred"]
    assert run(poller, at=due)["accepted"] >= 1                     # the next run picks them up


def test_the_sweeper_leaves_a_queued_message_alone_while_it_may_still_wait_in_the_queue(poller):
    """A backlog longer than QUEUED_GRACE is not a lost publish: the chaos run saw every message of a
    3,000-message backlog published again, and again (5,459 republishes), lengthening the backlog."""
    import json

    from smsdispatch.polling import QUEUED_AT_HEADER
    mid = poller.d.record_queued({"to": "+998901234567", "text": "Waiting", "idempotency_key": "kw"}, task_id="tw")
    created = poller.d.records.get(mid)["created_at"]
    late = created + poller.settings.queued_grace + 1
    queue = poller.settings.queue
    poller.redis.lpush(queue, json.dumps({"headers": {"id": "older", QUEUED_AT_HEADER: created - 5}}))
    assert poller.sweep(at=late) == []                 # published after the queue's next message: waiting
    assert poller.redis.zscore(poller.keys.pending(), mid) == pytest.approx(late + poller.settings.queued_grace)
    poller.redis.delete(queue)
    poller.redis.lpush(queue, json.dumps({"headers": {"id": "newer", QUEUED_AT_HEADER: created + 5}}))
    new_tick(poller, "sweep")
    later = late + poller.settings.queued_grace + 1
    assert [t for t, _ in poller.sweep(at=later)] == ["tw"]     # the queue moved past it: lost, published again


def test_on_rabbitmq_the_sweeper_goes_by_queued_grace_alone(settings, redis_client, stub, clock):
    """A RabbitMQ broker has no Redis list to peek at: a Redis list of the queue's name (another app's,
    a leftover of a former Redis broker) must not make the sweeper wait."""
    import json

    from smsdispatch.polling import QUEUED_AT_HEADER
    s = settings.model_copy(update={"broker_url": "amqp://guest:guest@127.0.0.1:5672/"})
    assert s.amqp_broker
    poller = Poller(Dispatcher(s, redis_client, gateways=StubGateways(stub), clock=clock))
    mid = poller.d.record_queued({"to": "+998901234567", "text": "Lost", "idempotency_key": "kr"}, task_id="tr")
    created = poller.d.records.get(mid)["created_at"]
    poller.redis.lpush(s.queue, json.dumps({"headers": {"id": "older", QUEUED_AT_HEADER: created - 5}}))
    assert [t for t, _ in poller.sweep(at=created + s.queued_grace + 1)] == ["tr"]
