"""A fake Eskiz.uz SMS gateway: a real HTTP server on 127.0.0.1 (stdlib only).

Speaks the protocol written down in docs/gateways/eskiz.md (Eskiz.uz): bearer-token auth with
login/refresh, send / send-batch / status_by_id / listings / balance, the status
vocabulary and the error bodies SDKs expect. The server, the request log, the accepted-SMS list and
failure injection (5xx, 429, hangs, refused connections) come from FakeGateway (base.py); this file
adds expired tokens, low balance and rejected recipients on top.

Eskiz documents almost no error behaviour, so several details here are inferred (tagged "inferred"
below): the 404 body for an unknown id or route, the 429 body (Eskiz has no documented rate limit), the 400 bodies for invalid input, the 503 body of a hang_next(accept=False), page_size bounds
enforcement, Asia/Tashkent (+05:00) for list date filters, the row order of listings (oldest first),
the `encoding` values (1 = GSM/IA5, 8 = UCS-2, like SMPP data_coding), that a refresh leaves the old
token as it was, and that a whole batch is refused (nothing recorded) when one entry is invalid.
Scripted faults answer before the token is checked. Callbacks are not sent.

Run standalone:  python -m smsdispatch.devtools.fakes.eskiz --port 8765
"""

from __future__ import annotations

import base64
import json
import math
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, cast

from .base import Accepted, FakeGateway, Reply, Request, RequestRecord, parse_body, run_cli

__all__ = ["FakeEskiz", "SentSms", "RequestRecord", "parse_body", "TASHKENT", "main"]  # RequestRecord, parse_body: moved to base

TASHKENT = timezone(timedelta(hours=5))  # Asia/Tashkent has no DST: a fixed offset is exact.
TOKEN_TTL = 30 * 86400  # "token lifetime 30 days"
DEFAULT_SENDER = "4546"  # the SDK default nick
DELIVERED = {"DELIVERED", "PARTDELIVERED", "DELIVRD"}  # `status=delivered` filter: partly/fully delivered
REJECTED = {"REJECTED", "REJECTD", "UNDELIV", "UNDELIVERABLE", "EXPIRED", "DELETED"}
PART_STATE = {"DELIVERED": "DELIVRD", "PARTDELIVERED": "DELIVRD", "REJECTED": "REJECTD"}  # part-level words
TOKEN_INVALID = {"status": "token_invalid", "message": "Token is invalid"}  # an SDK fixture
TOKEN_EXPIRED = {"message": "Expired Token"}  # an SDK fixture


@dataclass
class SentSms(Accepted):
    """One SMS Eskiz accepted: `request_id` is the request's UUID (shared by a batch), `eskiz_id` the
    per-message integer id; status is the message-level word, "ACCEPTED" until set_status()."""

    eskiz_id: int
    callback_url: str | None
    created_at: str
    parts_count: int = 1
    price: float = 0  # total cost charged for this SMS
    updated_at: str = ""

    @property
    def request_id(self) -> str:
        return self.gateway_message_id

    @property
    def mobile_phone(self) -> str:
        return self.to

    @property
    def message(self) -> str:
        return self.text

    @property
    def user_sms_id(self) -> str | None:
        return self.client_ref

    @property
    def dispatch_id(self) -> int | None:
        return int(self.call_ref) if self.call_ref is not None else None

    def refs(self) -> set[str]:  # set_status also finds a message by its integer id
        return super().refs() | {str(self.eskiz_id)}


def _err(status: int, message: str) -> Reply:
    return Reply(status, {"status": "error", "message": message})  # the generic error shape SDKs expect


def _parts(text: str) -> tuple[int, int]:
    """(parts_count, encoding): ASCII as GSM-7 160/153 chars, else UCS-2 70/67 (an approximation, inferred)."""
    gsm = text.isascii()
    single, multi = (160, 153) if gsm else (70, 67)
    return (1 if len(text) <= single else math.ceil(len(text) / multi)), (1 if gsm else 8)


def _now_iso() -> str:
    return datetime.now(TASHKENT).isoformat(timespec="microseconds")


def _parse_local(value: Any, name: str) -> datetime:
    for fmt in ("%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d"):
        try:
            return datetime.strptime(str(value).strip(), fmt).replace(tzinfo=TASHKENT)
        except ValueError:
            pass
    raise _err(400, f"{name} must look like 'YYYY-MM-DD HH:MM'")


def _opt_int(value: Any, name: str) -> int | None:
    if value in (None, ""):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise _err(400, f"{name} must be an integer") from None


