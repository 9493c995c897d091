"""Delivery-report webhooks: a small WSGI app for Eskiz, DevSMS and SMS.CX callbacks.

Mount `smsdispatch.webhooks:application` under any WSGI server, or run `smsdispatch webhooks` (waitress,
see `serve`). Routes: ``POST /<gateway>/<secret>`` where gateway is eskiz, devsms or smscx, and the
operators' pages (pages.py: ``GET /metrics``, ``GET /healthz``), dispatched first, by path. None of the
three signs its callbacks (docs/gateways/: eskiz, devsms, smscx), so the secret in the URL we hand them is what
authenticates a report: each gateway has its own (WEBHOOK_SECRETS, else WEBHOOK_SECRET), and during a
rotation the old ones listed in WEBHOOK_OLD_SECRETS are accepted too. A wrong or missing secret answers
404, a body we cannot read a 4xx, and neither changes anything.

A report is applied with `Records.advance`, the same step beat's polling uses: only `accepted` moves
to `delivered` or `failed`, so a callback and a poll agree whatever their order, and a late "still in
flight" report can never undo a delivery. Messages are found by our id where the gateway echoes it
(Eskiz `user_sms_id`), else by the gateway's message id in that gateway's own index (records.py). A
report settles only a message of the gateway whose route it came in on: one for another gateway's
message (two gateways may use the same ids; a leaked secret of one must not reach the others) changes
nothing, and is logged, counted in ``sms:webhook:foreign:<gateway>`` and in the answer (`foreign`).

Payloads are read by the parser each gateway's spec declares (gateways/registry.py; built-ins: Eskiz's
report, JSON or form, one per request; SMS.CX `dlr_update` with up to 200 reports; DevSMS undocumented,
inferred to relay Eskiz's fields), each with that gateway's own status map.

Other apps share the port under a path prefix of their own (`mounts`): /metrics and /healthz
(pages.py), and /status, the status page (statuspage/), when its credentials are set.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import parse_qs

import redis

from .config import WEBHOOK_SECRET_CHARS, Settings
from .errors import BadReport
from .gateways import registry
from .records import MessageStatus, Records

log = logging.getLogger("smsdispatch.webhooks")

#: An SMS.CX dlr_update of 200 reports is about 60 KB; nothing a gateway sends comes near this.
MAX_BODY = 256 * 1024
MAX_REF = 200           # a reference longer than this is nobody's id: not looked up
MAX_WORD = 64           # the gateway's status word, as stored in the record
MAX_FORM_FIELDS = 100
NOT_YET_ACCEPTED = ("queued", "sending", "retrying")


class BadRequest(Exception):
    def __init__(self, message: str, status: str = "400 Bad Request") -> None:
        super().__init__(message)
        self.status = status


def reports(gateway: str, body: dict[str, Any]) -> list[registry.Report]:
    """(references to try, our status or None if not final, the gateway's word) per report in a body,
    read by the gateway's own parser; BadRequest (400) for a body it cannot read."""
    parse = registry.get(gateway).parse_reports
    if parse is None:
        return []
    try:
        found = parse(body)
    except BadReport as e:
        raise BadRequest(str(e)) from None
    return [(refs, status, word[:MAX_WORD]) for refs, status, word in found]


class Webhooks:
    def __init__(self, settings: Settings, records: Records,
                 mounts: Mapping[str, Callable[[dict, Callable], Iterable[bytes]]] | None = None) -> None:
        """`mounts`: WSGI apps by path prefix, served at that path and under it instead of the reports
        (make_app: pages.py's /metrics and /healthz, statuspage/'s /status). A report's path has two
        parts, `/<gateway>/<secret>`; a mount's prefix is never a gateway's name."""
        self.settings, self.records = settings, records
        self.mounts = dict(mounts or {})        # path prefix -> WSGI app served there instead
        # current first, then the old ones still accepted during a rotation
        self.secrets = {g: [x.encode() for x in settings.accepted_webhook_secrets(g)]
                        for g in registry.webhook_names()}

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        mounted = self._mounted(environ)
        if mounted is not None:
            return mounted(environ, start_response)
        try:
            status, body = self.handle(environ)
        except redis.RedisError as e:      # the store, not the report: let the gateway call again
            log.warning("webhook not processed, Redis failed: %s", type(e).__name__)
            status, body = "503 Service Unavailable", {"error": "store unavailable, try again"}
        except Exception:
            # A bug. Logged here, without the request path: a server logging it would print the secret.
            log.exception("webhook failed")
            status, body = "500 Internal Server Error", {"error": "internal error"}
        data = json.dumps(body).encode()
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]

    def _mounted(self, environ: dict) -> Callable | None:
        """The mounted app a path belongs to, with the prefix moved from PATH_INFO to SCRIPT_NAME."""
        path = environ.get("PATH_INFO", "")
        for prefix, app in self.mounts.items():
            if path == prefix or path.startswith(prefix + "/"):
                environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + prefix
                environ["PATH_INFO"] = path[len(prefix):]
                return app
        return None

    def handle(self, environ: dict) -> tuple[str, dict]:
        parts = [p for p in environ.get("PATH_INFO", "").split("/") if p]
        if len(parts) != 2 or parts[0] not in self.secrets:
            return "404 Not Found", {"error": "not found"}
        gateway, secret = parts
        if not self._authentic(gateway, secret):
            log.warning("webhook for %s with a wrong secret refused", gateway)
            return "404 Not Found", {"error": "not found"}     # do not confirm the route exists
        if environ.get("REQUEST_METHOD") != "POST":
            return "405 Method Not Allowed", {"error": "POST only"}
        try:
            found = reports(gateway, _body(environ))
        except BadRequest as e:
            return e.status, {"error": str(e)}
        applied = early = foreign = 0
        for refs, status, word in found:
            message_id, record = self._find(gateway, refs)
            if message_id is None:
                continue
            if record.get("gateway") != gateway:
                foreign += 1
                continue
            if status is None:
                continue
            if self.records.advance(message_id, status, note=f"{gateway} callback: {word}",
                                    raw_status=word, **_error_for(status, gateway, word)):
                applied += 1
            elif (self.records.get(message_id) or {}).get("status") in NOT_YET_ACCEPTED:
                early += 1
        answer = {"reports": len(found), "applied": applied}
        if foreign:
            # Not ours to settle from this route: a gateway's id that another gateway also used, a
            # misrouted callback, or a forgery with a leaked secret of this gateway. Nothing changes.
            self.records.redis.incrby(self.records.keys.webhook_foreign(gateway), foreign)
            log.warning("%d report(s) on the %s route named messages of another gateway: ignored", foreign, gateway)
            answer["foreign"] = foreign
        if early:
            # The report beat our own record of the acceptance (a race of milliseconds): ask the
            # gateway to call again rather than drop it. The others were applied; repeats are no-ops.
            return "503 Service Unavailable", {**answer, "retry": early}
        return "200 OK", answer

    def _authentic(self, gateway: str, secret: str) -> bool:
        """The path's secret is one this gateway's callbacks may carry, compared in constant time
        (every accepted secret is compared, whichever matches)."""
        if not set(secret) <= WEBHOOK_SECRET_CHARS:     # says nothing about the secret: it has none of these
            return False
        given = secret.encode()
        ok = False
        for n, accepted in enumerate(self.secrets[gateway]):
            if hmac.compare_digest(given, accepted):
                ok = True
                if n:
                    log.warning("webhook for %s used an old secret (WEBHOOK_OLD_SECRETS): rotation under way", gateway)
        return ok

    def _find(self, gateway: str, refs: list[str]) -> tuple[str | None, dict[str, Any]]:
        """Our message id for a report and its record, or (None, {}). By our id first (any record,
        its gateway checked by the caller), else through the gateway's own index."""
        for ref in refs:
            if not ref or len(ref) > MAX_REF:
                continue
            try:
                record = self.records.get(ref)
                if record is not None:
                    return ref, record
                found = self.records.by_gateway_id(gateway, ref)
                if found:
                    return found, self.records.get(found) or {}
            except redis.ResponseError:     # e.g. WRONGTYPE: the reference names a key that is no record
                continue
        return None, {}


