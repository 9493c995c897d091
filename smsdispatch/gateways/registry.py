"""The gateway registry: every gateway smsdispatch can send through, each described by a `GatewaySpec`.

A gateway's own file declares its spec (``SPEC = GatewaySpec(...)`` next to its adapter): its name, the
settings that must be set for it to count as configured, the factory that builds its adapter, its status
map and, for a gateway that posts delivery reports, the parser of a report's body. Config (which gateways
are configured, which names ROUTES may use), the adapters (gateways/__init__.py) and the webhook receiver
(webhooks.py) all ask this registry; none of them names a gateway.

Built-in gateways are the modules listed in BUILTIN. Other packages add gateways through the entry-point
group ``smsdispatch.gateways``, each entry point naming a GatewaySpec (docs/gateways/console.md, "Writing
your own gateway"); they are loaded once per process, and a name already taken is a ConfigError. A
third-party gateway keeps its settings in a pydantic-settings model of its own (`settings_model`, with an
``SMSDISPATCH_<NAME>_`` prefix); the built-ins keep theirs in config.Settings, where they have always been.
"""

from __future__ import annotations

import importlib
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar

from pydantic import SecretStr
from pydantic_settings import BaseSettings

from ..errors import ConfigError, UnknownGatewayError
from ..records import MessageStatus

if TYPE_CHECKING:
    import redis

    from ..config import Settings
    from ..keys import Keys
    from .base import Gateway

#: The entry-point group third-party gateways register in.
ENTRY_POINT_GROUP = "smsdispatch.gateways"
#: The built-in gateways, in the order they are listed (configured gateways, "known: ..." messages).
BUILTIN = ("console", "eskiz", "devsms", "smsflow", "smscx", "smspm")
#: A gateway name travels in Redis keys, ROUTES ("998=eskiz|smscx") and webhook paths.
NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")

#: One delivery report read from a webhook body: the references to look the message up by (ours
#: first where the gateway echoes it), our status (None: not final yet) and the gateway's own word.
Report = tuple[list[str], MessageStatus | None, str]


class HttpTimeouts(TypedDict):
    """HttpGateway's timeout arguments (BuildContext.http)."""
    connect_timeout: float
    read_timeout: float
    total_timeout: float | None


@dataclass(frozen=True)
class BuildContext:
    """What a factory gets besides the gateway's settings: the process's Redis client and key names
    (for gateways that share a token through Redis) and the HTTP timeouts of config.Settings."""

    redis: redis.Redis
    keys: Keys
    connect_timeout: float
    read_timeout: float
    total_timeout: float | None     # always a float once Settings are loaded

    @property
    def http(self) -> HttpTimeouts:
        """The keyword arguments of HttpGateway's timeouts."""
        return {"connect_timeout": self.connect_timeout, "read_timeout": self.read_timeout,
                "total_timeout": self.total_timeout}


T = TypeVar("T")


def credential(value: T | None, name: str) -> T:
    """A credential a factory reads from its settings, typed as set: it is whenever the gateway is
    configured (only configured gateways are built: gateways.Gateways.get). If not, a ConfigError
    naming it; `name` is its variable without the SMSDISPATCH_ prefix (a built-in's Settings field)."""
    if value is None:
        from ..config import ENV_PREFIX
        raise ConfigError(f"{ENV_PREFIX}{name.upper()} is not set")
    return value


@dataclass(frozen=True)
class GatewaySpec:
    """Everything smsdispatch needs to know about one gateway.

    name            the gateway's name in ROUTES, DEFAULT_GATEWAY, records and webhook paths
    factory         (settings, BuildContext) -> the adapter; `settings` is the gateway's own
                    `settings_model` instance if it has one, else config.Settings
    credentials     alternatives, each a tuple of setting fields that must all be set; the gateway is
                    configured when one alternative is complete (none at all: always configured)
    settings_model  a pydantic-settings model with the gateway's own settings (third-party gateways;
                    read from the environment once, invalid values stop start-up naming the variable)
    status_map      the gateway's status words -> ours, the one its adapter reads reports with
    parse_reports   webhook body (a dict) -> its reports, raising errors.BadReport for a body it cannot
                    read; None: the gateway posts no delivery reports
    """

    name: str
    factory: Callable[[Any, BuildContext], Gateway]
    credentials: tuple[tuple[str, ...], ...] = ()
    settings_model: type[BaseSettings] | None = None
    status_map: Mapping[str, MessageStatus] = field(default_factory=dict)
    parse_reports: Callable[[dict[str, Any]], list[Report]] | None = None

    @property
    def posts_reports(self) -> bool:
        return self.parse_reports is not None

    def env_name(self, field_name: str) -> str:
        """The environment variable of one of its settings, without the SMSDISPATCH_ prefix."""
        from ..config import ENV_PREFIX
        if self.settings_model is None:
            return field_name.upper()
        prefix = str(self.settings_model.model_config.get("env_prefix") or "")
        return f"{prefix}{field_name}".upper().removeprefix(ENV_PREFIX)

    def needs(self) -> str:
        """What must be set for it to be configured, for error messages: "ESKIZ_EMAIL / ESKIZ_PASSWORD
        are", "SMSCX_API_KEY (or SMSCX_CLIENT_ID / SMSCX_CLIENT_SECRET) is"."""
        if not self.credentials:
            return "nothing is"
        first, *others = [" / ".join(self.env_name(f) for f in group) for group in self.credentials]
        more = "".join(f" (or {o})" for o in others)
        return f"{first}{more} {'are' if len(self.credentials[0]) > 1 else 'is'}"


