"""A fake SMSFlow (South Africa) SMS gateway: a real HTTP server on 127.0.0.1 (stdlib only).

Speaks the protocol of docs/gateways/smsflow.md: a token from `GET /api/integration/authentication`
with HTTP Basic, `POST /api/integration/BulkMessages`, `GET /api/integration/Balance`
and the error envelope of the SDK fixtures. There is no status endpoint and no webhook. The server,
the request log, the accepted-SMS list and failure injection come from FakeGateway (base.py).

SMSFlow documents little beyond its SDK fixtures, so several details here are inferred (tagged
"inferred" below): the 401 body for a bad or expired token, the codes INSUFFICIENT_BALANCE,
TOO_MANY_MESSAGES, VALIDATION_ERROR and NOT_FOUND, that errorReport names a refused number as
`messages[<i>].destination` while the rest of the call is accepted, that a call whose every number is
refused is answered 400 INVALID_DESTINATION, the limit of 100 messages per call (SMSPortal's), that
routes and JSON keys are case-insensitive (ASP.NET defaults), the price per part and the segment
arithmetic. Scripted faults answer before the token is checked.

Run standalone:  python -m smsdispatch.devtools.fakes.smsflow --port 8767
"""

from __future__ import annotations

import math
import secrets
import time
from dataclasses import dataclass
from typing import Any

from .base import Accepted, FakeGateway, Reply, Request, run_cli

__all__ = ["FakeSmsFlow", "FlowSms", "main"]

AUTH_PATH = "/api/integration/authentication"
SEND_PATH = "/api/integration/BulkMessages"
BALANCE_PATH = "/api/integration/Balance"
MAX_MESSAGES = 100  # inferred from SMSPortal's documented limit
STATUS = "submitted"  # inferred: SMSFlow exposes no status words
CODES = {400: "VALIDATION_ERROR", 401: "UNAUTHORIZED", 404: "NOT_FOUND", 429: "TOO_MANY_REQUESTS",
         500: "INTERNAL_SERVER_ERROR", 503: "SERVICE_UNAVAILABLE"}  # 503: fixture; the rest inferred


@dataclass
class FlowSms(Accepted):
    """One SMS SMSFlow accepted: `event_id` is its submission's id (also its gateway_message_id)."""

    event_id: int
    campaign: str
    check_opt_outs: bool
    start_delivery_utc: str | None
    parts: int
    cost: float


def _parts(text: str) -> int:
    """GSM-7 160/153 chars, else UCS-2 70/67 (an approximation, inferred)."""
    single, multi = (160, 153) if text.isascii() else (70, 67)
    return 1 if len(text) <= single else math.ceil(len(text) / multi)


def _err(status: int, code: str, message: str, field: str | None = None) -> Reply:
    error: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    return Reply(status, {"statusCode": status, "errors": [error]})


def _key(d: dict, name: str) -> Any:
    """A JSON property, matched case-insensitively like ASP.NET model binding (inferred)."""
    return next((v for k, v in d.items() if isinstance(k, str) and k.lower() == name.lower()), None)


