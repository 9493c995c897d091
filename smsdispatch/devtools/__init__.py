"""Development tools, not used by a running worker: fake gateways (fakes/), a private redis-server
(redis_server.py), `celery worker`/`beat`/Flower subprocesses (processes.py), and the `smsdispatch demo`
(demo.py) and `smsdispatch dev` (stack.py) commands built from them. Only the CLI and the tests import
this package; nothing in the send path does.
"""
