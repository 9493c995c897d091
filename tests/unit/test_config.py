import pytest

from smsdispatch.config import load_settings
from smsdispatch.errors import ConfigError


def test_defaults():
    s = load_settings()
    assert s.redis_url == "redis://localhost:6379/0"
    assert s.default_gateway == "console" and s.visibility_timeout == 3600
    assert s.eskiz_base_url == "https://notify.eskiz.uz/api" and s.eskiz_sender == "4546"
    assert s.configured_gateways() == ["console"]


def test_environment_is_read_with_the_prefix(monkeypatch):
    monkeypatch.setenv("SMSDISPATCH_DEFAULT_REGION", "uz")
    monkeypatch.setenv("SMSDISPATCH_MAX_ATTEMPTS", "7")
    s = load_settings()
    assert s.default_region == "UZ" and s.max_attempts == 7


@pytest.mark.parametrize("var, value, words", [
    ("SMSDISPATCH_VISIBILITY_TIMEOUT", "soon", "valid integer"),
    ("SMSDISPATCH_REDIS_URL", "http://x", "redis://"),
    ("SMSDISPATCH_DEFAULT_GATEWAY", "carrier-pigeon", "unknown gateway"),
    ("SMSDISPATCH_DEFAULT_REGION", "XX", "region"),
    ("SMSDISPATCH_MAX_ATTEMPTS", "0", "greater than or equal"),
    ("SMSDISPATCH_ESKIZ_BASE_URL", "notify.eskiz.uz", "http"),
    ("SMSDISPATCH_HTTP_TOTAL_TIMEOUT", "0", "greater than 0"),
    ("SMSDISPATCH_HTTP_TOTAL_TIMEOUT", "soon", "valid number"),
    ("SMSDISPATCH_HTTP_TOTAL_TIMEOUT", "4", "must be at least HTTP_CONNECT_TIMEOUT (5s), got 4s"),
    ("SMSDISPATCH_GATEWAY_CONCURRENCY", "pigeon=2", "unknown gateway 'pigeon'"),
    ("SMSDISPATCH_GATEWAY_CONCURRENCY", "eskiz=0", "eskiz: must be above 0"),
    ("SMSDISPATCH_GATEWAY_CONCURRENCY", "eskiz=2.5", "valid integer"),
    ("SMSDISPATCH_GATEWAY_CONCURRENCY", "eskiz:4", "must look like"),
    ("SMSDISPATCH_GATEWAY_CONCURRENCY_DEFAULT", "-1", "greater than or equal to 0"),
])
def test_a_bad_setting_names_its_variable(monkeypatch, var, value, words):
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as e:
        load_settings()
    assert var in str(e.value) and words in str(e.value)


def test_cross_checks_name_the_variables_involved(monkeypatch):
    monkeypatch.setenv("SMSDISPATCH_VISIBILITY_TIMEOUT", "100")
    with pytest.raises(ConfigError, match="BACKOFF_MAX .* VISIBILITY_TIMEOUT"):
        load_settings()
    monkeypatch.delenv("SMSDISPATCH_VISIBILITY_TIMEOUT")
    monkeypatch.setenv("SMSDISPATCH_HTTP_READ_TIMEOUT", "60")
    with pytest.raises(ConfigError, match="CLAIM_LEASE"):
        load_settings()
    monkeypatch.delenv("SMSDISPATCH_HTTP_READ_TIMEOUT")
    monkeypatch.setenv("SMSDISPATCH_DEFAULT_GATEWAY", "eskiz")
    with pytest.raises(ConfigError, match="ESKIZ_EMAIL"):
        load_settings()


def test_secrets_never_show_in_repr_or_errors(monkeypatch):
    monkeypatch.setenv("SMSDISPATCH_ESKIZ_EMAIL", "me@example.com")
    monkeypatch.setenv("SMSDISPATCH_ESKIZ_PASSWORD", "hunter2-secret")
    s = load_settings()
    assert "hunter2" not in repr(s) and "hunter2" not in str(s.model_dump())
    assert s.eskiz_password.get_secret_value() == "hunter2-secret"
    assert s.configured_gateways() == ["console", "eskiz"]
    monkeypatch.setenv("SMSDISPATCH_ESKIZ_PASSWORD", "hunter2-secret")
    monkeypatch.setenv("SMSDISPATCH_MAX_ATTEMPTS", "x")
    with pytest.raises(ConfigError) as e:
        load_settings()
    assert "hunter2" not in str(e.value)


