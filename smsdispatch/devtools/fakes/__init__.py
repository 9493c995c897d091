"""In-process fakes of the SMS gateways: real HTTP servers on 127.0.0.1 for tests, the demo and benchmarks.

Every fake subclasses `FakeGateway` (base.py), which owns the server, the request log, the accepted-SMS
list and failure injection; a fake module (eskiz.py, ...) holds only its protocol. Import a fake from
its module: `from smsdispatch.devtools.fakes.eskiz import FakeEskiz`.
"""

from .base import Accepted, BodyError, FakeGateway, Reply, Request, RequestRecord, parse_body, run_cli

__all__ = ["Accepted", "BodyError", "FakeGateway", "Reply", "Request", "RequestRecord", "parse_body", "run_cli"]
