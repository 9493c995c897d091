"""The gateway registry: the built-ins each declare their spec in their own file; third-party gateways
come in through the `smsdispatch.gateways` entry-point group (here the worked example of
docs/gateways/console.md, loaded through a test entry point)."""

from __future__ import annotations

import importlib
import io
import json
import re
import sys
import types
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from smsdispatch.config import load_settings
from smsdispatch.errors import ConfigError, UnknownGatewayError
from smsdispatch.gateways import Gateways, build_gateway, registry
from smsdispatch.keys import Keys
from smsdispatch.records import MessageStatus, Records
from smsdispatch.redact import redact
from smsdispatch.webhooks import Webhooks

DOC = Path(__file__).resolve().parents[2] / "docs" / "gateways" / "console.md"
SECRET = "s" * 24
CREDENTIALS = {"eskiz_email": "a@b.c", "eskiz_password": "pw", "devsms_token": "t", "smsflow_client_id": "c",
               "smsflow_client_secret": "s", "smscx_api_key": "k", "smspm_hash": "h", "smspm_token": "t"}


@pytest.fixture(autouse=True)
def fresh_registry():
    registry.reset()
    yield
    registry.reset()


@pytest.fixture
def example():
    """The third-party gateway of docs/gateways/console.md, as the module an entry point names."""
    [code] = [block for block in re.findall(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)
              if block.startswith('"""acme_sms/gateway.py')]
    module = types.ModuleType("acme_sms_example")
    sys.modules[module.__name__] = module
    exec(compile(code, str(DOC), "exec"), module.__dict__)
    yield module
    del sys.modules[module.__name__]


def use_entry_points(monkeypatch, **points: str) -> None:
    found = [EntryPoint(name=name, value=value, group=registry.ENTRY_POINT_GROUP) for name, value in points.items()]
    monkeypatch.setattr(registry, "entry_points", lambda group: [p for p in found if p.group == group])
    registry.reset()


def test_the_six_built_ins_in_their_order_and_the_three_that_post_reports():
    assert registry.names() == ("console", "eskiz", "devsms", "smsflow", "smscx", "smspm")
    assert registry.webhook_names() == ("eskiz", "devsms", "smscx")


@pytest.mark.parametrize("name", ["eskiz", "devsms", "smsflow", "smscx", "smspm"])
def test_each_spec_lives_in_its_gateways_file_with_the_status_map_its_adapter_reads(name, redis_client):
    module = importlib.import_module(f"smsdispatch.gateways.{name}")
    spec = registry.get(name)
    assert module.SPEC is spec and spec.status_map is module.STATUS_MAP
    adapter = build_gateway(name, load_settings(**CREDENTIALS), redis_client, Keys("t"))
    assert type(adapter).__module__ == module.__name__ and adapter.name == name


def test_configured_means_one_complete_set_of_credentials():
    assert load_settings(smscx_client_id="c").configured_gateways() == ["console"]
    assert load_settings(smscx_client_id="c", smscx_client_secret="s").configured_gateways() == ["console", "smscx"]
    assert load_settings(**CREDENTIALS).configured_gateways() == list(registry.BUILTIN)
    with pytest.raises(ConfigError, match="DEFAULT_GATEWAY is smscx but SMSCX_API_KEY "
                                          r"\(or SMSCX_CLIENT_ID / SMSCX_CLIENT_SECRET\) is not set"):
        load_settings(default_gateway="smscx")


def test_a_devsms_report_is_read_with_devsmss_own_map(redis_client):
    """DevSMS reports used to be read with Eskiz's map: DELETED (failed for Eskiz, unknown to DevSMS and
    so still in flight, as DevSMS's status poll reads it) failed a DevSMS message the poll would not."""
    from smsdispatch.gateways import devsms, eskiz
    records = Records(redis_client, Keys("t"))
    hooks = Webhooks(load_settings(webhook_base_url="https://sms.example.com/hooks", webhook_secret=SECRET),
                     records)
    for n, word in enumerate(sorted({*eskiz.STATUS_MAP, *devsms.STATUS_MAP, "SENT", "DELETED"})):
        records.update(f"d{n}", MessageStatus.ACCEPTED, gateway="devsms", gateway_message_id=str(n))
        post(hooks, f"/devsms/{SECRET}", {"sms_id": n, "status": word})
        polled = devsms.map_status(word)
        assert records.get(f"d{n}")["status"] == (polled if polled is not MessageStatus.ACCEPTED else "accepted"), word
    records.update("e1", MessageStatus.ACCEPTED, gateway="eskiz")
    post(hooks, f"/eskiz/{SECRET}", {"user_sms_id": "e1", "status": "DELETED"})
    assert records.get("e1")["status"] == "failed"         # Eskiz's own map still says DELETED is final