def configured(spec: GatewaySpec, settings: Settings) -> bool:
    """Whether one alternative of the spec's credentials is completely set."""
    if not spec.credentials:
        return True
    own = gateway_settings(spec, settings)
    return any(all(_is_set(getattr(own, f, None)) for f in group) for group in spec.credentials)


def gateway_settings(spec: GatewaySpec, settings: Settings) -> Any:
    """The settings a spec's factory gets: its own model (read from the environment once), else Settings."""
    if spec.settings_model is None:
        return settings
    with _lock:
        if spec.name not in _own_settings:
            from ..config import load_model
            _own_settings[spec.name] = load_model(spec.settings_model)
        return _own_settings[spec.name]


def build(name: str, settings: Settings, client: redis.Redis, keys: Keys) -> Gateway:
    """One adapter, from settings. Secrets are passed as SecretStr; adapters read no globals."""
    spec = get(name)
    context = BuildContext(client, keys, settings.http_connect_timeout, settings.http_read_timeout,
                           settings.http_total_timeout)
    return spec.factory(gateway_settings(spec, settings), context)


def get(name: str) -> GatewaySpec:
    spec = specs().get(name)
    if spec is None:
        raise UnknownGatewayError(f"unknown gateway {name!r}; known: {', '.join(names())}")
    return spec


def names() -> tuple[str, ...]:
    """Every gateway name: the built-ins, then the third-party ones."""
    return tuple(specs())


def webhook_names() -> tuple[str, ...]:
    """The gateways that post delivery reports to our callback URL."""
    return tuple(name for name, spec in specs().items() if spec.posts_reports)


def specs() -> dict[str, GatewaySpec]:
    """name -> spec, built-ins first; loaded once per process (`reset` forgets them, for tests)."""
    global _specs
    found = _specs
    if found is None:
        with _lock:
            if _specs is None:
                _specs = _load()
            found = _specs
    return found


def reset() -> None:
    """Forget the loaded specs and third-party settings (tests that change the entry points)."""
    global _specs
    with _lock:
        _specs = None
        _own_settings.clear()


_specs: dict[str, GatewaySpec] | None = None
_own_settings: dict[str, Any] = {}
_lock = threading.RLock()


def _load() -> dict[str, GatewaySpec]:
    found: dict[str, GatewaySpec] = {}
    for module in BUILTIN:
        spec = importlib.import_module(f"{__package__}.{module}").SPEC
        found[spec.name] = spec
    for point in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda p: p.name):
        where = f"entry point {point.name!r} ({point.value}) of group {ENTRY_POINT_GROUP}"
        try:
            spec = point.load()
        except Exception as e:
            raise ConfigError(f"invalid configuration: gateway {where} cannot be loaded: {e}") from e
        if not isinstance(spec, GatewaySpec):
            raise ConfigError(f"invalid configuration: gateway {where} is not a GatewaySpec")
        if spec.name != point.name or not NAME.fullmatch(spec.name):
            raise ConfigError(f"invalid configuration: gateway {where} must be named like its spec "
                              f"({spec.name!r}): lowercase letters, digits and '_', a letter first")
        if spec.name in found:
            owner = "a built-in gateway" if spec.name in BUILTIN else "another entry point"
            raise ConfigError(f"invalid configuration: gateway {where} is named {spec.name!r}, "
                              f"which {owner} already uses")
        found[spec.name] = spec
    return found


def _is_set(value: object) -> bool:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return bool(value)
