"""Eskiz.uz (notify.eskiz.uz), after docs/gateways/eskiz.md.

Auth: email + password → a 30-day bearer token, kept in Redis so every worker process shares it.
On a 401 one `PATCH /auth/refresh` runs (a Redis lock makes it single-flight across workers); if the
refresh is refused we log in again; a request still refused after that is an AuthError.

Idempotency: Eskiz has no idempotency key and does not dedupe; a send that may or may not have
gone through is looked up instead of resent blindly. Every send therefore goes through
`send-batch`, where `user_sms_id` (our message id) and a client-chosen `dispatch_id` are documented
fields: a single message is a one-message batch whose dispatch_id is derived from its message id
(`single_call_ref`). A lookup then asks `get-user-messages-by-dispatch` about that one dispatch: one
short call, whatever the account's traffic. The single-message endpoint has neither field documented,
and finding a message sent there means walking `get-user-messages`, every message of the account in a
window of minutes, 200 to a page: under partial failure (a quarter of the calls failing, each
reconciled) those walks took every worker thread, and at 150 msg/s a window holds more pages than a
lookup may walk. `lookup` still walks the listing, for a message whose record names no dispatch (sent
by a version before this one).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import redis
from pydantic import SecretStr

from ..config import Settings
from ..errors import AuthError, GatewayRejected, GatewayUnavailable, InsufficientBalance, RecipientRejected
from ..keys import Keys
from ..records import MessageStatus
from .base import (
    Acceptance,
    Balance,
    DeliveryReport,
    HttpGateway,
    ItemResult,
    Lookup,
    OutboundSms,
    single_report,
)
from .registry import BuildContext, GatewaySpec, credential
from .tokens import SharedToken

log = logging.getLogger("smsdispatch.gateways.eskiz")

# docs/gateways/eskiz.md: message-level and part-level words, current and legacy (TRANSMTD).
STATUS_MAP: dict[str, MessageStatus] = {
    **dict.fromkeys(["WAITING", "NEW", "STORED", "ACCEPTED", "TRANSMTD", "ENROUTE", "UNKNOWN",
                     "PARTDELIVERED"], MessageStatus.ACCEPTED),
    **dict.fromkeys(["DELIVERED", "DELIVRD"], MessageStatus.DELIVERED),
    **dict.fromkeys(["REJECTED", "REJECTD", "UNDELIV", "UNDELIVERABLE", "EXPIRED", "DELETED"],
                    MessageStatus.FAILED),
}

TASHKENT = timezone(timedelta(hours=5))
TOKEN_TTL = 29 * 24 * 3600       # Eskiz tokens live 30 days; renew a day early
LOOKUP_PAGE_SIZE = 200           # the documented maximum of get-user-messages
LOOKUP_MAX_PAGES = 50
DISPATCH_PAGE_SIZE = 1000        # the documented maximum of get-user-messages-by-dispatch


def map_status(word: str | None) -> MessageStatus:
    return STATUS_MAP.get((word or "").upper(), MessageStatus.ACCEPTED)


def classify(status: int, body: dict) -> Exception:
    """A non-2xx answer that HttpGateway did not already classify (i.e. a 4xx) → our exception.

    Eskiz documents no error bodies; SDKs expect {"message", "status"}. The keywords below
    are inferred from the SDK fixtures and Russian/English wording.
    """
    message = str(body.get("message") or body.get("error") or body)[:300]
    text = message.lower()
    if any(w in text for w in ("balance", "баланс", "insufficient", "недостаточно")):
        return InsufficientBalance(message, gateway="eskiz", status=status)
    if any(w in text for w in ("phone", "number", "номер", "mobile")):
        return RecipientRejected(message, gateway="eskiz", status=status)
    if status == 401:
        return AuthError(message, gateway="eskiz", status=status)
    return GatewayRejected(f"HTTP {status}: {message}", gateway="eskiz", status=status)


def dispatch_id_for(call_ref: str) -> int:
    """Eskiz's dispatch_id is an int the client chooses: a stable one per call (a batch call, or a
    single message's call). Two calls may share one now and then (about 2e9 values); harmless, since a
    lookup by dispatch keeps only the rows whose user_sms_id it asked for."""
    return int(hashlib.sha256(call_ref.encode()).hexdigest()[:8], 16) % 2_000_000_000 + 1


class EskizGateway(HttpGateway):
    name = "eskiz"
    can_lookup = True
    max_batch = 500        # Eskiz documents no maximum; 500 is our conservative choice

    def __init__(self, *, email: str, password: SecretStr, sender: str, base_url: str,
                 redis_client: redis.Redis, keys: Keys, connect_timeout: float, read_timeout: float,
                 **http) -> None:
        super().__init__(base_url, connect_timeout=connect_timeout, read_timeout=read_timeout, **http)
        self.email = email
        self._password = password
        self.sender = sender
        self.token = SharedToken(redis_client, keys, gateway=self.name, account=f"{self.base_url}|{email}",
                                 fetch=self._new_token, lock_wait=2 * self.total_timeout + 1)
        self._rounds = _LookupRounds(self._scan, wait=LOOKUP_MAX_PAGES * self.total_timeout)

    # --- the contract -------------------------------------------------------------------------

    def send(self, sms: OutboundSms) -> Acceptance:
        """A one-message `send-batch` in a dispatch of its own (see the module's docstring)."""
        answer = self._send_batch([sms], call_ref=self.single_call_ref(sms.message_id))
        status = answer.get("status")
        return Acceptance(gateway_message_id=str(answer["id"]),
                          raw_status=str(status[0] if isinstance(status, list) and status else status))

    def single_call_ref(self, message_id: str) -> str:
        return message_id

    def send_batch(self, messages, *, call_ref: str) -> list[ItemResult]:
        """`send-batch` with our ids as user_sms_id and a dispatch_id derived from call_ref. One
        `from` and `callback_url` per call (the caller groups by them). Eskiz answers one request id
        for the whole call; a refused entry refuses the whole call (no per-message errors)."""
        answer = self._send_batch(messages, call_ref=call_ref)
        return [ItemResult(m.message_id, str(answer["id"])) for m in messages]

    def _send_batch(self, messages, *, call_ref: str) -> dict:
        first = messages[0]
        body = {"messages": [{"user_sms_id": m.message_id, "to": m.to.lstrip("+"), "text": m.text}
                             for m in messages],
                "from": first.sender or self.sender, "dispatch_id": dispatch_id_for(call_ref)}
        if first.callback_url:
            body["callback_url"] = first.callback_url
        answer = self._call("POST", "/message/sms/send-batch", json=body)
        if not answer.get("id"):
            raise GatewayRejected(f"send-batch answered without an id: {str(answer)[:200]}", gateway=self.name)
        return answer

    def lookup_batch(self, messages, *, call_ref: str | None, since: float) -> dict[str, Lookup]:
        """By dispatch when the messages went out in one `send-batch` call (one paged query; a single
        message's dispatch holds it alone), else one by one through the listing (`lookup`)."""
        if call_ref is None:
            return super().lookup_batch(messages, call_ref=None, since=since)
        wanted = {m.message_id for m in messages}
        found: dict[str, Lookup] = {}
        form = {"dispatch_id": dispatch_id_for(call_ref)}
        for page in range(1, LOOKUP_MAX_PAGES + 1):
            data = self._call("POST", "/message/sms/get-user-messages-by-dispatch", data=form,
                              params={"page": page, "page-size": DISPATCH_PAGE_SIZE}).get("data") or {}
            for row in _rows(data):
                if row.get("user_sms_id") in wanted:
                    gid = row.get("request_id") or row.get("id")
                    found[row["user_sms_id"]] = Lookup(True, str(gid) if gid is not None else None,
                                                       map_status(row.get("status")))
            if not isinstance(data, dict) or not data.get("next_page_url"):
                return {mid: found.get(mid, Lookup(False)) for mid in wanted}
        raise GatewayUnavailable(f"lookup gave up after {LOOKUP_MAX_PAGES} pages", gateway=self.name)

    def lookup(self, sms: OutboundSms, *, since: float) -> Lookup:
        """Find our message (user_sms_id) among every message sent since `since`: for a message sent
        without a dispatch of its own (by an earlier version). Lookups that this process asks for at
        the same time share one walk through the listing (`_LookupRounds`)."""
        return self._rounds.lookup(sms.message_id, since)

    def _scan(self, wanted: set[str], since: float) -> dict[str, Lookup]:
        """One walk through `get-user-messages` for the messages `wanted`, all sent since `since`. The
        listing's timezone is undocumented (inferred Tashkent): the narrow window [since − 5 min,
        now + 5 min] written in Tashkent time, then, for what was not found there, the same window
        written in UTC. One wide window spanning both readings would cover five extra hours of a busy
        account's messages. Stops as soon as every wanted message is found."""
        now = time.time()
        found: dict[str, Lookup] = {}
        for zone in (TASHKENT, timezone.utc):
            start = datetime.fromtimestamp(since - 300, zone)
            end = datetime.fromtimestamp(now + 300, zone)
            self._find(wanted - set(found), found, {"start_date": start.strftime("%Y-%m-%d %H:%M"),
                                                    "to_date": end.strftime("%Y-%m-%d %H:%M"),
                                                    "page_size": LOOKUP_PAGE_SIZE})
            if len(found) == len(wanted):
                break
        return found

    def _find(self, wanted: set[str], found: dict[str, Lookup], form: dict) -> None:
        for page in range(1, LOOKUP_MAX_PAGES + 1):
            data = self._call("POST", "/message/sms/get-user-messages", data=form,
                              params={"page": page}).get("data") or {}
            for row in _rows(data):
                mid = row.get("user_sms_id")
                if mid in wanted and mid not in found:
                    gid = row.get("request_id") or row.get("id")
                    found[mid] = Lookup(True, str(gid) if gid is not None else None, map_status(row.get("status")))
            if wanted <= found.keys() or not isinstance(data, dict) or not data.get("next_page_url"):
                return
        raise GatewayUnavailable(f"lookup gave up after {LOOKUP_MAX_PAGES} pages", gateway=self.name)

    def status(self, gateway_message_id: str) -> DeliveryReport:
        body = self._call("GET", f"/message/sms/status_by_id/{gateway_message_id}")
        word = (body.get("data") or {}).get("status")
        return DeliveryReport(map_status(word), str(word))

    def balance(self) -> Balance:
        body = self._call("GET", "/user/get-limit")
        return Balance(amount=float((body.get("data") or {}).get("balance", 0)), currency="UZS")

    # --- auth ---------------------------------------------------------------------------------

    def _call(self, method: str, path: str, **kwargs) -> dict:
        response = self.token.authorized(
            lambda token: self.request(method, path, headers=_bearer(token), **kwargs))
        body = self.json(response)
        if response.status_code >= 400:
            raise classify(response.status_code, body)
        return body

    def _new_token(self, stale: str | None) -> tuple[str, int]:
        """PATCH /auth/refresh with the refused token; if that is refused too, log in again."""
        return (self._refresh(stale) if stale else None) or self._login(), TOKEN_TTL

    def _refresh(self, stale: str) -> str | None:
        response = self.request("PATCH", "/auth/refresh", headers=_bearer(stale))
        if response.status_code == 401:
            log.info("eskiz token refresh refused; logging in again")
            return None
        return self._token_from(response)

    def _login(self) -> str:
        form = {"email": self.email, "password": self._password.get_secret_value()}
        response = self.request("POST", "/auth/login", data=form)
        if response.status_code in (401, 403, 422):
            raise AuthError("Eskiz rejected the credentials (SMSDISPATCH_ESKIZ_EMAIL / "
                            "SMSDISPATCH_ESKIZ_PASSWORD)", gateway=self.name, status=response.status_code)
        log.info("eskiz logged in as %s", self.email)
        return self._token_from(response)

    def _token_from(self, response) -> str:
        body = self.json(response)
        token = (body.get("data") or {}).get("token") if response.ok else None
        if not token:
            raise classify(response.status_code, body) if not response.ok else GatewayRejected(
                "Eskiz answered without a token", gateway=self.name)
        return token


def _rows(data: object) -> list[dict]:
    """Rows of an Eskiz listing page: `result` in the documented example, `data` in Laravel pages."""
    rows = (data.get("result") or data.get("data")) if isinstance(data, dict) else data
    return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class _LookupRounds:
    """Lookups asked at the same time in this process share one walk through Eskiz's listing.

    Eskiz cannot find a message by our id: a lookup lists every message of the account in a window,
    200 to a page. Under load (a gateway failing a share of its calls, each such message reconciled)
    one walk per lookup meant dozens of pages per message and reconciles queued behind each other.
    Here a lookup joins the queue; whenever no walk is running, the next caller takes every lookup
    queued so far and walks once for all of them (the window starts at the earliest `since`), and
    each gets its own answer. A walk serves only lookups queued before it started, so what it lists
    was fetched after each of them was asked: exactly what a lookup of its own would have seen.
    A failed walk fails every lookup it served (each retries as it would have).
    """

    def __init__(self, scan, *, wait: float) -> None:
        self._scan = scan
        self._wait = wait
        self._cond = threading.Condition()
        self._queue: list[_Asked] = []
        self._walking = False

    def lookup(self, message_id: str, since: float) -> Lookup:
        asked = _Asked(message_id, since)
        deadline = time.monotonic() + self._wait
        with self._cond:
            self._queue.append(asked)
            while not asked.answered and self._walking:
                if not self._cond.wait(timeout=max(0.0, deadline - time.monotonic())):
                    if asked in self._queue:
                        self._queue.remove(asked)
                    raise GatewayUnavailable("lookup: the shared listing took too long", gateway="eskiz")
            if not asked.answered:          # no walk running: this caller walks for everything queued
                batch, self._queue, self._walking = self._queue, [], True
        if not asked.answered:
            self._walk(batch)
        if asked.error is not None:
            raise asked.error
        return asked.result or Lookup(False)

    def _walk(self, batch: list[_Asked]) -> None:
        try:
            found = self._scan({a.message_id for a in batch}, min(a.since for a in batch))
            for a in batch:
                a.result = found.get(a.message_id, Lookup(False))
        except Exception as e:      # GatewayError mostly; whatever it is, every lookup of the walk sees it
            for a in batch:
                a.error = e
        finally:
            with self._cond:
                for a in batch:
                    a.answered = True
                self._walking = False
                self._cond.notify_all()


@dataclass
class _Asked:
    message_id: str
    since: float
    answered: bool = False
    result: Lookup | None = None
    error: Exception | None = None


#: Where a report may name the message: our id first (`user_sms_id`), then Eskiz's ids.
REPORT_REFS = ("user_sms_id", "request_id", "message_id", "sms_id", "id")


def parse_reports(body: dict) -> list[tuple[list[str], MessageStatus | None, str]]:
    """Eskiz posts one report per request (JSON or form): `status` and the message's ids."""
    return single_report(body, map_status, REPORT_REFS)


def build(settings: Settings, context: BuildContext) -> EskizGateway:
    return EskizGateway(email=credential(settings.eskiz_email, "eskiz_email"),
                        password=credential(settings.eskiz_password, "eskiz_password"), sender=settings.eskiz_sender,
                        base_url=settings.eskiz_base_url, redis_client=context.redis, keys=context.keys,
                        **context.http)


SPEC = GatewaySpec(name="eskiz", factory=build, credentials=(("eskiz_email", "eskiz_password"),),
                   status_map=STATUS_MAP, parse_reports=parse_reports)
