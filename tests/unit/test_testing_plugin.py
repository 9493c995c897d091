"""The pytest plugin: installed with the package (entry point pytest11), it gives a host app's tests
`sms_outbox` and `sms_eager`, and costs a suite that uses neither nothing: no hook, no import of the
kit, nothing patched."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import smsdispatch.testing.plugin as plugin

HOST_TEST = '''
import smsdispatch
from smsdispatch.worker import SmsApp


def signup(phone):                      # the host app's code
    smsdispatch.send_sms.delay(phone, "Your code is 4821", idempotency_key=f"signup-{phone}")


def test_signup_sends_code(sms_outbox):
    signup("+998901234567")
    assert len(sms_outbox) == 1
    assert sms_outbox[0].to == "+998901234567"


def test_signup_records_it(sms_eager):
    signup("+998901234567")
    assert smsdispatch.get_message(sms_eager.outbox[0].message_id)["status"] == "accepted"


def test_a_test_without_the_fixtures_sees_no_kit():
    assert SmsApp.send_task.__qualname__ == "SmsApp.send_task"      # ours, not the kit's stand-in
'''


def run_pytest(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_host.py").write_text(textwrap.dedent(HOST_TEST))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SMSDISPATCH_", "PYTEST_"))}
    env["SMSDISPATCH_REDIS_URL"] = "redis://127.0.0.1:1/0"     # nothing listens: the kit must not need it
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args, str(tmp_path)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)


def test_a_host_apps_suite_gets_the_fixtures_from_the_installed_package(tmp_path):
    proc = run_pytest(tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "3 passed" in proc.stdout


def test_the_fixtures_come_from_the_plugin(tmp_path):
    proc = run_pytest(tmp_path, "-p", "no:smsdispatch")
    assert "fixture 'sms_outbox' not found" in proc.stdout and "1 passed" in proc.stdout, proc.stdout[-3000:]


def test_the_plugin_defines_fixtures_and_nothing_else():
    hooks = [name for name, _ in inspect.getmembers(plugin) if name.startswith("pytest_")]
    assert hooks == []
    assert {"sms_outbox", "sms_eager"} <= set(vars(plugin))


def test_loading_the_plugin_imports_no_part_of_the_kit():
    code = ("import sys, pytest; import smsdispatch.testing.plugin; "
            "print(sorted(m for m in sys.modules if m.startswith(('fakeredis', 'smsdispatch.', 'celery.app', "
            "'smsdispatch.worker', 'kombu', 'redis'))))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert proc.stdout.strip() == "['smsdispatch.testing', 'smsdispatch.testing.plugin']", proc.stdout


def test_only_the_kit_imports_fakeredis_and_nothing_imports_the_examples_frameworks():
    from tests.unit.test_layout import PACKAGE, _imports
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        for module in _imports(path):
            top = module.split(".")[0]
            if (top == "fakeredis" and rel.parts[0] != "testing") or top in ("flask", "fastapi", "sqlalchemy",
                                                                              "starlette", "examples"):
                offenders.append(f"{rel}: {module}")
    assert not offenders, offenders
