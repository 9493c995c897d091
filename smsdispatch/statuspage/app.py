"""The status page as a WSGI app: routes, methods, the guard, and the headers of every answer.

    GET  /                 search (q=...), and the counts of messages in flight, unsettled and dead
    GET  /message?id=      a message's record and history
    GET  /batches          the newest batches with their progress
    GET  /batch?id=&page=  a batch's progress and its messages, 50 a page
    GET  /gateways         balances, circuits and low-balance alerts per configured gateway
    GET  /dead             the dead letters
    GET  /replay?id=       the confirmation of a replay               } STATUS_ACTIONS only; otherwise
    POST /replay           the replay (csrf, id, accept_duplicate)    } 403, and no link leads there
    GET  /static/status.css

Paths are relative to where the page is mounted (SCRIPT_NAME, /status under `smsdispatch webhooks`).
Every answer, a 401 included, carries SECURITY_HEADERS: a Content-Security-Policy that allows nothing
but this origin's stylesheet and forms (no script at all), no framing, no caching (the pages show
personal data), no referrer (the URLs hold message ids).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from importlib import resources
from urllib.parse import parse_qs

import redis

from ..config import Settings
from .guard import Guard
from .html import Html, join, render
from .views import Page, Views

log = logging.getLogger("smsdispatch.statuspage")

MAX_FORM = 4096
CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; "
       "base-uri 'none'")
SECURITY_HEADERS = [
    ("Content-Security-Policy", CSP),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
]
NO_STORE = [("Cache-Control", "no-store"), ("Pragma", "no-cache")]
NAVIGATION = (("search", "/", "Search"), ("batches", "/batches", "Batches"), ("gateways", "/gateways", "Gateways"),
              ("dead", "/dead", "Dead letters"))
STYLESHEET = (resources.files(__package__) / "static" / "status.css").read_bytes()

Response = tuple[str, list[tuple[str, str]], bytes]


class StatusPage:
    def __init__(self, settings: Settings, views: Views, *, clock: Callable[[], float] = time.time) -> None:
        assert settings.status_user is not None and settings.status_password is not None
        self.views = views
        self.actions = settings.status_actions
        self.guard = Guard(settings.status_user, settings.status_password.get_secret_value(), clock=clock)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        try:
            status, headers, body = self.handle(environ)
        except redis.RedisError as e:
            log.warning("status page: Redis failed: %s", type(e).__name__)
            status, headers, body = self.page(environ, self.views.refused(
                "Unavailable", "Redis cannot be reached just now; try again.", "503 Service Unavailable"))
        except Exception:
            log.exception("status page failed")
            status, headers, body = self.page(environ, self.views.refused(
                "Error", "Something went wrong; it has been logged.", "500 Internal Server Error"))
        start_response(status, [*headers, *SECURITY_HEADERS, ("Content-Length", str(len(body)))])
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]

    def handle(self, environ: dict) -> Response:
        user = self.guard.user(environ)
        if user is None:
            if environ.get("HTTP_AUTHORIZATION"):
                log.warning("status page: wrong credentials refused")
            return ("401 Unauthorized", [("WWW-Authenticate", 'Basic realm="smsdispatch status", charset="UTF-8"'),
                                         ("Content-Type", "text/plain; charset=utf-8"), *NO_STORE],
                    b"Authentication required.\n")
        path = environ.get("PATH_INFO", "") or "/"
        method = environ.get("REQUEST_METHOD", "GET")
        if path == "/static/status.css":
            return "200 OK", [("Content-Type", "text/css; charset=utf-8"), ("Cache-Control", "private, max-age=3600")], \
                STYLESHEET
        if method == "POST" and path == "/replay":
            return self.page(environ, self.post_replay(environ, user))
        if method not in ("GET", "HEAD"):
            return self.page(environ, self.views.refused("Not allowed", "This page only reads.",
                                                         "405 Method Not Allowed"), [("Allow", "GET, HEAD")])
        try:
            q = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", ""), max_num_fields=20).items()}
        except ValueError:
            q = {}
        root = environ.get("SCRIPT_NAME", "")
        v = self.views
        if path == "/":
            page = v.search(root, q.get("q", ""))
        elif path == "/message":
            page = v.message(root, q.get("id", ""), actions=self.actions)
        elif path == "/batches":
            page = v.batches_page(root)
        elif path == "/batch":
            number = q.get("page", "")
            page = v.batch(root, q.get("id", ""), int(number) if number.isascii() and number.isdigit() else 1)
        elif path == "/gateways":
            page = v.gateways(root)
        elif path == "/dead":
            page = v.dead_letters(root, actions=self.actions)
        elif path == "/replay":
            page = v.replay_form(root, q.get("id", ""), self.guard.token(user)) if self.actions else self.read_only()
        else:
            page = v.not_found("No such page.")
        return self.page(environ, page)

    def post_replay(self, environ: dict, user: str) -> Page:
        if not self.actions:
            return self.read_only()
        form = _form(environ)
        if form is None:
            return self.views.refused("Bad request", "The form could not be read.", "400 Bad Request")
        if not self.guard.same_site(environ) or not self.guard.valid(form.get("csrf", ""), user):
            log.warning("status page: a replay without a valid form token refused")
            return self.views.refused("Refused", "This form has expired or did not come from this page: go back, "
                                      "reload it and try again.", "403 Forbidden")
        page = self.views.replay(environ.get("SCRIPT_NAME", ""), form.get("id", ""),
                                 force=form.get("accept_duplicate") == "yes")
        log.warning("status page: %s asked to replay dead letter %s: %s", user, form.get("id", ""), page.title)
        return page

    def read_only(self) -> Page:
        return self.views.refused("Read-only", "This status page is read-only (SMSDISPATCH_STATUS_ACTIONS is off).",
                                  "403 Forbidden")

    def page(self, environ: dict, page: Page, extra: list[tuple[str, str]] | None = None) -> Response:
        root = environ.get("SCRIPT_NAME", "")
        nav = join(render("parts", "nav", href=f"{root}{path}", label=label,
                          current=Html(' aria-current="page"') if name == page.section else "")
                   for name, path, label in NAVIGATION)
        body = render("layout", title=page.title, root=root, nav=nav, body=page.body,
                      mode="actions on" if self.actions else "read-only")
        return page.status, [("Content-Type", "text/html; charset=utf-8"), *NO_STORE, *(extra or [])], \
            body.encode("utf-8")


def _form(environ: dict) -> dict[str, str] | None:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return None
    if not 0 < length <= MAX_FORM or "application/x-www-form-urlencoded" not in environ.get("CONTENT_TYPE", ""):
        return None
    try:
        fields = parse_qs(environ["wsgi.input"].read(length).decode("utf-8"), max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        return None
    return {k: v[-1] for k, v in fields.items()}
