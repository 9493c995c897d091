"""A fake SMS.CX gateway: a real HTTP server on 127.0.0.1 (stdlib only).

Speaks the protocol of docs/gateways/smscx.md: `X-API-KEY` or OAuth2 client-credentials bearer
tokens, `POST /sms` with idempotencyId, `GET /reports/single/{msgId}`,
`GET /account/balance` and the documented error envelope and codes. Server, request log, accepted
list and failure injection come from FakeGateway (base.py).

Inferred (not documented, tagged "inferred" below): a repeated idempotencyId answers the original
200 response again (nothing sent or charged twice; error answers are not remembered); the 401 body
for a missing or expired token; the 429 error code (null) and that it carries X-Rate-Limit-Reset but
no Retry-After; `rejected` numbers answer as data[] rows with status REJECTED (opted out, cost 0);
numbers that are not "+" and 8-15 digits are invalid; a call without any valid number is a 400 even
with allowInvalid; countryIso/phoneNumbersByCountry stay empty; unknown routes answer 404 not_found.

Run standalone:  python -m smsdispatch.devtools.fakes.smscx --port 8765
"""

from __future__ import annotations

import math
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .base import Accepted, FakeGateway, Reply, Request, run_cli

TOKEN_TTL = 86400  # lifetimes are 1 day, 1 week or never
MAX_NUMBERS = 25_000  # documented, error 1103
URI = "https://sms.cx/sms-api-documentation/"
TYPES = {400: "invalid_param", 401: "invalid_api_key", 403: "access_denied", 404: "not_found",
         405: "method_not_allowed", 429: "rate_limit"}  # 405's type name is inferred


def _err(status: int, code: int | None, message: str, type_: str | None = None,
         invalid: list[str] | None = None) -> Reply:
    """The documented error envelope; an invalid-numbers list goes both next to and inside `error` (its place is
    ambiguous in the docs)."""
    error = {"type": type_ or TYPES.get(status, "server_error"), "code": code, "message": message, "uri": URI}
    if invalid is None:
        return Reply(status, {"error": error})
    return Reply(status, {"error": error | {"invalid": invalid}, "invalid": invalid})


def _parts(text: str) -> tuple[int, bool]:
    """(parts, unicode): GSM-7 160/153 chars, else UCS-2 70/67 (an approximation, inferred)."""
    unicode = not text.isascii()
    single, multi = (70, 67) if unicode else (160, 153)
    return (1 if len(text) <= single else math.ceil(len(text) / multi)), unicode


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _e164(number: Any) -> str | None:
    """"+" and 8-15 digits (inferred: national numbers with countryIso are not modelled)."""
    n = str(number).strip()
    return n if n[:1] == "+" and n[1:].isdigit() and n.isascii() and 8 <= len(n) - 1 <= 15 else None


def _is_uuid(value: Any) -> bool:
    try:
        return uuid.UUID(str(value)).version in (1, 2, 3, 4, 5)
    except ValueError:
        return False


@dataclass
class SentSms(Accepted):
    """One SMS SMS.CX accepted; `gateway_message_id` is its msgId, `call_ref` the call's idempotencyId."""

    campaign_id: str = ""
    parts: int = 1
    cost: float = 0.0
    created_at: str = ""
    callback_url: str | None = None

    def refs(self) -> set[str]:  # set_status also finds a whole call by its campaignId
        return super().refs() | {self.campaign_id}

    def row(self) -> dict[str, Any]:
        """The message as data[] of POST /sms and of /reports/single shows it."""
        return {"msgId": self.gateway_message_id, "status": self.status, "statusCode": 0,
                "errorCode": 1 if self.status == "FAILED" else None, "createdAt": self.created_at,
                "updatedAt": self.created_at, "inQuietHours": False, "cost": self.cost, "to": "+" + self.to,
                "countryIso": None, "from": self.sender, "text": self.text, "parts": self.parts,
                "textAnalysis": {"length": len(self.text), "unicode": _parts(self.text)[1], "parts": self.parts},
                "trackData": None, "scheduledAt": None}


