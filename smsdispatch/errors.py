"""The one exception tree of smsdispatch.

    SmsDispatchError
    ├── ConfigError                 a setting is missing or invalid (names the SMSDISPATCH_ variable)
    ├── ValidationError             the task's input is unusable: bad phone, empty text, unknown gateway, ...
    ├── UnknownGatewayError         (also a ValidationError) no gateway of that name is configured
    ├── BadReport                   (also a ValidationError) a webhook body a gateway's report parser
    │                               cannot read: answered 400, nothing changes
    └── GatewayError                anything a gateway call can raise; carries `code` and `gateway`
        ├── TransientError          "not sent, try again": retry with backoff
        │   ├── GatewayUnavailable  connection refused, DNS failure, connect timeout (or the total
        │   │                       deadline before connecting), 408, 5xx
        │   │                       (500 and 502 carry maybe_sent: processing may have happened)
        │   └── RateLimited         429; `retry_after` seconds when the gateway said so
        ├── AmbiguousError          the request went out and no answer came back (read timeout, total
        │                           deadline, reset, 504): the gateway may have accepted it. Never resent
        │                           blindly.
        └── PermanentError          retrying cannot help: fail at once, with the reason
            ├── AuthError           credentials rejected, or a token still refused after one refresh
            ├── InsufficientBalance
            ├── RecipientRejected   the gateway refused this number (invalid, blacklisted)
            └── GatewayRejected     any other 4xx: the request itself is wrong

Library errors (requests, HTTP statuses, gateway error bodies) are translated into this tree at the
edge, in `gateways/base.py` and each gateway module; the dispatch path only ever sees these classes.
Every class has a stable `code` string that lands in message records as `error.code`.
"""

from __future__ import annotations


class SmsDispatchError(Exception):
    code = "error"


class ConfigError(SmsDispatchError):
    code = "config"


class ValidationError(SmsDispatchError):
    code = "validation"


class UnknownGatewayError(ValidationError):
    code = "validation"


class BadReport(ValidationError):
    code = "validation"


class GatewayError(SmsDispatchError):
    code = "gateway_error"

    def __init__(self, message: str, *, gateway: str = "", status: int | None = None) -> None:
        # The message often quotes the gateway's answer, which may echo our key or token back: it lands
        # in records and logs only redacted (known secrets, bearer tokens, URL credentials, numbers).
        from .redact import redact  # here: redact imports phone, which imports this module
        message = redact(str(message))
        super().__init__(message)
        self.message = message
        self.gateway = gateway
        self.status = status


class TransientError(GatewayError):
    code = "transient"

    def __init__(self, message: str, *, retry_after: float | None = None, maybe_sent: bool = False,
                 **kw) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after
        #: True for answers that do not prove the request was dropped (HTTP 500, 502): a gateway
        #: that can look messages up is asked before the message is sent again.
        self.maybe_sent = maybe_sent


class GatewayUnavailable(TransientError):
    code = "gateway_unavailable"


class RateLimited(TransientError):
    code = "rate_limited"


class AmbiguousError(GatewayError):
    code = "ambiguous"


class PermanentError(GatewayError):
    code = "rejected"


class AuthError(PermanentError):
    code = "auth"


class InsufficientBalance(PermanentError):
    code = "insufficient_balance"


class RecipientRejected(PermanentError):
    code = "recipient_rejected"


class GatewayRejected(PermanentError):
    code = "rejected"
