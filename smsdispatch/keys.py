"""Every Redis key smsdispatch writes is built here, and only here.

With the default prefix ``sms`` the schema is (read it with redis-cli):

    sms:msg:<message_id>               hash   one message record (records.py)
    sms:msg:<message_id>:history       list   JSON status changes, oldest first (records.py)
    sms:idem:<idempotency_key>         hash   idempotency ledger entry (ledger.py)
    sms:dead                           list   message ids whose retries were exhausted
    sms:inflight                       zset   accepted messages awaiting a delivery report, by next poll
    sms:pending                        zset   messages not yet settled, by when the sweeper should look
    sms:gwid:<gateway>:<gw_message_id> string our message id, for delivery reports that only carry theirs
    sms:gwid:<gateway_message_id>      string the same, shared by all gateways: written by earlier versions, read only
                                              (its entries expire with RECORD_TTL)
    sms:num:<last 4 digits>            zset   message ids by when they were filed, per last digits of the number
                                              (records.py by_number; the status page's search)
    sms:webhook:foreign:<gateway>      string reports a gateway sent for another gateway's message (count)
    sms:balance:<gateway>              hash   last known balance: amount, currency, at (polling.py)
    sms:alerts                         list   JSON alerts (low balance), newest last
    sms:tick:<job>                     string one periodic run at a time, across beats (polling.py)
    sms:batch:<batch_id>               hash   a batch: settings, counts (batch.py)
    sms:batches                        zset   batch ids by when they were stored (the status page's list)
    sms:batch:<batch_id>:chunks        list   the batch's entries, one JSON array per chunk
    sms:batch:<batch_id>:seen:<sub>    hash   message id -> outcome counted for one submission
    sms:rem:<reminder_id>              hash   a scheduled reminder: payload, send_at, state (reminders.py)
    sms:rem:due                        zset   reminder ids by send_at, waiting for release
    sms:rem:inflight                   zset   reminder ids being published, by release time
    sms:gw:<gateway>:<account>:token   string shared access token of a gateway account
    sms:gw:<gateway>:<account>:lock    string single-flight lock around a token refresh
    sms:circuit:<gateway>              hash   circuit breaker state: open_until, probes, probe_ok, probe_until
    sms:circuit:<gateway>:calls        hash   calls and failures per tenth of the window (circuit.py)
    sms:deliveries:<task_id>           string how often a task message was redelivered (poison messages)
    sms:rate:<gateway>                 hash   token bucket: tokens, ts, factor, slow_until (ratelimit.py)
    sms:workers                        zset   consuming worker processes by their last heartbeat (redis_transport.py)
    sms:worker:<owner>:unacked         set    delivery tags of the messages one worker process holds unacknowledged
    sms:metrics                        hash   counters for Prometheus, written by the Lua scripts a message passes
                                              through anyway (metrics.py lists every field)
    sms:beat                           string the time of celery beat's last tick, expiring after BEAT_STALE_AFTER
                                              (beat.py writes it, health.py reads it)
    sms:health                         string written by each health check: Redis takes writes (health.py; 60 s)

Every key expires (RECORD_TTL, IDEMPOTENCY_TTL or a short TTL of its own) except those in
`WITHOUT_TTL`, each bounded otherwise, as said there (tests/unit/test_keys.py checks it after a run).
With RECORD_TTL=0 records, their histories, gateway ids, batches and reminders are kept for ever, and so
are the indexes of numbers and batches; with a RECORD_TTL each index drops its entries older than that
whenever it is written, and expires that long after its newest entry.

Celery owns its own keys in the same database: the queue list (named by SMSDISPATCH_QUEUE),
``unacked`` / ``unacked_index`` (kombu's late-ack bookkeeping) and ``celery-task-meta-<task id>``
(results). We never write the first three; the results of `send_sms` we write ourselves, in
Celery's format and under Celery's key (celery_results.py), with no prefix of ours.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The keys that have no TTL, by their name after the prefix, and what bounds each.
WITHOUT_TTL = {
    "dead": "one message id per dead-lettered message, removed by `dead-letters --replay`; watch its length",
    "inflight": "one member per accepted message awaiting its report, removed when it settles or expires",
    "pending": "one member per unsettled message, removed when it settles",
    "alerts": "trimmed to the newest MAX_ALERTS (polling.py)",
    "balance:<gateway>": "one small hash per gateway",
    "rem:due": "one member per scheduled reminder, removed when it is released",
    "rem:inflight": "one member per reminder being published, removed once it is",
    "workers": "one member per consuming worker process, removed when another finds it dead (redis_transport.py)",
    "metrics": "one field per counter, gateway and status (metrics.py: a few hundred at most); counters must "
               "not expire (Prometheus would read a reset)",
}


@dataclass(frozen=True)
class Keys:
    prefix: str = "sms"

    def message(self, message_id: str) -> str:
        return f"{self.prefix}:msg:{message_id}"

    def history(self, message_id: str) -> str:
        return f"{self.prefix}:msg:{message_id}:history"

    def idempotency(self, key: str) -> str:
        return f"{self.prefix}:idem:{key}"

    def dead_letters(self) -> str:
        return f"{self.prefix}:dead"

    def gateway_id(self, gateway: str, gateway_message_id: str) -> str:
        """Per gateway: two gateways may hand out the same id (DevSMS and Eskiz both count up)."""
        return f"{self.prefix}:gwid:{gateway}:{gateway_message_id}"

    def legacy_gateway_id(self, gateway_message_id: str) -> str:
        """The index before it was per gateway; read only, for records written then."""
        return f"{self.prefix}:gwid:{gateway_message_id}"

    def number_index(self, tail: str) -> str:
        """Messages by the last digits of their number (records.py NUMBER_INDEX_DIGITS, `number_tail`)."""
        return f"{self.prefix}:num:{tail}"

    def webhook_foreign(self, gateway: str) -> str:
        return f"{self.prefix}:webhook:foreign:{gateway}"

    def pending(self) -> str:
        return f"{self.prefix}:pending"

    def inflight(self) -> str:
        return f"{self.prefix}:inflight"

    def balance(self, gateway: str) -> str:
        return f"{self.prefix}:balance:{gateway}"

    def alerts(self) -> str:
        return f"{self.prefix}:alerts"

    def tick(self, job: str) -> str:
        return f"{self.prefix}:tick:{job}"

    def batch(self, batch_id: str) -> str:
        return f"{self.prefix}:batch:{batch_id}"

    def batches(self) -> str:
        return f"{self.prefix}:batches"

    def batch_chunks(self, batch_id: str) -> str:
        return f"{self.prefix}:batch:{batch_id}:chunks"

    def batch_seen(self, batch_id: str, submission: str) -> str:
        return f"{self.prefix}:batch:{batch_id}:seen:{submission}"

    def reminder(self, reminder_id: str) -> str:
        return f"{self.prefix}:rem:{reminder_id}"

    def reminders_due(self) -> str:
        return f"{self.prefix}:rem:due"

    def reminders_inflight(self) -> str:
        return f"{self.prefix}:rem:inflight"

    def workers(self) -> str:
        return f"{self.prefix}:workers"

    def worker_unacked(self, owner: str) -> str:
        return f"{self.prefix}:worker:{owner}:unacked"

    def metrics(self) -> str:
        return f"{self.prefix}:metrics"

    def beat(self) -> str:
        return f"{self.prefix}:beat"

    def health(self) -> str:
        return f"{self.prefix}:health"

    def gateway_token(self, gateway: str, account: str) -> str:
        return f"{self.prefix}:gw:{gateway}:{account}:token"

    def gateway_lock(self, gateway: str, account: str) -> str:
        return f"{self.prefix}:gw:{gateway}:{account}:lock"

    def circuit(self, gateway: str) -> str:
        return f"{self.prefix}:circuit:{gateway}"

    def circuit_calls(self, gateway: str) -> str:
        return f"{self.prefix}:circuit:{gateway}:calls"

    def deliveries(self, task_id: str) -> str:
        return f"{self.prefix}:deliveries:{task_id}"

    def rate_bucket(self, gateway: str) -> str:
        return f"{self.prefix}:rate:{gateway}"

    @staticmethod
    def task_result(task_id: str) -> str:
        """Celery's Redis result backend key (its task_keyprefix; celery_results.py)."""
        return f"celery-task-meta-{task_id}"
