from pydantic import SecretStr

from smsdispatch.devtools.fakes.smspm import FakeSmsPm
from smsdispatch.gateways.smspm import SmsPmGateway

from .harness import ContractCase


def _gateway(fake, client, bad_credentials):
    return SmsPmGateway(hash="c-hash", token=SecretStr("wrong" if bad_credentials else "c-token"),
                        sender="SMSPM.com", base_url=fake.base_url, connect_timeout=1, read_timeout=0.5)


CASE = ContractCase(
    name="smspm",
    make_fake=lambda: FakeSmsPm(hash="c-hash", token="c-token"),
    make_gateway=_gateway,                  # no token cache: Redis is not used
    numbers=("+37256789045", "+37251234567", "+37258765432"),
    delivered_word=None, failed_word=None,  # no status API (docs/gateways/smspm.md)
    per_message_rejections=True,            # a refused number is its own messages[] element (inferred)
    auth_paths=(),                          # hash + token on every request, no token endpoint
)
