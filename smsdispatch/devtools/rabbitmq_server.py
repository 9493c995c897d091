"""RabbitMQ for the tests, the chaos run and the benchmark: a throwaway vhost, or a private node.

- `TemporaryVhost`: a vhost of its own (``smsdispatch-test-<random>``) on the machine's RabbitMQ
  (127.0.0.1:5672, guest/guest), made and deleted with `rabbitmqctl`: queues of one run never meet
  another's, and deleting the vhost deletes them all.
- `PrivateRabbitMQ`: a RabbitMQ node of its own (`rabbitmq-server`), on free ports of 127.0.0.1, with
  its data, logs, Erlang cookie and plugins file in a temporary directory, so a test can kill it
  (SIGKILL) and start it again without touching the machine's RabbitMQ. `kill()` then `start()` is a
  crash and a restart on the same ports from the same data.

Both raise RabbitMQUnavailable when RabbitMQ is not installed or does not answer.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from .redis_server import free_port

SYSTEM_URL = "amqp://guest:guest@127.0.0.1:5672"
#: The Debian package's own scripts (/usr/sbin/rabbitmq-server changes to the rabbitmq user and its
#: home); a private node runs these directly, as whoever runs the tests.
SBIN_GLOB = "/usr/lib/rabbitmq/lib/rabbitmq_server-*/sbin"


class RabbitMQUnavailable(RuntimeError):
    pass


def _sbin(tool: str) -> str:
    for directory in sorted(Path("/").glob(SBIN_GLOB.lstrip("/")), reverse=True):
        if os.access(directory / tool, os.X_OK):
            return str(directory / tool)
    found = shutil.which(tool)
    if found:
        return found
    raise RabbitMQUnavailable(f"no {tool}: install RabbitMQ (apt-get install rabbitmq-server)")


def _listening(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class TemporaryVhost:
    """A vhost on the machine's RabbitMQ for one test session; `url` is its amqp:// URL."""

    def __init__(self, base_url: str = SYSTEM_URL) -> None:
        self.base_url = base_url.rstrip("/")
        self.name = f"smsdispatch-test-{secrets.token_hex(4)}"

    @property
    def url(self) -> str:
        return f"{self.base_url}/{self.name}"

    def _ctl(self, *args: str) -> None:
        try:
            # the system's rabbitmqctl (on PATH: it reads the rabbitmq user's Erlang cookie)
            ctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
            subprocess.run([ctl, *args], check=True, capture_output=True, timeout=60)
        except (OSError, subprocess.SubprocessError) as e:
            raise RabbitMQUnavailable(f"rabbitmqctl {args[0]} failed: {e}") from None

    def start(self) -> TemporaryVhost:
        if not _listening(5672):
            raise RabbitMQUnavailable("nothing listens on 127.0.0.1:5672 (start RabbitMQ: service rabbitmq-server start)")
        self._ctl("add_vhost", self.name)
        self._ctl("set_permissions", "-p", self.name, "guest", ".*", ".*", ".*")
        return self

    def stop(self) -> None:
        try:
            self._ctl("delete_vhost", self.name)
        except RabbitMQUnavailable:
            pass

    def __enter__(self) -> TemporaryVhost:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class PrivateRabbitMQ:
    """A RabbitMQ node of our own on free ports; guest/guest may connect (from 127.0.0.1 only)."""

    def __init__(self, *, start_timeout: float = 90.0) -> None:
        self.port, self.dist_port = free_port(), free_port()
        self.name = f"smsdispatch-{secrets.token_hex(3)}@localhost"
        self.dir = Path(tempfile.mkdtemp(prefix="smsdispatch-rabbitmq-"))
        self.start_timeout = start_timeout
        self.process: subprocess.Popen | None = None
        (self.dir / "enabled_plugins").write_text("[].\n")
        # queue statistics (what `queue_counts` reads) every 0.5 s instead of every 5 s
        (self.dir / "rabbitmq.conf").write_text("collect_statistics_interval = 500\n")
        cookie = self.dir / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16))
        cookie.chmod(0o400)
        self._log = open(self.dir / "stdout.log", "ab")  # noqa: SIM115 - closed in stop()

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def _env(self) -> dict[str, str]:
        return {**os.environ, "HOME": str(self.dir), "RABBITMQ_NODENAME": self.name,
                "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1", "RABBITMQ_NODE_PORT": str(self.port),
                "RABBITMQ_DIST_PORT": str(self.dist_port), "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
                "RABBITMQ_LOG_BASE": str(self.dir / "log"), "RABBITMQ_LOGS": str(self.dir / "log" / "node.log"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
                "RABBITMQ_PLUGINS_EXPAND_DIR": str(self.dir / "plugins-expand"),
                "RABBITMQ_PID_FILE": str(self.dir / "node.pid"),
                "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq"),
                "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.dir / "advanced.config"),
                "RABBITMQ_CONF_ENV_FILE": str(self.dir / "rabbitmq-env.conf")}

    def start(self) -> PrivateRabbitMQ:
        """Start the node (again, after `kill`), and return once it takes AMQP connections."""
        server = _sbin("rabbitmq-server")
        self.process = subprocess.Popen([server], env=self._env(), cwd=self.dir, stdout=self._log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        while not self._ready():  # a readiness poll: no event to wait on for another process's port
            if self.process.poll() is not None:
                raise RabbitMQUnavailable(f"rabbitmq-server exited with {self.process.returncode} "
                                          f"(see {self.dir / 'log'})")
            if time.monotonic() > deadline:
                self.kill()
                raise RabbitMQUnavailable(f"rabbitmq-server did not start within {self.start_timeout:g}s")
            time.sleep(0.2)
        return self

    def _ready(self) -> bool:
        from kombu import Connection  # noqa: PLC0415 - only once the port listens

        if not _listening(self.port):
            return False
        try:
            with Connection(self.url, connect_timeout=1) as conn:
                conn.ensure_connection(max_retries=1, timeout=1)
            return True
        except Exception:   # noqa: BLE001 - still booting (the port may listen before the vhost exists)
            return False

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        """`rabbitmqctl` against this node (its name and Erlang cookie); returns its output."""
        done = subprocess.run([_sbin("rabbitmqctl"), "-n", self.name, *args], env=self._env(), capture_output=True,
                              text=True, timeout=timeout, check=True)
        return done.stdout

    def queue_counts(self) -> dict[str, tuple[int, int]]:
        """Every queue's (ready, unacknowledged) messages."""
        out = self.ctl("list_queues", "-q", "name", "messages_ready", "messages_unacknowledged")
        counts = {}
        for line in out.splitlines():
            parts = line.split("\t")
            if len(parts) == 3 and parts[1].isdigit():
                counts[parts[0]] = (int(parts[1]), int(parts[2]))
        return counts

    def kill(self) -> None:
        """A crash: SIGKILL to the node's whole process group (the Erlang VM and its helpers)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        self.process = None

    def stop(self) -> None:
        self.kill()
        self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PrivateRabbitMQ:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
