"""One contract, every gateway: each adapter against its fake (a real HTTP server on 127.0.0.1)."""

from __future__ import annotations

import importlib
import pkgutil
import time
import uuid
from pathlib import Path

import fakeredis
import pytest

from smsdispatch.errors import (
    AmbiguousError,
    AuthError,
    GatewayUnavailable,
    InsufficientBalance,
    PermanentError,
    RateLimited,
    RecipientRejected,
)
from smsdispatch.gateways.base import OutboundSms
from smsdispatch.records import MessageStatus

CASES = [importlib.import_module(f"{__package__}.{m.name}").CASE
         for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name.startswith("case_")]


@pytest.fixture(params=CASES, ids=lambda c: c.id)
def case(request):
    return request.param


@pytest.fixture
def fake(case):
    with case.make_fake() as f:
        yield f


@pytest.fixture
def gateway(case, fake):
    return case.make_gateway(fake, fakeredis.FakeRedis(), False)


def sms(case, i: int = 0, text: str = "Contract test") -> OutboundSms:
    return OutboundSms(f"m-{uuid.uuid4().hex[:12]}", case.numbers[i], text)


def accepted_to(fake, number: str) -> int:
    return len(fake.accepted_for(to=number))


def test_the_five_gateways_all_have_a_case():
    assert {c.name for c in CASES} == {"eskiz", "devsms", "smsflow", "smscx", "smspm"}


def test_send_is_accepted_once(case, fake, gateway):
    message = sms(case)
    receipt = gateway.send(message)
    assert receipt.gateway_message_id
    assert accepted_to(fake, message.to) == 1
    assert fake.accepted[0].text == "Contract test"


def test_batch_goes_out_in_one_native_call_or_is_refused_as_unsupported(case, fake, gateway):
    messages = [sms(case, i) for i in range(3)]
    if gateway.max_batch == 1:
        with pytest.raises(NotImplementedError):
            gateway.send_batch(messages, call_ref="c1")
        return
    gateway.send(sms(case))                    # authenticate first, then start counting
    fake.reset()
    results = gateway.send_batch(messages, call_ref="c1")
    assert [r.message_id for r in results] == [m.message_id for m in messages]
    assert all(r.accepted and r.gateway_message_id for r in results)
    assert len(fake.requests_log) == 1
    assert [accepted_to(fake, m.to) for m in messages] == [1, 1, 1]


def test_batch_with_a_refused_number(case, fake, gateway):
    if gateway.max_batch == 1:
        return  # one call per message: covered by test_rejected_recipient
    messages = [sms(case, i) for i in range(3)]
    fake.reject_recipients(case.numbers[1])
    if case.per_message_rejections:
        results = gateway.send_batch(messages, call_ref="c2")
        assert [r.accepted for r in results] == [True, False, True]
        assert isinstance(results[1].error, RecipientRejected)
        assert [accepted_to(fake, m.to) for m in messages] == [1, 0, 1]
    else:
        with pytest.raises(PermanentError):
            gateway.send_batch(messages, call_ref="c2")


def test_status_maps_delivery_or_says_there_is_none(case, fake, gateway):
    receipt = gateway.send(sms(case))
    if not gateway.supports_status:
        with pytest.raises(NotImplementedError):
            gateway.status(receipt.gateway_message_id)
        return
    assert gateway.status(receipt.gateway_message_id).status is MessageStatus.ACCEPTED
    fake.set_status(receipt.gateway_message_id, case.delivered_word)
    assert gateway.status(receipt.gateway_message_id).status is MessageStatus.DELIVERED
    fake.set_status(receipt.gateway_message_id, case.failed_word)
    assert gateway.status(receipt.gateway_message_id).status is MessageStatus.FAILED


def test_balance_or_says_there_is_none(case, fake, gateway):
    if not gateway.supports_balance:
        with pytest.raises(NotImplementedError):
            gateway.balance()
        return
    fake.balance = 1234.5
    assert gateway.balance().amount == pytest.approx(1234.5, abs=1)


@pytest.mark.parametrize("status, maybe_sent", [(500, True), (502, True), (503, False)])
def test_server_errors_are_transient(case, fake, gateway, status, maybe_sent):
    gateway.send(sms(case))                    # authenticated, so the fault hits the send
    fake.fail_next(status=status)
    with pytest.raises(GatewayUnavailable) as e:
        gateway.send(sms(case))
    assert e.value.status == status and e.value.maybe_sent is maybe_sent
    assert len(fake.accepted) == 1


def test_429_is_rate_limited_with_its_wait(case, fake, gateway):
    gateway.send(sms(case))
    fake.rate_limit_next(retry_after=30)
    with pytest.raises(RateLimited) as e:
        gateway.send(sms(case))
    assert 25 <= e.value.retry_after <= 31


def test_rejected_recipient_is_permanent(case, fake, gateway):
    fake.reject_recipients(case.numbers[0])
    with pytest.raises(RecipientRejected):
        gateway.send(sms(case))
    assert len(fake.accepted) == 0


def test_insufficient_balance_is_permanent(case, fake, gateway):
    fake.balance = 0
    with pytest.raises(InsufficientBalance):
        gateway.send(sms(case))
    assert len(fake.accepted) == 0


def test_refused_connection_is_unavailable(case, fake, gateway):
    fake.refuse_connections()
    with pytest.raises(GatewayUnavailable):
        gateway.send(sms(case))


def test_no_answer_after_acceptance_is_ambiguous_and_handled_per_capability(case, fake, gateway):
    gateway.send(sms(case, 1))                 # authenticated first
    message = sms(case)
    since = time.time()
    fake.hang_next(seconds=3, accept=True)
    with pytest.raises(AmbiguousError):
        gateway.send(message)
    assert accepted_to(fake, message.to) == 1
    if gateway.can_dedupe:                     # the repeat carries the same reference
        gateway.send(message)
        assert accepted_to(fake, message.to) == 1
    if gateway.can_lookup:
        assert gateway.lookup(message, since=since).found
        assert not gateway.lookup(sms(case, 2), since=since).found


def test_an_answer_trickling_past_the_total_deadline_is_ambiguous_and_the_next_send_works(case, fake, gateway):
    gateway.send(sms(case, 1))                 # authenticated first
    message = sms(case)
    fake.trickle_next(byte_interval=0.2)       # every byte within the 0.5 s read timeout, the whole far beyond
    deadline = gateway.total_timeout           # connect 1 + read 0.5: HTTP_TOTAL_TIMEOUT's default
    started = time.monotonic()
    with pytest.raises(AmbiguousError, match=rf"no complete answer within {deadline:g}s \(HTTP_TOTAL_TIMEOUT\)"):
        gateway.send(message)
    assert deadline <= time.monotonic() - started < deadline + 0.5
    assert accepted_to(fake, message.to) == 1
    gateway.send(sms(case, 2))                 # the connection pool is fine
    assert accepted_to(fake, case.numbers[2]) == 1


def test_bad_credentials_are_an_auth_error(case, fake):
    gateway = case.make_gateway(fake, fakeredis.FakeRedis(), True)
    with pytest.raises(AuthError):
        gateway.send(sms(case))
    assert len(fake.accepted) == 0


def test_an_expired_token_costs_one_reauthentication(case, fake, gateway):
    if not fake.has_tokens:
        with pytest.raises(NotImplementedError):
            fake.expire_token()
        return
    gateway.send(sms(case))
    fake.reset()
    fake.expire_token()
    gateway.send(sms(case))
    assert len(fake.accepted) == 1
    assert sum(fake.count(path) for path in case.auth_paths) == 1
