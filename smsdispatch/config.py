"""Settings, read from the environment with the prefix ``SMSDISPATCH_``.

`load_settings()` is the only way the rest of the code gets settings from the environment, and
`settings_from()` the way a host app gives them in code (a mapping or a `Settings`); both turn pydantic's
validation errors into one `ConfigError` whose message names each bad variable, e.g.
``SMSDISPATCH_VISIBILITY_TIMEOUT: Input should be a valid integer``. Secrets are `SecretStr`:
their repr is ``'**********'``, so logging a Settings object never leaks them. `redis_url` stays a
plain string (Celery, kombu, redis-py and the subprocesses we start all need it whole, and only its
password is secret): it is left out of the repr, dumped with its password masked, and its password is
registered with redact.py like every SecretStr value, so no log line or error shows it.

The built-in gateways' settings are the flat ``<gateway>_*`` fields below; which of them make a gateway
configured is declared by that gateway's `GatewaySpec` (gateways/registry.py), which every check here
asks. A third-party gateway reads its settings through `load_model` with a prefix of its own.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlparse

import phonenumbers
from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

from . import sentinel
from .errors import ConfigError
from .redact import redact_url, remember_secrets

ENV_PREFIX = "SMSDISPATCH_"
M = TypeVar("M", bound=BaseSettings)
#: BROKER_URL schemes that mean RabbitMQ (broker.py).
AMQP_SCHEMES = frozenset({"amqp", "amqps", "pyamqp"})


def broker_scheme(url: str) -> str:
    return urlparse(url.split(";", 1)[0]).scheme



def gateway_names() -> tuple[str, ...]:
    """Every gateway smsdispatch has an adapter for: the registry's (gateways/registry.py), built-in
    and third-party; imported here on use, since gateway modules import this one."""
    from .gateways import registry
    return registry.names()


def webhook_gateways() -> tuple[str, ...]:
    """The gateways that post delivery reports to a callback URL (built-ins: eskiz, devsms, smscx)."""
    from .gateways import registry
    return registry.webhook_names()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    # --- Redis: broker, Celery results and our records all live here ---
    redis_url: str = Field("redis://localhost:6379/0", repr=False)   # may carry a password: see the docstring
    key_prefix: str = "sms"
    #: A worker refuses to start on a Redis whose maxmemory-policy is not noeviction (redischeck.py);
    #: true lets it run anyway (a throwaway Redis for tests or a demo).
    allow_unsafe_redis: bool = False
    queue: str = "sms"
    #: Celery's broker, when it is not REDIS_URL: an amqp:// URL puts the task messages on RabbitMQ
    #: (quorum queues, native delayed delivery, publisher confirms: broker.py); records, ledger and
    #: Celery's results stay in REDIS_URL. Unset: REDIS_URL is the broker too.
    broker_url: str | None = Field(None, repr=False)    # may carry a password, like redis_url
    #: With a RabbitMQ broker: its consumer_timeout (rabbitmq.conf; RabbitMQ's default is 30 minutes).
    #: A message a worker holds unacknowledged longer than this makes RabbitMQ close the worker's
    #: channel and deliver the message again; our checks keep every run (CLAIM_LEASE) well below it.
    rabbitmq_consumer_timeout: int = Field(1800, ge=60)

    # --- Redis Sentinel, and claims that survive a failover (sentinel.py, ledger.py) ---
    #: With a sentinel:// REDIS_URL: the name the Sentinels monitor the primary under (required then).
    sentinel_master: str | None = None
    #: The Sentinels' own password (requirepass in sentinel.conf); the primary's goes in REDIS_URL.
    sentinel_password: SecretStr | None = None
    #: Replicas that must hold a claim before its gateway call (Redis WAIT after the claim); 0: off.
    claim_replicas: int = Field(0, ge=0, le=16)
    #: Seconds a claim waits for them. Fewer acknowledge it in time: no gateway call, the claim is given
    #: back and the message runs again shortly, without using an attempt (dispatch.py, batch.py).
    claim_replica_timeout: float = Field(0.5, gt=0, le=10)

    # --- routing and input ---
    #: The gateway for numbers no route matches; "smscx|smspm" lists fallbacks in priority order.
    default_gateway: str = "console"
    default_region: str | None = None
    #: "998=eskiz|smscx,27=smsflow": the longest matching E.164 prefix picks the gateways (in priority
    #: order, '|' between them) when a call names none.
    routes: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    batch_chunk_size: int = Field(1000, ge=1, le=10_000)
    #: Producer-side caps, checked before anything is written to Redis (and again by the worker):
    #: characters of one text (default: ten GSM-7 segments), entries of one batch, and the batch's
    #: entries together as UTF-8 JSON.
    max_text_chars: int = Field(1530, ge=1, le=10_000)
    max_batch_messages: int = Field(100_000, ge=1, le=1_000_000)
    max_batch_bytes: int = Field(32 * 1024 * 1024, ge=1024, le=512 * 1024 * 1024)

    # --- Celery / delivery guarantees (seconds) ---
    visibility_timeout: int = Field(3600, ge=10)
    #: A worker process that has not beaten its heart for this long is taken for dead, and the messages
    #: it held unacknowledged go back to the head of their queue at once (redis_transport.py), instead of
    #: after VISIBILITY_TIMEOUT (which still applies: at or above it, this changes nothing).
    worker_lost_after: float = Field(10.0, ge=3)
    claim_lease: int = Field(120, ge=1)
    idempotency_ttl: int = Field(7 * 24 * 3600, ge=60)
    record_ttl: int = Field(30 * 24 * 3600, ge=0)

    # --- reminders: beyond the horizon they wait in a Redis sorted set, released by beat ---
    reminder_horizon: int = Field(300, ge=1)
    reminder_poll_interval: float = Field(5.0, gt=0)

    # --- beat polling ---
    status_poll_interval: float = Field(60.0, gt=0)
    status_expiry: int = Field(72 * 3600, ge=60)       # in flight longer than this → expired
    balance_poll_interval: float = Field(600.0, gt=0)
    sweep_interval: float = Field(60.0, gt=0)
    queued_grace: int = Field(900, ge=1)     # queued this long (publish lost?) → the sweeper republishes
    #: The transactional outbox (smsdispatch.contrib.django): seconds between beat's relay runs, which
    #: publish committed outbox rows that no on-commit publish took (its process died, Redis was away),
    #: and the rows one relay transaction locks and publishes.
    outbox_relay_interval: float = Field(5.0, gt=0)
    outbox_relay_limit: int = Field(100, ge=1, le=10_000)
    #: "eskiz=1000,smscx=5": a balance below the threshold logs a warning and records an alert.
    balance_thresholds: Annotated[dict[str, float], NoDecode] = Field(default_factory=dict)
    #: Refuse sends (insufficient_balance, no gateway call) while a gateway's last polled balance is
    #: below its threshold.
    balance_guard: bool = False

    # --- delivery webhooks: the URL gateways call back, with our secret in its path ---
    webhook_base_url: str | None = None     # e.g. https://sms.example.com/hooks
    #: The secret of every webhook gateway WEBHOOK_SECRETS does not name.
    webhook_secret: SecretStr | None = None
    #: "eskiz=<secret>,smscx=<secret>": a gateway's own secret, so a leak at one provider forges
    #: reports for that one only.
    webhook_secrets: Annotated[dict[str, SecretStr], NoDecode] = Field(default_factory=dict)
    #: "eskiz=<old>|<older>,*=<old>": secrets still accepted, never handed out, while a rotation is
    #: under way ("*": every webhook gateway).
    webhook_old_secrets: Annotated[dict[str, tuple[SecretStr, ...]], NoDecode] = Field(default_factory=dict)

    # --- gateway health: circuit breakers and global rate limits, shared through Redis ---
    #: A circuit opens when at least CIRCUIT_FAILURE_RATE % of the calls of the last CIRCUIT_WINDOW
    #: seconds failed, once there were at least CIRCUIT_MIN_CALLS of them (a failure *rate*: at 150
    #: calls a second a 1% error rate must not stop a healthy gateway).
    circuit_failure_rate: float = Field(50.0, gt=0, le=100)
    circuit_min_calls: int = Field(20, ge=1)
    circuit_window: float = Field(30.0, gt=0)
    #: A call slower than this counts as a failure (even if the gateway took the message).
    circuit_slow_call: float = Field(10.0, gt=0)
    circuit_cooloff: float = Field(30.0, gt=0)      # open this long, then half-open:
    circuit_probes: int = Field(3, ge=1)            # this many probe calls; all succeed → closed
    #: "eskiz=20,smscx=100": messages per second per gateway, for all workers together.
    rate_limits: Annotated[dict[str, float], NoDecode] = Field(default_factory=dict)
    #: "smspm=50": at most this many messages per native batch call (also capped by the gateway's own
    #: maximum and by its rate limit).
    batch_call_limits: Annotated[dict[str, int], NoDecode] = Field(default_factory=dict)
    #: "eskiz=4,smscx=8": at most this many calls in flight to a gateway at once, per worker process
    #: (slots.py), so one slow gateway cannot hold every worker thread while the others wait.
    gateway_concurrency: Annotated[dict[str, int], NoDecode] = Field(default_factory=dict)
    #: The cap of the gateways GATEWAY_CONCURRENCY does not list; 0: no cap.
    gateway_concurrency_default: int = Field(0, ge=0)

    # --- retries ---
    max_attempts: int = Field(5, ge=1, le=100)
    #: A task message handed out this many times without finishing (its worker died on it each
    #: time) is recorded `failed` (poison_message) and dead-lettered instead of looping for ever.
    max_deliveries: int = Field(10, ge=1, le=1000)
    backoff_base: float = Field(2.0, gt=0)
    backoff_max: float = Field(300.0, gt=0)
    backoff_jitter: Literal["full", "equal", "none"] = "full"

    # --- HTTP to gateways (seconds) ---
    http_connect_timeout: float = Field(5.0, gt=0)
    #: Per socket read: a gateway answering a byte at a time never trips it (HTTP_TOTAL_TIMEOUT does).
    http_read_timeout: float = Field(15.0, gt=0)
    #: The most one gateway call may take, start to end: connect, send, wait, headers and body together;
    #: cut there, a call is ambiguous once its request may have gone out (gateways/deadline.py). Unset:
    #: HTTP_CONNECT_TIMEOUT + HTTP_READ_TIMEOUT (20 s with the defaults), what a call that answers in one
    #: piece could take anyway, so setting those two keeps bounding the whole call. Always a float once
    #: loaded; at least HTTP_CONNECT_TIMEOUT.
    http_total_timeout: float | None = Field(None, gt=0, validate_default=True)

    # --- the status page (statuspage/): /status on the webhook receiver, behind HTTP basic auth ---
    #: Both set: `smsdispatch webhooks` serves the page under /status; either unset: /status is 404.
    status_user: str | None = None
    status_password: SecretStr | None = None
    #: The page may act (replay dead letters: POST with a CSRF token); off, it only reads.
    status_actions: bool = False

    # --- Eskiz.uz (docs/gateways/eskiz.md) ---
    eskiz_email: str | None = None
    eskiz_password: SecretStr | None = None
    eskiz_base_url: str = "https://notify.eskiz.uz/api"
    eskiz_sender: str = "4546"

    # --- DevSMS.uz (docs/gateways/devsms.md) ---
    devsms_token: SecretStr | None = None
    devsms_base_url: str = "https://devsms.uz/api"
    devsms_sender: str = "4546"

    # --- SMSFlow (docs/gateways/smsflow.md): no sender field in its API; the campaign name labels submissions ---
    smsflow_client_id: str | None = None
    smsflow_client_secret: SecretStr | None = None
    smsflow_base_url: str = "https://portal.smsflow.co.za"
    smsflow_campaign: str = "smsdispatch"

    # --- SMS.CX (docs/gateways/smscx.md): an API key, or OAuth2 client credentials ---
    smscx_api_key: SecretStr | None = None
    smscx_client_id: str | None = None
    smscx_client_secret: SecretStr | None = None
    smscx_base_url: str = "https://api.sms.cx"
    smscx_sender: str = "InfoText"

    # --- SMSPM (docs/gateways/smspm.md) ---
    smspm_hash: str | None = None
    smspm_token: SecretStr | None = None
    smspm_base_url: str = "https://api.smspm.com"
    smspm_sender: str = "SMSPM.com"

    # --- observability: log lines, health (metrics.py, health.py, logs.py, beat.py) ---
    #: "text", or "json": one JSON object per line, with message_id, gateway, attempt and status as fields
    #: where they apply, every field redacted (logs.py). Worker, beat, the CLI and the webhook server.
    log_format: Literal["text", "json"] = "text"
    #: Beat records each pass of its loop in Redis with this TTL (beat.py): a beat that has not ticked
    #: for this long is unhealthy (health.py). Beat wakes at least every quarter of it.
    beat_stale_after: float = Field(60.0, ge=2)

    @field_serializer("redis_url", "broker_url")
    def _masked_redis_url(self, value: str | None) -> str | None:
        return redact_url(value) if value is not None else None

    @property
    def celery_broker_url(self) -> str:
        """Celery's broker: BROKER_URL, else REDIS_URL."""
        return self.broker_url or self.redis_url

    @property
    def amqp_broker(self) -> bool:
        """True when the broker is RabbitMQ (an amqp:// or amqps:// BROKER_URL)."""
        return broker_scheme(self.celery_broker_url) in AMQP_SCHEMES

    @property
    def redelivery_after(self) -> int:
        """The longest a task message can stay with a worker, unacknowledged, before the broker hands it
        out again: the visibility timeout (Redis broker) or RabbitMQ's consumer_timeout."""
        return self.rabbitmq_consumer_timeout if self.amqp_broker else self.visibility_timeout

    @model_validator(mode="after")
    def _remember_secrets(self) -> Settings:
        """Every secret we hold is masked by redact.py wherever it shows up (a gateway error body that
        echoes our key, a library's message quoting the Redis URL)."""
        remember_secrets(_url_password(self.redis_url), _url_password(self.broker_url or ""),
                         *(v.get_secret_value() for v in self.__dict__.values() if isinstance(v, SecretStr)))
        return self

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        if sentinel.is_sentinel(value):
            sentinel.parse(value)
            return value
        if urlparse(value).scheme not in {"redis", "rediss", "unix"}:
            raise ValueError("must be a redis://, rediss://, unix:// or sentinel:// URL")
        return value

    @field_validator("broker_url")
    @classmethod
    def _broker_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if broker_scheme(value) not in AMQP_SCHEMES | {"redis", "rediss", "unix"}:
            raise ValueError("must be an amqp:// or amqps:// URL (RabbitMQ), or a redis://, rediss:// or unix:// "
                             "URL (leave it unset to use REDIS_URL, Sentinel included)")
        return value

    @field_validator("key_prefix", "queue")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value or any(c in value for c in " :{}"):
            raise ValueError("must be non-empty, without spaces, ':' or braces")
        return value

    @field_validator("default_gateway")
    @classmethod
    def _gateway(cls, value: str) -> str:
        _chain(value)
        return value.replace(" ", "")

    @field_validator("default_region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if value.upper() not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"{value!r} is not an ISO 3166 region phonenumbers knows (e.g. UZ, ZA, GB)")
        return value.upper()

    @field_validator("routes", mode="before")
    @classmethod
    def _routes(cls, value: object) -> object:
        if isinstance(value, str):   # "998=eskiz, 27=smsflow" (JSON objects are accepted too)
            value = value.strip()
            if value.startswith("{"):
                try:
                    value = json.loads(value)
                except ValueError as e:
                    raise ValueError(f"is not valid JSON: {e}") from None
                return cls._routes(value)
            pairs = [p.split("=", 1) for p in value.split(",") if p.strip()]
            if any(len(p) != 2 for p in pairs):
                raise ValueError("must look like 998=eskiz,27=smsflow")
            value = {k.strip().lstrip("+"): v.strip() for k, v in pairs}
        if isinstance(value, dict):
            value = {k: "|".join(v) if isinstance(v, list) else v for k, v in value.items()}
            for prefix, gateways in value.items():
                if not str(prefix).isdigit():
                    raise ValueError(f"prefix {prefix!r} must be digits (a country code or longer)")
                try:
                    _chain(gateways)
                except ValueError as e:
                    raise ValueError(f"{e} (prefix {prefix})") from None
            value = {str(k): str(v).replace(" ", "") for k, v in value.items()}
        return value

    @field_validator("balance_thresholds", "rate_limits", "batch_call_limits", "gateway_concurrency", mode="before")
    @classmethod
    def _per_gateway(cls, value: object) -> object:
        if isinstance(value, str):   # "eskiz=1000, smscx=5"
            pairs = [p.split("=", 1) for p in value.split(",") if p.strip()]
            if any(len(p) != 2 for p in pairs):
                raise ValueError("must look like eskiz=1000,smscx=5")
            value = {k.strip(): v.strip() for k, v in pairs}
        if isinstance(value, dict):
            for gateway in value:
                if gateway not in gateway_names():
                    raise ValueError(f"unknown gateway {gateway!r}")
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _webhook_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            _check_webhook_secret(value.get_secret_value())
        return value

    @field_validator("webhook_secrets", "webhook_old_secrets", mode="before")
    @classmethod
    def _webhook_secret_map(cls, value: object, info: ValidationInfo) -> object:
        old = info.field_name == "webhook_old_secrets"
        if isinstance(value, str):   # "eskiz=<secret>,smscx=<secret>"; old ones: "eskiz=<a>|<b>,*=<c>"
            pairs = [p.split("=", 1) for p in value.split(",") if p.strip()]
            if any(len(p) != 2 for p in pairs):
                raise ValueError("must look like eskiz=<secret>|<secret>,*=<secret>" if old
                                 else "must look like eskiz=<secret>,smscx=<secret>")
            value = {k.strip(): v.strip() for k, v in pairs}
        if not isinstance(value, dict):
            return value
        out: dict[str, object] = {}
        reporting = webhook_gateways()
        for gateway, secrets in value.items():
            if gateway not in reporting and not (old and gateway == "*"):
                raise ValueError(f"{gateway!r} is not a gateway that posts delivery reports "
                                 f"({', '.join(reporting)}{', or *' if old else ''})")
            if isinstance(secrets, SecretStr):
                secrets = secrets.get_secret_value()
            if old:
                each = secrets.split("|") if isinstance(secrets, str) else list(secrets)
                each = [x.get_secret_value() if isinstance(x, SecretStr) else str(x).strip() for x in each]
            else:
                each = [str(secrets)]
            for secret in each:
                try:
                    _check_webhook_secret(secret)
                except ValueError as e:
                    raise ValueError(f"{gateway}: {e}") from None
            out[gateway] = tuple(each) if old else each[0]
        return out

    @field_validator("status_user")
    @classmethod
    def _status_user(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if ":" in value or not value.isprintable():
            raise ValueError("must be printable and without ':' (HTTP basic auth splits user and password there)")
        return value

    @field_validator("status_password")
    @classmethod
    def _status_password(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        if len(value.get_secret_value()) < STATUS_PASSWORD_MIN:
            raise ValueError(f"must be at least {STATUS_PASSWORD_MIN} characters long (e.g. python -c 'import "
                             f"secrets; print(secrets.token_urlsafe(24))')")
        return value

    @field_validator("rate_limits", "batch_call_limits", "gateway_concurrency")
    @classmethod
    def _positive(cls, value: dict) -> dict:
        for gateway, limit in value.items():
            if limit <= 0:
                raise ValueError(f"{gateway}: must be above 0")
        return value

    @field_validator("http_total_timeout")
    @classmethod
    def _total_timeout(cls, value: float | None, info: ValidationInfo) -> float | None:
        connect, read = info.data.get("http_connect_timeout"), info.data.get("http_read_timeout")
        if connect is None or read is None:     # invalid themselves: their own errors say so
            return value
        if value is None:
            return connect + read
        if value < connect:
            raise ValueError(f"must be at least HTTP_CONNECT_TIMEOUT ({connect:g}s), got {value:g}s")
        return value

    @field_validator("eskiz_base_url", "devsms_base_url", "smsflow_base_url", "smscx_base_url", "smspm_base_url",
                     "webhook_base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if urlparse(value).scheme not in {"http", "https"} or not urlparse(value).netloc:
            raise ValueError("must be an http(s):// URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        """The settings that depend on each other: the guarantees hold only if these hold."""
        self._check_timing()
        self._check_webhooks()
        self._check_status_page()
        self._check_retention()
        self._check_routes()
        self._check_sentinel()
        return self

    def _check_sentinel(self) -> None:
        """A sentinel:// URL names no primary by itself: SENTINEL_MASTER does; set without one, it
        would be ignored."""
        behind_sentinel = sentinel.is_sentinel(self.redis_url)
        if behind_sentinel and not self.sentinel_master:
            raise ValueError("REDIS_URL is a sentinel:// URL: set SENTINEL_MASTER to the name the Sentinels "
                             "monitor the primary under")
        if not behind_sentinel and (self.sentinel_master or self.sentinel_password):
            raise ValueError("SENTINEL_MASTER / SENTINEL_PASSWORD are set but REDIS_URL is not a sentinel:// URL")

    def _check_timing(self) -> None:
        """A claim outlives a call; a retry or a reminder ends before Redis hands its message out again."""
        one_call = self.http_total_timeout or 0.0
        if self.claim_lease < 4 * one_call:
            # A claim must outlive the longest in-flight send: login + refresh + send + resend, each cut
            # at HTTP_TOTAL_TIMEOUT.
            total = (f"{one_call:g}s" if "http_total_timeout" in self.model_fields_set
                     else f"unset: HTTP_CONNECT_TIMEOUT + HTTP_READ_TIMEOUT = {one_call:g}s")
            raise ValueError(f"CLAIM_LEASE ({self.claim_lease}s) must be at least 4 x HTTP_TOTAL_TIMEOUT "
                             f"({total}) = {4 * one_call:g}s")
        if self.amqp_broker:
            # RabbitMQ holds back countdowns, ETAs and retries itself (native delayed delivery): a worker
            # holds a message only while running it, which must end before consumer_timeout.
            if self.claim_lease >= self.rabbitmq_consumer_timeout:
                raise ValueError(f"CLAIM_LEASE ({self.claim_lease}s) must stay below RABBITMQ_CONSUMER_TIMEOUT "
                                 f"({self.rabbitmq_consumer_timeout}s), RabbitMQ's consumer_timeout")
            return
        if self.claim_lease + self.backoff_max >= self.visibility_timeout:
            # A retry countdown plus one run must end before Redis hands the message to another worker.
            raise ValueError(
                f"BACKOFF_MAX ({self.backoff_max:g}s) + CLAIM_LEASE ({self.claim_lease}s) must stay "
                f"below VISIBILITY_TIMEOUT ({self.visibility_timeout}s)"
            )
        if self.reminder_horizon + self.claim_lease >= self.visibility_timeout:
            # A reminder published with an ETA waits in a worker unacknowledged: it must run and
            # finish before the visibility timeout, or Redis hands it out again.
            raise ValueError(f"REMINDER_HORIZON ({self.reminder_horizon}s) + CLAIM_LEASE ({self.claim_lease}s) "
                             f"must stay below VISIBILITY_TIMEOUT ({self.visibility_timeout}s)")

    def _check_webhooks(self) -> None:
        """Every old webhook secret replaces a current one; with WEBHOOK_BASE_URL, every configured
        gateway that sends reports has a secret."""
        for gateway in self.webhook_old_secrets:
            if gateway != "*" and not self.webhook_secret_for(gateway):
                raise ValueError(f"WEBHOOK_OLD_SECRETS lists {gateway}, which has no current secret (set "
                                 f"WEBHOOK_SECRET or WEBHOOK_SECRETS={gateway}=...)")
        if self.webhook_base_url:
            configured = self.configured_gateways()
            # gateways do not sign callbacks: the secret in the URL is all that authenticates them
            with_secret = [g for g in webhook_gateways() if self.webhook_secret_for(g)]
            missing = [g for g in webhook_gateways() if g in configured and g not in with_secret]
            if missing or not with_secret:
                who = f"{', '.join(missing)} (configured) has no webhook secret" if missing \
                    else "no gateway has a webhook secret"
                raise ValueError(f"WEBHOOK_BASE_URL is set but {who}: set WEBHOOK_SECRET (every gateway) or "
                                 f"WEBHOOK_SECRETS ({(missing or ['eskiz'])[0]}=...)")

    def _check_status_page(self) -> None:
        """The status page has both of its credentials or neither."""
        if (self.status_user is None) != (self.status_password is None):
            raise ValueError("STATUS_USER and STATUS_PASSWORD go together: set both to serve the status page, or "
                             "neither")

    def _check_retention(self) -> None:
        """A ledger entry outlives every copy of its task message; a record outlives its ledger entry."""
        redelivery = self.redelivery_after + max(self.active_grace, self.queued_grace)
        if self.idempotency_ttl <= redelivery:
            # A task message can come back (redelivery, the sweeper's republish) until then: its ledger
            # entry must still be there, or its key would be claimed as new.
            held = "RABBITMQ_CONSUMER_TIMEOUT" if self.amqp_broker else "VISIBILITY_TIMEOUT"
            raise ValueError(f"IDEMPOTENCY_TTL ({self.idempotency_ttl}s) must exceed {held} "
                             f"({self.redelivery_after}s) + the sweeper's grace (the longer of QUEUED_GRACE, "
                             f"{self.queued_grace}s, and CLAIM_LEASE + BACKOFF_MAX + min(60, CLAIM_LEASE), "
                             f"{self.active_grace:g}s) = {redelivery:g}s")
        if 0 < self.record_ttl < self.idempotency_ttl:
            # A key that is "done" must still find its record, or duplicates could not be answered.
            raise ValueError(f"RECORD_TTL ({self.record_ttl}s) must be 0 (keep) or at least "
                             f"IDEMPOTENCY_TTL ({self.idempotency_ttl}s)")

    def _check_routes(self) -> None:
        """DEFAULT_GATEWAY and every gateway ROUTES names have their credentials."""
        from .gateways import registry
        configured = self.configured_gateways()
        for gateway in _chain(self.default_gateway):
            if gateway not in configured:
                raise ValueError(f"DEFAULT_GATEWAY is {gateway} but {registry.get(gateway).needs()} not set")
        for prefix, gateways in self.routes.items():
            for gateway in _chain(gateways):
                if gateway not in configured:
                    raise ValueError(f"ROUTES sends {prefix} to {gateway} but "
                                     f"{registry.get(gateway).needs()} not set")

    def configured_gateways(self) -> list[str]:
        """The gateways whose credentials are set (each spec says which: gateways/registry.py)."""
        from .gateways import registry
        return [name for name, spec in registry.specs().items() if registry.configured(spec, self)]

    @property
    def active_grace(self) -> float:
        """How long a message may stay `sending`/`retrying` before the sweeper republishes it: a live
        attempt ends within the claim lease, a scheduled retry is due within BACKOFF_MAX, and then waits
        for a free worker thread, which the calls ahead of it give back within about one lease (at most
        a minute is allowed for that). A retry message lost on its way (a worker killed in the instant
        between taking it off the queue and recording it unacknowledged) runs again after this."""
        return self.claim_lease + self.backoff_max + min(60, self.claim_lease)

    @property
    def status_page(self) -> bool:
        """Whether the status page is served (its credentials are set)."""
        return self.status_user is not None and self.status_password is not None

    def webhook_secret_for(self, gateway: str) -> str:
        """The current webhook secret of a gateway: its WEBHOOK_SECRETS entry, else WEBHOOK_SECRET; ''
        if it has none."""
        if gateway not in webhook_gateways():
            return ""
        return _secret(self.webhook_secrets.get(gateway)) or _secret(self.webhook_secret)

    def accepted_webhook_secrets(self, gateway: str) -> list[str]:
        """Every secret a callback for `gateway` may carry: the current one, then the old ones still
        accepted during a rotation (WEBHOOK_OLD_SECRETS); empty: its callbacks are refused."""
        current = self.webhook_secret_for(gateway)
        if not current:
            return []
        old = [*self.webhook_old_secrets.get(gateway, ()), *self.webhook_old_secrets.get("*", ())]
        return [current, *(s.get_secret_value() for s in old)]

    def callback_url(self, gateway: str) -> str | None:
        """Our webhook URL for a gateway that posts delivery reports (with its current secret), or None."""
        secret = self.webhook_secret_for(gateway)
        if not self.webhook_base_url or not secret:
            return None
        return f"{self.webhook_base_url}/{gateway}/{secret}"

    def route_chain(self, e164: str) -> list[str]:
        """The gateways for a number when the call names none, in priority order: the longest matching
        prefix of ROUTES, else DEFAULT_GATEWAY."""
        digits = e164.lstrip("+")
        for length in range(len(digits), 0, -1):
            gateways = self.routes.get(digits[:length])
            if gateways:
                return gateways.split("|")
        return self.default_gateway.split("|")

    def route(self, e164: str) -> str:
        """The first-choice gateway for a number (see route_chain)."""
        return self.route_chain(e164)[0]


def _chain(value: object) -> list[str]:
    """"eskiz|smscx" → ["eskiz", "smscx"]; raises ValueError naming an unknown or repeated gateway."""
    names = [n.strip() for n in str(value).split("|")]
    known = gateway_names()
    for name in names:
        if name not in known:
            raise ValueError(f"unknown gateway {name!r}; known: {', '.join(known)}")
    if len(set(names)) != len(names):
        raise ValueError(f"{value!r} names a gateway twice")
    return names


#: A webhook secret travels in a URL path: only characters that need no escaping there, and enough of
#: them (24 of 64 symbols: 144 bits) that guessing is hopeless.
WEBHOOK_SECRET_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
WEBHOOK_SECRET_MIN, WEBHOOK_SECRET_MAX = 24, 256
#: The status page's password travels with every request (basic auth): long enough not to be guessed.
STATUS_PASSWORD_MIN = 12


def _check_webhook_secret(secret: str) -> None:
    """Raises ValueError (never quoting the secret) unless it is fit for a callback URL's path."""
    if not WEBHOOK_SECRET_MIN <= len(secret) <= WEBHOOK_SECRET_MAX:
        raise ValueError(f"a webhook secret must be {WEBHOOK_SECRET_MIN} to {WEBHOOK_SECRET_MAX} characters long, "
                         f"got {len(secret)} (e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')")
    if not set(secret) <= WEBHOOK_SECRET_CHARS:
        raise ValueError("a webhook secret may hold only A-Z, a-z, 0-9, '_' and '-' (it is part of the callback "
                         "URL's path, where '/', '?' or '#' would cut it)")


def _url_password(url: str) -> str | None:
    """The Redis (data) password a URL carries, if any (for sentinel://, on its first address)."""
    if sentinel.is_sentinel(url):
        try:
            return sentinel.parse(url).password
        except ValueError:
            return None
    return urlparse(url).password


def _secret(value: SecretStr | None) -> str:
    return value.get_secret_value() if value is not None else ""


#: Settings that are gone, and what replaced them: set, they stop start-up instead of being ignored.
RETIRED = {
    "CIRCUIT_FAILURES": "the circuit now opens on a failure rate: use CIRCUIT_FAILURE_RATE (percent) and "
                        "CIRCUIT_MIN_CALLS",
}


def load_settings(**overrides) -> Settings:
    """Settings from the environment (overrides win); a bad value raises ConfigError naming it."""
    for name, instead in RETIRED.items():
        if f"{ENV_PREFIX}{name}" in os.environ or name.lower() in overrides:
            raise ConfigError(f"invalid configuration: {ENV_PREFIX}{name} is no longer read: {instead}")
    return load_model(Settings, **overrides)


def settings_from(source: Settings | Mapping[str, Any] | None = None, /, **overrides: Any) -> Settings:
    """Settings a host app gives in code, validated like the environment's: a `Settings` object, or a
    mapping such as Django's ``SMSDISPATCH = {...}`` or Flask's ``app.config.get_namespace("SMSDISPATCH_")``.

    Names are the environment's without the prefix, in either case (``"REDIS_URL"``, ``"redis_url"``;
    ``"SMSDISPATCH_REDIS_URL"`` is accepted too); values may be the environment's strings or Python
    values (a dict for ROUTES, a number for VISIBILITY_TIMEOUT). What the mapping does not name comes
    from the environment, as with `load_settings`. A name that is no setting raises ConfigError (in
    code, unlike in the environment, a name is ours alone, so an unknown one is a typo)."""
    if isinstance(source, Settings):
        if overrides:
            return settings_from({name: getattr(source, name) for name in source.model_fields_set} | overrides)
        return source
    given: dict[str, Any] = {}
    for key, value in {**(source or {}), **overrides}.items():
        name = str(key).lower().removeprefix(ENV_PREFIX.lower())
        if name in given:
            raise ConfigError(f"invalid configuration: {key!r} is given twice (with and without its prefix)")
        given[name] = value.get_secret_value() if isinstance(value, SecretStr) else value
    unknown = sorted(n for n in given if n not in Settings.model_fields and n.upper() not in RETIRED)
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, list(Settings.model_fields), n=1)
            hints.append(f"{name.upper()}" + (f" (did you mean {close[0].upper()}?)" if close else ""))
        raise ConfigError("invalid configuration: no such setting: " + ", ".join(hints))
    return load_settings(**given)


def load_model(model: type[M], **overrides) -> M:
    """A settings model (Settings, or a third-party gateway's own) from the environment; a bad value
    raises ConfigError naming its variable. Its SecretStr values are masked by redact.py from then on."""
    prefix = str(model.model_config.get("env_prefix") or "")
    try:
        loaded = model(**overrides)
        remember_secrets(*(v.get_secret_value() for v in loaded.__dict__.values() if isinstance(v, SecretStr)))
        return loaded
    except SettingsError as e:
        raise ConfigError(f"invalid configuration: {e}") from None
    except ValidationError as e:
        problems = []
        for err in e.errors():
            field = ".".join(str(p) for p in err["loc"])
            name = f"{prefix}{field.upper()}" if field else "settings"
            problems.append(f"{name}: {err['msg'].removeprefix('Value error, ')}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