def test_routes_pick_the_longest_prefix_and_must_name_configured_gateways(monkeypatch):
    monkeypatch.setenv("SMSDISPATCH_DEVSMS_TOKEN", "t")
    monkeypatch.setenv("SMSDISPATCH_ROUTES", "998=devsms, 99897=console")
    s = load_settings()
    assert s.routes == {"998": "devsms", "99897": "console"}
    assert s.route("+998901234567") == "devsms" and s.route("+998971234567") == "console"
    assert s.route("+447911123456") == "console"        # no rule: the default gateway
    monkeypatch.setenv("SMSDISPATCH_ROUTES", '{"27": "devsms"}')
    assert load_settings().routes == {"27": "devsms"}
    monkeypatch.setenv("SMSDISPATCH_ROUTES", "998=smscx")
    with pytest.raises(ConfigError, match="ROUTES sends 998 to smscx but SMSCX_API_KEY"):
        load_settings()
    monkeypatch.setenv("SMSDISPATCH_ROUTES", "998:eskiz")
    with pytest.raises(ConfigError, match="SMSDISPATCH_ROUTES: must look like"):
        load_settings()
    monkeypatch.setenv("SMSDISPATCH_ROUTES", "uz=eskiz")
    with pytest.raises(ConfigError, match="must be digits"):
        load_settings()


def test_each_gateway_counts_as_configured_only_with_its_credentials(monkeypatch):
    assert load_settings().configured_gateways() == ["console"]
    for var, value in [("DEVSMS_TOKEN", "t"), ("SMSFLOW_CLIENT_ID", "id"), ("SMSFLOW_CLIENT_SECRET", "s"),
                       ("SMSCX_CLIENT_ID", "id"), ("SMSCX_CLIENT_SECRET", "s"), ("SMSPM_HASH", "h"),
                       ("SMSPM_TOKEN", "t")]:
        monkeypatch.setenv(f"SMSDISPATCH_{var}", value)
    assert load_settings().configured_gateways() == ["console", "devsms", "smsflow", "smscx", "smspm"]
    monkeypatch.setenv("SMSDISPATCH_DEFAULT_GATEWAY", "eskiz")
    with pytest.raises(ConfigError, match="DEFAULT_GATEWAY is eskiz but ESKIZ_EMAIL"):
        load_settings()


def test_the_reminder_horizon_must_fit_inside_the_visibility_timeout(monkeypatch):
    monkeypatch.setenv("SMSDISPATCH_VISIBILITY_TIMEOUT", "400")
    monkeypatch.setenv("SMSDISPATCH_BACKOFF_MAX", "60")
    with pytest.raises(ConfigError, match=r"REMINDER_HORIZON \(300s\) \+ CLAIM_LEASE \(120s\) must stay below"):
        load_settings()
    monkeypatch.setenv("SMSDISPATCH_REMINDER_HORIZON", "60")
    assert load_settings().reminder_horizon == 60


def test_the_total_timeout_defaults_to_connect_plus_read_and_bounds_the_claim_lease(monkeypatch):
    assert load_settings().http_total_timeout == 20.0       # 5 + 15
    for var, value in [("HTTP_CONNECT_TIMEOUT", "1"), ("HTTP_READ_TIMEOUT", "1"), ("CLAIM_LEASE", "8")]:
        monkeypatch.setenv(f"SMSDISPATCH_{var}", value)     # the integration tests' and chaos's timings
    assert load_settings().http_total_timeout == 2.0
    monkeypatch.setenv("SMSDISPATCH_HTTP_TOTAL_TIMEOUT", "1.5")
    assert load_settings().http_total_timeout == 1.5
    monkeypatch.setenv("SMSDISPATCH_HTTP_TOTAL_TIMEOUT", "3")
    with pytest.raises(ConfigError, match=r"CLAIM_LEASE \(8s\) must be at least 4 x HTTP_TOTAL_TIMEOUT \(3s\) = 12s"):
        load_settings()
    monkeypatch.delenv("SMSDISPATCH_HTTP_TOTAL_TIMEOUT")
    monkeypatch.setenv("SMSDISPATCH_HTTP_READ_TIMEOUT", "2")
    with pytest.raises(ConfigError, match=r"CLAIM_LEASE \(8s\) must be at least 4 x HTTP_TOTAL_TIMEOUT \(unset: "
                                          r"HTTP_CONNECT_TIMEOUT \+ HTTP_READ_TIMEOUT = 3s\) = 12s"):
        load_settings()
    monkeypatch.setenv("SMSDISPATCH_HTTP_TOTAL_TIMEOUT", "2")    # a deadline under connect + read is fine
    assert load_settings().http_total_timeout == 2.0


