from pydantic import SecretStr

from smsdispatch.devtools.fakes.devsms import FakeDevSms
from smsdispatch.gateways.devsms import DevSmsGateway

from .harness import ContractCase


def _gateway(fake, client, bad_credentials):
    return DevSmsGateway(token=SecretStr("wrong-token" if bad_credentials else "contract-token"), sender="4546",
                         base_url=fake.base_url, connect_timeout=1, read_timeout=0.5)


CASE = ContractCase(
    name="devsms",
    make_fake=lambda: FakeDevSms(token="contract-token"),
    make_gateway=_gateway,
    numbers=("+998901234567", "+998911234567", "+998931234567"),
    delivered_word="DELIVERED", failed_word="REJECTED",
    per_message_rejections=False,           # no batch endpoint: one call per message
    auth_paths=(),                          # a static token: no login, no refresh
)