def test_a_third_party_gateway_from_an_entry_point_is_configured_built_and_gets_its_reports(
        monkeypatch, example, redis_client):
    use_entry_points(monkeypatch, acme="acme_sms_example:SPEC")
    assert registry.names()[-1] == "acme" and "acme" in registry.webhook_names()
    with pytest.raises(ConfigError, match="DEFAULT_GATEWAY is acme but ACME_API_KEY is not set"):
        load_settings(default_gateway="acme")

    registry.reset()
    monkeypatch.setenv("SMSDISPATCH_ACME_API_KEY", "acme-key-0123456789")
    monkeypatch.setenv("SMSDISPATCH_ACME_BASE_URL", "http://127.0.0.1:9/api/")
    settings = load_settings(routes="44=acme", rate_limits="acme=20", webhook_base_url="https://h.example/hooks",
                             webhook_secrets=f"acme={SECRET}")
    assert settings.configured_gateways() == ["console", "acme"] and settings.route("+447700900000") == "acme"
    assert settings.callback_url("acme") == f"https://h.example/hooks/acme/{SECRET}"
    adapter = Gateways(settings, redis_client, Keys("t")).get("acme")
    assert isinstance(adapter, example.AcmeGateway) and adapter.base_url == "http://127.0.0.1:9/api"
    assert adapter.total_timeout == settings.http_total_timeout
    assert redact("the gateway said: bad key acme-key-0123456789") == "the gateway said: bad key ***"

    records = Records(redis_client, Keys("t"))
    records.update("a1", MessageStatus.ACCEPTED, gateway="acme", gateway_message_id="x-1")
    hooks = Webhooks(settings, records)
    assert post(hooks, f"/acme/{SECRET}", {"id": "x-1", "status": "delivered"}) == (200, {"reports": 1, "applied": 1})
    assert records.get("a1")["status"] == "delivered"
    assert post(hooks, f"/acme/{SECRET}", {"status": "delivered"})[0] == 400


def test_a_third_party_gateways_bad_setting_stops_start_up_naming_its_variable(monkeypatch, example):
    class Strict(example.AcmeSettings):
        window: int = 60

    spec = example.SPEC.__class__(**{**example.SPEC.__dict__, "settings_model": Strict})
    monkeypatch.setattr(example, "STRICT", spec, raising=False)
    use_entry_points(monkeypatch, acme="acme_sms_example:STRICT")
    monkeypatch.setenv("SMSDISPATCH_ACME_API_KEY", "k")
    monkeypatch.setenv("SMSDISPATCH_ACME_WINDOW", "soon")
    with pytest.raises(ConfigError, match="SMSDISPATCH_ACME_WINDOW: Input should be a valid integer"):
        load_settings(default_gateway="acme")


@pytest.mark.parametrize(("name", "message"), [
    ("eskiz", "'eskiz', which a built-in gateway already uses"),
    ("Acme-2", "must be named like its spec"),
])
def test_a_name_clash_or_a_bad_name_is_refused(monkeypatch, example, name, message):
    spec = example.SPEC.__class__(**{**example.SPEC.__dict__, "name": name})
    monkeypatch.setattr(example, "CLASH", spec, raising=False)
    use_entry_points(monkeypatch, **{name: "acme_sms_example:CLASH"})
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings()
    with pytest.raises(ConfigError, match=re.escape(message)):
        registry.names()


def test_an_entry_point_that_is_no_spec_is_refused(monkeypatch, example):
    use_entry_points(monkeypatch, acme="acme_sms_example:AcmeGateway")
    with pytest.raises(ConfigError, match="is not a GatewaySpec"):
        registry.names()


@pytest.mark.parametrize("name, variable", [("eskiz", "SMSDISPATCH_ESKIZ_PASSWORD"), ("devsms", "SMSDISPATCH_DEVSMS_TOKEN"),
                                            ("smsflow", "SMSDISPATCH_SMSFLOW_CLIENT_SECRET"),
                                            ("smspm", "SMSDISPATCH_SMSPM_TOKEN")])
def test_building_a_gateway_without_its_credentials_names_the_missing_one(name, variable, redis_client):
    """Gateways.get builds configured gateways only; built directly, an adapter never gets a None secret."""
    missing = variable.removeprefix("SMSDISPATCH_").lower()
    settings = load_settings(**{k: v for k, v in CREDENTIALS.items() if k != missing})
    with pytest.raises(ConfigError, match=f"^{variable} is not set$"):
        build_gateway(name, settings, redis_client, Keys("t"))


def test_an_unknown_gateway_names_the_known_ones(redis_client):
    with pytest.raises(UnknownGatewayError, match="known: console, eskiz, devsms, smsflow, smscx, smspm"):
        build_gateway("pigeon", load_settings(), redis_client, Keys("t"))


def test_gateways_builds_each_once_and_still_refuses_an_unconfigured_one(redis_client):
    gateways = Gateways(load_settings(default_gateway="console"), redis_client, Keys("t"))
    first = gateways.get("console")
    assert gateways.get("console") is first         # built once, then answered without listing them again
    with pytest.raises(UnknownGatewayError, match="'eskiz' is not configured here"):
        gateways.get("eskiz")
    with pytest.raises(UnknownGatewayError):
        gateways.get("eskiz")                       # a refusal is not remembered as a gateway


def post(hooks, path, body):
    raw = json.dumps(body).encode()
    status, answer = hooks.handle({"PATH_INFO": path, "REQUEST_METHOD": "POST", "CONTENT_LENGTH": str(len(raw)),
                                   "CONTENT_TYPE": "application/json", "wsgi.input": io.BytesIO(raw)})
    return int(status.split()[0]), answer
