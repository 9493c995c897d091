"""EagerSms: what a test holds in eager mode (the `sms_eager` fixture, `eager_sms()`).

The app's sends run through the real dispatcher at once, on fakeredis, each configured gateway stood in
for by a `MemoryGateway`: records, results, `get_message`, `get_batch` and reminders are as in
production. What the gateways got is in `sent`; what the app asked for is in `outbox`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import redis

    from ..errors import GatewayError
    from .harness import Harness, Job
    from .memory import MemoryGateway, SentSms
    from .outbox import Outbox


class EagerSms:
    def __init__(self, harness: Harness) -> None:
        self._harness = harness

    @property
    def outbox(self) -> Outbox:
        """What the app asked to send (as with `sms_outbox`)."""
        return self._harness.outbox

    @property
    def sent(self) -> list[SentSms]:
        """What the gateways got, in order: `to` in E.164, `text`, `gateway`, `message_id`, ..."""
        return list(self._harness.sent)

    def gateway(self, name: str) -> MemoryGateway:
        """The memory gateway standing in for gateway `name` (its `sent`, `fail_next`, `refuse`)."""
        return self._harness.gateway(name)

    def fail_next(self, kind: str | GatewayError = "unavailable", *, times: int = 1) -> None:
        """The next `times` gateway calls, whichever gateway they go to, fail with `kind`:
        unavailable, rate_limited, server_error, timeout, timeout_after_send, rejected, auth, balance,
        or a GatewayError (smsdispatch/testing/memory.py says what each means)."""
        self._harness.failures.add(kind, times)

    @property
    def scheduled(self) -> list[Job]:
        """Tasks waiting for a later time: retries, `eta` sends, reminders released ahead of time."""
        with self._harness._lock:
            return list(self._harness.scheduled)

    def run_scheduled(self, *, rounds: int = 100) -> int:
        """Run the scheduled tasks and every reminder not yet sent, as if their time had come; then
        what they schedule in turn, up to `rounds` times. Returns how many task runs it made."""
        return self._harness.run_scheduled(rounds=rounds)

    @property
    def redis(self) -> redis.Redis:
        """A client of the fakeredis server every app works on here."""
        return self._harness._fakeredis.FakeRedis(server=self._harness.server)

    def __repr__(self) -> str:
        return f"EagerSms(sent={self.sent!r}, scheduled={len(self.scheduled)})"
