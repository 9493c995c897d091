"""The shared token: cached in Redis for every worker, renewed once however many ask at once."""

import threading

import pytest
import requests

from smsdispatch.errors import AuthError
from smsdispatch.gateways.tokens import SharedToken
from smsdispatch.keys import Keys


def make(redis_client, fetched):
    def fetch(stale):
        fetched.append(stale)
        return f"token-{len(fetched)}", 60
    return SharedToken(redis_client, Keys("t"), gateway="gw", account="https://gw|me", fetch=fetch, lock_wait=2)


def answer(status):
    r = requests.Response()
    r.status_code = status
    return r


def test_the_token_is_fetched_once_and_kept_with_its_ttl(redis_client):
    fetched = []
    token = make(redis_client, fetched)
    assert token.get() == token.get() == "token-1" and fetched == [None]
    assert make(redis_client, fetched).get() == "token-1"          # another worker, same Redis
    assert 0 < redis_client.ttl(token.key) <= 60


def test_concurrent_renewals_of_the_same_stale_token_fetch_once(redis_client):
    fetched = []
    token = make(redis_client, fetched)
    stale = token.get()
    barrier = threading.Barrier(6)
    got = []

    def renew():
        barrier.wait()
        got.append(token.renew(stale=stale))
    threads = [threading.Thread(target=renew) for _ in range(6)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert fetched == [None, "token-1"] and set(got) == {"token-2"}


def test_a_401_renews_once_and_a_second_401_is_an_auth_error(redis_client):
    fetched, seen = [], []
    token = make(redis_client, fetched)

    def call(t):
        seen.append(t)
        return answer(401 if t == "token-1" else 200)
    assert token.authorized(call).status_code == 200 and seen == ["token-1", "token-2"]
    with pytest.raises(AuthError, match="gw refused a freshly renewed token"):
        token.authorized(lambda t: answer(401))
    assert fetched == [None, "token-1", "token-2"]


def test_a_process_keeps_the_token_it_saw_and_a_401_still_renews_it(redis_client, monkeypatch):
    """No Redis read per send: the token is kept in-process for a while; a 401 renews as before, and
    picks up a token another worker renewed meanwhile."""
    fetched = []
    mine, other = make(redis_client, fetched), make(redis_client, fetched)
    assert mine.get() == "token-1"
    reads = []
    real_get = redis_client.get
    monkeypatch.setattr(redis_client, "get", lambda key: reads.append(key) or real_get(key))
    assert mine.get() == "token-1" and reads == []                  # kept locally
    assert other.renew(stale="token-1") == "token-2"                 # another worker renewed it
    calls = []

    def call(token):
        calls.append(token)
        return answer(401 if token == "token-1" else 200)
    assert mine.authorized(call).status_code == 200
    assert calls == ["token-1", "token-2"] and fetched == [None, "token-1"]   # no third fetch
    assert mine.get() == "token-2"
