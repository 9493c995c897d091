"""What pyproject, the lock, the Dockerfile and compose promise about dependencies, and that the
package runs without its optional Flower (a web app that only produces installs no tornado)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
REQUIRES = {Requirement(r).name: Requirement(r) for r in PROJECT["dependencies"]}
EXTRAS = PROJECT["optional-dependencies"]
LOCK = (ROOT / "requirements.lock").read_text()
DOCKERFILE = (ROOT / "Dockerfile").read_text()
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def floor(name: str) -> Version:
    return min(Version(s.version) for s in REQUIRES[name].specifier if s.operator in (">=", "=="))


def test_floors_are_the_first_versions_that_have_what_the_code_uses():
    assert floor("pydantic-settings") >= Version("2.7")      # NoDecode appeared in pydantic-settings 2.7.0
    assert floor("pydantic") >= Version("2.7")               # what pydantic-settings 2.7 requires
    assert floor("redis") >= Version("6.4")                  # kombu 5.7's redis extra: redis>=6.4,<9
    assert floor("celery") >= Version("5.7") and floor("kombu") >= Version("5.7")
    assert not REQUIRES["kombu"].specifier.contains("5.8.0")  # redis_transport.py builds on kombu 5.7's internals


def test_flower_is_an_extra_that_dev_includes():
    assert "flower" not in REQUIRES
    assert [Requirement(r).name for r in EXTRAS["flower"]] == ["flower"]
    assert "smsdispatch[flower]" in EXTRAS["dev"]


def test_the_image_installs_a_hash_checked_lock_and_pinned_bases():
    pins = dict(re.findall(r"^([a-z0-9_.-]+)==(\S+)", LOCK, re.MULTILINE))
    assert {"celery", "kombu", "redis", "pydantic-settings", "flower", "tornado", "setuptools"} <= set(pins)
    for requirement in [*REQUIRES.values(), *(Requirement(r) for r in EXTRAS["flower"])]:
        assert requirement.specifier.contains(pins[requirement.name]), (requirement, pins[requirement.name])
    blocks = re.split(r"\n(?=[a-z0-9])", LOCK.split("\n\n", 1)[-1].strip())
    assert all("--hash=sha256:" in block for block in blocks if re.match(r"[a-z0-9]", block))
    assert "pip install --require-hashes --no-deps -r requirements.lock" in DOCKERFILE
    assert "pip install --no-deps" in DOCKERFILE.split("requirements.lock", 2)[-1]
    assert re.search(r"^FROM python:\d+\.\d+\.\d+-slim$", DOCKERFILE, re.MULTILINE), "a patch version"
    images = {name: s["image"] for name, s in COMPOSE["services"].items() if "image" in s}
    for name, image in images.items():
        assert re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+", image), (name, image)


BLOCK_FLOWER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("flower", "tornado"):
            raise ImportError(f"{name} is not installed (blocked)")
sys.meta_path.insert(0, Block())
"""


def test_the_package_imports_and_produces_without_flower_or_tornado():
    # smsdispatch.contrib.django's modules need a Django project set up (the test project's; its database
    # is not touched): with one, every module of the package imports.
    code = BLOCK_FLOWER + """
import os, pkgutil, importlib, django, smsdispatch
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.djangoproject.settings"
django.setup()
for m in pkgutil.walk_packages(smsdispatch.__path__, "smsdispatch."):
    importlib.import_module(m.name)             # smsdispatch.worker too: it builds its app on use
from smsdispatch.config import load_settings
from smsdispatch.worker import create_app
from smsdispatch.devtools import stack as dev
app = create_app(load_settings(redis_url="redis://127.0.0.1:1/0"))
assert "smsdispatch.send_sms" in app.tasks
lines = []
assert dev.run(lines.append) == 2 and "smsdispatch[flower]" in lines[0], lines
assert not [m for m in sys.modules if m.split(".")[0] in ("flower", "tornado")]
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]


def test_prometheus_client_is_an_extra_that_dev_and_the_image_include():
    assert "prometheus-client" not in REQUIRES
    assert [Requirement(r).name for r in EXTRAS["metrics"]] == ["prometheus-client"]
    assert "smsdispatch[metrics]" in EXTRAS["dev"]
    pins = dict(re.findall(r"^([a-z0-9_.-]+)==(\S+)", LOCK, re.MULTILINE))
    assert Requirement(EXTRAS["metrics"][0]).specifier.contains(pins["prometheus-client"])
    assert "--extra metrics" in LOCK


def test_the_package_runs_without_prometheus_client_and_says_what_metrics_need():
    code = BLOCK_FLOWER.replace('("flower", "tornado")', '("prometheus_client",)') + """
import os, pkgutil, importlib, django, smsdispatch
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.djangoproject.settings"     # as the test above, for contrib
django.setup()
for m in pkgutil.walk_packages(smsdispatch.__path__, "smsdispatch."):
    importlib.import_module(m.name)
import fakeredis
from smsdispatch.config import load_settings
from smsdispatch.keys import Keys
from smsdispatch.metrics import Metrics
seen = []
body = b"".join(Metrics(fakeredis.FakeRedis(), Keys(), load_settings())(
    {"PATH_INFO": "/metrics", "REQUEST_METHOD": "GET"}, lambda status, headers: seen.append(status)))
assert seen == ["501 Not Implemented"] and b"smsdispatch[metrics]" in body, (seen, body)
assert not [m for m in sys.modules if m.split(".")[0] == "prometheus_client"]
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]
