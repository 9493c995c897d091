from pydantic import SecretStr

from smsdispatch.devtools.fakes.smsflow import FakeSmsFlow
from smsdispatch.gateways.smsflow import SmsFlowGateway
from smsdispatch.keys import Keys

from .harness import ContractCase


def _gateway(fake, client, bad_credentials):
    return SmsFlowGateway(client_id="contract-client",
                          client_secret=SecretStr("wrong" if bad_credentials else "contract-secret"),
                          campaign="contract", base_url=fake.base_url, redis_client=client,
                          keys=Keys("contract"), connect_timeout=1, read_timeout=0.5)


CASE = ContractCase(
    name="smsflow",
    make_fake=lambda: FakeSmsFlow(client_id="contract-client", client_secret="contract-secret"),
    make_gateway=_gateway,
    numbers=("+27821234567", "+27831234567", "+27721234567"),
    delivered_word=None, failed_word=None,  # no status API, no webhook (docs/gateways/smsflow.md)
    per_message_rejections=True,            # errorReport names refused numbers by index (inferred)
    auth_paths=("/api/integration/authentication",),
)