class FakeSmsCx(FakeGateway):
    """The fake SMS.CX. Answers an API key (when given) and OAuth2 client credentials."""

    send_path = "/sms"
    name = "smscx"
    has_tokens = True

    def __init__(self, *, api_key: str | None = None, client_id: str = "demo-client",
                 client_secret: str = "demo-secret", host: str = "127.0.0.1", port: int = 0,
                 balance: float = 100_000, price: float = 0.041):
        super().__init__(host=host, port=port, balance=balance, price=price)
        self.api_key, self.client_id, self.client_secret = api_key or None, client_id, client_secret
        self.tokens_issued = 0
        self._tokens: dict[str, bool] = {}  # token -> expired?
        self._replies: dict[str, Reply] = {}  # idempotencyId -> the original 200 answer

    # ----------------------------------------------------------------- SMS.CX-specific control
    @property
    def sent(self) -> list[SentSms]:
        return [a for a in self.accepted if isinstance(a, SentSms)]

    def expire_token(self) -> None:
        with self.lock:
            self._tokens = dict.fromkeys(self._tokens, True)
            self.notify()

    def reset(self) -> None:
        """Also forgets remembered idempotencyIds (they belong to the forgotten SMS) and the token count."""
        with self.lock:
            super().reset()
            self._replies.clear()
            self.tokens_issued = 0

    def error_body(self, status: int, message: str) -> Any:
        return _err(status, None, message).body

    def rate_limit_reply(self, retry_after: float) -> Reply:
        reset = math.ceil(time.time() + retry_after)  # a Unix timestamp; no Retry-After (inferred)
        return Reply(429, _err(429, None, "Too many requests").body,
                     {"X-Rate-Limit-Limit": "100", "X-Rate-Limit-Remaining": "0", "X-Rate-Limit-Reset": str(reset)})

    # ----------------------------------------------------------------- protocol
    def route(self, req: Request) -> Reply:
        if req.path == "/oauth/token":
            return self._issue_token(req) if req.method == "POST" else _err(405, None, "Method not allowed")
        if req.path == "/sms":
            method, handler = "POST", self._send
        elif req.path == "/account/balance":
            method, handler = "GET", self._balance
        elif req.path.startswith("/reports/single/"):
            method, handler = "GET", self._report
        else:
            raise _err(404, 1160, "Not found")  # inferred: unknown routes answer like unknown ids
        if req.method != method:
            raise _err(405, None, "Method not allowed")
        self._authenticate(req)
        return handler(req)

    def _authenticate(self, req: Request) -> None:
        key = req.headers.get("x-api-key")
        if key is not None:
            if self.api_key is None or not secrets.compare_digest(key, self.api_key):
                raise _err(401, None, "Invalid API key", "invalid_api_key")
            return
        with self.lock:
            expired = self._tokens.get(req.bearer or "")
        if expired is None:
            raise _err(401, None, "Missing or invalid credentials", "invalid_client")  # inferred body
        if expired:
            raise _err(401, None, "The access token has expired", "invalid_client")  # inferred body

    def _issue_token(self, req: Request) -> Reply:
        if req.basic != (self.client_id, self.client_secret):
            raise _err(401, 1600, "Client authentication failed", "invalid_client")
        if req.fields.get("grant_type") != "client_credentials":
            raise _err(400, 1600, "Only grant_type=client_credentials is supported", "unsupported_grant_type")
        token = secrets.token_urlsafe(32)
        with self.lock:
            self._tokens[token] = False
            self.tokens_issued += 1
        return Reply(200, {"access_token": token, "expires_in": TOKEN_TTL,
                           "scope": str(req.fields.get("scope") or "sms"), "token_type": "Bearer"})

    def _send(self, req: Request) -> Reply:
        f = req.fields
        to = f.get("to")
        to = [to] if isinstance(to, str) else to  # a string or an array
        if not to or not isinstance(to, list):
            raise _err(400, 1104, "The parameter `to` is empty or not set")
        if len(to) > MAX_NUMBERS:
            raise _err(400, 1103, f"The parameter `to` has more than {MAX_NUMBERS} phone numbers")
        sender, text, idem = str(f.get("from") or ""), str(f.get("text") or ""), f.get("idempotencyId")
        if not sender:
            raise _err(400, 1105, "The parameter `from` is empty or not set")
        if not 3 <= len(sender) <= 15:
            raise _err(400, 1106, "The parameter `from` is not valid")
        if not text:
            raise _err(400, 1107, "The parameter `text` is empty or not set")
        if idem is not None and not _is_uuid(idem):
            raise _err(400, 1111, "The idempotency id is not a valid UUID v1-v5")
        callback = f.get("dlrCallbackUrl")
        if callback is not None and not str(callback).startswith(("http://", "https://")):
            raise _err(400, 1109, "The parameter `dlrCallbackUrl` is not a valid URL")
        headers = {"X-Request-Id": str(uuid.uuid4())} | ({"X-Idempotency-Id": str(idem)} if idem else {})
        with self.lock:  # one lock for the whole call: a concurrent repeat sees the first answer
            if idem and str(idem) in self._replies:
                original = self._replies[str(idem)]
                return Reply(200, original.body, original.headers | headers)
            reply = Reply(200, self._accept(to, sender, text, str(idem) if idem else None, callback, f), headers)
            if idem:
                self._replies[str(idem)] = reply
        return reply

    def _accept(self, to: list, sender: str, text: str, idem: str | None, callback: Any, f: dict) -> dict:
        valid = [n for n in map(_e164, to) if n]
        invalid = [str(n) for n in to if not _e164(n)]
        if not valid or (invalid and not f.get("allowInvalid")):
            code, message = (1207, "The phone number is not valid") if len(invalid) == 1 else \
                (1210, "The phone numbers are not valid")
            raise _err(400, code, message, invalid=invalid)
        parts = _parts(text)[0]
        taken = [n for n in valid if n[1:] not in self.rejected]
        if not self.charge(round(self.price * parts * len(taken), 6)):
            raise _err(400, 1113, "Insufficient credit", "insufficient_credit")
        campaign, stamp = str(uuid.uuid4()), _now()
        status = "SCHEDULED" if f.get("scheduledDate") else "ACCEPTED"
        rows = []
        for n in valid:
            sms = SentSms(gateway_message_id=str(uuid.uuid4()), to=n[1:], text=text, sender=sender, client_ref=None,
                          call_ref=idem, status=status, received_at=time.monotonic(), campaign_id=campaign,
                          parts=parts, cost=round(self.price * parts, 6), created_at=stamp, callback_url=callback)
            if n[1:] in self.rejected:  # opted out (inferred: how `rejected` shows): cost 0, not recorded
                sms.status, sms.cost = "REJECTED", 0.0
            else:
                self.record(sms)
            rows.append(sms.row())
        info = {"campaignId": campaign, "totalPhoneNumbers": len(to), "totalValid": len(valid),
                "totalInvalid": len(invalid), "totalCost": round(sum(r["cost"] for r in rows), 6),
                "totalParts": parts * len(taken), "dlrCallbackUrl": callback, "phoneNumbersByCountry": {},
                "scheduled": status == "SCHEDULED", "totalInQuietHours": 0, "invalid": invalid}
        return {"info": info, "data": rows}

    def _report(self, req: Request) -> Reply:
        msg_id = req.path.rsplit("/", 1)[-1]
        if not _is_uuid(msg_id):
            raise _err(400, 1165, "The id is not valid")
        with self.lock:
            sms = next((s for s in self.sent if s.gateway_message_id == msg_id), None)
            if sms is None:
                raise _err(404, 1160, "Message not found")
            return Reply(200, {"data": sms.row()})

    def _balance(self, req: Request) -> Reply:
        with self.lock:
            return Reply(200, {"balance": round(self.balance, 6), "currency": "eur", "billing": "prepaid"})


def main(argv: list[str] | None = None) -> None:
    run_cli(FakeSmsCx, "Run the fake SMS.CX gateway in the foreground.", argv=argv, port=8765,
            client_id="demo-client", client_secret="demo-secret", api_key="")  # "" = no API key


if __name__ == "__main__":
    main()
