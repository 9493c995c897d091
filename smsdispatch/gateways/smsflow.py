"""SMSFlow, South Africa (portal.smsflow.co.za), after docs/gateways/smsflow.md.

Auth: HTTP Basic client_id:client_secret → a token valid `expiresInMinutes`. It is kept in
Redis for expiresInMinutes − 5 minutes (at least one), like the SDKs, so every worker shares it; a
Redis lock makes re-authentication single-flight. Unlike the SDKs we re-authenticate once on a 401
from send or balance; a token still refused after that is an AuthError.

Send: single and bulk are the same call, `POST /api/integration/BulkMessages`, each message with its
own text. The answer carries one `eventId` per submission and no per-message id, so every
message of a call gets str(eventId) as its gateway_message_id. `errorReport` entries are refusals
of single messages inside an accepted submission; their semantics are unverified, so
we attribute an entry to a message only by an index (`messages[2].destination`) or a destination it
names, and keep the rest accepted with a warning.

No idempotency key, no status endpoint, no webhook: the message stays "accepted"
(SMSFlow "everything after a 200" is queued/in flight); an ambiguous call is never repeated.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

import redis
from pydantic import SecretStr

from ..config import Settings
from ..errors import (
    AmbiguousError,
    AuthError,
    GatewayRejected,
    InsufficientBalance,
    PermanentError,
    RecipientRejected,
)
from ..keys import Keys
from ..phone import mask
from ..records import MessageStatus
from ..redact import redact
from .base import Acceptance, Balance, HttpGateway, ItemResult, OutboundSms
from .registry import BuildContext, GatewaySpec, credential
from .tokens import SharedToken

log = logging.getLogger("smsdispatch.gateways.smsflow")

# docs/gateways/smsflow.md: no status API; every message answered 200 is accepted (in flight).
STATUS_MAP: dict[str, MessageStatus] = {"submitted": MessageStatus.ACCEPTED}

AUTH_PATH = "/api/integration/authentication"
SEND_PATH = "/api/integration/BulkMessages"
BALANCE_PATH = "/api/integration/Balance"
BALANCE_WORDS = ("BALANCE", "CREDIT", "FUNDS")                   # inferred: the code is undocumented
DESTINATION_WORDS = ("DESTINATION", "MSISDN", "NUMBER", "OPTOUT", "OPT_OUT", "OPTED")   # inferred
INDEXED_FIELD = re.compile(r"messages\[(\d+)\]", re.IGNORECASE)


def token_ttl(expires_in_minutes: object) -> int:
    """Seconds to keep a token: expiresInMinutes − 5 minutes, at least one minute (the SDKs' rule)."""
    try:
        minutes = float(str(expires_in_minutes))
    except (TypeError, ValueError):
        minutes = 0.0                         # inferred: unknown lifetime → the one-minute floor
    return max(60, int((minutes - 5) * 60))


def _first_error(body: dict, name: str) -> object:
    errors = body.get("errors")
    first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
    return first.get(name) or body.get(name)


def error_code(body: dict) -> str:
    """errors[0].code, else a top-level code, else SMSFLOW_ERROR (the SDKs' rule)."""
    return str(_first_error(body, "code") or "SMSFLOW_ERROR")


def refusal(code: str, message: str, *, status: int | None, destination: bool = False) -> PermanentError:
    """One refusal (a 4xx body or an errorReport entry) → our exception."""
    code = redact(code)
    text = f"{code}: {message}" if message else code
    upper = f"{code} {message}".upper()
    if status == 402 or any(w in upper for w in BALANCE_WORDS):
        return InsufficientBalance(text, gateway="smsflow", status=status)
    if destination or any(w in code.upper() for w in DESTINATION_WORDS):
        return RecipientRejected(text, gateway="smsflow", status=status)
    if status in (401, 403):
        return AuthError(text, gateway="smsflow", status=status)
    return GatewayRejected(f"HTTP {status}: {text}" if status else text, gateway="smsflow", status=status)


def classify(status: int, body: dict) -> PermanentError:
    """A 4xx that HttpGateway did not already classify → our exception."""
    return refusal(error_code(body), redact(str(_first_error(body, "message") or ""))[:200], status=status)


def parse_send(body: dict, destinations: Sequence[str]) -> tuple[str, dict[int, PermanentError]]:
    """A 2xx BulkMessages answer → (str(eventId), refusals by message index). Unattributable
    errorReport entries are logged and ignored: those messages stay accepted."""
    answer = body.get("sendResponse")
    if not isinstance(answer, dict) or answer.get("eventId") in (None, ""):
        if body.get("errors"):                # inferred: an error body that came with a 2xx status
            code = body.get("statusCode")
            raise classify(code if isinstance(code, int) and code >= 400 else 400, body)
        raise AmbiguousError(f"BulkMessages answered without sendResponse.eventId: {redact(str(body))[:200]}",
                             gateway="smsflow")
    refused: dict[int, PermanentError] = {}
    for entry in answer.get("errorReport") or []:
        entry = entry if isinstance(entry, dict) else {"message": str(entry)}
        field = str(entry.get("field") or "")
        code, message = str(entry.get("code") or "SMSFLOW_ERROR"), str(entry.get("message") or "")
        indexed = INDEXED_FIELD.search(field)
        if indexed and int(indexed.group(1)) < len(destinations):
            hits, named = [int(indexed.group(1))], "destination" in field.lower()
        else:
            hits = [i for i, d in enumerate(destinations) if d in field or d in message]
            named = bool(hits)
        if not hits:
            log.warning("smsflow errorReport entry names no message of the call; kept accepted: %s %s %s",
                        code, redact(field), redact(message))
            continue
        for i in hits:
            refused[i] = refusal(code, redact(message), status=None, destination=named)
    return str(answer["eventId"]), refused


class SmsFlowGateway(HttpGateway):
    name = "smsflow"
    max_batch = 100          # undocumented; inferred from SMSPortal's identical BulkMessages API
    supports_status = False  # no public status endpoint and no webhook

    def __init__(self, *, client_id: str, client_secret: SecretStr, campaign: str, base_url: str,
                 redis_client: redis.Redis, keys: Keys, connect_timeout: float, read_timeout: float,
                 **http) -> None:
        super().__init__(base_url, connect_timeout=connect_timeout, read_timeout=read_timeout, **http)
        self.client_id = client_id
        self._secret = client_secret
        self.campaign = campaign
        self.token = SharedToken(redis_client, keys, gateway=self.name, account=f"{self.base_url}|{client_id}",
                                 fetch=lambda _stale: self._authenticate(),
                                 lock_wait=2 * self.total_timeout + 1)

    # --- the contract -------------------------------------------------------------------------

    def send(self, sms: OutboundSms) -> Acceptance:
        result = self.send_batch([sms], call_ref=sms.message_id)[0]
        if result.error is not None:
            raise result.error
        return Acceptance(gateway_message_id=result.gateway_message_id, raw_status="submitted")

    def send_batch(self, messages: Sequence[OutboundSms], *, call_ref: str) -> list[ItemResult]:
        """One BulkMessages call. `call_ref` has nowhere to go (SMSFlow takes no client reference);
        sender and callback_url do not exist in this API and are ignored."""
        if not 1 <= len(messages) <= self.max_batch:
            raise ValueError(f"smsflow: 1..{self.max_batch} messages per call, got {len(messages)}")
        destinations = [m.to.lstrip("+") for m in messages]
        payload = {"SendOptions": {"campaignName": self.campaign, "checkOptOuts": True, "startDeliveryUtc": None},
                   "messages": [{"content": m.text, "destination": d}
                                for m, d in zip(messages, destinations, strict=True)]}
        event_id, refused = parse_send(self._call("POST", SEND_PATH, json=payload), destinations)
        for i, error in refused.items():
            log.info("smsflow refused %s in event %s: %s", mask(messages[i].to), event_id, error.code)
        return [ItemResult(m.message_id, None if i in refused else event_id, refused.get(i))
                for i, m in enumerate(messages)]

    def balance(self) -> Balance:
        body = self._call("GET", BALANCE_PATH)
        try:
            return Balance(amount=float(body["balance"]), currency="ZAR")   # currency: inferred
        except (KeyError, TypeError, ValueError):
            raise GatewayRejected(f"Balance answered without a balance: {str(body)[:200]}",
                                  gateway=self.name) from None

    # --- auth ---------------------------------------------------------------------------------

    def _call(self, method: str, path: str, **kwargs) -> dict:
        response = self.token.authorized(
            lambda token: self.request(method, path, headers=_bearer(token), **kwargs))
        if response.status_code >= 400:
            raise classify(response.status_code, self.json(response))
        try:
            body = response.json()
        except ValueError:   # a 2xx we cannot read: the call may well have been acted on
            raise AmbiguousError(f"HTTP {response.status_code}: body is not JSON", gateway=self.name) from None
        return body if isinstance(body, dict) else {"data": body}

    def _authenticate(self) -> tuple[str, int]:
        response = self.request("GET", AUTH_PATH, auth=(self.client_id, self._secret.get_secret_value()))
        if response.status_code in (401, 403):
            raise AuthError("SMSFlow rejected the credentials (SMSDISPATCH_SMSFLOW_CLIENT_ID / "
                            "SMSDISPATCH_SMSFLOW_CLIENT_SECRET)", gateway=self.name, status=response.status_code)
        body = self.json(response)
        if response.status_code >= 400:
            raise classify(response.status_code, body)
        if not body.get("token"):
            raise GatewayRejected("SMSFlow authentication answered without a token", gateway=self.name)
        log.info("smsflow authenticated as %s", self.client_id)
        return str(body["token"]), token_ttl(body.get("expiresInMinutes"))


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def build(settings: Settings, context: BuildContext) -> SmsFlowGateway:
    return SmsFlowGateway(client_id=credential(settings.smsflow_client_id, "smsflow_client_id"),
                          client_secret=credential(settings.smsflow_client_secret, "smsflow_client_secret"),
                          campaign=settings.smsflow_campaign, base_url=settings.smsflow_base_url,
                          redis_client=context.redis, keys=context.keys, **context.http)


#: No status API and no webhook.
SPEC = GatewaySpec(name="smsflow", factory=build, credentials=(("smsflow_client_id", "smsflow_client_secret"),),
                   status_map=STATUS_MAP)
