"""The reminder state machine on fakeredis: store, release, cancel, send, recover."""

from datetime import datetime, timedelta, timezone

import pytest

from smsdispatch.errors import ValidationError
from smsdispatch.keys import Keys
from smsdispatch.reminders import Reminders, parse_send_at

T0 = 1_800_000_000.0
AT = datetime.fromtimestamp(T0 + 3600, timezone.utc)


@pytest.fixture
def reminders(redis_client):
    return Reminders(redis_client, Keys("t"), default_region="UZ", ttl=0)


def schedule(reminders, send_at=AT, **kw):
    return reminders.schedule({"to": "+998901234567", "text": "Your table is ready"} | kw, send_at, now=T0)


def test_send_at_must_be_timezone_aware():
    assert parse_send_at(AT) == T0 + 3600
    assert parse_send_at("2027-01-15T09:00:00+05:00") == datetime(2027, 1, 15, 4, tzinfo=timezone.utc).timestamp()
    assert parse_send_at("2027-01-15T04:00:00Z") == datetime(2027, 1, 15, 4, tzinfo=timezone.utc).timestamp()
    for bad, words in [(datetime(2027, 1, 15, 9), "timezone-aware"), ("2027-01-15T09:00:00", "timezone-aware"),
                       ("next tuesday", "ISO 8601"), (1800000000, "timezone-aware datetime")]:
        with pytest.raises(ValidationError, match=words):
            parse_send_at(bad)


def test_bad_message_input_is_refused_when_scheduling(reminders):
    with pytest.raises(ValidationError, match="not a valid number"):
        schedule(reminders, to="+99890")
    with pytest.raises(ValidationError, match="text"):
        schedule(reminders, text="   ")


def test_a_reminder_waits_until_due_and_is_taken_once(reminders):
    rid, when = schedule(reminders)
    assert when == T0 + 3600 and reminders.get(rid)["state"] == "scheduled"
    assert reminders.claim_due(until=T0 + 3599, now=T0) == []
    due = reminders.claim_due(until=T0 + 3600, now=T0)
    assert [d.reminder_id for d in due] == [rid] and due[0].send_at == T0 + 3600
    assert reminders.claim_due(until=T0 + 9999, now=T0) == []          # a second beat finds nothing
    reminders.published(rid)
    assert reminders.get(rid)["state"] == "queued"


def test_the_same_key_schedules_one_reminder(reminders):
    a, _ = schedule(reminders, idempotency_key="booking-7-reminder")
    b, _ = schedule(reminders, idempotency_key="booking-7-reminder")
    assert a == b and len(reminders.claim_due(until=T0 + 9999, now=T0)) == 1


def test_a_past_time_is_due_now(reminders):
    rid, _ = schedule(reminders, send_at=AT - timedelta(days=400))
    assert [d.reminder_id for d in reminders.claim_due(until=T0, now=T0)] == [rid]


def test_cancelled_before_sending_never_sends(reminders):
    for release_first in (False, True):
        rid, _ = schedule(reminders, idempotency_key=f"k{release_first}")
        if release_first:
            reminders.claim_due(until=T0 + 9999, now=T0)
            reminders.published(rid)
        assert reminders.cancel(rid) is True and reminders.cancel(rid) is True
        assert reminders.begin_send(rid) is None
        assert reminders.claim_due(until=T0 + 9999, now=T0) == []
        assert reminders.get(rid)["state"] == "cancelled"


def test_once_sending_it_is_too_late_to_cancel(reminders):
    rid, _ = schedule(reminders)
    reminders.claim_due(until=T0 + 9999, now=T0)
    payload = reminders.begin_send(rid)
    assert payload["to"] == "+998901234567" and payload["idempotency_key"] == f"reminder:{rid}"
    assert reminders.cancel(rid) is False
    assert reminders.begin_send(rid) == payload                         # a task retry carries on
    reminders.finish(rid, {"message_id": "m1", "status": "accepted"})
    assert reminders.get(rid)["state"] == "done" and reminders.get(rid)["message_id"] == "m1"
    with pytest.raises(ValidationError, match="no reminder"):
        reminders.cancel("nope")


def test_a_release_interrupted_before_publishing_is_recovered(reminders):
    rid, _ = schedule(reminders)
    reminders.claim_due(until=T0 + 9999, now=T0)                       # ... and the releaser dies here
    assert reminders.recover(older_than=T0 - 1) == 0                    # not stale yet
    assert reminders.recover(older_than=T0 + 1) == 1
    assert reminders.get(rid)["state"] == "scheduled"
    assert [d.reminder_id for d in reminders.claim_due(until=T0 + 9999, now=T0 + 2)] == [rid]
