"""The deployment files say what the README promises (docker-compose config checks the syntax in CI)."""

import re
from pathlib import Path

import yaml

from smsdispatch.config import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def test_the_services_restart_by_themselves():
    assert set(SERVICES) == {"redis", "rabbitmq", "worker", "beat", "flower", "metrics", "webhooks"}
    for name, service in SERVICES.items():
        assert service.get("restart") in ("unless-stopped", "always"), name


def test_every_service_has_a_health_check_of_its_own():
    checks = {name: " ".join(s["healthcheck"]["test"]) for name, s in SERVICES.items()}
    assert set(checks) == set(SERVICES)
    assert 'smsdispatch health workers --node "celery@$$HOSTNAME"' in checks["worker"]     # its own node
    assert "smsdispatch health beat" in checks["beat"]
    assert "5555/healthcheck" in checks["flower"]
    for name in ("metrics", "webhooks"):        # only what the server needs itself: Redis
        assert "/healthz?check=redis" in checks[name], name
    assert "rabbitmq-diagnostics" in checks["rabbitmq"]
    for name in ("worker", "beat"):             # Docker reserves exit code 2, our CLI's usage error
        assert checks[name].endswith("|| exit 1"), name
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r'^HEALTHCHECK .*\\\n\s+CMD smsdispatch health workers --node "celery@\$HOSTNAME" \|\| exit 1$',
                     dockerfile, re.MULTILINE)


def test_the_receiver_runs_only_when_asked_and_the_pages_listen_on_loopback():
    assert SERVICES["webhooks"]["profiles"] == ["webhooks"]       # it needs a secret: opt in
    assert SERVICES["metrics"]["ports"] == ["127.0.0.1:9755:9755"]
    assert SERVICES["webhooks"]["ports"] == ["127.0.0.1:8080:8080"]
    env = SERVICES["worker"]["environment"]      # passed on only when set: "" would fail validation
    assert env["SMSDISPATCH_WEBHOOK_SECRET"] is None and env["SMSDISPATCH_WEBHOOK_BASE_URL"] is None


def test_redis_keeps_an_append_only_file_and_never_evicts():
    command = " ".join(SERVICES["redis"]["command"])
    assert "--appendonly yes" in command and "--maxmemory-policy noeviction" in command
    assert any(v.endswith(":/data") for v in SERVICES["redis"]["volumes"])


def _bytes(size: str) -> int:
    units = {"k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}
    size = size.lower().removesuffix("b")
    return int(float(size[:-1]) * units[size[-1]]) if size[-1] in units else int(size)


def test_redis_memory_is_capped_with_room_for_a_fork():
    """maxmemory under a container memory limit, with headroom for the copy-on-write of an AOF rewrite
    or BGSAVE fork (at most 70% of the limit)."""
    command = SERVICES["redis"]["command"]
    maxmemory = _bytes(command[command.index("--maxmemory") + 1])
    limit = _bytes(SERVICES["redis"]["mem_limit"])
    assert 0 < maxmemory <= 0.7 * limit


def test_worker_uses_the_thread_pool_and_flower_requires_basic_auth():
    assert SERVICES["worker"]["command"][4:6] == ["--pool", "threads"]
    assert SERVICES["flower"]["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")


def test_every_setting_named_in_compose_exists():
    fields = set(Settings.model_fields)
    for name, service in SERVICES.items():
        for var in service.get("environment", {}):
            if var.startswith("SMSDISPATCH_"):
                assert var.removeprefix("SMSDISPATCH_").lower() in fields, (name, var)


def test_nothing_configures_pickle():
    for path in [*ROOT.joinpath("smsdispatch").rglob("*.py"), ROOT / "docker-compose.yml"]:
        text = path.read_text()
        assert "accept_content" not in text or '"json"]' in text, path
        assert "serializer=\"pickle\"" not in text and "serializer='pickle'" not in text, path


def test_our_kombu_transport_and_consumer_are_configured_and_rediss_keeps_kombus_tls_defaults():
    from kombu import Connection

    from smsdispatch.config import load_settings
    from smsdispatch.redis_transport import Transport
    from smsdispatch.worker import create_app
    plain = create_app(load_settings(redis_url="redis://127.0.0.1:1/0"))
    assert plain.conf.worker_consumer == "smsdispatch.task_events:Consumer"
    assert plain.connection_for_write().transport_cls == "smsdispatch.redis_transport:Transport"
    assert Connection("redis://127.0.0.1:1/0", transport=plain.conf.broker_transport).transport.__class__ is Transport
    tls = create_app(load_settings(redis_url="rediss://127.0.0.1:1/0?ssl_cert_reqs=required"))
    assert tls.conf.broker_transport is None
    assert tls.connection_for_write().transport_cls == "rediss"      # kombu's own, with its TLS handling


def test_flower_listens_on_loopback_and_gets_no_gateway_credentials():
    flower = SERVICES["flower"]
    assert flower["ports"] == ["127.0.0.1:5555:5555"]
    assert set(flower["environment"]) == {"SMSDISPATCH_REDIS_URL", "SMSDISPATCH_BROKER_URL", "FLOWER_BASIC_AUTH"}
    assert "FLOWER_UNAUTHENTICATED_API" not in str(COMPOSE)


def test_rabbitmq_runs_only_when_asked_and_every_celery_process_gets_the_broker_url():
    """`--profile rabbitmq` adds RabbitMQ; SMSDISPATCH_BROKER_URL (empty: Redis is the broker) reaches
    worker, beat, Flower and the metrics page alike, so all of them talk to the same broker."""
    rabbit = SERVICES["rabbitmq"]
    assert rabbit["profiles"] == ["rabbitmq"] and re.fullmatch(r"rabbitmq:\d+\.\d+\.\d+", rabbit["image"])
    assert any(v.endswith(":/var/lib/rabbitmq") for v in rabbit["volumes"])
    assert "ports" not in rabbit        # reached by the services only
    for name in ("worker", "beat", "flower", "metrics"):
        assert SERVICES[name]["environment"]["SMSDISPATCH_BROKER_URL"] == "${SMSDISPATCH_BROKER_URL:-}", name
