"""DevSMS.uz (devsms.uz/api), after docs/gateways/devsms.md.

A reseller on top of Eskiz with a static Bearer token (no login, no expiry) and JSON bodies.
One message per call (no batch endpoint), no client reference and no idempotency key: a message
whose answer was lost cannot be found again or deduplicated, so it ends `unknown`.

Every answer is `{"success": true|false, ...}`; the HTTP status codes are undocumented, so a
4xx *and* a 2xx without `"success": true` are both errors (like third-party clients),
classified by status and by the wording of `error` (Uzbek, Russian, English: inferred).

Send options (the "universal OTP" templates): `{"type": "universal_otp", "template_type",
"service_name", "otp_code"}` without a text, or `{"type": "simple" | "eskiz"}` with one.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from pydantic import SecretStr

from ..config import Settings
from ..errors import AuthError, GatewayRejected, InsufficientBalance, RecipientRejected, ValidationError
from ..records import MessageStatus
from ..redact import redact
from .base import Acceptance, Balance, DeliveryReport, HttpGateway, OutboundSms, json_object, single_report
from .registry import BuildContext, GatewaySpec, credential

log = logging.getLogger("smsdispatch.gateways.devsms")

# docs/gateways/devsms.md: waiting, ACCEPTED, DELIVERED, REJECTED, UNDELIVERABLE; `sent` in newer send answers.
# The Eskiz words are an inferred safety net: DevSMS relays Eskiz, which may leak through.
STATUS_MAP: dict[str, MessageStatus] = {
    **dict.fromkeys(["WAITING", "SENT", "ACCEPTED", "TRANSMTD", "ENROUTE"], MessageStatus.ACCEPTED),
    **dict.fromkeys(["DELIVERED", "DELIVRD"], MessageStatus.DELIVERED),
    **dict.fromkeys(["REJECTED", "UNDELIVERABLE", "REJECTD", "UNDELIV", "EXPIRED"], MessageStatus.FAILED),
}

# inferred keywords (the error texts are undocumented): Uzbek, Russian and English wording.
BALANCE_WORDS = ("balance", "balans", "баланс", "insufficient", "недостаточно", "mablag")
AUTH_WORDS = ("token", "токен", "unauthori", "unauthenticated", "authoriz", "avtoriz", "авториз", "api key")
PHONE_WORDS = ("phone", "recipient", "telefon", "raqam", "телефон", "номер", "получател")

MESSAGE_TYPES = ("eskiz", "simple", "universal_otp")   # the documented `type` values
OTP_FIELDS = ("template_type", "service_name", "otp_code")
# inferred (DevSMS documents no allowed set; a refused company name is still charged):
# 2-50 characters, letters of any script (str.isalpha: Latin, Cyrillic, the Uzbek ʻ), ASCII digits,
# spaces and - _ . & ' ; at least one letter; no leading or trailing space.
SERVICE_NAME_EXTRA = frozenset("0123456789 -_.&'")
OTP_CODE = re.compile(r"[0-9]{4,8}")


def map_status(word: str | None) -> MessageStatus:
    return STATUS_MAP.get((word or "").upper(), MessageStatus.ACCEPTED)


def classify(status: int, body: dict) -> Exception:
    """A `success: false` answer or a 4xx (HttpGateway already took 408, 429 and 5xx) → our exception."""
    message = redact(str(body.get("error") or body.get("message") or body)[:300])
    text = message.lower()
    if status in (401, 403):
        return AuthError(f"DevSMS refused the token (SMSDISPATCH_DEVSMS_TOKEN): {message}",
                         gateway="devsms", status=status)
    if any(w in text for w in BALANCE_WORDS):
        return InsufficientBalance(message, gateway="devsms", status=status)
    if any(w in text for w in AUTH_WORDS):
        return AuthError(f"DevSMS refused the token (SMSDISPATCH_DEVSMS_TOKEN): {message}",
                         gateway="devsms", status=status)
    if any(w in text for w in PHONE_WORDS):
        return RecipientRejected(message, gateway="devsms", status=status)
    return GatewayRejected(f"HTTP {status}: {message}", gateway="devsms", status=status)


def service_name_ok(name: object) -> bool:
    return (isinstance(name, str) and 2 <= len(name) <= 50 and name == name.strip()
            and any(c.isalpha() for c in name) and all(c.isalpha() or c in SERVICE_NAME_EXTRA for c in name))


def parse_money(value: Any) -> tuple[float, str]:
    """`950` (so'm, uz docs) or `"$0.079"` (en docs): the type is unstable. A plain numeric
    string is read as so'm and thousands separators are dropped (both inferred)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value), "UZS"
    if isinstance(value, str):
        raw = value.strip().replace(",", "").replace(" ", "")
        currency = "USD" if raw.startswith("$") else "UZS"
        try:
            return float(raw.removeprefix("$")), currency
        except ValueError:
            pass
    raise GatewayRejected(f"unreadable amount {str(value)[:40]!r}", gateway="devsms")


def parse_send(body: dict) -> Acceptance:
    """The `data` of a successful send: `sms_id` is our handle for status lookups; without it the
    Eskiz `request_id` serves (get_status takes either, inferred fallback)."""
    data = json_object(body.get("data"))
    ref = data.get("sms_id") if data.get("sms_id") not in (None, "") else data.get("request_id")
    status = data.get("status")
    if ref in (None, ""):   # accepted all the same (success: true): we just cannot poll it
        log.warning("devsms accepted a message but answered no sms_id")
    return Acceptance(gateway_message_id=str(ref) if ref not in (None, "") else None,
                      raw_status=str(status) if status is not None else None)


class DevSmsGateway(HttpGateway):
    name = "devsms"
    can_lookup = False       # no search by a reference of ours
    can_dedupe = False       # no idempotency key
    max_batch = 1            # no batch endpoint
    supports_status = True   # GET /get_status.php
    supports_balance = True  # GET /get_balance.php

    def __init__(self, *, token: SecretStr, sender: str, base_url: str, connect_timeout: float,
                 read_timeout: float, **http) -> None:
        super().__init__(base_url, connect_timeout=connect_timeout, read_timeout=read_timeout, **http)
        self._token = token
        self.sender = sender

    def validate_options(self, options: Mapping[str, Any], *, text: str | None) -> dict[str, Any]:
        if not options:
            if text is None:
                raise ValidationError("text: required")
            return {}
        if not isinstance(options, Mapping):
            raise ValidationError("options: must be an object")
        kind = options.get("type")
        if kind not in MESSAGE_TYPES:
            raise ValidationError(f"options.type: must be one of {', '.join(MESSAGE_TYPES)}")
        allowed = ("type", *OTP_FIELDS) if kind == "universal_otp" else ("type",)
        unknown = sorted(str(k) for k in options if k not in allowed)
        if unknown:
            raise ValidationError(f"options: {kind} takes no {', '.join(unknown)}")
        if kind != "universal_otp":
            if text is None:
                raise ValidationError("text: required")
            return {"type": kind}
        if text is not None:
            raise ValidationError("text: must be absent with universal_otp (the template supplies it)")
        for key in OTP_FIELDS:
            if key not in options:
                raise ValidationError(f"options.{key}: required")
        template, service, code = (options[k] for k in OTP_FIELDS)
        if isinstance(template, bool) or not isinstance(template, int) or template < 1:
            raise ValidationError("options.template_type: must be an integer >= 1")
        if not service_name_ok(service):
            raise ValidationError("options.service_name: must be 2-50 characters: letters, digits, spaces "
                                  "and - _ . & ' (at least one letter, no leading or trailing space)")
        if not (isinstance(code, str) and OTP_CODE.fullmatch(code)):
            raise ValidationError("options.otp_code: must be 4-8 digits")
        return {"type": kind, "template_type": template, "service_name": service, "otp_code": code}

    def send(self, sms: OutboundSms) -> Acceptance:
        options = self.validate_options(sms.options or {}, text=sms.text or None)
        body: dict[str, Any] = {"phone": sms.to.lstrip("+"), **options}
        if options.get("type") != "universal_otp":
            # the OTP template brings its own text; its documented example has no `from` (inferred)
            body["message"] = sms.text
            body["from"] = sms.sender or self.sender
        if sms.callback_url:
            body["callback_url"] = sms.callback_url
        return parse_send(self._call("POST", "/send_sms.php", json=body))

    def status(self, gateway_message_id: str) -> DeliveryReport:
        ref = str(gateway_message_id)
        params = {"sms_id": ref} if ref.isdigit() else {"request_id": ref}
        body = self._call("GET", "/get_status.php", params=params)
        data = json_object(body.get("data"))
        word = data.get("status", body.get("status"))   # inferred shape: data.status
        return DeliveryReport(map_status(word), str(word))

    def balance(self) -> Balance:
        data = self._call("GET", "/get_balance.php").get("data") or {}
        amount, currency = parse_money(data.get("balance") if isinstance(data, dict) else None)
        return Balance(amount=amount, currency=currency)

    def _call(self, method: str, path: str, **kwargs) -> dict:
        headers = {"Authorization": f"Bearer {self._token.get_secret_value()}", "Accept": "application/json"}
        response = self.request(method, path, headers=headers, **kwargs)
        try:
            body = self.json(response)
        except GatewayRejected:
            if response.status_code not in (401, 403):
                raise
            body = {"error": "(answer is not JSON)"}
        if response.status_code >= 400 or body.get("success") is not True:
            raise classify(response.status_code, body)
        return body


#: DevSMS documents no report body; inferred to relay Eskiz's fields, our id first where echoed.
REPORT_REFS = ("user_sms_id", "request_id", "message_id", "sms_id", "id")


def parse_reports(body: dict) -> list[tuple[list[str], MessageStatus | None, str]]:
    """One report per request, read with DevSMS's own map (the one `status` polls with)."""
    return single_report(body, map_status, REPORT_REFS)


def build(settings: Settings, context: BuildContext) -> DevSmsGateway:
    return DevSmsGateway(token=credential(settings.devsms_token, "devsms_token"), sender=settings.devsms_sender,
                         base_url=settings.devsms_base_url, **context.http)


SPEC = GatewaySpec(name="devsms", factory=build, credentials=(("devsms_token",),),
                   status_map=STATUS_MAP, parse_reports=parse_reports)
