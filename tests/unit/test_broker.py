"""The broker choice (broker.py, config.py): Redis stays as it was; amqp:// gets RabbitMQ's options."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from smsdispatch.broker import event_transport_options, whole_seconds
from smsdispatch.config import load_settings
from smsdispatch.errors import ConfigError
from smsdispatch.tasks import queue_names
from smsdispatch.worker import create_app

AMQP = "amqp://guest:rabbit-pw-5d1e7a@127.0.0.1:5672/vh"


def test_without_broker_url_redis_is_the_broker_as_before():
    settings = load_settings(redis_url="redis://127.0.0.1:1/0")
    app = create_app(settings)
    assert not settings.amqp_broker and app.conf.broker_url == "redis://127.0.0.1:1/0"
    assert app.conf.broker_transport == "smsdispatch.redis_transport:Transport"
    assert app.conf.broker_transport_options["visibility_timeout"] == settings.visibility_timeout
    assert all(q.exchange.type == "direct" and not q.queue_arguments for q in app.conf.task_queues)
    assert event_transport_options(settings) is None


def test_an_amqp_broker_gets_quorum_queues_on_topic_exchanges_confirms_and_redis_results():
    settings = load_settings(redis_url="redis://127.0.0.1:1/0", broker_url=AMQP)
    app = create_app(settings)
    assert app.conf.broker_url == AMQP and app.conf.result_backend == "redis://127.0.0.1:1/0"
    assert app.conf.broker_transport is None and app.conf.broker_transport_options == {"confirm_publish": True}
    assert app.conf.broker_native_delayed_delivery_queue_type == "quorum"
    assert app.conf.task_acks_late and app.conf.worker_prefetch_multiplier == 1
    queues = {q.name: q for q in app.conf.task_queues}
    assert set(queues) == set(queue_names(settings.queue))
    assert all(q.exchange.type == "topic" and q.queue_arguments == {"x-queue-type": "quorum"}
               for q in queues.values())
    assert event_transport_options(settings) == {"confirm_publish": False}


def test_the_broker_password_is_never_shown():
    settings = load_settings(broker_url=AMQP)
    assert "rabbit-pw" not in repr(settings) and "rabbit-pw" not in str(settings.model_dump())
    from smsdispatch.redact import redact
    assert "rabbit-pw" not in redact(f"cannot connect to {AMQP}")


@pytest.mark.parametrize("url", ["http://127.0.0.1/", "kafka://127.0.0.1:9092", "sqs://"])
def test_another_broker_scheme_is_refused_naming_the_setting(url):
    with pytest.raises(ConfigError, match="SMSDISPATCH_BROKER_URL"):
        load_settings(broker_url=url)


def test_on_rabbitmq_the_visibility_timeout_arithmetic_gives_way_to_the_consumer_timeout():
    # backoff + lease above the visibility timeout: refused on a Redis broker, irrelevant on RabbitMQ
    tight = {"visibility_timeout": 150, "backoff_max": 90, "claim_lease": 80, "reminder_horizon": 50}
    with pytest.raises(ConfigError, match="VISIBILITY_TIMEOUT"):
        load_settings(**tight)
    assert load_settings(broker_url=AMQP, **tight).redelivery_after == 1800
    with pytest.raises(ConfigError, match="RABBITMQ_CONSUMER_TIMEOUT"):
        load_settings(broker_url=AMQP, claim_lease=1900)
    with pytest.raises(ConfigError, match="RABBITMQ_CONSUMER_TIMEOUT"):
        load_settings(broker_url=AMQP, rabbitmq_consumer_timeout=10**7)     # IDEMPOTENCY_TTL below it


def test_delays_are_rounded_up_to_whole_seconds():
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert whole_seconds(0.5, None) == (1, None)
    assert whole_seconds(1.5, None) == (2, None)
    assert whole_seconds(3, None) == (3, None)
    assert whole_seconds(None, now + timedelta(seconds=2.2), now=now) == (3, None)
    assert whole_seconds(None, (now + timedelta(seconds=0.1)).isoformat(), now=now) == (1, None)
    past = now - timedelta(seconds=5)
    assert whole_seconds(None, past, now=now) == (None, past)       # due already: as given
    assert whole_seconds(0, None) == (0, None) and whole_seconds(None, None) == (None, None)


def test_an_empty_broker_url_means_redis_as_in_compose_without_the_profile():
    settings = load_settings(broker_url="")
    assert settings.broker_url is None and settings.celery_broker_url == settings.redis_url


def test_task_events_are_published_without_confirms_on_rabbitmq_and_tasks_with_them():
    """Celery's Events step publishes through the consumer's connection_for_write: ours drops the
    confirms there (a confirm wait inside the worker's event loop stalls it); the app's own connection,
    which task messages and retries go through, keeps them."""
    from types import SimpleNamespace

    from smsdispatch.task_events import Consumer

    app = create_app(load_settings(broker_url=AMQP))
    consumer = SimpleNamespace(app=app, ensure_connected=lambda conn: conn)
    events = Consumer.connection_for_write(consumer)
    assert events.transport_options["confirm_publish"] is False
    assert app.connection_for_write().transport_options["confirm_publish"] is True
