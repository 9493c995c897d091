"""The transactional outbox sends each committed message exactly once: when the web process is killed
between its commit and its publish, when two relays run at once, when a relay published a row and died
before marking it, and when two rows carry the same key. PostgreSQL, Redis, the fake Eskiz, a real
worker (and beat) started from smsdispatch.contrib.django.worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid

from smsdispatch.dispatch import message_id_for

from .conftest import accepted, numbers, wait_until

PHONES = numbers()
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def rows(**filters):
    from smsdispatch.contrib.django.models import OutboxMessage
    return OutboxMessage.objects.filter(**filters)


def test_two_relays_at_once_publish_each_row_once(django_app, worker, fake, monkeypatch):
    """Relay A locks the first half of the rows and stops inside its first publish; relay B, meanwhile,
    must neither wait for A's locks nor take A's rows: it publishes the other half and returns. Then A
    finishes. Every row is published by exactly one of them, every message sent once."""
    from django.db import connection, transaction

    from smsdispatch import outbox
    from smsdispatch.contrib.django import outbox as django_outbox
    phones = [next(PHONES) for _ in range(10)]
    with transaction.atomic():
        ids = [outbox.send_sms(p, "Two relays", relay_on_commit=False) for p in phones]
    pks = list(rows(message_id__in=ids).values_list("id", flat=True))
    a_holds_its_rows, b_done = threading.Event(), threading.Event()
    real_publish = django_outbox.publish

    def publish(app, row):
        if threading.current_thread().name == "relay-a" and not a_holds_its_rows.is_set():
            a_holds_its_rows.set()
            assert b_done.wait(20), "relay B waited for relay A's rows instead of skipping them"
        real_publish(app, row)

    monkeypatch.setattr(django_outbox, "publish", publish)
    published: dict[str, int] = {}
    errors: list[BaseException] = []

    def run(name: str, limit: int | None) -> None:
        try:
            published[name] = django_outbox.relay(django_app, ids=pks, limit=limit)
        except BaseException as e:      # noqa: B036 - reported to the test below
            errors.append(e)
        finally:
            if name == "relay-b":
                b_done.set()
            connection.close()

    a = threading.Thread(target=run, args=("relay-a", 5), name="relay-a")
    a.start()
    assert a_holds_its_rows.wait(20)
    b = threading.Thread(target=run, args=("relay-b", None), name="relay-b")
    b.start()
    b.join(30)
    a.join(30)
    assert not errors, errors
    assert published == {"relay-a": 5, "relay-b": 5}
    assert rows(id__in=pks, published_at__isnull=True).count() == 0
    assert set(rows(id__in=pks).values_list("attempts", flat=True)) == {1}
    for message_id, phone in zip(ids, phones, strict=True):
        accepted(message_id)
        assert len(fake.accepted_for(to=phone)) == 1


def test_a_relay_killed_after_publishing_before_its_commit_leaves_a_row_that_is_sent_once(project_env, django_app,
                                                                                          worker, fake):
    """A real relay process publishes a row and is killed -9 before its commit: the row is still
    unpublished (its lock went with the connection), so the next relay publishes it again. Same key,
    same message id: the worker answers the copy from the record, and the gateway sees one send."""
    from django.db import transaction

    from smsdispatch import outbox
    from smsdispatch.contrib.django import outbox as django_outbox
    phone, key = next(PHONES), f"published-twice-{uuid.uuid4().hex}"
    with transaction.atomic():
        message_id = outbox.send_sms(phone, "Published twice", idempotency_key=key, relay_on_commit=False)
    row = rows(message_id=message_id).get()
    relay = subprocess.run([sys.executable, "-m", "tests.djangoproject.relay_and_die", str(row.id)], cwd=ROOT,
                           env={**os.environ, **project_env}, capture_output=True, text=True, timeout=60)
    assert relay.returncode == -signal.SIGKILL and f"published {row.id}" in relay.stdout, relay.stderr[-3000:]
    row.refresh_from_db()
    assert row.published_at is None and row.attempts == 0       # its transaction never committed
    accepted(message_id)
    assert django_outbox.relay(django_app, ids=[row.id]) == 1
    row.refresh_from_db()
    assert row.published_at is not None
    assert worker.wait_for(rf"send_sms\[.*\] succeeded.*'{key}'", count=2, timeout=20), worker.log[-3000:]
    assert len(fake.accepted_for(to=phone)) == 1 and len(fake.calls_carrying(message_id)) == 1


def test_a_duplicate_outbox_row_sends_once(django_app, worker, fake):
    """The same request twice (a client retried it): two transactions, two rows with one key, both
    published; one message, one send."""
    from django.db import transaction

    from smsdispatch import outbox
    phone, key = next(PHONES), f"retried-request-{uuid.uuid4().hex}"
    ids = []
    for _ in range(2):
        with transaction.atomic():
            ids.append(outbox.send_sms(phone, "Your code is 4821", idempotency_key=key))
    assert ids[0] == ids[1] == message_id_for(key, "")
    assert rows(idempotency_key=key).count() == 2
    accepted(ids[0])
    assert wait_until(lambda: rows(idempotency_key=key, published_at__isnull=True).count() == 0)
    assert worker.wait_for(rf"send_sms\[.*\] succeeded.*'{key}'", count=2, timeout=20), worker.log[-3000:]
    assert len(fake.accepted_for(to=phone)) == 1 and len(fake.calls_carrying(ids[0])) == 1


def test_the_relay_keeps_a_row_it_could_not_publish_and_publishes_it_later(django_app, worker, fake, monkeypatch):
    """Redis (the broker) away during a relay: the row stays, with the error and the attempt counted; the
    next run publishes it."""
    import redis
    from django.db import transaction

    from smsdispatch import outbox
    from smsdispatch.contrib.django import outbox as django_outbox
    phone = next(PHONES)
    with transaction.atomic():
        message_id = outbox.send_sms(phone, "After the outage", relay_on_commit=False)
    row = rows(message_id=message_id).get()

    def broker_away(app, row):
        raise redis.ConnectionError("Connection refused (in this test)")
    with monkeypatch.context() as m:
        m.setattr(django_outbox, "publish", broker_away)
        assert django_outbox.relay(django_app, ids=[row.id]) == 0
    row.refresh_from_db()
    assert row.published_at is None and row.attempts == 1 and "ConnectionError" in row.last_error
    assert django_outbox.relay(django_app, ids=[row.id]) == 1
    row.refresh_from_db()
    assert row.published_at is not None and row.attempts == 2 and row.last_error == ""
    accepted(message_id)
    assert len(fake.accepted_for(to=phone)) == 1


def test_a_web_process_killed_after_its_commit_still_sends_once_through_beats_relay(project_env, worker, beat, fake):
    """A real web process writes its order and its outbox row, commits, and is killed -9 right after
    the commit, before its own publish. The row committed; beat's relay publishes it; one send."""
    number, phone = uuid.uuid4().hex[:12], next(PHONES)
    web = subprocess.Popen([sys.executable, "-m", "tests.djangoproject.place_order", number, phone,
                            "--hang-after-commit"], cwd=ROOT, env={**os.environ, **project_env},
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        first = web.stdout.readline()
        assert first.startswith("committed "), first + web.stdout.read() if web.poll() is not None else first
        message_id = first.split()[1]
        os.kill(web.pid, signal.SIGKILL)
        web.wait(timeout=10)
    finally:
        if web.poll() is None:
            web.kill()
            web.wait()
    assert web.returncode == -signal.SIGKILL
    assert message_id == message_id_for(f"order-{number}-confirmed", "")
    accepted(message_id, timeout=30)
    assert beat.count(r"relay_outbox") >= 1 or worker.count(r"relay_outbox\[.*\] succeeded") >= 1
    row = rows(message_id=message_id).get()
    assert row.published_at is not None and row.attempts == 1 and row.last_error == ""
    assert len(fake.accepted_for(to=phone)) == 1 and len(fake.calls_carrying(message_id)) == 1
