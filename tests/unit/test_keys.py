"""Every key a representative run leaves in Redis expires, or is one of keys.WITHOUT_TTL (each bounded
otherwise): a send, a retry, a dead letter, a redelivered task, a batch, a reminder, beat's polls."""

from __future__ import annotations

import fnmatch

from smsdispatch.batch import Batches
from smsdispatch.dispatch import Dispatcher
from smsdispatch.errors import GatewayUnavailable
from smsdispatch.gateways.base import Balance, DeliveryReport
from smsdispatch.keys import WITHOUT_TTL
from smsdispatch.polling import Poller
from smsdispatch.records import MessageStatus
from smsdispatch.reminders import Reminders

from .conftest import StubGateways
from .test_batch import BatchStub, entries

TO = "+998901234567"


class Stub(BatchStub):
    def status(self, gateway_message_id):
        return DeliveryReport(MessageStatus.DELIVERED, "delivered")

    def balance(self):
        return Balance(5)


def test_every_key_of_a_run_expires_or_is_listed_as_bounded(settings, redis_client, clock):
    s = settings.model_copy(update={"batch_chunk_size": 4, "balance_thresholds": {"console": 10.0}})
    stub = Stub(max_batch=3)
    d = Dispatcher(s, redis_client, gateways=StubGateways(stub), clock=clock)

    d.record_queued({"to": TO, "text": "hi", "gateway": "stub"}, task_id="t-ok")
    assert d.send({"to": TO, "text": "hi", "gateway": "stub"}, task_id="t-ok", store_result=True).result
    stub.script = [GatewayUnavailable("down")]                                     # a retry, then accepted
    assert d.send({"to": TO, "text": "again", "gateway": "stub"}, task_id="t-retry").retry_in is not None
    assert d.send({"to": TO, "text": "again", "gateway": "stub"}, task_id="t-retry").result["status"] == "accepted"
    stub.script = [GatewayUnavailable("down")] * s.max_attempts                    # a dead letter
    for _ in range(s.max_attempts):
        out = d.send({"to": TO, "text": "dead", "gateway": "stub", "idempotency_key": "dead-1"}, task_id="t-dead")
    assert out.result["error"]["code"] == "retries_exhausted"
    d.redelivered("t-poison")

    batches = Batches(d)
    chunks = batches.store("b1", entries(6), gateway="stub", sender=None, idempotency_key=None, submission="s1")
    for n in range(chunks):
        batches.run_chunk("b1", n, submission="s1")
    assert batches.get("b1")["status"] == "done"

    reminders = Reminders(redis_client, d.keys, default_region=None, ttl=s.record_ttl,
                          validate=lambda kwargs: d.prepare(kwargs, "check"))
    rid, _ = reminders.schedule({"to": TO, "text": "later", "gateway": "stub"}, "2030-01-01T09:00:00+05:00",
                                now=clock())
    reminders.schedule({"to": TO, "text": "much later", "gateway": "stub"}, "2031-01-01T09:00:00+05:00", now=clock())
    for due in reminders.claim_due(until=1_900_000_000, now=clock()):
        reminders.published(due.reminder_id)
    payload = reminders.begin_send(rid)
    reminders.finish(rid, d.send(payload, task_id="t-rem").result)

    poller = Poller(d)
    poller.poll_status(at=clock())
    poller.poll_balance(at=clock())
    poller.sweep(at=clock())

    prefix = f"{s.key_prefix}:"
    unbounded = []
    seen_kinds = set()
    for raw in redis_client.scan_iter():
        key = raw.decode()
        if redis_client.ttl(key) > 0:
            continue
        name = key.removeprefix(prefix)
        kind = next((k for k in WITHOUT_TTL if fnmatch.fnmatchcase(name, k.replace("<gateway>", "*"))), None)
        if key.startswith(prefix) and kind:
            seen_kinds.add(kind)
        else:
            unbounded.append(key)
    assert unbounded == []
    assert {"dead", "alerts", "balance:<gateway>", "rem:due"} <= seen_kinds     # the run reached them
    assert redis_client.exists(d.keys.batch_seen("b1", "s1")) and redis_client.ttl(d.keys.batch_seen("b1", "s1")) > 0
