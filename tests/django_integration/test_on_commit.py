"""A Django request's SMS goes out if and only if its transaction commits: the test project's order view
(ATOMIC_REQUESTS) through `send_sms.delay_on_commit`, `send_batch.delay_on_commit`,
`schedule_reminder_on_commit` and the outbox, with PostgreSQL, Redis, the fake Eskiz and a real worker
started from smsdispatch.contrib.django.worker."""

from __future__ import annotations

import uuid

import pytest

from smsdispatch.dispatch import message_id_for

from .conftest import accepted, numbers

HOWS = ["delay_on_commit", "outbox", "batch", "outbox_batch", "reminder"]
PHONES = numbers()


@pytest.fixture
def client(django_app):
    from django.test import Client
    return Client()


def order(client, how: str, *, fail: bool = False) -> tuple[str, str]:
    """POST an order; returns (its number, the phone its SMS goes to). With `fail` the view raises
    after asking for the SMS, and its transaction rolls back."""
    number, phone = uuid.uuid4().hex[:12], next(PHONES)
    data = {"number": number, "phone": phone, "how": how} | ({"fail": "1"} if fail else {})
    if fail:
        with pytest.raises(RuntimeError, match="failed after the SMS was asked for"):
            client.post("/orders/", data)
    else:
        response = client.post("/orders/", data)
        assert response.status_code == 200, response.content
    return number, phone


def message_of(number: str) -> str:
    return message_id_for(f"order-{number}-confirmed", "")


@pytest.mark.parametrize("how", HOWS)
def test_a_committed_request_sends_its_sms_once(how, client, worker, fake):
    from smsdispatch import get_batch, get_reminder
    from smsdispatch.reminders import NAMESPACE
    number, phone = order(client, how)
    record = accepted(message_of(number))
    assert record["idempotency_key"] == f"order-{number}-confirmed"
    assert len(fake.accepted_for(to=phone)) == 1
    assert len(fake.calls_carrying(message_of(number))) == 1
    if how in ("batch", "outbox_batch"):
        assert get_batch(f"order-{number}")["accepted"] == 1
    if how == "reminder":
        reminder_id = str(uuid.uuid5(NAMESPACE, f"order-{number}-confirmed"))
        assert (get_reminder(reminder_id) or {}).get("message_id") == message_of(number)


@pytest.mark.parametrize("how", HOWS)
def test_a_rolled_back_request_records_nothing_and_sends_nothing(how, client, worker, fake):
    """Nothing in Redis, no outbox row, no gateway call. The rolled-back order's SMS would have been
    published before the next committed one's, and the worker takes them in order: once the next one is
    accepted, the first would have been sent if it had been published."""
    from django.db import connection

    from smsdispatch import app, get_batch, get_message
    from tests.djangoproject.shop.models import Order
    lost, lost_phone = order(client, how, fail=True)
    later, _ = order(client, how)
    accepted(message_of(later))
    assert not Order.objects.filter(number=lost).exists()
    assert get_message(message_of(lost)) is None
    assert get_batch(f"order-{lost}") is None
    assert fake.accepted_for(to=lost_phone) == [] and fake.calls_carrying(message_of(lost)) == []
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM smsdispatch_outbox WHERE idempotency_key = %s", [f"order-{lost}-confirmed"])
        assert cursor.fetchone()[0] == 0
    prefix = app.runtime.settings.key_prefix
    leftovers = [k for pattern in (f"{prefix}:*{lost}*", f"{prefix}:*{message_of(lost)}*")
                 for k in app.runtime.redis.scan_iter(pattern)]
    assert leftovers == []


def test_delay_on_commit_refuses_bad_input_inside_the_transaction(worker, fake):
    """ValidationError at the call, inside the atomic block; the transaction goes on and commits what it
    holds, and the message that was refused is nowhere."""
    from django.db import transaction

    from smsdispatch import outbox, send_sms
    from smsdispatch.errors import ValidationError
    from tests.djangoproject.shop.models import Order
    phone, number = next(PHONES), uuid.uuid4().hex[:12]
    with transaction.atomic():
        Order.objects.create(number=number, phone=phone)
        with pytest.raises(ValidationError, match="text: at most"):
            send_sms.delay_on_commit(phone, "x" * 5000, idempotency_key=f"too-long-{number}")
        with pytest.raises(ValidationError, match="callback_url"):
            outbox.send_sms(phone, "Hi", callback_url="http://plain.example.com/", idempotency_key=f"cb-{number}")
        with pytest.raises(ValidationError, match="NUL"):
            outbox.send_sms(phone, "Hi\x00", idempotency_key=f"nul-{number}")
        message_id = send_sms.delay_on_commit(phone, "Still fine", idempotency_key=f"fine-{number}")
    assert Order.objects.filter(number=number).exists()
    accepted(message_id)
    assert len(fake.accepted_for(to=phone)) == 1
    from smsdispatch import get_message
    assert get_message(message_id_for(f"too-long-{number}", "")) is None


def test_the_admin_shows_outbox_rows_and_records_with_numbers_masked(client, worker, fake):
    from django.contrib.auth.models import User

    from smsdispatch.contrib.django.models import OutboxMessage
    number, phone = order(client, "outbox")
    accepted(message_of(number))
    row = OutboxMessage.objects.get(idempotency_key=f"order-{number}-confirmed")
    admin_user = User.objects.create_superuser(f"admin-{number}", password="unused-in-this-test")
    client.force_login(admin_user)
    listing = client.get("/admin/smsdispatch/outboxmessage/").content.decode()
    page = client.get(f"/admin/smsdispatch/outboxmessage/{row.id}/change/").content.decode()
    assert row.message_id in listing and "accepted" in page
    for shown in (listing, page):
        assert phone not in shown and phone[1:] not in shown
        assert f"{phone[:4]}*******{phone[-2:]}" in shown