class FakeSmsFlow(FakeGateway):
    """The fake SMSFlow. All observation and control methods are thread-safe."""

    prefix = ""
    send_path = SEND_PATH
    name = "smsflow"
    has_tokens = True

    def __init__(self, *, client_id: str = "demo-client", client_secret: str = "demo-secret",
                 token_minutes: int = 120, host: str = "127.0.0.1", port: int = 0,
                 balance: float = 1000.0, price: float = 0.25):
        super().__init__(host=host, port=port, balance=balance, price=price)
        self.client_id, self.client_secret, self.token_minutes = client_id, client_secret, token_minutes
        self.authentications = 0
        self._tokens: dict[str, float] = {}  # token -> monotonic expiry (0: expired by expire_token)
        self._next_event = 1000

    # ----------------------------------------------------------------- SMSFlow-specific control
    @property
    def sent(self) -> list[FlowSms]:
        return [a for a in self.accepted if isinstance(a, FlowSms)]

    def expire_token(self) -> None:
        """Every token issued so far answers 401 from now on."""
        with self.lock:
            self._tokens = dict.fromkeys(self._tokens, 0.0)
            self.notify()

    def reset(self) -> None:
        """Also forgets the authentication counter; tokens stay as they are."""
        with self.lock:
            super().reset()
            self.authentications = 0

    def error_body(self, status: int, message: str) -> Any:
        return {"statusCode": status, "errors": [{"code": CODES.get(status, "SMSFLOW_ERROR"), "message": message}]}

    # ----------------------------------------------------------------- protocol
    def route(self, req: Request) -> Reply:
        path = req.path.rstrip("/").lower()  # inferred: ASP.NET routes ignore case
        if (req.method, path) == ("GET", AUTH_PATH.lower()):
            return self._authenticate(req)
        handlers = {("POST", SEND_PATH.lower()): self._send, ("GET", BALANCE_PATH.lower()): self._balance}
        handler = handlers.get((req.method, path))
        if handler is None:
            raise _err(404, "NOT_FOUND", "Not found.")  # inferred
        with self.lock:
            expiry = self._tokens.get(req.bearer or "")
        if expiry is None or expiry <= time.monotonic():
            raise _err(401, "UNAUTHORIZED", "Token is invalid or expired.")  # inferred
        return handler(req)

    def _authenticate(self, req: Request) -> Reply:
        if req.basic != (self.client_id, self.client_secret):
            # the SDK fixture, exactly (no statusCode there)
            raise Reply(401, {"errors": [{"code": "AUTHENTICATION_FAILED", "message": "Invalid credentials."}]})
        token = secrets.token_urlsafe(32)
        with self.lock:
            self._tokens[token] = time.monotonic() + self.token_minutes * 60
            self.authentications += 1
        # fields token/expiresInMinutes/schema; "Basic" as in the SDK fixture (clients send Bearer)
        return Reply(200, {"token": token, "expiresInMinutes": self.token_minutes, "schema": "Basic"})

    def _send(self, req: Request) -> Reply:
        options = _key(req.fields, "SendOptions")
        options = options if isinstance(options, dict) else {}
        messages = _key(req.fields, "messages")
        if not isinstance(messages, list) or not messages:
            raise _err(400, "MESSAGES_REQUIRED", "At least one message is required.", "messages")  # SDK code
        if len(messages) > MAX_MESSAGES:
            raise _err(400, "TOO_MANY_MESSAGES", f"At most {MAX_MESSAGES} messages per request.", "messages")
        batch, report = [], []
        for i, m in enumerate(messages):
            content = _key(m, "content") if isinstance(m, dict) else None
            if not isinstance(content, str) or not content:
                raise _err(400, "VALIDATION_ERROR", "Content is required.", f"messages[{i}].content")
            destination = str(_key(m, "destination") or "").strip()
            with self.lock:
                refused = destination in self.rejected
            if refused or not (destination.isdigit() and destination.isascii() and 9 <= len(destination) <= 15):
                report.append({"code": "INVALID_DESTINATION", "message": "Invalid destination.",
                               "field": f"messages[{i}].destination"})
            else:
                batch.append((destination, content, _parts(content)))
        if not batch:  # inferred: nothing left to send is a plain 400, the fixture's body
            raise _err(400, "INVALID_DESTINATION", "Invalid destination.", report[0]["field"])
        parts = sum(p for _, _, p in batch)
        with self.lock:
            if not self.charge(parts * self.price):
                raise _err(400, "INSUFFICIENT_BALANCE", "Insufficient balance.")  # inferred
            event_id, self._next_event = self._next_event, self._next_event + 1
            campaign = str(_key(options, "campaignName") or "SMSFlow API")  # the .NET/Node SDK default
            check = _key(options, "checkOptOuts")
            start = _key(options, "startDeliveryUtc")
            for destination, content, p in batch:
                self.record(FlowSms(
                    gateway_message_id=str(event_id), to=destination, text=content, sender=None,
                    client_ref=None, call_ref=None, status=STATUS, received_at=time.monotonic(),
                    event_id=event_id, campaign=campaign, check_opt_outs=check is not False,
                    start_delivery_utc=str(start) if start is not None else None, parts=p, cost=p * self.price))
            remaining = self.balance
        cost = round(parts * self.price, 4)
        return Reply(200, {"statusCode": 200, "errors": None, "sendResponse": {
            "cost": cost, "remainingBalance": round(remaining, 4), "eventId": event_id, "sample": batch[0][1],
            "messages": len(batch), "parts": parts,
            "costBreakdown": [{"quantity": parts, "cost": cost, "network": "South Africa"}],  # inferred
            "errorReport": report}})

    def _balance(self, req: Request) -> Reply:
        with self.lock:
            return Reply(200, {"balance": self.balance})


def main(argv: list[str] | None = None) -> None:
    run_cli(FakeSmsFlow, "Run the fake SMSFlow (South Africa) gateway in the foreground.", argv=argv,
            port=8767, balance=1000.0, client_id="demo-client", client_secret="demo-secret", token_minutes=120)


if __name__ == "__main__":
    main()