class FakeEskiz(FakeGateway):
    """The fake Eskiz. All observation and control methods are thread-safe."""

    prefix = "/api"
    send_path = "/message/sms/send"
    send_paths = ("/message/sms/send", "/message/sms/send-batch")   # what faults and chaos hit by default
    name = "eskiz"
    has_tokens = True

    def __init__(self, *, email: str = "demo@example.com", password: str = "demo-password",
                 host: str = "127.0.0.1", port: int = 0, balance: int = 100_000, price: int = 50):
        super().__init__(host=host, port=port, balance=balance, price=price)
        self.email, self.password = email, password
        self.logins = self.refreshes = 0
        self._tokens: dict[str, bool] = {}  # token -> expired?
        self._next_id = 1

    # ----------------------------------------------------------------- Eskiz-specific observation and control
    @property
    def sent(self) -> list[SentSms]:
        return cast("list[SentSms]", self.accepted)

    def sends_for(self, user_sms_id: str) -> list[SentSms]:
        return [s for s in self.sent if s.user_sms_id == user_sms_id]

    @staticmethod
    def carried(record: RequestRecord) -> list[str]:
        """The user_sms_ids a request's body carried: one for `send`, one per message for `send-batch`."""
        fields = record.fields or {}
        if record.path == "/message/sms/send-batch":
            messages = fields.get("messages")
            return [str(m.get("user_sms_id")) for m in messages if isinstance(m, dict)] \
                if isinstance(messages, list) else []
        return [str(fields["user_sms_id"])] if record.path == "/message/sms/send" and fields.get("user_sms_id") else []

    def send_calls(self) -> list[RequestRecord]:
        """Every request to a send endpoint (single or batch), answered or not."""
        return [r for r in self.requests_log if r.path in self.send_paths]

    def calls_carrying(self, user_sms_id: str) -> list[RequestRecord]:
        """Every send request (single or batch, answered or not) that carried this user_sms_id."""
        return [r for r in self.send_calls() if user_sms_id in self.carried(r)]

    def expire_token(self) -> None:
        with self.lock:
            self._tokens = dict.fromkeys(self._tokens, True)
            self.notify()

    def set_status(self, ref: str, status: str) -> list[Accepted]:
        """By request_id, user_sms_id, dispatch_id or integer id; stamps updated_at."""
        with self.lock:
            hits = super().set_status(ref, status)
            stamp = _now_iso()
            for sms in cast("list[SentSms]", hits):
                sms.updated_at = stamp
        return hits

    def reset(self) -> None:
        """Also forgets the login/refresh counters; tokens stay valid."""
        with self.lock:
            super().reset()
            self.logins = self.refreshes = 0

    def error_body(self, status: int, message: str) -> Any:
        # the fixture 5xx body is {"message": ...}; other errors use the generic shape (inferred).
        return {"message": message} if status >= 500 else {"status": "error", "message": message}

    # ----------------------------------------------------------------- protocol
    def route(self, req: Request) -> Reply:
        if "_json" in req.fields:
            raise _err(400, "JSON body must be an object")
        if (req.method, req.path) == ("POST", "/auth/login"):
            return self._login(req)
        if (req.method, req.path) == ("PATCH", "/auth/refresh"):
            return self._refresh(req)
        routes: dict[tuple[str, str], Callable[[Request], Reply]] = {
            ("GET", "/auth/user"): self._user,
            ("POST", "/message/sms/send"): self._send,
            ("POST", "/message/sms/send-batch"): self._send_batch,
            ("POST", "/message/sms/get-user-messages"): self._user_messages,
            ("POST", "/message/sms/get-user-messages-by-dispatch"): self._by_dispatch,
            ("POST", "/message/sms/get-dispatch-status"): self._dispatch_status,
            ("GET", "/user/get-limit"): self._limit,
        }
        handler = routes.get((req.method, req.path))
        if handler is None and req.method == "GET" and req.path.startswith("/message/sms/status_by_id/"):
            handler = self._status_by_id
        if handler is None:
            raise _err(404, "Not found")  # inferred: Eskiz answers 404 for unknown routes/methods (as for "check")
        with self.lock:
            expired = self._tokens.get(req.bearer or "")
        if expired is None:
            raise Reply(401, TOKEN_INVALID)
        if expired:
            raise Reply(401, TOKEN_EXPIRED)
        return handler(req)

    def _issue_token(self) -> dict:
        def b64(d: dict) -> str:
            return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()
        now = int(time.time())  # JWT-shaped but opaque: the signature is random
        claims = {"sub": self.email, "iat": now, "exp": now + TOKEN_TTL, "jti": uuid.uuid4().hex}
        token = f"{b64({'alg': 'HS256', 'typ': 'JWT'})}.{b64(claims)}.{secrets.token_urlsafe(32)}"
        self._tokens[token] = False
        return {"message": "token_generated", "data": {"token": token}, "token_type": "bearer"}

    def _login(self, req: Request) -> Reply:
        with self.lock:
            if (str(req.fields.get("email", "")), str(req.fields.get("password", ""))) != (self.email, self.password):
                raise Reply(401, {"message": "Invalid credentials", "status": "error"})
            self.logins += 1
            return Reply(200, self._issue_token())

    def _refresh(self, req: Request) -> Reply:
        with self.lock:  # any issued token (expired or not) may be refreshed; the old one stays as it was
            if req.bearer not in self._tokens:
                raise Reply(401, TOKEN_INVALID)
            self.refreshes += 1
            return Reply(200, self._issue_token())

    def _user(self, req: Request) -> Reply:
        stamp = _now_iso()
        data = {"id": 1, "created_at": stamp, "updated_at": stamp, "name": "Demo", "email": self.email,
                "password": "", "role": "user", "status": "active", "is_vip": False, "balance": self.balance}
        return Reply(200, {"status": "success", "data": data, "id": None})

    @staticmethod
    def _phone(value: Any) -> str:
        phone = str(value if value is not None else "").strip().removeprefix("+")
        if not (phone.isdigit() and phone.isascii() and 9 <= len(phone) <= 15):
            raise _err(400, "Invalid phone number")
        return phone

    def _accept(self, request_id: str, batch: list[dict[str, Any]], sender: str,
                callback_url: str | None, dispatch_id: int | None) -> None:
        """Check rejections and balance for the whole batch, then record every SMS (all or nothing)."""
        with self.lock:
            if any(m["phone"] in self.rejected for m in batch):
                raise _err(400, "Invalid phone number")
            sized = [(m, _parts(m["text"])[0]) for m in batch]
            if not self.charge(sum(parts * self.price for _, parts in sized)):
                raise _err(400, "Insufficient balance")
            for m, parts in sized:
                stamp = _now_iso()
                self.record(SentSms(
                    gateway_message_id=request_id, to=m["phone"], text=m["text"], sender=sender,
                    client_ref=m["user_sms_id"], call_ref=str(dispatch_id) if dispatch_id is not None else None,
                    status="ACCEPTED", received_at=time.monotonic(), eskiz_id=self._next_id,
                    callback_url=callback_url, created_at=stamp, parts_count=parts, price=parts * self.price,
                    updated_at=stamp))
                self._next_id += 1

    def _send(self, req: Request) -> Reply:
        f = req.fields
        if not str(f.get("mobile_phone") or "").strip():
            raise _err(400, "mobile_phone is required")
        if not str(f.get("message") or ""):
            raise _err(400, "message is required")
        phone, request_id = self._phone(f["mobile_phone"]), str(uuid.uuid4())
        user_sms_id = str(f["user_sms_id"]) if f.get("user_sms_id") not in (None, "") else None
        self._accept(request_id, [{"phone": phone, "text": str(f["message"]), "user_sms_id": user_sms_id}],
                     str(f.get("from") or DEFAULT_SENDER), f.get("callback_url") or None, None)
        return Reply(200, {"id": request_id, "message": "Waiting for SMS provider", "status": "waiting"})

    def _send_batch(self, req: Request) -> Reply:
        messages = req.fields.get("messages")
        if isinstance(messages, str):  # a form body can carry the list as a JSON string
            try:
                messages = json.loads(messages)
            except ValueError:
                messages = None
        if not isinstance(messages, list) or not messages:
            raise _err(400, "messages must be a non-empty list")
        batch = []
        for m in messages:
            if not isinstance(m, dict) or not str(m.get("text") or ""):
                raise _err(400, "every message needs 'to' and 'text'")
            sid = m.get("user_sms_id")
            batch.append({"phone": self._phone(m.get("to")), "text": str(m["text"]),
                          "user_sms_id": str(sid) if sid not in (None, "") else None})
        request_id = str(uuid.uuid4())
        self._accept(request_id, batch, str(req.fields.get("from") or DEFAULT_SENDER),
                     req.fields.get("callback_url") or None, _opt_int(req.fields.get("dispatch_id"), "dispatch_id"))
        return Reply(200, {"id": request_id, "message": "Waiting for SMS provider",
                           "status": ["waiting"] * len(batch)})

    def _row(self, s: SentSms) -> dict[str, Any]:
        """One message as status_by_id / listing rows show it."""
        dlr = PART_STATE.get(s.status, s.status)
        final = s.status in DELIVERED | REJECTED
        parts = {f"{s.eskiz_id}-{i}": {"group": s.eskiz_id, "accepted": True, "dlr_time": s.updated_at if final else None,
                                       "dlr_state": dlr, "part_index": i, "accept_time": s.created_at,
                                       "accept_status": 0} for i in range(s.parts_count)}
        return {"id": s.eskiz_id, "user_id": 1, "country_id": 83, "connection_id": 1, "smsc_id": 1,
                "dispatch_id": s.dispatch_id, "user_sms_id": s.user_sms_id, "request_id": s.request_id,
                "price": s.price, "total_price": s.price, "is_ad": False, "nick": s.sender, "to": s.mobile_phone,
                "message": s.message, "encoding": _parts(s.message)[1], "parts_count": s.parts_count,
                "parts": parts, "status": s.status, "smsc_data": {k: [dlr] for k in parts},
                "sent_at": s.created_at, "submit_sm_resp_at": s.created_at,
                "delivery_sm_at": s.updated_at if final else None, "created_at": s.created_at,
                "updated_at": s.updated_at}

    def _status_by_id(self, req: Request) -> Reply:
        key = req.path.rsplit("/", 1)[-1]
        with self.lock:  # for a batch request_id the first message answers (inferred)
            sms = next((s for s in self.sent if (str(s.eskiz_id) if key.isdigit() else s.request_id) == key), None)
            if sms is None:
                raise _err(404, "Not found")  # inferred: the not-found answer is undocumented
            return Reply(200, {"status": "success", "data": self._row(sms), "id": None})

    def _filtered(self, req: Request, keep: Callable[[SentSms], bool]) -> list[SentSms]:
        wanted = str(req.query.get("status", req.fields.get("status", "")) or "").lower()
        groups = {"delivered": DELIVERED, "rejected": REJECTED}
        return [s for s in self.sent if keep(s) and (wanted not in groups or s.status in groups[wanted])]

    @staticmethod
    def _totals(rows: list[SentSms]) -> Reply:
        totals: dict[str, int] = {}
        for s in rows:
            totals[s.status] = totals.get(s.status, 0) + 1
        return Reply(200, {"status": "success", "data": [{"status": k, "total": v} for k, v in totals.items()],
                           "id": None})

    def _listing(self, req: Request, rows: list[SentSms], max_size: int) -> Reply:
        if str(req.fields.get("count", "")) == "1":
            return self._totals(rows)
        size_raw = next((src[k] for src in (req.fields, req.query) for k in ("page_size", "page-size")
                         if src.get(k) not in (None, "")), 20)
        size = _opt_int(size_raw, "page_size")
        if size is None or not 20 <= size <= max_size:  # inferred: the documented bounds are enforced
            raise _err(400, f"page_size must be between 20 and {max_size}")
        page = max(1, _opt_int(req.query.get("page") or req.fields.get("page"), "page") or 1)
        last = max(1, math.ceil(len(rows) / size))
        chunk = rows[(page - 1) * size: page * size]
        url = f"{self.base_url}{req.path}"
        data = {"current_page": page, "per_page": size, "last_page": last, "total": len(rows),
                "from": (page - 1) * size + 1 if chunk else None, "to": (page - 1) * size + len(chunk) if chunk else None,
                "path": url, "first_page_url": f"{url}?page=1", "last_page_url": f"{url}?page={last}",
                "next_page_url": f"{url}?page={page + 1}" if page < last else None,
                "prev_page_url": f"{url}?page={page - 1}" if page > 1 else None,
                "result": [self._row(s) for s in chunk], "links": []}
        return Reply(200, {"data": data, "status": "success"})

    def _user_messages(self, req: Request) -> Reply:
        start = _parse_local(req.fields.get("start_date"), "start_date")
        end_raw = req.fields.get("to_date") or req.fields.get("end_date")  # Postman example says end_date
        end = _parse_local(end_raw, "to_date") + timedelta(minutes=1)  # inclusive to the minute

        def in_window(s: SentSms) -> bool:
            return start <= datetime.fromisoformat(s.created_at) < end
        return self._listing(req, self._filtered(req, in_window), 200)

    def _dispatch_id(self, req: Request) -> int:
        dispatch_id = _opt_int(req.fields.get("dispatch_id"), "dispatch_id")
        if dispatch_id is None:
            raise _err(400, "dispatch_id is required")
        return dispatch_id

    def _by_dispatch(self, req: Request) -> Reply:
        dispatch_id = self._dispatch_id(req)
        return self._listing(req, self._filtered(req, lambda s: s.dispatch_id == dispatch_id), 1000)

    def _dispatch_status(self, req: Request) -> Reply:
        dispatch_id = self._dispatch_id(req)
        return self._totals([s for s in self.sent if s.dispatch_id == dispatch_id])

    def _limit(self, req: Request) -> Reply:
        return Reply(200, {"data": {"balance": self.balance}, "status": "success"})


def main(argv: list[str] | None = None) -> None:
    run_cli(FakeEskiz, "Run the fake Eskiz.uz gateway in the foreground.", argv=argv,
            port=8765, email="demo@example.com", password="demo-password")


if __name__ == "__main__":
    main()
