"""The status page over HTTP, as `smsdispatch webhooks` serves it: a real receiver and worker, a real
Redis, the fake Eskiz. Authentication, headers, escaping, CSRF and read-only mode; the browser's view
is tests/integration/test_status_browser.py."""

from __future__ import annotations

import re

import pytest

from .conftest import worker_settings
from .status import HOSTILE, PASSWORD, TO, USER, Stack, settings_for, token_of


@pytest.fixture(scope="module")
def stacks(redis_url, fake_eskiz):
    settings = settings_for(redis_url, fake_eskiz)
    acting = Stack(settings)
    # the same data (prefix), read-only: the same password, so a token of the other one is valid here
    reading = Stack(dict(settings, SMSDISPATCH_STATUS_ACTIONS="false"), worker=False)
    yield acting, reading
    reading.stop()
    output = acting.stop()
    assert PASSWORD not in output and TO not in output


def test_without_credentials_configured_the_page_is_not_there(redis_url, fake):
    off = Stack(worker_settings(redis_url, fake, WEBHOOK_SECRET="w" * 24), worker=False)
    try:
        assert off.page("/").status_code == 404
        assert off.page("/dead", auth=None).status_code == 404
    finally:
        off.stop()


def test_it_asks_for_credentials_and_refuses_wrong_ones(stacks):
    acting, _ = stacks
    anonymous = acting.page("/", auth=None)
    assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"].startswith('Basic realm=')
    assert acting.page("/", auth=(USER, "not the password")).status_code == 401
    assert acting.page("/", auth=("admin", PASSWORD)).status_code == 401
    page = acting.page("/")
    assert page.status_code == 200 and "<h1>Search</h1>" in page.text
    for answer in (anonymous, page):
        assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]
        assert answer.headers["X-Frame-Options"] == "DENY" and answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.headers["Cache-Control"] == "no-store"


def test_a_hostile_text_and_metadata_are_shown_as_text(stacks, fake):
    acting, _ = stacks
    result = acting.producer.send_sms.delay(TO, HOSTILE, metadata={"note": HOSTILE}).get(timeout=30)
    assert result["status"] == "accepted"
    page = acting.page("/message", params={"id": result["message_id"]})
    assert page.status_code == 200
    assert "<script>" not in page.text and "<img" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert TO not in page.text and "+998*******67" in page.text
    search = acting.page("/", params={"q": HOSTILE})
    assert "<script>" not in search.text and "&lt;script&gt;" in search.text


def test_read_only_shows_no_action_and_refuses_the_post(stacks, fake):
    acting, reading = stacks
    dead = acting.dead_letter(fake, "Read-only must not resend this")
    assert "Replay" not in reading.page("/dead").text and dead in reading.page("/dead").text
    assert reading.page("/replay", params={"id": dead}).status_code == 403
    token = token_of(acting.page("/replay", params={"id": dead}).text)     # a valid token, from the acting page
    refused = reading.post("/replay", {"csrf": token, "id": dead})
    assert refused.status_code == 403 and "read-only" in refused.text
    assert dead in acting.dead_letters() and fake.sends_for(dead) == []


def test_a_replay_needs_a_valid_token_from_this_site(stacks, fake):
    acting, _ = stacks
    dead = acting.dead_letter(fake, "Replay me once")
    form = acting.page("/replay", params={"id": dead})
    assert form.status_code == 200 and "Replay this message" in form.text
    token = token_of(form.text)
    assert acting.post("/replay", {"id": dead}).status_code == 403
    forged = token[:-1] + ("1" if token.endswith("0") else "0")
    assert acting.post("/replay", {"id": dead, "csrf": forged}).status_code == 403
    assert acting.post("/replay", {"id": dead, "csrf": token}, headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    assert acting.post("/replay", {"id": dead, "csrf": token}, auth=None).status_code == 401
    assert dead in acting.dead_letters() and fake.sends_for(dead) == []

    done = acting.post("/replay", {"id": dead, "csrf": token}, headers={"Sec-Fetch-Site": "same-origin"})
    assert done.status_code == 200 and 'id="replayed"' in done.text
    assert dead not in acting.dead_letters()
    # sent without a key, it is submitted again under its task id as the key (as the CLI does): a new message
    replayed = replayed_id(done.text)
    assert acting.wait_status(replayed, "accepted") and len(fake.sends_for(replayed)) == 1
    again = acting.post("/replay", {"id": dead, "csrf": token})
    assert again.status_code == 409 and len(fake.sends_for(replayed)) == 1


def replayed_id(html: str) -> str:
    return re.search(r'id="replayed">Submitted again: <a href="/status/message\?id=([^"]+)"', html).group(1)
