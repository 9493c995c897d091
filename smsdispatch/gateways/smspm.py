"""SMSPM (api.smspm.com), after docs/gateways/smspm.md.

One endpoint at the root, `POST /` with a JSON body: `hash` and `token` (the account credentials,
sent on every call: no header auth, no expiry), `toNumber` (an array of international digits,
up to 100), `text`, `fromNumber`, and `callbackUrl` when a message has one (named in SMSPM's blog only:
inferred). One text per call, so a batch is one text to up to 100 numbers.

Answers: the official v2.0 shape `{"messages": [{"id", "toNumber", "status"}]}`, mapped back
to our messages by `toNumber`; the older `{"status": "success", "messageId"}` (one message) as a
fallback; failures as a top-level `error`, or `status` present and not "success" (with `message`).
HTTP codes of errors are undocumented, so errors are classified by their text.

Per-message refusals in a bulk answer are undocumented (inferred): a number that comes back with a
refusal word ("rejected", "invalid", ...) or is missing from `messages[]` is a RecipientRejected for
that message only.

SMSPM has no idempotency key and its status and balance APIs could not be read: no
lookup, no dedupe, no status, no balance. An answer lost after sending ends `unknown`, never resent.
The token travels in the body: it is never logged (HttpGateway logs method/path/status only) and is
scrubbed, with the hash and any phone number, from every error message built from an answer.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence

import requests
from pydantic import SecretStr

from ..config import Settings
from ..errors import AmbiguousError, AuthError, GatewayRejected, InsufficientBalance, RecipientRejected
from ..phone import mask
from ..records import MessageStatus
from ..redact import redact
from .base import Acceptance, HttpGateway, ItemResult, OutboundSms
from .registry import BuildContext, GatewaySpec, credential

# docs/gateways/smspm.md; "invalid", "failed", "error" are inferred refusal words of a
# per-number element in a bulk answer (the docs show only "Added to queue").
STATUS_MAP: dict[str, MessageStatus] = {
    **dict.fromkeys(["added to queue", "pending", "queued", "success"], MessageStatus.ACCEPTED),
    "delivered": MessageStatus.DELIVERED,
    **dict.fromkeys(["undelivered", "rejected", "expired", "invalid", "failed", "error"], MessageStatus.FAILED),
}


def map_status(word: str | None) -> MessageStatus:
    """An SMSPM status word → ours; unknown words (said in a success answer) count as accepted."""
    return STATUS_MAP.get((word or "").strip().lower(), MessageStatus.ACCEPTED)


def classify(status: int, body: dict) -> Exception:
    """A failure answer (any HTTP status) → our exception, by its text (codes are unverified).

    Sender words are checked before recipient words: "fromNumber" also says "number"."""
    message = redact(str(body.get("error") or body.get("message") or body.get("status") or body)[:300])
    text = message.lower()
    if status == 405:
        return GatewayRejected(f"HTTP 405: {message}", gateway="smspm", status=status)
    if "hash" in text or "token" in text or status in (401, 403):
        return AuthError(f"{message} (check SMSDISPATCH_SMSPM_HASH / SMSDISPATCH_SMSPM_TOKEN)",
                         gateway="smspm", status=status)
    if any(w in text for w in ("balance", "credit", "insufficient", "funds")):   # wording inferred
        return InsufficientBalance(message, gateway="smspm", status=status)
    if any(w in text for w in ("sender", "fromnumber", "from number")):
        return GatewayRejected(message, gateway="smspm", status=status)
    if any(w in text for w in ("recipient", "number", "phone", "tonumber")):
        return RecipientRejected(message, gateway="smspm", status=status)
    return GatewayRejected(f"HTTP {status}: {message}", gateway="smspm", status=status)


def parse_answer(status: int, body: dict, numbers: Sequence[str]) -> list[Acceptance | RecipientRejected]:
    """The fate of each of `numbers` (digits, in call order) in one answer; raises for a failed call."""
    if status >= 400 or body.get("error") or str(body.get("status", "success")).lower() != "success":
        raise classify(status, body)
    elements = body.get("messages")
    if isinstance(elements, list):
        by_number: dict[str, list[dict]] = defaultdict(list)
        for e in elements:
            if isinstance(e, dict):
                by_number[_digits(e.get("toNumber"))].append(e)
        unnamed = by_number.pop("", [])   # inferred: elements without toNumber answer the rest in order
        return [_item(by_number[n].pop(0) if by_number[n] else (unnamed.pop(0) if unnamed else None), n)
                for n in numbers]
    if body.get("messageId"):             # the older single-message shape (marketing pages)
        return [Acceptance(str(body["messageId"]), "success") for _ in numbers]
    raise AmbiguousError("SMSPM answered success without messages[] or messageId; it may have sent",
                         gateway="smspm", status=status)


def _item(element: dict | None, number: str) -> Acceptance | RecipientRejected:
    if element is None:
        return RecipientRejected(f"{mask('+' + number)} is missing from the answer", gateway="smspm")
    word = str(element.get("status") or "")
    if element.get("error") or map_status(word) is MessageStatus.FAILED:
        reason = redact(str(element.get("error") or element.get("message") or word)[:200])
        return RecipientRejected(f"{mask('+' + number)} refused: {reason}", gateway="smspm")
    gid = element.get("id")
    return Acceptance(str(gid) if gid not in (None, "") else None, word or None)


def _digits(value: object) -> str:
    return "".join(c for c in str(value or "") if c.isdigit())


class SmsPmGateway(HttpGateway):
    name = "smspm"
    can_lookup = False           # the status section of the docs was unreadable
    can_dedupe = False           # no idempotency key
    max_batch = 100              # "up to 100 per request"
    batch_same_text = True       # one `text` per call
    supports_status = False
    supports_balance = False     # no balance API found

    def __init__(self, *, hash: str, token: SecretStr, sender: str, base_url: str,
                 connect_timeout: float, read_timeout: float, **http) -> None:
        super().__init__(base_url, connect_timeout=connect_timeout, read_timeout=read_timeout, **http)
        self._hash = hash
        self._token = token
        self.sender = sender

    def send(self, sms: OutboundSms) -> Acceptance:
        (result,) = self._post([sms])
        if isinstance(result, RecipientRejected):
            raise result
        return result

    def send_batch(self, messages: Sequence[OutboundSms], *, call_ref: str) -> list[ItemResult]:
        """One call for up to 100 numbers sharing text, sender and callback (the caller groups them).
        SMSPM carries no call reference: `call_ref` is not sent."""
        if not 1 <= len(messages) <= self.max_batch:
            raise GatewayRejected(f"a batch call takes 1..{self.max_batch} messages, not {len(messages)}",
                                  gateway=self.name)
        if len({(m.text, m.sender, m.callback_url) for m in messages}) > 1:
            raise GatewayRejected("a batch call carries one text, sender and callback for all its numbers",
                                  gateway=self.name)
        results = self._post(messages)
        return [ItemResult(m.message_id, error=r) if isinstance(r, RecipientRejected)
                else ItemResult(m.message_id, r.gateway_message_id) for m, r in zip(messages, results, strict=True)]

    def _post(self, messages: Sequence[OutboundSms]) -> list[Acceptance | RecipientRejected]:
        first = messages[0]
        numbers = [m.to.lstrip("+") for m in messages]
        body = {"hash": self._hash, "token": self._token.get_secret_value(), "toNumber": numbers,
                "text": first.text, "fromNumber": first.sender or self.sender}
        if first.callback_url:
            body["callbackUrl"] = first.callback_url
        response = self.request("POST", "/", json=body)
        return parse_answer(response.status_code, self._body(response), numbers)

    def _body(self, response: requests.Response) -> dict:
        """The JSON answer, with our hash and token blanked out should the gateway echo them; a 2xx
        we cannot read may still have sent (ambiguous), a 4xx did not."""
        text = response.content.decode("utf-8", "replace")   # JSON is UTF-8 (RFC 8259)
        for secret in (self._hash, self._token.get_secret_value()):
            if secret:
                text = text.replace(secret, "***")
        try:
            body = json.loads(text)
        except ValueError:
            if response.ok:
                raise AmbiguousError(f"HTTP {response.status_code}: body is not JSON", gateway=self.name,
                                     status=response.status_code) from None
            return {"error": text[:200] or response.reason or "no body"}
        return body if isinstance(body, dict) else {"error": f"unexpected JSON {type(body).__name__}"}


def build(settings: Settings, context: BuildContext) -> SmsPmGateway:
    return SmsPmGateway(hash=credential(settings.smspm_hash, "smspm_hash"),
                        token=credential(settings.smspm_token, "smspm_token"), sender=settings.smspm_sender,
                        base_url=settings.smspm_base_url, **context.http)


#: No status API and no webhook.
SPEC = GatewaySpec(name="smspm", factory=build, credentials=(("smspm_hash", "smspm_token"),),
                   status_map=STATUS_MAP)