def test_gateway_concurrency_is_parsed_like_the_other_per_gateway_settings(monkeypatch):
    s = load_settings()
    assert s.gateway_concurrency == {} and s.gateway_concurrency_default == 0
    monkeypatch.setenv("SMSDISPATCH_GATEWAY_CONCURRENCY", "eskiz=4, smscx=8")
    monkeypatch.setenv("SMSDISPATCH_GATEWAY_CONCURRENCY_DEFAULT", "2")
    s = load_settings()
    assert s.gateway_concurrency == {"eskiz": 4, "smscx": 8} and s.gateway_concurrency_default == 2


def test_a_redis_password_shows_in_no_repr_dump_or_log():
    from smsdispatch.redact import redact
    s = load_settings(redis_url="redis://:hunter2-redis-pw@redis.internal:6379/0")
    assert s.redis_url == "redis://:hunter2-redis-pw@redis.internal:6379/0"      # whole for Celery and redis-py
    for shown in (repr(s), str(s), s.model_dump_json(), str(s.model_dump())):
        assert "hunter2-redis-pw" not in shown
    assert '"redis_url":"redis://:***@redis.internal:6379/0"' in s.model_dump_json()
    # a library's message quoting the URL, or the bare password, is masked in any log line
    assert redact("Error connecting to redis://:hunter2-redis-pw@redis.internal:6379/0") == \
        "Error connecting to redis://:***@redis.internal:6379/0"
    assert "hunter2-redis-pw" not in redact("AUTH hunter2-redis-pw failed")


def test_a_gateway_error_echoing_our_secret_or_a_token_is_redacted():
    from smsdispatch.errors import AuthError
    load_settings(eskiz_password="eskiz-pw-echoed-back")
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJl"
    e = AuthError(f'HTTP 401: {{"message": "wrong password eskiz-pw-echoed-back, token {token}"}}', gateway="eskiz")
    assert "eskiz-pw-echoed-back" not in str(e) and "eskiz-pw-echoed-back" not in e.message
    assert token not in e.message and "wrong password ***" in e.message


def test_idempotency_ttl_must_outlive_a_redelivery(monkeypatch):
    """A task can come back for VISIBILITY_TIMEOUT plus the sweeper's grace: a ledger entry that expires
    sooner would let the redelivered task claim its key as new."""
    monkeypatch.setenv("SMSDISPATCH_IDEMPOTENCY_TTL", "60")
    monkeypatch.setenv("SMSDISPATCH_RECORD_TTL", "0")
    with pytest.raises(ConfigError) as e:
        load_settings()
    assert "IDEMPOTENCY_TTL (60s) must exceed VISIBILITY_TIMEOUT (3600s)" in str(e.value)
    # defaults: 3600 + max(QUEUED_GRACE 900, 120 + 300 + 60) = 4500
    monkeypatch.setenv("SMSDISPATCH_IDEMPOTENCY_TTL", "4500")
    with pytest.raises(ConfigError, match="= 4500s"):
        load_settings()
    monkeypatch.setenv("SMSDISPATCH_IDEMPOTENCY_TTL", "4501")
    assert load_settings().idempotency_ttl == 4501


def test_worker_lost_after_has_a_floor(monkeypatch):
    """Below 3 s a worker busy for a moment (a GC pause, a slow Redis) would be taken for dead."""
    monkeypatch.setenv("SMSDISPATCH_WORKER_LOST_AFTER", "2")
    with pytest.raises(ConfigError, match="WORKER_LOST_AFTER"):
        load_settings()
