"""The `smsdispatch` command, as a user runs it: a subprocess against a real worker and Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from smsdispatch.devtools.processes import WorkerProcess
from smsdispatch.dispatch import message_id_for

from ..procs import Lines, user_env
from .conftest import worker_settings

TO = "+998901234567"


@pytest.fixture(scope="module")
def cli_env(redis_url, fake_eskiz):
    settings = worker_settings(redis_url, fake_eskiz)
    worker = WorkerProcess(settings, name="cli")
    yield {k: v for k, v in os.environ.items() if not k.startswith("SMSDISPATCH_")} | settings
    worker.stop()


def run(env, *args) -> tuple[int, object, str]:
    p = subprocess.run([sys.executable, "-m", "smsdispatch.cli", *args], env=env, capture_output=True,
                       text=True, timeout=120)
    try:
        out = json.loads(p.stdout) if p.stdout.strip() else None
    except ValueError:
        out = p.stdout
    return p.returncode, out, p.stderr


def test_send_waits_for_the_result_and_status_shows_the_record(cli_env, fake):
    code, out, _ = run(cli_env, "send", TO, "From the command line")
    assert code == 0 and out["status"] == "accepted" and len(fake.sends_for(out["message_id"])) == 1
    code, status, _ = run(cli_env, "status", out["message_id"])
    assert code == 0 and status["record"]["to"] == "+998*******67"
    assert [h["status"] for h in status["history"]] == ["queued", "sending", "accepted"]


def test_failures_exit_non_zero_with_a_clear_reason(cli_env, fake):
    code, out, _ = run(cli_env, "send", "+99890", "bad number")
    assert code == 1 and out["error"]["code"] == "validation"
    code, _, err = run(cli_env, "status", "no-such-message")
    assert code == 1 and "no record of message no-such-message" in err
    code, _, err = run(cli_env | {"SMSDISPATCH_MAX_ATTEMPTS": "zero"}, "status", "x")
    assert code != 0 and "SMSDISPATCH_MAX_ATTEMPTS" in err


def test_a_csv_batch_with_progress_and_its_status(cli_env, fake, tmp_path):
    csv_file = tmp_path / "customers.csv"
    csv_file.write_text("to,text\n" + "".join(f"+99890{7000000 + i},Hello {i}\n" for i in range(25))
                        + "+99890,broken\n")
    batch_id = f"cli-{uuid.uuid4().hex[:6]}"
    code, out, err = run(cli_env, "batch", str(csv_file), "--batch-id", batch_id)
    assert code == 1 and (out["accepted"], out["failed"], out["status"]) == (25, 1, "done")   # one bad row
    assert "26/26" in err                                      # the progress bar reached the end
    code, status, _ = run(cli_env, "batch-status", batch_id)
    assert code == 0 and status["total"] == 26 and len(fake.accepted) == 25


def test_dead_letters_can_be_replayed(cli_env, fake):
    key = f"dl-{uuid.uuid4().hex[:6]}"
    fake.fail_next(4, status=503)                              # every attempt fails: retries_exhausted
    code, out, _ = run(cli_env, "send", TO, "Try again later", "--key", key)
    assert code == 1 and out["error"]["code"] == "retries_exhausted"
    code, listing, _ = run(cli_env, "dead-letters")
    assert any(d["message_id"] == out["message_id"] for d in listing)
    code, listing, _ = run(cli_env, "dead-letters", "--replay")
    assert code == 0 and [d for d in listing if d["message_id"] == out["message_id"]][0]["replayed"]
    assert fake.wait_for(lambda f: len(f.sends_for(message_id_for(key, ""))) == 1, timeout=30)
    _, listing, _ = run(cli_env, "dead-letters")
    assert all(d["message_id"] != out["message_id"] for d in listing)


def test_schedule_and_cancel_a_reminder(cli_env, fake):
    code, out, _ = run(cli_env, "send", TO, "Next year", "--at", "2030-01-01T09:00:00+05:00")
    assert code == 0 and out["state"] == "scheduled"
    code, cancelled, _ = run(cli_env, "cancel", out["reminder_id"])
    assert code == 0 and cancelled["cancelled"] is True
    code, _, err = run(cli_env, "send", TO, "Naive", "--at", "2030-01-01T09:00:00")
    assert code == 2 and "timezone-aware" in err


def test_balance_asks_the_gateways(cli_env, fake):
    code, out, _ = run(cli_env, "balance")
    assert code == 0 and out["eskiz"]["amount"] == fake.balance and out["console"] == "unlimited"


def test_dev_brings_up_redis_worker_beat_and_flower_and_stops_them(tmp_path):
    """As a user runs it: no PYTHONUNBUFFERED, its output read through a pipe (`dev | tee dev.log`)."""
    import re
    import signal

    import redis
    import requests

    from smsdispatch.config import load_settings
    from smsdispatch.tasks import SEND_SMS
    from smsdispatch.worker import create_app

    dev = subprocess.Popen([sys.executable, "-m", "smsdispatch.cli", "dev"], env=user_env(FLOWER_BASIC_AUTH="me:pw"),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = Lines(dev)
    try:
        lines = [out.next(timeout=120) for _ in range(3)]          # printed once everything is up
        url = re.search(r"SMSDISPATCH_REDIS_URL=(\S+)", lines[0]).group(1)
        flower = re.search(r"(http://127\.0\.0\.1:\d+)", lines[1]).group(1)
        app = create_app(load_settings(redis_url=url))              # the web app's side
        result = app.tasks[SEND_SMS].delay(TO, "Hello from dev").get(timeout=30)
        assert result["status"] == "accepted" and result["gateway"] == "console"
        assert requests.get(f"{flower}/api/workers", auth=("me", "pw"), timeout=5).status_code == 200
        # Flower's password reaches it through its environment: `ps` (any user's) shows no argv with it
        import psutil
        children = psutil.Process(dev.pid).children(recursive=True)
        cmdlines = {c.pid: open(f"/proc/{c.pid}/cmdline", "rb").read().replace(b"\0", b" ").decode()
                    for c in children}
        assert any(" flower" in c for c in cmdlines.values()), cmdlines
        assert [c for c in cmdlines.values() if "me:pw" in c or "basic-auth" in c] == []
        assert "pw" not in lines[1] and "password from FLOWER_BASIC_AUTH" in lines[1]   # a password set is not echoed
    finally:
        dev.send_signal(signal.SIGINT)
        assert dev.wait(timeout=60) == 0
    assert "Stopping." in out.rest()
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()   # its Redis is gone too
