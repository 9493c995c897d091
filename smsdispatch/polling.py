"""Beat's periodic work, without Celery: delivery-status polling, balance polling, and the sweeper.

Each run first takes a per-job tick lock in Redis (SET NX with the job's interval as expiry), so two
beats or two overlapping runs do the work once per interval (docs/celery-redis.md H9).

Status: `sms:inflight` holds accepted messages scored by when to ask next. A run asks each due
message's gateway for its status and moves it forward with `Records.advance` (accepted → delivered /
failed; never backwards, so a report that arrives late cannot undo a newer one). A message accepted
longer ago than STATUS_EXPIRY becomes `expired`. Gateways without a status API (SMSFlow, SMSPM,
console) are only visited to expire their messages.

Sweep: `sms:pending` holds messages not yet settled, by when to worry. One still `queued` past
QUEUED_GRACE (its publish may have been lost) or still `sending`/`retrying` past CLAIM_LEASE +
BACKOFF_MAX (its task may have been lost with a worker) is published again, with the same task id and
arguments. That is safe whatever happened: a copy still in the queue meets the ledger (done, or busy),
and a claim left by a dead worker is reconciled through the gateway, never blindly resent.

Balance: every configured gateway with a balance API is asked; the answer is kept in Redis with its
time, and one below its configured threshold logs a warning and appends an alert.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from typing import Any

import redis

from .dispatch import Dispatcher
from .errors import GatewayError, SmsDispatchError
from .gateways.base import OutboundSms
from .records import MessageStatus, now
from .redisclient import members, text_fields

#: The header our producer stamps on each send_sms message with the time it was published (tasks.py).
QUEUED_AT_HEADER = "smsdispatch_queued_at"

log = logging.getLogger("smsdispatch.polling")

STATUS_BATCH = 500          # messages per status run
#: A status run stops asking after this long (or 0.8 x STATUS_POLL_INTERVAL, if shorter); the messages
#: it did not reach stay due for the next run. Without a bound, runs of 500 slow questions each (a
#: gateway answering in seconds) overlapped and held several worker threads the sends needed.
STATUS_RUN_BUDGET = 30.0
MAX_ALERTS = 1000


class Poller:
    def __init__(self, dispatcher: Dispatcher) -> None:
        self.d = dispatcher
        self.settings = dispatcher.settings
        self.redis = dispatcher.records.redis
        self.keys = dispatcher.keys

    def _tick(self, job: str, interval: float) -> bool:
        """True for the one run of this job in this interval."""
        return bool(self.redis.set(self.keys.tick(job), now(), nx=True, px=max(1, int(interval * 1000 * 0.9))))

    # --- delivery status ----------------------------------------------------------------------

    def poll_status(self, *, at: float) -> dict[str, int]:
        s = self.settings
        if not self._tick("status", s.status_poll_interval):
            return {"skipped": 1}
        ids = members(self.redis.zrangebyscore(self.keys.inflight(), "-inf", at, 0, STATUS_BATCH))
        pipe = self.redis.pipeline(transaction=False)
        for mid in ids:
            pipe.hmget(self.keys.message(mid), "gateway", "gateway_message_id", "accepted_at", "status", "call_ref")
        counts: Counter[str] = Counter()
        later: dict[str, float] = {}
        rows = list(zip(ids, pipe.execute(), strict=True))
        stop_at = time.monotonic() + min(STATUS_RUN_BUDGET, 0.8 * s.status_poll_interval)
        done_in_bulk = self._bulk(rows, counts, later, at)
        for mid, (gateway, gmid, accepted_at, status, _) in rows:
            if mid in done_in_bulk:
                continue
            if time.monotonic() > stop_at:        # out of time: the rest stay due for the next run
                counts["deferred"] += 1
                continue
            if status is None or status.decode() != "accepted":   # settled meanwhile, or record gone
                self.redis.zrem(self.keys.inflight(), mid)
                continue
            accepted = float(accepted_at or at)
            if at - accepted > s.status_expiry:
                if self.d.records.advance(mid, MessageStatus.EXPIRED, error={
                        "code": "expired", "message": f"no delivery report within {s.status_expiry // 3600} h"}):
                    counts["expired"] += 1
                continue
            outcome = self._ask(mid, gateway.decode() if gateway else "", gmid.decode() if gmid else "")
            counts[outcome] += 1
            if outcome in ("accepted", "error"):
                later[mid] = at + s.status_poll_interval
            elif outcome == "no_status_api":
                later[mid] = accepted + s.status_expiry + 1          # come back only to expire it
        if later:
            self.redis.zadd(self.keys.inflight(), later, xx=True)
        return dict(counts)

    def _bulk(self, rows: list, counts: Counter, later: dict[str, float], at: float) -> set[str]:
        """Messages that went out in one batch call, on a gateway that can list a call's messages
        (Eskiz: get-user-messages-by-dispatch), are asked about in one query per call."""
        groups: dict[tuple[str, str], list[str]] = {}
        for mid, (gateway, _gmid, accepted_at, status, call_ref) in rows:
            if gateway and call_ref and status == b"accepted" and at - float(accepted_at or at) <= \
                    self.settings.status_expiry:
                groups.setdefault((gateway.decode(), call_ref.decode()), []).append(mid)
        handled: set[str] = set()
        for (name, call_ref), mids in groups.items():
            try:
                gateway = self.d.gateways.get(name)
            except SmsDispatchError:
                continue
            if len(mids) < 2 or not gateway.can_lookup:
                continue
            try:
                found = gateway.lookup_batch([OutboundSms(m, "", "") for m in mids], call_ref=call_ref, since=0)
            except GatewayError as e:
                log.info("status of call %s at %s failed: %s", call_ref, name, e)
                continue
            for mid in mids:
                hit = found.get(mid)
                if hit is not None and hit.found and hit.status in (MessageStatus.DELIVERED, MessageStatus.FAILED):
                    error = None if hit.status is MessageStatus.DELIVERED else {
                        "code": "undelivered", "message": f"{name} reports the message undelivered"}
                    self.d.records.advance(mid, hit.status, note=f"{name}: by dispatch",
                                           **({"error": error} if error else {}))
                    counts[hit.status.value] += 1
                else:
                    later[mid] = at + self.settings.status_poll_interval
                    counts["accepted"] += 1
                handled.add(mid)
        return handled

    def _ask(self, message_id: str, gateway_name: str, gateway_message_id: str) -> str:
        try:
            gateway = self.d.gateways.get(gateway_name)
        except SmsDispatchError:
            return "no_status_api"          # no longer configured here
        if not gateway.supports_status or not gateway_message_id:
            return "no_status_api"
        try:
            report = gateway.status(gateway_message_id)
        except GatewayError as e:
            log.info("status of %s at %s failed: %s", message_id, gateway_name, e)
            return "error"
        if report.status in (MessageStatus.DELIVERED, MessageStatus.FAILED):
            error = None if report.status is MessageStatus.DELIVERED else {
                "code": "undelivered", "message": f"{gateway_name} reports {report.raw_status}"}
            self.d.records.advance(message_id, report.status, note=f"{gateway_name}: {report.raw_status}",
                                   raw_status=report.raw_status, **({"error": error} if error else {}))
            return report.status.value
        return "accepted"

    # --- sweeper ------------------------------------------------------------------------------

    def sweep(self, *, at: float) -> list[tuple[str, dict[str, Any]]]:
        """(task id, send_sms kwargs) of each stuck message to publish again; their deadlines move on.

        A `queued` message still waiting behind a backlog is not stuck: the send queue is first in,
        first out, so a message recorded after the queue's oldest waiting message was published may
        still be in it, and is left alone (its deadline moves on). Without this, every message of a
        backlog longer than QUEUED_GRACE was published again, and again, lengthening the backlog."""
        if not self._tick("sweep", self.settings.sweep_interval):
            return []
        ids = members(self.redis.zrangebyscore(self.keys.pending(), "-inf", at, 0, STATUS_BATCH))
        oldest_waiting = self._oldest_waiting()
        again, settled, waiting = [], [], {}
        for mid in ids:
            record = self.d.records.get(mid)
            if record is None or not (record.get("to") or record.get("payload")) \
                    or record["status"] not in ("queued", "sending", "retrying"):
                settled.append(mid)
                continue
            if record["status"] == "queued" and oldest_waiting is not None and \
                    (record.get("created_at") or 0) >= oldest_waiting:
                waiting[mid] = at + self.settings.queued_grace
                continue
            again.append((record.get("task_id") or mid, resend_kwargs(record)))
            log.warning("message %s stuck in %s: published again (task %s)", mid, record["status"], again[-1][0])
        if settled:
            self.redis.zrem(self.keys.pending(), *settled)
        later = {mid: at + self.settings.active_grace for mid in ids if mid not in settled and mid not in waiting}
        if later or waiting:
            self.redis.zadd(self.keys.pending(), later | waiting)
        return again

    def _oldest_waiting(self) -> float | None:
        """When the send queue's next message was published (our producers stamp it), or None when the
        queue is empty or its next message carries no stamp (a by-name producer, another broker).
        On RabbitMQ there is no list to peek at: QUEUED_GRACE alone decides."""
        if self.settings.amqp_broker:
            return None
        try:
            raw = self.redis.lindex(self.settings.queue, -1)      # kombu: LPUSH to publish, BRPOP to consume
            stamp = json.loads(raw)["headers"].get(QUEUED_AT_HEADER) if raw else None
            return float(stamp) if stamp is not None else None
        except (ValueError, TypeError, KeyError, AttributeError, redis.ResponseError):
            return None

    # --- balance ------------------------------------------------------------------------------

    def poll_balance(self, *, at: float) -> dict[str, Any]:
        if not self._tick("balance", self.settings.balance_poll_interval):
            return {"skipped": True}
        seen: dict[str, Any] = {}
        for name in self.settings.configured_gateways():
            gateway = self.d.gateways.get(name)
            if not gateway.supports_balance:
                continue
            try:
                balance = gateway.balance()
            except GatewayError as e:
                log.warning("balance of %s could not be read: %s", name, e)
                seen[name] = {"error": str(e)}
                continue
            if balance.unlimited:
                continue
            self.redis.hset(self.keys.balance(name), mapping={
                "amount": balance.amount, "currency": balance.currency or "", "at": at})
            seen[name] = {"amount": balance.amount, "currency": balance.currency}
            threshold = self.settings.balance_thresholds.get(name)
            if threshold is not None and balance.amount < threshold:
                log.warning("balance of %s is %s %s, below the threshold %s", name, balance.amount,
                            balance.currency or "", threshold)
                alert = {"kind": "low_balance", "gateway": name, "amount": balance.amount,
                         "currency": balance.currency, "threshold": threshold, "at": at}
                pipe = self.redis.pipeline(transaction=True)
                pipe.rpush(self.keys.alerts(), json.dumps(alert))
                pipe.ltrim(self.keys.alerts(), -MAX_ALERTS, -1)
                pipe.execute()
                seen[name]["alert"] = True
        return seen

    def balances(self) -> dict[str, dict[str, Any]]:
        """The last known balance of each gateway: {gateway: {amount, currency, at}}."""
        out = {}
        for name in self.settings.configured_gateways():
            raw = self.redis.hgetall(self.keys.balance(name))
            if raw:
                b = text_fields(raw)
                out[name] = {"amount": float(b["amount"]), "currency": b["currency"] or None, "at": float(b["at"])}
        return out

    def alerts(self) -> list[dict[str, Any]]:
        return [json.loads(a) for a in self.redis.lrange(self.keys.alerts(), 0, -1)]


def resend_kwargs(record: dict[str, Any]) -> dict[str, Any]:
    """send_sms arguments that reproduce a message exactly (so the ledger recognises it): what the
    producer published when it recorded it, else what the worker recorded it asked for."""
    if record.get("payload"):
        return dict(record["payload"])
    kwargs = {"to": record.get("to"), "text": record.get("text"), "gateway": record.get("requested_gateway"),
              "sender": record.get("sender"), "callback_url": record.get("callback_url"),
              "metadata": record.get("metadata"), "options": record.get("options")}
    key = record.get("idempotency_key")
    if key and key != record.get("task_id"):      # an implicit key is the task id, restored by task_id
        kwargs["idempotency_key"] = key
    return {k: v for k, v in kwargs.items() if v is not None}
