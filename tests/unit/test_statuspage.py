"""The status page as a WSGI app on fakeredis: the guard, escaping, masking, the search, the mount.
(tests/integration/test_status_page.py does the same over HTTP with a real Redis and receiver, and
test_status_browser.py in Chromium.)"""

from __future__ import annotations

import base64
import io
import re
from urllib.parse import urlencode

import pytest

from smsdispatch.batch import Batches
from smsdispatch.config import load_settings
from smsdispatch.deadletters import DeadLetters
from smsdispatch.dispatch import Dispatcher, message_id_for
from smsdispatch.errors import ConfigError
from smsdispatch.polling import Poller
from smsdispatch.records import MessageStatus
from smsdispatch.statuspage import StatusPage, Views
from smsdispatch.statuspage.guard import TOKEN_TTL, Guard
from smsdispatch.statuspage.html import Html, escape, render
from smsdispatch.webhooks import Webhooks

USER, PASSWORD = "ops", "correct horse battery"
TO = "+998901234567"
HOSTILE = '"><script>alert(1)</script><img src=x onerror=alert(2)>'


class Client:
    def __init__(self, app, clock) -> None:
        self.app, self.clock = app, clock
        self.published: list[dict] = []

    def request(self, path, *, method="GET", query=None, form=None, auth=(USER, PASSWORD), headers=None):
        body = urlencode(form).encode() if form is not None else b""
        environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "SCRIPT_NAME": "",
                   "QUERY_STRING": urlencode(query or {}), "CONTENT_LENGTH": str(len(body)),
                   "CONTENT_TYPE": "application/x-www-form-urlencoded", "wsgi.input": io.BytesIO(body)}
        if auth:
            environ["HTTP_AUTHORIZATION"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        environ.update(headers or {})
        seen = {}

        def start_response(status, headers):
            seen["status"], seen["headers"] = int(status.split()[0]), dict(headers)
        text = b"".join(self.app(environ, start_response)).decode()
        return seen["status"], seen["headers"], text


@pytest.fixture
def setup(redis_client, clock):
    def make(**overrides):
        s = load_settings(**{"status_user": USER, "status_password": PASSWORD, "status_actions": True, **overrides})
        d = Dispatcher(s, redis_client, clock=clock)
        batches = Batches(d)
        client = Client(None, clock)

        def publish(**kwargs):
            client.published.append(kwargs)
            return f"task-{len(client.published)}"
        views = Views(s, d.records, batches, d.circuits, Poller(d), DeadLetters(d.records, d.ledger, publish),
                      clock=clock)
        client.app = StatusPage(s, views, clock=clock)
        return client, d, batches
    return make


def dead_letter(d, mid, *, maybe_sent=0, text="Hello"):
    d.records.update(mid, MessageStatus.FAILED, to=TO, text=text, idempotency_key=f"key-{mid}", maybe_sent=maybe_sent,
                     error={"code": "retries_exhausted", "message": "2 attempts failed"})
    d.records.redis.hset(d.keys.idempotency(f"key:key-{mid}"), mapping={"state": "done", "reopenable": 0})
    d.records.redis.rpush(d.keys.dead_letters(), mid)


def token_of(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


# --- the guard ------------------------------------------------------------------------------------

def test_without_or_with_wrong_credentials_nothing_is_shown(setup):
    client, d, _ = setup()
    d.records.update("m1", MessageStatus.ACCEPTED, to=TO, text="secret text")
    for auth in (None, (USER, "wrong password!"), ("someone", PASSWORD), (USER, ""), (USER + "x", PASSWORD)):
        status, headers, text = client.request("/message", query={"id": "m1"}, auth=auth)
        assert status == 401 and headers["WWW-Authenticate"].startswith("Basic realm=")
        assert "secret text" not in text and headers["Cache-Control"] == "no-store"
    assert client.request("/static/status.css", auth=None)[0] == 401
    status, _, text = client.request("/message", query={"id": "m1"})
    assert status == 200 and "secret text" in text


def test_a_malformed_authorization_header_is_a_401_not_an_error(setup):
    client, _, _ = setup()
    for value in ("Basic", "Basic !!!", "Basic " + base64.b64encode(b"\xff\xfe").decode(), "Bearer abc",
                  "Basic " + base64.b64encode(b"no-colon").decode()):
        environ_auth = {"HTTP_AUTHORIZATION": value}
        assert client.request("/", auth=None, headers=environ_auth)[0] == 401


def test_csrf_tokens_are_bound_to_the_user_and_expire(clock):
    guard = Guard(USER, PASSWORD, clock=clock)
    token = guard.token(USER)
    assert guard.valid(token, USER) and not guard.valid(token, "other")
    assert not Guard(USER, "another password", clock=clock).valid(token, USER)
    for forged in ("", "abc", f"{int(clock())}.deadbeef", f"²{token}", token + "é", token.split(".")[0]):
        assert not guard.valid(forged, USER)
    clock.t += TOKEN_TTL + 1
    assert not guard.valid(token, USER)


def test_every_answer_carries_the_security_headers(setup):
    client, _, _ = setup()
    for path, auth in (("/", (USER, PASSWORD)), ("/", None), ("/nowhere", (USER, PASSWORD))):
        _, headers, _ = client.request(path, auth=auth)
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        assert "script-src" not in headers["Content-Security-Policy"]           # default-src 'none': no script
        assert headers["X-Frame-Options"] == "DENY" and headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "no-referrer"
    assert client.request("/")[1]["Cache-Control"] == "no-store"


# --- escaping and masking ---------------------------------------------------------------------------

def test_html_is_escaped_unless_it_is_html():
    assert escape(HOSTILE) == ('&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x '
                               'onerror=alert(2)&gt;')
    assert escape(Html("<b>ok</b>")) == "<b>ok</b>"
    assert "<script>" not in render("parts", "link", href=HOSTILE, text=HOSTILE)
    with pytest.raises(KeyError):
        render("parts", "link", href="/only-href")


def test_what_a_caller_or_a_gateway_wrote_is_shown_as_text(setup):
    client, d, batches = setup()
    d.records.update("m1", MessageStatus.FAILED, to=TO, text=HOSTILE, metadata={"x": HOSTILE}, sender=HOSTILE,
                     idempotency_key=HOSTILE, error={"code": HOSTILE, "message": HOSTILE}, batch_id=HOSTILE)
    d.records.redis.rpush(d.keys.dead_letters(), "m1")
    batches.store("b1", [{"to": f'"><b>{TO}', "text": HOSTILE, "idempotency_key": "<b>key</b>"}], gateway=None, sender=None,
                  idempotency_key=None, submission="s1")
    shows_it = [client.request("/message", query={"id": "m1"}), client.request("/", query={"q": HOSTILE}),
                client.request("/dead"), client.request("/replay", query={"id": "m1"})]
    others = [client.request("/batches"), client.request("/batch", query={"id": "b1"}),
              client.request("/message", query={"id": HOSTILE})]
    for _, _, text in shows_it + others:
        assert "<script>" not in text and "<img" not in text and "<b>" not in text
        assert "onerror=alert(2)>" not in text
    for status, _, text in shows_it:
        assert status == 200 and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "&quot;&gt;&lt;b&gt;+998*******67" in client.request("/batch", query={"id": "b1"})[2]
    assert client.request("/batch", query={"id": HOSTILE})[0] == 404


def test_numbers_are_masked_everywhere(setup):
    client, d, batches = setup()
    d.records.create("q1", {"payload": {"to": TO, "text": "hi"}}, number=TO)       # only the producer's payload
    d.records.update("m1", MessageStatus.ACCEPTED, to=TO, text=f"call {TO} back", metadata={"alt": TO},
                     idempotency_key=f"otp-{TO}", gateway="console")
    dead_letter(d, "m2")
    batches.store("b1", [{"to": TO, "text": "hi"}], gateway=None, sender=None, idempotency_key=None, submission="s")
    for path, query in (("/", {"q": "4567"}), ("/message", {"id": "m1"}), ("/message", {"id": "q1"}), ("/dead", {}),
                        ("/batch", {"id": "b1"}), ("/replay", {"id": "m2"})):
        status, _, text = client.request(path, query=query)
        assert status == 200 and TO not in text and "998901234567" not in text, path
        assert "+998*******67" in text, path


# --- the pages ------------------------------------------------------------------------------------

def test_a_search_finds_by_id_key_batch_and_the_end_of_the_number(setup):
    client, d, batches = setup()
    keyed = message_id_for("order-1001", "")
    d.records.update(keyed, MessageStatus.ACCEPTED, to=TO, idempotency_key="order-1001")
    d.records.update("plain", MessageStatus.ACCEPTED, to="+998901110000")
    batches.store("sale-42", [{"to": TO, "text": "hi"}], gateway=None, sender=None, idempotency_key=None,
                  submission="s")

    def ids(q):
        text = client.request("/", query={"q": q})[2]
        return re.findall(r'href="/message\?id=([^"]+)"', text), re.findall(r'href="/batch\?id=([^"]+)"', text)
    assert ids("order-1001") == ([keyed], [])
    assert ids(keyed) == ([keyed], [])
    assert ids("plain") == (["plain"], [])
    assert ids("sale-42") == ([], ["sale-42"])
    assert ids("4567") == ([keyed], []) and ids("+998 90 123 45 67") == ([keyed], [])
    assert ids("0000") == (["plain"], []) and ids("1234") == ([], [])
    assert "Nothing found" in client.request("/", query={"q": "567"})[2]
    typed = client.request("/", query={"q": "+998 90 555 12 34"})[2]         # a whole number: found nothing,
    assert "Nothing found" in typed and "555 12 34" not in typed and "+998 ** *** ** 34" in typed   # echoed masked
    assert client.request("/", query={"q": "plain:history"})[0] == 200      # a key of another type: not found


def test_a_batch_shows_its_progress_and_its_messages_a_page_at_a_time(setup):
    client, d, batches = setup(batch_chunk_size=20)
    entries = [{"to": f"+99890{1000000 + i:07d}", "text": "hi"} for i in range(60)]
    batches.store("b1", entries, gateway=None, sender=None, idempotency_key=None, submission="s")
    d.records.redis.hset(d.keys.batch("b1"), mapping={"accepted": 30, "failed": 6, "unknown": 3, "status": "running"})
    status, _, text = client.request("/batch", query={"id": "b1"})
    assert status == 200 and 'aria-valuenow="39"' in text and 'aria-valuemax="60"' in text
    assert "39 of 60</strong> done (65%)" in text
    assert re.findall(r'<rect class="(\w+)" x="(\d+)" y="0" width="(\d+)"', text) == [
        ("accepted", "0", "500"), ("failed", "500", "100"), ("unknown", "600", "50")]
    assert text.count('data-label="#"') == 50 and "+998*******00" in text
    second = client.request("/batch", query={"id": "b1", "page": "2"})[2]
    assert second.count('data-label="#"') == 10 and ">59<" in second
    assert client.request("/batch", query={"id": "b1", "page": "²"})[0] == 200
    assert client.request("/batch", query={"id": "nope"})[0] == 404


def test_the_gateways_page_shows_balances_and_circuits(setup):
    client, d, _ = setup(balance_thresholds={"console": 10.0})
    d.records.redis.hset(d.keys.balance("console"), mapping={"amount": 5, "currency": "UZS", "at": 1.8e9})
    for _ in range(3):
        d.circuits.record("console", now=d.clock(), failed=True)
    text = client.request("/gateways")[2]
    assert "5 UZS" in text and 'class="low"' in text and "3 of 3 calls failed" in text


def test_read_only_hides_the_replay_and_refuses_it(setup):
    client, d, _ = setup(status_actions=False)
    dead_letter(d, "m1")
    assert "Replay" not in client.request("/dead")[2] and "Replay" not in client.request("/message", query={"id": "m1"})[2]
    assert client.request("/replay", query={"id": "m1"})[0] == 403
    forged = Guard(USER, PASSWORD, clock=client.clock).token(USER)
    status, _, _ = client.request("/replay", method="POST", form={"csrf": forged, "id": "m1"})
    assert status == 403 and client.published == [] and d.records.dead_letters() == ["m1"]


def test_a_replay_needs_the_forms_token_and_a_same_site_request(setup):
    client, d, _ = setup()
    dead_letter(d, "m1")
    page = client.request("/replay", query={"id": "m1"})[2]
    token = token_of(page)
    assert client.request("/replay", method="POST", form={"id": "m1"})[0] == 403
    assert client.request("/replay", method="POST", form={"id": "m1", "csrf": "1.abc"})[0] == 403
    assert client.request("/replay", method="POST", form={"id": "m1", "csrf": token},
                          headers={"HTTP_SEC_FETCH_SITE": "cross-site"})[0] == 403
    assert client.request("/replay", method="POST", form={"id": "m1", "csrf": token}, auth=None)[0] == 401
    assert client.published == [] and d.records.dead_letters() == ["m1"]
    status, _, text = client.request("/replay", method="POST", form={"id": "m1", "csrf": token},
                                     headers={"HTTP_SEC_FETCH_SITE": "same-origin"})
    assert status == 200 and 'id="replayed"' in text and len(client.published) == 1
    assert client.request("/replay", method="POST", form={"id": "m1", "csrf": token})[0] == 409   # once only
    assert len(client.published) == 1


def test_a_maybe_sent_dead_letter_needs_the_second_confirmation(setup):
    client, d, _ = setup()
    dead_letter(d, "m1", maybe_sent=1)
    page = client.request("/replay", query={"id": "m1"})[2]
    assert "may already have been sent" in page and 'name="accept_duplicate"' in page and " required>" in page
    status, _, text = client.request("/replay", method="POST", form={"id": "m1", "csrf": token_of(page)})
    assert status == 409 and "may have been sent" in text and client.published == []
    assert d.records.dead_letters() == ["m1"]
    status, _, _ = client.request("/replay", method="POST", form={"id": "m1", "csrf": token_of(page),
                                                                  "accept_duplicate": "yes"})
    assert status == 200 and len(client.published) == 1 and d.records.dead_letters() == []


def test_a_provably_unsent_dead_letter_asks_once(setup):
    client, d, _ = setup()
    dead_letter(d, "m1")
    page = client.request("/replay", query={"id": "m1"})[2]
    assert "accept_duplicate" not in page and 'id="replay"' in page
    d.records.update("m2", MessageStatus.ACCEPTED, to=TO)
    assert client.request("/replay", query={"id": "m2"})[0] == 409          # not a dead letter: no form
    assert client.request("/replay", query={"id": "gone"})[0] == 404


def test_methods_and_unknown_paths(setup):
    client, _, _ = setup()
    assert client.request("/dead", method="POST", form={})[0] == 405
    assert client.request("/nowhere")[0] == 404
    status, headers, text = client.request("/static/status.css")
    assert status == 200 and headers["Content-Type"].startswith("text/css") and "@media" in text
    assert client.request("/", method="HEAD")[2] == ""


# --- the mount and the settings ---------------------------------------------------------------------

def test_the_receiver_serves_the_page_under_its_prefix_only(setup, redis_client):
    client, d, _ = setup()
    hooks = Webhooks(d.settings, d.records, {"/status": client.app})
    seen = {}

    def call(path):
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "SCRIPT_NAME": "", "QUERY_STRING": "",
                   "HTTP_AUTHORIZATION": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}
        body = b"".join(hooks(environ, lambda status, headers: seen.update(status=status)))
        return seen["status"][:3], body.decode()
    status, text = call("/status/dead")
    assert status == "200" and 'href="/status/batches"' in text
    assert call("/status")[0] == "200"
    assert call("/statusx/dead")[0] == "404" and call("/eskiz/x")[0] == "404"
    off = Webhooks(d.settings, d.records)
    assert b"".join(off({"REQUEST_METHOD": "GET", "PATH_INFO": "/status/", "wsgi.input": io.BytesIO()},
                        lambda status, headers: seen.update(status=status))) and seen["status"].startswith("404")


def test_the_credentials_go_together_and_the_password_is_secret():
    with pytest.raises(ConfigError, match="STATUS_USER and STATUS_PASSWORD go together"):
        load_settings(status_user=USER)
    with pytest.raises(ConfigError, match="STATUS_PASSWORD: must be at least 12"):
        load_settings(status_user=USER, status_password="short")
    with pytest.raises(ConfigError, match="STATUS_USER"):
        load_settings(status_user="a:b", status_password=PASSWORD)
    s = load_settings(status_user=USER, status_password=PASSWORD)
    assert s.status_page and not s.status_actions and PASSWORD not in repr(s)
    assert not load_settings().status_page