def _body(environ: dict) -> dict[str, Any]:
    """The report's body as a dict; BadRequest (4xx) for anything else, whatever the bytes."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise BadRequest("bad Content-Length") from None
    if length > MAX_BODY:
        raise BadRequest(f"a body of at most {MAX_BODY} bytes", "413 Content Too Large")
    if length <= 0:
        raise BadRequest("a body is required")
    raw = environ["wsgi.input"].read(length)
    kind = environ.get("CONTENT_TYPE", "")
    try:
        if "application/x-www-form-urlencoded" in kind:
            fields = parse_qs(raw.decode(), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
            return {k: v[-1] for k, v in fields.items()}
        body = json.loads(raw)
    except RecursionError:
        raise BadRequest("the body is nested too deeply") from None
    except (UnicodeDecodeError, ValueError):    # also parse_qs's "too many fields"
        raise BadRequest("the body is neither JSON nor a form") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def _error_for(status: MessageStatus, gateway: str, word: str) -> dict[str, Any]:
    if status is MessageStatus.FAILED:
        return {"error": {"code": "undelivered", "message": f"{gateway} reports {word}"}}
    return {}


def serve(app: Callable, host: str, port: int, *, threads: int = 8, connection_limit: int = 1000,
          channel_timeout: float = 10.0, on_listening: Callable[[int], None] | None = None) -> None:
    """Run the receiver on waitress until stopped. Waitress reads each request whole, on its event
    loop, before a worker thread sees it: a client that sends half a request and stalls holds a
    socket, never a thread, and is dropped after `channel_timeout` seconds without a byte. `threads`
    run the app; beyond `connection_limit` open connections new ones wait in the listen backlog; a
    body over MAX_BODY is refused (413) before it is read. Waitress logs no request lines, so the
    secret in the path stays out of its log."""
    from waitress import create_server

    server = create_server(
        app, host=host, port=port, threads=threads, connection_limit=connection_limit,
        channel_timeout=channel_timeout,
        cleanup_interval=max(0.5, min(30.0, channel_timeout / 2)),   # how often idle channels are looked at
        max_request_body_size=MAX_BODY, max_request_header_size=16 * 1024,
        asyncore_use_poll=True,         # poll(): no 1024-descriptor ceiling of select()
        expose_tracebacks=False, ident="smsdispatch")
    if on_listening is not None:
        on_listening(server.effective_port)
    try:
        server.run()
    finally:
        server.close()


def make_app(settings: Settings | None = None) -> Webhooks:
    from . import statuspage
    from .pages import pages
    from .worker import app
    runtime = app.runtime
    mounts = pages(runtime)                 # /metrics, /healthz
    page = statuspage.make(runtime)         # /status, when its credentials are set
    if page is not None:
        mounts["/status"] = page
    return Webhooks(settings or runtime.settings, runtime.dispatcher.records, mounts)


def __getattr__(name: str):
    if name == "application":       # `smsdispatch.webhooks:application` for gunicorn & co, built on use
        return make_app()
    raise AttributeError(name)
