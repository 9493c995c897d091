"""HttpGateway's translation of transport failures, with a stub transport (no network, no DNS)."""

from http.client import RemoteDisconnected

import pytest
import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError, NameResolutionError, NewConnectionError, ProtocolError

from smsdispatch.errors import AmbiguousError, GatewayUnavailable
from smsdispatch.gateways.base import HttpGateway


class Raises(HTTPAdapter):
    def __init__(self, exc: Exception) -> None:
        super().__init__()
        self.exc = exc

    def send(self, request, **kwargs):
        raise self.exc


class Probe(HttpGateway):
    name = "probe"
    send = status = balance = None


def call(exc: Exception):
    session = requests.Session()
    session.mount("http://", Raises(exc))
    Probe("http://gw.test", connect_timeout=1, read_timeout=1, session=session).request("POST", "/send")


def _wrapped(reason: Exception) -> requests.ConnectionError:
    return requests.ConnectionError(MaxRetryError(None, "/send", reason=reason))


@pytest.mark.parametrize("exc, expected, words", [
    (requests.ConnectTimeout("connect timed out"), GatewayUnavailable, "connect timeout"),
    (_wrapped(NewConnectionError(None, "Connection refused")), GatewayUnavailable, "cannot connect"),
    (_wrapped(NameResolutionError("gw.test", None, "Name or service not known")), GatewayUnavailable,
     "cannot connect"),
    (requests.ConnectionError(ProtocolError("Connection aborted.", RemoteDisconnected("closed"))),
     AmbiguousError, "connection lost after sending"),
    (requests.ConnectionError(ProtocolError("Connection aborted.", ConnectionResetError(104, "reset"))),
     AmbiguousError, "connection lost after sending"),
    (requests.ReadTimeout("read timed out"), AmbiguousError, "no answer within 1s"),
    (requests.exceptions.ChunkedEncodingError("broken body"), AmbiguousError, "HTTP error"),
])
def test_transport_failures_map_to_not_sent_or_ambiguous(exc, expected, words):
    with pytest.raises(expected, match=words) as e:
        call(exc)
    assert type(e.value) is expected and e.value.gateway == "probe"
