"""The Eskiz adapter against the fake Eskiz (a real HTTP server on 127.0.0.1) and fakeredis."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta

import pytest
from pydantic import SecretStr

from smsdispatch.devtools.fakes.eskiz import TASHKENT, FakeEskiz
from smsdispatch.errors import (
    AmbiguousError,
    AuthError,
    GatewayRejected,
    GatewayUnavailable,
    InsufficientBalance,
    RateLimited,
    RecipientRejected,
)
from smsdispatch.gateways.base import OutboundSms
from smsdispatch.gateways.eskiz import EskizGateway, dispatch_id_for, map_status
from smsdispatch.keys import Keys
from smsdispatch.records import MessageStatus

SMS = OutboundSms("msg-1", "+998901234567", "Salom", None, None)


@pytest.fixture
def fake():
    with FakeEskiz(email="me@example.com", password="pw") as f:
        yield f


def gateway(fake, redis_client, *, password="pw", read_timeout=2.0):
    return EskizGateway(email="me@example.com", password=SecretStr(password), sender="4546",
                        base_url=fake.base_url, redis_client=redis_client, keys=Keys("t"),
                        connect_timeout=1.0, read_timeout=read_timeout)


def test_send_logs_in_once_and_passes_our_id_as_user_sms_id(fake, redis_client):
    gw = gateway(fake, redis_client)
    first = gw.send(SMS)
    gw.send(OutboundSms("msg-2", "+998901234568", "Hi", "MyShop", "https://example.com/cb"))
    assert fake.logins == 1
    sent = fake.sent
    assert [s.user_sms_id for s in sent] == ["msg-1", "msg-2"]
    assert sent[0].mobile_phone == "998901234567" and sent[0].sender == "4546"
    assert sent[1].sender == "MyShop" and sent[1].callback_url == "https://example.com/cb"
    assert first.gateway_message_id == sent[0].request_id


def test_the_token_is_shared_through_redis_by_every_adapter_instance(fake, redis_client):
    gateway(fake, redis_client).send(SMS)
    gateway(fake, redis_client).send(SMS)   # another worker process, same Redis
    assert fake.logins == 1 and len(fake.sent) == 2


def test_expired_token_is_refreshed_once_and_the_send_goes_through(fake, redis_client):
    gw = gateway(fake, redis_client)
    gw.send(SMS)
    fake.expire_token()
    gw.send(SMS)
    assert fake.refreshes == 1 and fake.logins == 1 and len(fake.sent) == 2


def test_concurrent_401s_share_a_single_refresh(fake, redis_client):
    gw = gateway(fake, redis_client)
    gw.send(SMS)
    fake.expire_token()
    barrier = threading.Barrier(8)
    errors = []

    def worker():
        barrier.wait()
        try:
            gw.send(SMS)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)
    threads = [threading.Thread(target=worker) for _ in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert errors == [] and fake.refreshes == 1 and len(fake.sent) == 9


def test_refused_refresh_falls_back_to_login(fake, redis_client):
    gw = gateway(fake, redis_client)
    redis_client.set(gw.token.key, "never-issued")
    gw.send(SMS)
    assert fake.count("/auth/refresh") == 1 and fake.refreshes == 0 and fake.logins == 1
    assert len(fake.sent) == 1


def test_token_still_refused_after_renewal_is_an_auth_error(fake, redis_client):
    gw = gateway(fake, redis_client)
    gw.send(SMS)
    fake.fail_next(2, status=401, body={"message": "Expired Token"})
    with pytest.raises(AuthError, match="freshly renewed"):
        gw.send(SMS)
    assert fake.count("/message/sms/send-batch") == 3 and len(fake.sent) == 1


def test_bad_credentials_are_a_permanent_auth_error_that_never_leaks_the_password(fake, redis_client):
    with pytest.raises(AuthError) as e:
        gateway(fake, redis_client, password="wrong-secret").send(SMS)
    assert "SMSDISPATCH_ESKIZ_PASSWORD" in str(e.value) and "wrong-secret" not in str(e.value)
    assert fake.sent == []


@pytest.mark.parametrize("status, exc", [(500, GatewayUnavailable), (502, GatewayUnavailable),
                                         (503, GatewayUnavailable), (408, GatewayUnavailable),
                                         (504, AmbiguousError)])
def test_server_side_statuses_map_into_the_tree(fake, redis_client, status, exc):
    gw = gateway(fake, redis_client)
    fake.fail_next(status=status)
    with pytest.raises(exc) as e:
        gw.send(SMS)
    assert e.value.status == status and e.value.gateway == "eskiz"
    assert getattr(e.value, "maybe_sent", True) is (status in (500, 502, 504))


def test_429_is_rate_limited_with_retry_after(fake, redis_client):
    gw = gateway(fake, redis_client)
    fake.rate_limit_next(retry_after="7")
    with pytest.raises(RateLimited) as e:
        gw.send(SMS)
    assert e.value.retry_after == 7


def test_client_errors_are_permanent_and_classified(fake, redis_client):
    gw = gateway(fake, redis_client)
    fake.reject_recipients("998901234567")
    with pytest.raises(RecipientRejected):
        gw.send(SMS)
    fake.reject_recipients()
    fake.balance = 0
    with pytest.raises(InsufficientBalance):
        gw.send(OutboundSms("m", "+998901111111", "x"))
    fake.fail_next(status=400, body={"status": "error", "message": "Text is not approved (moderation)"})
    with pytest.raises(GatewayRejected, match="moderation"):
        gw.send(OutboundSms("m", "+998901111111", "x"))


def test_refused_connection_is_unavailable_and_recovers(fake, redis_client):
    gw = gateway(fake, redis_client)
    gw.send(SMS)
    fake.refuse_connections()
    with pytest.raises(GatewayUnavailable, match="cannot connect"):
        gw.send(SMS)
    fake.accept_connections()
    gw.send(SMS)
    assert len(fake.sent) == 2


def test_read_timeout_after_acceptance_is_ambiguous_and_lookup_finds_it(fake, redis_client):
    gw = gateway(fake, redis_client, read_timeout=0.3)
    gw.send(OutboundSms("warmup", "+998901111111", "x"))       # log in first
    since = time.time()
    fake.hang_next(seconds=5, accept=True)
    with pytest.raises(AmbiguousError, match="no answer"):
        gw.send(SMS)
    found = gw.lookup(SMS, since=since)
    assert found.found and found.gateway_message_id == fake.sends_for("msg-1")[0].request_id
    assert found.status is MessageStatus.ACCEPTED
    assert not gw.lookup(OutboundSms("never-sent", SMS.to, SMS.text), since=since).found


def test_a_single_send_is_a_dispatch_of_its_own_and_its_lookup_is_one_short_call(fake, redis_client):
    """A message sent alone goes out as a one-message send-batch whose dispatch_id comes from its id, so a
    reconcile asks about that dispatch only: one call, however many messages the account sent."""
    gw = gateway(fake, redis_client, read_timeout=0.3)
    since = time.time()
    for i in range(450):                                  # a busy account: 3 pages of listing
        gw.send(OutboundSms(f"busy-{i}", "+998901234567", "x"))
    fake.hang_next(seconds=5, accept=True)
    with pytest.raises(AmbiguousError):
        gw.send(SMS)
    assert fake.count("/message/sms/send") == 0
    sent = fake.sends_for("msg-1")[0]
    assert sent.dispatch_id == dispatch_id_for(gw.single_call_ref("msg-1"))
    listed = fake.count("/message/sms/get-user-messages-by-dispatch")
    found = gw.lookup_batch([SMS], call_ref=gw.single_call_ref("msg-1"), since=since)["msg-1"]
    assert found.found and found.gateway_message_id == sent.request_id
    missing = OutboundSms("never-sent", SMS.to, SMS.text)
    assert not gw.lookup_batch([missing], call_ref=gw.single_call_ref("never-sent"), since=since)["never-sent"].found
    assert fake.count("/message/sms/get-user-messages-by-dispatch") == listed + 2     # one call each
    assert fake.count("/message/sms/get-user-messages") == 0                          # no walk


def test_lookup_walks_every_page(fake, redis_client):
    gw = gateway(fake, redis_client)
    since = time.time()
    for i in range(230):
        gw.send(OutboundSms(f"bulk-{i}", "+998901234567", "x"))
    found = gw.lookup(OutboundSms("bulk-229", SMS.to, "x"), since=since)
    assert found.found and fake.count("/message/sms/get-user-messages") == 2


def test_status_and_balance(fake, redis_client):
    gw = gateway(fake, redis_client)
    acc = gw.send(SMS)
    assert gw.status(acc.gateway_message_id).status is MessageStatus.ACCEPTED
    fake.set_status(acc.gateway_message_id, "DELIVERED")
    assert gw.status(acc.gateway_message_id).status is MessageStatus.DELIVERED
    assert gw.balance().amount == fake.balance


@pytest.mark.parametrize("word, status", [
    ("waiting", MessageStatus.ACCEPTED), ("TRANSMTD", MessageStatus.ACCEPTED),
    ("PARTDELIVERED", MessageStatus.ACCEPTED), ("DELIVRD", MessageStatus.DELIVERED),
    ("DELIVERED", MessageStatus.DELIVERED), ("UNDELIV", MessageStatus.FAILED),
    ("EXPIRED", MessageStatus.FAILED), ("REJECTD", MessageStatus.FAILED), (None, MessageStatus.ACCEPTED),
])
def test_status_words_map_to_ours(word, status):
    assert map_status(word) is status


def test_lookup_asks_a_narrow_window_so_a_busy_account_does_not_hide_the_message(fake, redis_client):
    """Hours of earlier traffic must not be paged through: the window is [since − 5 min, now + 5 min]
    in Tashkent time (then in UTC), not one window spanning both readings (five extra hours)."""
    gw = gateway(fake, redis_client)
    for i in range(450):
        gw.send(OutboundSms(f"earlier-{i}", "+998901234567", "x"))
    two_hours_ago = (datetime.now(TASHKENT) - timedelta(hours=2)).isoformat(timespec="microseconds")
    for s in fake.sent:
        s.created_at = two_hours_ago
    since = time.time()
    gw.send(OutboundSms("target", "+998901234567", "x"))
    before = fake.count("/message/sms/get-user-messages")
    assert gw.lookup(OutboundSms("target", SMS.to, "x"), since=since).found
    assert fake.count("/message/sms/get-user-messages") - before == 1      # one page of one window
    # not found: both readings are asked, each one page
    before = fake.count("/message/sms/get-user-messages")
    assert not gw.lookup(OutboundSms("missing", SMS.to, "x"), since=since).found
    assert fake.count("/message/sms/get-user-messages") - before == 2


def test_lookups_asked_together_share_one_walk_through_the_listing(fake, redis_client):
    """Under load every reconciled message used to page through the whole listing on its own: with
    1,000 messages in the window, 12 lookups cost 12 walks of 5-10 pages. Asked together they share."""
    gw = gateway(fake, redis_client)
    since = time.time()
    for i in range(1000):
        gw.send(OutboundSms(f"load-{i}", "+998901234567", "x"))
    fake.hang_next(1, seconds=0.5, path="/message/sms/get-user-messages")   # the first walk is slow ...
    wanted = [f"load-{i}" for i in (5, 400, 999)] + ["never-sent-1", "never-sent-2"]
    answers: dict[str, bool] = {}
    first = threading.Thread(target=lambda: answers.update(first=gw.lookup(OutboundSms("load-0", SMS.to, "x"),
                                                                            since=since).found))
    first.start()
    assert fake.wait_for(lambda f: f.count("/message/sms/get-user-messages") == 1)   # ... while it runs,
    threads = [threading.Thread(target=lambda m=m: answers.update({m: gw.lookup(OutboundSms(m, SMS.to, "x"),
                                                                                since=since).found}))
               for m in wanted]                                            # the others are asked
    for t in threads:
        t.start()
    for t in [first, *threads]:
        t.join(30)
    assert answers == {"first": True, "load-5": True, "load-400": True, "load-999": True,
                       "never-sent-1": False, "never-sent-2": False}
    pages = 1000 // 200 + 1
    # the first walk (one page: load-0 is on it), then ONE walk for all five: both readings, every page
    assert fake.count("/message/sms/get-user-messages") <= 1 + 2 * pages
