"""Redis Sentinel settings: the URL form, what each of kombu, Celery and our client gets, and secrets kept.

No Sentinel is reached here (tests/integration/test_sentinel.py runs a real deployment)."""

from __future__ import annotations

import pytest

from smsdispatch import sentinel
from smsdispatch.config import load_settings
from smsdispatch.errors import ConfigError
from smsdispatch.redact import redact

URL = "sentinel://:data-pw-7f3a9c@10.0.0.1:26379/2;sentinel://10.0.0.2:26380;sentinel://10.0.0.3"


def test_the_url_names_every_sentinel_and_the_first_carries_the_database_and_the_data_password():
    parsed = sentinel.parse(URL)
    assert parsed.addresses == (("10.0.0.1", 26379), ("10.0.0.2", 26380), ("10.0.0.3", 26379))
    assert (parsed.db, parsed.username, parsed.password) == (2, None, "data-pw-7f3a9c")
    assert sentinel.parse("sentinel://h:1").db == 0 and sentinel.is_sentinel(URL)
    assert not sentinel.is_sentinel("redis://h:6379/0")
    acl = sentinel.parse("sentinel://app:s%40cret@h:1/0;sentinel://h2:1/0")          # the same db again is fine
    assert (acl.username, acl.password) == ("app", "s@cret")


@pytest.mark.parametrize(("url", "why"), [
    ("sentinel://h1:1;redis://h2:6379", "must be sentinel://"),
    ("sentinel://h1:1/0;sentinel://h2:1/3", "first address only"),
    ("sentinel://h1:1;sentinel://:other-password@h2:1", "first address only"),
    ("sentinel://:1", "names no host"),
    ("sentinel://h1:1/zero", "database must be a number"),
    ("sentinel://h1:port", "port must be a number"),
    (";", "names no Sentinel"),
])
def test_a_url_kombu_or_celery_would_read_otherwise_is_refused(url, why):
    with pytest.raises(ValueError, match=why):
        sentinel.parse(url)


def test_settings_need_the_primarys_name_with_a_sentinel_url_and_only_then():
    s = load_settings(redis_url=URL, sentinel_master="mymaster", sentinel_password="sentinel-pw-81d2e4")
    assert s.sentinel_master == "mymaster"
    with pytest.raises(ConfigError, match="set SENTINEL_MASTER"):
        load_settings(redis_url=URL)
    with pytest.raises(ConfigError, match="REDIS_URL is not a sentinel://"):
        load_settings(redis_url="redis://h:6379/0", sentinel_master="mymaster")
    with pytest.raises(ConfigError, match="SMSDISPATCH_REDIS_URL: .*first address only"):
        load_settings(redis_url="sentinel://h1:1/0;sentinel://h2:1/3", sentinel_master="m")
    with pytest.raises(ConfigError, match="sentinel://"):
        load_settings(redis_url="http://h:1")


def test_both_passwords_show_in_no_repr_dump_or_log_line():
    s = load_settings(redis_url=URL, sentinel_master="mymaster", sentinel_password="sentinel-pw-81d2e4")
    for shown in (repr(s), str(s), s.model_dump_json(), str(s.model_dump())):
        assert "data-pw-7f3a9c" not in shown and "sentinel-pw-81d2e4" not in shown
    assert "sentinel://:***@10.0.0.1:26379/2;sentinel://10.0.0.2:26380" in s.model_dump_json()
    assert redact(f"Cannot connect to {URL}") == \
        "Cannot connect to sentinel://:***@10.0.0.1:26379/2;sentinel://10.0.0.2:26380;sentinel://10.0.0.3"
    assert "sentinel-pw-81d2e4" not in redact("AUTH sentinel-pw-81d2e4 refused")


def test_the_broker_the_result_backend_and_our_client_all_go_through_the_sentinels():
    from kombu import Connection

    from smsdispatch.redis_transport import SentinelChannel, SentinelTransport
    from smsdispatch.redisclient import SentinelScriptPool, connect
    from smsdispatch.worker import create_app
    s = load_settings(redis_url=URL, sentinel_master="mymaster", sentinel_password="sentinel-pw-81d2e4")
    app = create_app(s)
    options = {"master_name": "mymaster", "sentinel_kwargs": {
        "password": "sentinel-pw-81d2e4", "socket_timeout": 1.0, "socket_connect_timeout": 1.0}}
    assert app.conf.broker_transport == "smsdispatch.redis_transport:SentinelTransport"
    assert options.items() <= app.conf.broker_transport_options.items()
    assert options.items() <= app.conf.result_backend_transport_options.items()
    assert app.conf.broker_transport_options["worker_lost_after"] == s.worker_lost_after     # ours, kept
    assert type(app.backend).__name__ == "SentinelBackend"
    conn = Connection(URL, transport=app.conf.broker_transport, transport_options=app.conf.broker_transport_options)
    assert conn.transport.__class__ is SentinelTransport and SentinelTransport.Channel is SentinelChannel
    assert {"master_name", "sentinel_kwargs", "worker_lost_after", "smsdispatch_key_prefix"} <= set(
        SentinelChannel.from_transport_options)
    client = connect(URL, sentinel_master="mymaster", sentinel_password="sentinel-pw-81d2e4")
    pool = client.connection_pool
    assert isinstance(pool, SentinelScriptPool) and pool.service_name == "mymaster"
    assert (pool.connection_kwargs["db"], pool.connection_kwargs["password"]) == (2, "data-pw-7f3a9c")
    sentinels = pool.sentinel_manager.sentinels
    assert [(c.connection_pool.connection_kwargs["host"], c.connection_pool.connection_kwargs["port"])
            for c in sentinels] == [("10.0.0.1", 26379), ("10.0.0.2", 26380), ("10.0.0.3", 26379)]
    assert sentinels[0].connection_pool.connection_kwargs["password"] == "sentinel-pw-81d2e4"
    with pytest.raises(ValueError, match="SENTINEL_MASTER"):
        connect(URL)


def test_a_plain_redis_url_keeps_its_transport_and_no_sentinel_options():
    from smsdispatch.worker import create_app
    app = create_app(load_settings(redis_url="redis://127.0.0.1:1/0"))
    assert app.conf.broker_transport == "smsdispatch.redis_transport:Transport"
    assert "master_name" not in app.conf.broker_transport_options
    assert "master_name" not in app.conf.result_backend_transport_options
