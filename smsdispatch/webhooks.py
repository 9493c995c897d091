"""Delivery-report webhooks: a small WSGI app for Eskiz, DevSMS and SMS.CX callbacks.

Mount `smsdispatch.webhooks:application` under any WSGI server, or run `smsdispatch webhooks`.
Routes: ``POST /<gateway>/<secret>`` where gateway is eskiz, devsms or smscx. None of the three signs
its callbacks (providers.md §1.5, §2.5, §4.4), so the secret in the URL we hand them
(SMSDISPATCH_WEBHOOK_SECRET) is what authenticates a report: a wrong or missing one answers 404 and
a malformed body 400, and neither changes anything.

A report is applied with `Records.advance`, the same step beat's polling uses: only `accepted` moves
to `delivered` or `failed`, so a callback and a poll agree whatever their order, and a late "still in
flight" report can never undo a delivery. Messages are found by our id where the gateway echoes it
(Eskiz `user_sms_id`), else by the gateway's message id (index kept by records.py).

Payloads: Eskiz §1.5 (JSON or form, one report per request); SMS.CX `dlr_update` with up to 200
reports; DevSMS undocumented — inferred to relay Eskiz's fields (`status`, and `sms_id` /
`request_id` / `user_sms_id`), each read tolerantly.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from .config import WEBHOOK_GATEWAYS, Settings
from .gateways.eskiz import map_status as eskiz_status
from .records import MessageStatus, Records

log = logging.getLogger("smsdispatch.webhooks")

MAX_BODY = 1_000_000
NOT_YET_ACCEPTED = ("queued", "sending", "retrying")
SMSCX_FINAL = {"DELIVERED": MessageStatus.DELIVERED, "FAILED": MessageStatus.FAILED,
               "REJECTED": MessageStatus.FAILED, "NO COVERAGE": MessageStatus.FAILED}


class BadRequest(Exception):
    pass


def reports(gateway: str, body: dict[str, Any]) -> list[tuple[list[str], MessageStatus | None, str]]:
    """(references to try, our status or None if not final, the gateway's word) per report in a body."""
    if gateway == "smscx":
        if body.get("event") != "dlr_update":
            return []                               # other SMS.CX events: not ours to handle
        rows = body.get("data")
        if not isinstance(rows, list) or len(rows) > 200:
            raise BadRequest("dlr_update needs a data list of at most 200 reports")
        out = []
        for row in rows:
            if not isinstance(row, dict) or not row.get("msgId"):
                raise BadRequest("each report needs a msgId")
            word = str(row.get("status") or "").upper()
            status = SMSCX_FINAL.get(word)
            if status is None and row.get("errorCode"):
                status = MessageStatus.FAILED       # "a non-null errorCode: could not be delivered" (§4.4)
            out.append(([str(row.get("trackData") or ""), str(row["msgId"])], status, word))
        return out
    word = str(body.get("status") or "")
    if not word:
        raise BadRequest("a delivery report needs a status")
    refs = [str(body.get(k) or "") for k in ("user_sms_id", "request_id", "message_id", "sms_id", "id")]
    status = eskiz_status(word)   # DevSMS relays Eskiz's vocabulary (inferred)
    return [(refs, status if status in (MessageStatus.DELIVERED, MessageStatus.FAILED) else None, word)]


class Webhooks:
    def __init__(self, settings: Settings, records: Records) -> None:
        self.settings, self.records = settings, records
        self.secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else ""

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        status, body = self.handle(environ)
        data = json.dumps(body).encode()
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]

    def handle(self, environ: dict) -> tuple[str, dict]:
        parts = [p for p in environ.get("PATH_INFO", "").split("/") if p]
        if len(parts) != 2 or parts[0] not in WEBHOOK_GATEWAYS:
            return "404 Not Found", {"error": "not found"}
        gateway, secret = parts
        if not self.secret or not hmac.compare_digest(secret.encode(), self.secret.encode()):
            log.warning("webhook for %s with a wrong secret refused", gateway)
            return "404 Not Found", {"error": "not found"}     # do not confirm the route exists
        if environ.get("REQUEST_METHOD") != "POST":
            return "405 Method Not Allowed", {"error": "POST only"}
        try:
            found = reports(gateway, _body(environ))
        except BadRequest as e:
            return "400 Bad Request", {"error": str(e)}
        applied = early = 0
        for refs, status, word in found:
            message_id = self._find(refs)
            if message_id and status is not None:
                if self.records.advance(message_id, status, note=f"{gateway} callback: {word}",
                                        raw_status=word, **_error_for(status, gateway, word)):
                    applied += 1
                elif (self.records.get(message_id) or {}).get("status") in NOT_YET_ACCEPTED:
                    early += 1
        if early:
            # The report beat our own record of the acceptance (a race of milliseconds): ask the
            # gateway to call again rather than drop it. The others were applied; repeats are no-ops.
            return "503 Service Unavailable", {"reports": len(found), "applied": applied, "retry": early}
        return "200 OK", {"reports": len(found), "applied": applied}

    def _find(self, refs: list[str]) -> str | None:
        for ref in filter(None, refs):
            if self.records.get(ref) is not None:
                return ref
            found = self.records.by_gateway_id(ref)
            if found:
                return found
        return None


def _body(environ: dict) -> dict[str, Any]:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise BadRequest("bad Content-Length") from None
    if length <= 0 or length > MAX_BODY:
        raise BadRequest("a body of 1 byte to 1 MB is required")
    raw = environ["wsgi.input"].read(length)
    kind = environ.get("CONTENT_TYPE", "")
    try:
        if "application/x-www-form-urlencoded" in kind:
            return {k: v[-1] for k, v in parse_qs(raw.decode(), keep_blank_values=True).items()}
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("the body is neither JSON nor a form") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def _error_for(status: MessageStatus, gateway: str, word: str) -> dict[str, Any]:
    if status is MessageStatus.FAILED:
        return {"error": {"code": "undelivered", "message": f"{gateway} reports {word}"}}
    return {}


def make_app(settings: Settings | None = None) -> Webhooks:
    from .worker import app
    runtime = app.smsdispatch
    return Webhooks(settings or runtime.settings, runtime.dispatcher.records)


def __getattr__(name: str):
    if name == "application":       # `smsdispatch.webhooks:application` for gunicorn & co, built on use
        return make_app()
    raise AttributeError(name)
