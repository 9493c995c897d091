"""The deployment files say what the README promises (docker-compose config checks the syntax in CI)."""

from pathlib import Path

import yaml

from smsdispatch.config import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def test_the_four_services_restart_by_themselves():
    assert set(SERVICES) == {"redis", "worker", "beat", "flower"}
    for name, service in SERVICES.items():
        assert service.get("restart") in ("unless-stopped", "always"), name


def test_redis_keeps_an_append_only_file_and_never_evicts():
    command = " ".join(SERVICES["redis"]["command"])
    assert "--appendonly yes" in command and "--maxmemory-policy noeviction" in command
    assert any(v.endswith(":/data") for v in SERVICES["redis"]["volumes"])


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
