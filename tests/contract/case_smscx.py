from pydantic import SecretStr

from smsdispatch.devtools.fakes.smscx import FakeSmsCx
from smsdispatch.gateways.smscx import SmsCxGateway
from smsdispatch.keys import Keys

from .harness import ContractCase


def _gateway(fake, client, bad_credentials):
    # OAuth2 client credentials, so token expiry is exercised (the API-key mode is unit-tested).
    return SmsCxGateway(api_key=None, client_id="contract-client",
                        client_secret=SecretStr("wrong" if bad_credentials else "contract-secret"),
                        sender="InfoText", base_url=fake.base_url, redis_client=client, keys=Keys("contract"),
                        connect_timeout=1, read_timeout=0.5)


CASE = ContractCase(
    name="smscx",
    make_fake=lambda: FakeSmsCx(client_id="contract-client", client_secret="contract-secret"),
    make_gateway=_gateway,
    numbers=("+33612345678", "+33698765432", "+447700900123"),
    delivered_word="DELIVERED", failed_word="FAILED",
    per_message_rejections=True,            # allowInvalid + per-number data[].status
    auth_paths=("/oauth/token",),
)
