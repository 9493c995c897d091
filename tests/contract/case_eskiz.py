from pydantic import SecretStr

from smsdispatch.devtools.fakes.eskiz import FakeEskiz
from smsdispatch.gateways.eskiz import EskizGateway
from smsdispatch.keys import Keys

from .harness import ContractCase


def _gateway(fake, client, bad_credentials):
    return EskizGateway(email="c@example.com", password=SecretStr("wrong" if bad_credentials else "pw"),
                        sender="4546", base_url=fake.base_url, redis_client=client, keys=Keys("contract"),
                        connect_timeout=1, read_timeout=0.5)


CASE = ContractCase(
    name="eskiz",
    make_fake=lambda: FakeEskiz(email="c@example.com", password="pw"),
    make_gateway=_gateway,
    numbers=("+998901234567", "+998911234567", "+998931234567"),
    delivered_word="DELIVERED", failed_word="REJECTED",
    per_message_rejections=False,           # one bad entry refuses the whole send-batch (inferred)
    auth_paths=("/auth/login", "/auth/refresh"),
)
