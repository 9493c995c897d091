"""The development gateway: logs one masked line per message and accepts it. Sends nothing."""

from __future__ import annotations

import logging

from ..phone import mask
from ..records import MessageStatus
from .base import Acceptance, Balance, DeliveryReport, Gateway, OutboundSms
from .registry import BuildContext, GatewaySpec

log = logging.getLogger("smsdispatch.gateways.console")


class ConsoleGateway(Gateway):
    name = "console"
    can_lookup = False  # it keeps nothing, so a message interrupted mid-"send" ends `unknown`

    def send(self, sms: OutboundSms) -> Acceptance:
        log.info("console SMS %s to %s (%d chars): not sent, development gateway",
                 sms.message_id, mask(sms.to), len(sms.text))
        return Acceptance(gateway_message_id=f"console-{sms.message_id}", raw_status="accepted")

    def status(self, gateway_message_id: str) -> DeliveryReport:
        return DeliveryReport(MessageStatus.DELIVERED, "delivered")

    def balance(self) -> Balance:
        return Balance(amount=0, unlimited=True)


def build(settings: object, context: BuildContext) -> ConsoleGateway:
    return ConsoleGateway()


#: Needs no credentials (always configured), posts no reports; every message it takes is "delivered".
SPEC = GatewaySpec(name="console", factory=build, status_map={"accepted": MessageStatus.ACCEPTED,
                                                              "delivered": MessageStatus.DELIVERED})
