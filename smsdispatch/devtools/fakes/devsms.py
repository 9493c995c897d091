"""A fake DevSMS.uz gateway: a real HTTP server on 127.0.0.1 (stdlib only, plus our segment counter).

Speaks the protocol of docs/gateways/devsms.md: a static Bearer token fixed at construction,
`POST /send_sms.php` with the `eskiz`/`simple`/`universal_otp` types, `GET /get_status.php` by
`sms_id` or `request_id`, `GET /get_balance.php`, the documented status words and the
`{"success": false, "error": ...}` envelope. Server, request log, accepted-SMS list and failure
injection come from FakeGateway (base.py).

DevSMS documents little beyond the happy path, so these are inferred (tagged "inferred" below): every
HTTP status of an error (401 bad token, 400 invalid input / refused number / low balance, 404 unknown
route or id, 405 wrong method), the wording of the error texts (Uzbek, like the uz docs), the body of
`get_status.php` (`data.status`, as third-party code reads it), the text the universal OTP templates
produce, that a new message is `waiting` until set_status() moves it, and the 429 body (no rate limit is
documented). `currency="USD"` answers money as "$0.079"-style strings (the en docs), else integers
in so'm (the uz docs). Not served: `get_history.php` (undocumented response) and callbacks.

Run standalone:  python -m smsdispatch.devtools.fakes.devsms --port 8766 --token demo-token
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, cast

from ...segments import count_segments
from .base import Accepted, FakeGateway, Reply, Request, run_cli

__all__ = ["FakeDevSms", "DevSmsSent", "main"]

TASHKENT = timezone(timedelta(hours=5))
DEFAULT_SENDER = "4546"  # `from` defaults to 4546
TYPES = ("eskiz", "simple", "universal_otp")  # the documented `type` values
# inferred: the real template texts are not published; 1 = operation confirmation, 2 = password
TEMPLATES = {1: "{service}: amaliyotni tasdiqlash kodi {code}", 2: "{service}: parolni tiklash kodi {code}"}
OTHER_TEMPLATE = "{service}: tasdiqlash kodi {code}"
BAD_PHONE = "Telefon raqami noto'g'ri"  # inferred wording ("the phone number is wrong")
LOW_BALANCE = "Balans yetarli emas"  # inferred wording ("the balance is not enough")


@dataclass
class DevSmsSent(Accepted):
    """One SMS DevSMS accepted: `gateway_message_id` is str(sms_id); `request_id` the Eskiz UUID."""

    request_id: str = ""
    kind: str = "eskiz"
    callback_url: str | None = None
    parts_count: int = 1
    cost: float = 0
    created_at: str = ""

    def refs(self) -> set[str]:
        return super().refs() | {self.request_id}


def _err(status: int, message: str) -> Reply:
    return Reply(status, {"success": False, "error": message})


class FakeDevSms(FakeGateway):
    """The fake DevSMS. All observation and control methods are thread-safe."""

    prefix = "/api"
    send_path = "/send_sms.php"
    name = "devsms"
    has_tokens = False  # a static token: nothing expires

    def __init__(self, *, token: str = "demo-token", currency: str = "UZS", host: str = "127.0.0.1",
                 port: int = 0, balance: float = 100_000, price: float | None = None):
        if currency not in ("UZS", "USD"):
            raise ValueError("currency must be UZS or USD")
        if price is None:  # the docs' examples: 50 so'm (uz), "$0.005" (en) per part
            price = 0.005 if currency == "USD" else 50
        super().__init__(host=host, port=port, balance=balance, price=price)
        self.token, self.currency = token, currency
        self._next_id = 1

    @property
    def sent(self) -> list[DevSmsSent]:
        return cast("list[DevSmsSent]", self.accepted)

    def money(self, amount: float) -> int | float | str:
        if self.currency == "USD":
            return f"${amount:.3f}"
        return int(amount) if float(amount).is_integer() else amount

    def error_body(self, status: int, message: str) -> Any:
        return {"success": False, "error": message}

    # ----------------------------------------------------------------- protocol
    def route(self, req: Request) -> Reply:
        routes: dict[str, tuple[str, Callable[[Request], Reply]]] = {
            "/send_sms.php": ("POST", self._send),
            "/get_status.php": ("GET", self._status),
            "/get_balance.php": ("GET", self._balance),
        }
        if req.path not in routes:
            raise _err(404, "Not found")  # inferred
        method, handler = routes[req.path]
        if req.method != method:
            raise _err(405, "Method not allowed")  # inferred
        if req.bearer != self.token:
            raise _err(401, "Invalid API token")  # inferred: status and text undocumented
        if "_json" in req.fields:
            raise _err(400, "JSON body must be an object")
        return handler(req)

    def _send(self, req: Request) -> Reply:
        f = req.fields
        phone = str(f.get("phone") or "").strip().removeprefix("+")
        if not (phone.isascii() and phone.isdigit() and 9 <= len(phone) <= 15):
            raise _err(400, BAD_PHONE)
        kind = str(f.get("type") or "eskiz")
        if kind not in TYPES:
            raise _err(400, f"type: {', '.join(TYPES)}")  # inferred
        text = self._otp_text(f) if kind == "universal_otp" else str(f.get("message") or "")
        if not text.strip():
            raise _err(400, "message majburiy")  # inferred ("message is required")
        sender = None if kind == "universal_otp" else str(f.get("from") or DEFAULT_SENDER)
        with self.lock:
            if phone in self.rejected:
                raise _err(400, BAD_PHONE)
            parts = count_segments(text)
            cost = self.price * parts
            if not self.charge(cost):
                raise _err(400, LOW_BALANCE)
            sms_id, request_id = self._next_id, str(uuid.uuid4())
            self._next_id += 1
            self.record(DevSmsSent(
                gateway_message_id=str(sms_id), to=phone, text=text, sender=sender, client_ref=None,
                call_ref=None, status="waiting", received_at=time.monotonic(), request_id=request_id,
                kind=kind, callback_url=f.get("callback_url") or None, parts_count=parts, cost=cost,
                created_at=datetime.now(TASHKENT).strftime("%Y-%m-%d %H:%M:%S")))
            data = {"sms_id": sms_id, "request_id": request_id, "status": "sent", "parts_count": parts,
                    "total_cost": self.money(cost), "balance": self.money(self.balance), "type": kind}
        return Reply(200, {"success": True, "message": "SMS muvaffaqiyatli yuborildi", "data": data})

    @staticmethod
    def _otp_text(f: dict[str, Any]) -> str:
        template, service, code = f.get("template_type"), f.get("service_name"), f.get("otp_code")
        if isinstance(template, bool) or not isinstance(template, int) or template < 1:
            raise _err(400, "template_type noto'g'ri")  # inferred
        if not isinstance(service, str) or not service.strip():
            raise _err(400, "service_name majburiy")  # inferred; the real one is also AI-moderated
        if not isinstance(code, str) or not code.isdigit():
            raise _err(400, "otp_code noto'g'ri")  # inferred
        return TEMPLATES.get(template, OTHER_TEMPLATE).format(service=service, code=code)

    def _status(self, req: Request) -> Reply:
        sms_id, request_id = req.query.get("sms_id"), req.query.get("request_id")
        if not sms_id and not request_id:
            raise _err(400, "sms_id yoki request_id majburiy")  # inferred
        with self.lock:
            sms = next((s for s in self.sent if (s.gateway_message_id == sms_id if sms_id
                                                 else s.request_id == request_id)), None)
            if sms is None:
                raise _err(404, "SMS topilmadi")  # inferred ("SMS not found")
            data = {"sms_id": int(sms.gateway_message_id), "request_id": sms.request_id, "phone": sms.to,
                    "message": sms.text, "status": sms.status, "parts_count": sms.parts_count,
                    "total_cost": self.money(sms.cost), "type": sms.kind, "created_at": sms.created_at}
        return Reply(200, {"success": True, "data": data})  # inferred shape (data.status)

    def _balance(self, req: Request) -> Reply:
        today = datetime.now(TASHKENT).strftime("%Y-%m-%d")
        with self.lock:
            sent = self.sent
            day = [s for s in sent if s.created_at.startswith(today)]
            month = [s for s in sent if s.created_at.startswith(today[:7])]
            stats = {"total_sms": len(sent), "total_spent": self.money(sum(s.cost for s in sent)),
                     "today_sms": len(day), "today_spent": self.money(sum(s.cost for s in day)),
                     "month_sms": len(month), "month_spent": self.money(sum(s.cost for s in month))}
            data = {"balance": self.money(self.balance), "sms_price": self.money(self.price), "statistics": stats}
        return Reply(200, {"success": True, "data": data})


def main(argv: list[str] | None = None) -> None:
    run_cli(FakeDevSms, "Run the fake DevSMS.uz gateway in the foreground.", argv=argv,
            port=8766, token="demo-token", currency="UZS")


if __name__ == "__main__":
    main()
