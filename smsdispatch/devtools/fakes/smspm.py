"""A fake SMSPM gateway: a real HTTP server on 127.0.0.1 (stdlib only).

Speaks the protocol written down in docs/gateways/smspm.md (SMSPM): one endpoint at the root, GET
with query parameters or POST with a JSON (or form) body; `hash` + `token` on every request;
`toNumber` as a string or an array of up to 100 numbers, `text`, `fromNumber`, optional `callbackUrl`;
the v2.0 answer `{"messages": [{"id", "toNumber", "status": "Added to queue"}]}` and
errors as `{"error": "..."}` with the documented texts. Other methods → 405. The server, the
request log, the accepted-SMS list and failure injection come from FakeGateway (base.py).

SMSPM documents little beyond that, so several details here are inferred (tagged "inferred" below):
every HTTP status except 405 (400 for the documented errors, 401 for a wrong hash/token with
`{"error": "Invalid hash or token"}`), the wording of the insufficient-balance and sender errors, the
limit on numbers per request being enforced, a comma-separated `toNumber` string on GET, the checks on
a number (7 to 15 digits), and how a refused number shows in the answer: as its own `messages[]`
element `{"toNumber", "status": "rejected", "error": "Invalid recipient number"}` with no id, while the
other numbers of the request are accepted and charged. A request is charged for all its accepted
numbers or refused as a whole. SMSPM has no status or balance endpoint here (unreadable or
not found) and no tokens; callbacks are not sent.

Run standalone:  python -m smsdispatch.devtools.fakes.smspm --port 8769
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass
from typing import Any, cast

from .base import Accepted, FakeGateway, Reply, Request, run_cli

__all__ = ["FakeSmsPm", "PmSms", "main"]

DEFAULT_SENDER = "SMSPM.com"     # the pre-activated default sender
QUEUED = "Added to queue"        # the status of an accepted message
MAX_RECIPIENTS = 100             # "up to 100 per request"
REFUSED = "rejected"             # inferred: the status of a refused number in messages[]


@dataclass
class PmSms(Accepted):
    """One SMS SMSPM accepted. There is no per-message client reference and no call reference in the
    protocol, so client_ref and call_ref stay None."""

    callback_url: str | None = None
    parts: int = 1


def _err(status: int, message: str) -> Reply:
    return Reply(status, {"error": message})  # the documented error shape


def _parts(text: str) -> int:
    """Segments: ASCII as GSM-7 160/153 chars, else UCS-2 70/67 (an approximation, inferred)."""
    single, multi = (160, 153) if text.isascii() else (70, 67)
    return 1 if len(text) <= single else math.ceil(len(text) / multi)


def _numbers(value: Any) -> list[str]:
    """`toNumber` as a list of entries, "+" and spaces dropped; a string may list several with commas
    (inferred, for GET)."""
    items = value if isinstance(value, list) else str(value if value is not None else "").split(",")
    return [n for n in (str(i).replace(" ", "").removeprefix("+") for i in items) if n]


class FakeSmsPm(FakeGateway):
    """The fake SMSPM. All observation and control methods are thread-safe."""

    prefix = ""
    send_path = "/"
    name = "smspm"
    has_tokens = False

    def __init__(self, *, hash: str = "demo-hash", token: str = "demo-token", host: str = "127.0.0.1",
                 port: int = 0, balance: float = 100_000, price: float = 50):
        super().__init__(host=host, port=port, balance=balance, price=price)
        self.hash, self.token = hash, token
        self.approved_senders: set[str] | None = None  # None: every well-formed sender ID is approved

    @property
    def sent(self) -> list[PmSms]:
        return cast("list[PmSms]", self.accepted)

    # ----------------------------------------------------------------- protocol
    def route(self, req: Request) -> Reply:
        if req.path != "/":
            raise _err(404, "Not found")  # inferred: the API has one endpoint
        if req.method not in ("GET", "POST"):
            raise _err(405, "Method Not Allowed")  # documented status (the body is inferred)
        params = req.query if req.method == "GET" else {**req.query, **req.fields}
        if "_json" in params:
            raise _err(400, "JSON body must be an object")  # inferred
        self._check_credentials(params)
        numbers = _numbers(params.get("toNumber"))
        if not numbers:
            raise _err(400, "At least one recipient number is required")
        if len(numbers) > MAX_RECIPIENTS:
            raise _err(400, f"Too many recipients: at most {MAX_RECIPIENTS} per request")  # inferred
        text = params.get("text")
        if not isinstance(text, str) or not text:
            raise _err(400, "Message text is required")
        sender = str(params.get("fromNumber") or DEFAULT_SENDER)
        self._check_sender(sender)
        callback = params.get("callbackUrl")
        return Reply(200, {"messages": self._accept(numbers, text, sender, str(callback) if callback else None)})

    def _check_credentials(self, params: dict[str, Any]) -> None:
        if not params.get("hash"):
            raise _err(400, "Hash is required")
        if not params.get("token"):
            raise _err(400, "Token is required")
        if (str(params["hash"]), str(params["token"])) != (self.hash, self.token):
            raise _err(401, "Invalid hash or token")  # inferred status and text

    def _check_sender(self, sender: str) -> None:
        """Alphanumeric up to 11 characters or numeric up to 15 digits, and approved."""
        if len(sender) > (15 if sender.isdigit() else 11):
            raise _err(400, "Sender ID is too long")  # inferred wording
        with self.lock:
            if self.approved_senders is not None and sender not in self.approved_senders:
                raise _err(400, "Sender ID is not approved")  # inferred wording

    def _accept(self, numbers: list[str], text: str, sender: str, callback: str | None) -> list[dict[str, Any]]:
        """Refused numbers get a refusal element; the rest are charged together and recorded."""
        parts = _parts(text)
        with self.lock:
            refused = {n for n in numbers
                       if n in self.rejected or not (n.isdigit() and n.isascii() and 7 <= len(n) <= 15)}
            good = [n for n in numbers if n not in refused]
            if good and not self.charge(self.price * parts * len(good)):
                raise _err(400, "Insufficient balance")  # inferred status and wording
            elements: list[dict[str, Any]] = []
            for n in numbers:
                if n in refused:
                    elements.append({"toNumber": n, "status": REFUSED, "error": "Invalid recipient number"})
                    continue
                sms = self.record(PmSms(gateway_message_id=str(uuid.uuid4()), to=n, text=text, sender=sender,
                                        client_ref=None, call_ref=None, status=QUEUED, received_at=time.monotonic(),
                                        callback_url=callback, parts=parts))
                elements.append({"id": sms.gateway_message_id, "toNumber": n, "status": QUEUED})
            return elements


def main(argv: list[str] | None = None) -> None:
    run_cli(FakeSmsPm, "Run the fake SMSPM gateway in the foreground.", argv=argv,
            port=8769, hash="demo-hash", token="demo-token")


if __name__ == "__main__":
    main()
