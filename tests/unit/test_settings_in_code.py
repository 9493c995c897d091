"""Settings a host app gives in code (`smsdispatch.configure`, `config.settings_from`): Django's
``SMSDISPATCH`` dict, Flask's config namespace or a `Settings`, validated like the environment."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

import smsdispatch
from smsdispatch import worker
from smsdispatch.config import Settings, settings_from
from smsdispatch.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    for name in list(__import__("os").environ):
        if name.startswith("SMSDISPATCH_"):
            monkeypatch.delenv(name)
    monkeypatch.setattr(worker, "_default", None)


def test_names_in_either_case_with_or_without_the_prefix_and_python_values():
    s = settings_from({"REDIS_URL": "redis://cache:6379/2", "default_gateway": "eskiz",
                       "SMSDISPATCH_ESKIZ_EMAIL": "a@b.uz", "eskiz_password": SecretStr("pw"),
                       "ROUTES": {"27": ["smscx", "console"]}, "VISIBILITY_TIMEOUT": 7200,
                       "SMSCX_API_KEY": "k"})
    assert s.redis_url == "redis://cache:6379/2" and s.default_gateway == "eskiz"
    assert s.routes == {"27": "smscx|console"} and s.visibility_timeout == 7200
    assert isinstance(s.eskiz_password, SecretStr) and s.eskiz_password.get_secret_value() == "pw"


def test_flask_style_namespace_and_keyword_overrides():
    config = {"SMSDISPATCH_QUEUE": "web", "SMSDISPATCH_KEY_PREFIX": "shop", "SECRET_KEY": "flask's own"}
    namespace = {k.removeprefix("SMSDISPATCH_").lower(): v for k, v in config.items() if k.startswith("SMSDISPATCH_")}
    s = settings_from(namespace, queue="web2")
    assert (s.queue, s.key_prefix) == ("web2", "shop")


def test_the_code_wins_and_the_environment_fills_the_rest(monkeypatch):
    monkeypatch.setenv("SMSDISPATCH_QUEUE", "from-env")
    monkeypatch.setenv("SMSDISPATCH_KEY_PREFIX", "envprefix")
    s = settings_from({"QUEUE": "from-code"})
    assert (s.queue, s.key_prefix) == ("from-code", "envprefix")


def test_an_unknown_name_is_a_config_error_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"no such setting: REDIS_UR \(did you mean REDIS_URL\?\)"):
        settings_from({"REDIS_UR": "redis://x"})


def test_a_bad_value_names_its_setting_and_a_retired_one_says_what_replaced_it():
    with pytest.raises(ConfigError, match="SMSDISPATCH_VISIBILITY_TIMEOUT"):
        settings_from({"VISIBILITY_TIMEOUT": "soon"})
    with pytest.raises(ConfigError, match="CIRCUIT_FAILURE_RATE"):
        settings_from({"CIRCUIT_FAILURES": 5})
    with pytest.raises(ConfigError, match="twice"):
        settings_from({"QUEUE": "a", "SMSDISPATCH_QUEUE": "b"})


def test_a_settings_object_passes_through_and_takes_overrides():
    base = Settings(redis_url="redis://:pw@cache:6379/1", queue="a")
    assert settings_from(base) is base
    changed = settings_from(base, queue="b")
    assert changed.queue == "b" and changed.redis_url == "redis://:pw@cache:6379/1"


def test_configure_makes_the_default_app_and_the_public_task_follows_it():
    app = smsdispatch.configure({"REDIS_URL": "redis://127.0.0.1:6399/3", "QUEUE": "shop"})
    assert worker.default_app() is app and smsdispatch.app.runtime.settings.queue == "shop"
    assert smsdispatch.send_sms.app is app
    assert smsdispatch.configure({"REDIS_URL": "redis://127.0.0.1:6399/3", "QUEUE": "shop"}) is app
    other = smsdispatch.configure({"REDIS_URL": "redis://127.0.0.1:6399/3", "QUEUE": "other"})
    assert other is not app and smsdispatch.send_sms.app is other


def test_a_secret_given_in_code_is_masked_like_one_from_the_environment():
    from smsdispatch.redact import redact
    smsdispatch.configure({"ESKIZ_EMAIL": "a@b.uz", "ESKIZ_PASSWORD": "code-only-secret-71"})
    assert redact("gateway said: bad password code-only-secret-71") == "gateway said: bad password ***"
