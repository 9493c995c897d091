"""Eskiz.uz (notify.eskiz.uz), after ../shared/providers.md §1.

Auth: email + password → a 30-day bearer token, kept in Redis so every worker process shares it.
On a 401 one `PATCH /auth/refresh` runs (a Redis lock makes it single-flight across workers); if the
refresh is refused we log in again; a request still refused after that is an AuthError.

Idempotency: Eskiz has no idempotency key and does not dedupe. We pass our message id as
`user_sms_id` (seen in the Postman logs example, not in the documented form fields: inferred) and
`lookup` finds it again through `POST /message/sms/get-user-messages`, so a send that may or may not
have gone through is reconciled instead of resent blindly.
"""

from __future__ import annotations

import hashlib
import logging
import time
from datetime import datetime, timedelta, timezone

import redis
from pydantic import SecretStr

from ..errors import AuthError, GatewayRejected, GatewayUnavailable, InsufficientBalance, RecipientRejected
from ..keys import Keys
from ..records import MessageStatus
from .base import Acceptance, Balance, DeliveryReport, HttpGateway, ItemResult, Lookup, OutboundSms
from .tokens import SharedToken

log = logging.getLogger("smsdispatch.gateways.eskiz")

# providers.md §1.4 and §6: message-level and part-level words, current and legacy (TRANSMTD).
STATUS_MAP: dict[str, MessageStatus] = {
    **dict.fromkeys(["WAITING", "NEW", "STORED", "ACCEPTED", "TRANSMTD", "ENROUTE", "UNKNOWN",
                     "PARTDELIVERED"], MessageStatus.ACCEPTED),
    **dict.fromkeys(["DELIVERED", "DELIVRD"], MessageStatus.DELIVERED),
    **dict.fromkeys(["REJECTED", "REJECTD", "UNDELIV", "UNDELIVERABLE", "EXPIRED", "DELETED"],
                    MessageStatus.FAILED),
}

TASHKENT = timezone(timedelta(hours=5))
TOKEN_TTL = 29 * 24 * 3600       # Eskiz tokens live 30 days (§1.2); renew a day early
LOOKUP_PAGE_SIZE = 200           # the documented maximum of get-user-messages
LOOKUP_MAX_PAGES = 50
DISPATCH_PAGE_SIZE = 1000        # the documented maximum of get-user-messages-by-dispatch


def map_status(word: str | None) -> MessageStatus:
    return STATUS_MAP.get((word or "").upper(), MessageStatus.ACCEPTED)


def classify(status: int, body: dict) -> Exception:
    """A non-2xx answer that HttpGateway did not already classify (i.e. a 4xx) → our exception.

    Eskiz documents no error bodies (§1.6); SDKs expect {"message", "status"}. The keywords below
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
    """Eskiz's dispatch_id is an int the client chooses (§1.3): a stable one per batch call."""
    return int(hashlib.sha256(call_ref.encode()).hexdigest()[:8], 16) % 2_000_000_000 + 1


class EskizGateway(HttpGateway):
    name = "eskiz"
    can_lookup = True
    max_batch = 500        # Eskiz documents no maximum (§1.3, §7); 500 is our conservative choice

    def __init__(self, *, email: str, password: SecretStr, sender: str, base_url: str,
                 redis_client: redis.Redis, keys: Keys, connect_timeout: float, read_timeout: float,
                 **http) -> None:
        super().__init__(base_url, connect_timeout=connect_timeout, read_timeout=read_timeout, **http)
        self.email = email
        self._password = password
        self.sender = sender
        self.token = SharedToken(redis_client, keys, gateway=self.name, account=f"{self.base_url}|{email}",
                                 fetch=self._new_token, lock_wait=2 * self.total_timeout + 1)

    # --- the contract -------------------------------------------------------------------------

    def send(self, sms: OutboundSms) -> Acceptance:
        form = {"mobile_phone": sms.to.lstrip("+"), "message": sms.text,
                "from": sms.sender or self.sender, "user_sms_id": sms.message_id}
        if sms.callback_url:
            form["callback_url"] = sms.callback_url
        body = self._call("POST", "/message/sms/send", data=form)
        if not body.get("id"):
            raise GatewayRejected(f"send answered without an id: {str(body)[:200]}", gateway=self.name)
        return Acceptance(gateway_message_id=str(body["id"]), raw_status=str(body.get("status")))

    def send_batch(self, messages, *, call_ref: str) -> list[ItemResult]:
        """`send-batch` with our ids as user_sms_id and a dispatch_id derived from call_ref. One
        `from` and `callback_url` per call (the caller groups by them). Eskiz answers one request id
        for the whole call; a refused entry refuses the whole call (no per-message errors)."""
        first = messages[0]
        body = {"messages": [{"user_sms_id": m.message_id, "to": m.to.lstrip("+"), "text": m.text}
                             for m in messages],
                "from": first.sender or self.sender, "dispatch_id": dispatch_id_for(call_ref)}
        if first.callback_url:
            body["callback_url"] = first.callback_url
        answer = self._call("POST", "/message/sms/send-batch", json=body)
        if not answer.get("id"):
            raise GatewayRejected(f"send-batch answered without an id: {str(answer)[:200]}", gateway=self.name)
        return [ItemResult(m.message_id, str(answer["id"])) for m in messages]

    def lookup_batch(self, messages, *, call_ref: str | None, since: float) -> dict[str, Lookup]:
        """By dispatch when the messages went out in one batch call (one paged query), else one by one."""
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
        """Find our message (user_sms_id) among those sent since `since`. The listing's timezone is
        undocumented (inferred Tashkent): ask for the narrow window [since − 5 min, now + 5 min] written
        in Tashkent time, then, if it is not there, the same window written in UTC. One wide window
        spanning both readings would cover five extra hours of a busy account's messages."""
        now = time.time()
        for zone in (TASHKENT, timezone.utc):
            start = datetime.fromtimestamp(since - 300, zone)
            end = datetime.fromtimestamp(now + 300, zone)
            found = self._find(sms.message_id, {"start_date": start.strftime("%Y-%m-%d %H:%M"),
                                                "to_date": end.strftime("%Y-%m-%d %H:%M"),
                                                "page_size": LOOKUP_PAGE_SIZE})
            if found.found:
                return found
        return Lookup(False)

    def _find(self, message_id: str, form: dict) -> Lookup:
        for page in range(1, LOOKUP_MAX_PAGES + 1):
            data = self._call("POST", "/message/sms/get-user-messages", data=form,
                              params={"page": page}).get("data") or {}
            for row in _rows(data):
                if row.get("user_sms_id") == message_id:
                    gid = row.get("request_id") or row.get("id")
                    return Lookup(True, str(gid) if gid is not None else None, map_status(row.get("status")))
            if not isinstance(data, dict) or not data.get("next_page_url"):
                return Lookup(False)
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

