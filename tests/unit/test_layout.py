"""The package's layout: development tools (smsdispatch.devtools) stay out of the send path."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "smsdispatch"


def _imports(path: Path) -> set[str]:
    """Every module a file imports, relative imports resolved against its package."""
    tree = ast.parse(path.read_text())
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def test_only_the_cli_imports_the_development_tools():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] == "devtools" or rel.name == "cli.py":
            continue
        if any(m == "smsdispatch.devtools" or m.startswith("smsdispatch.devtools.") for m in _imports(path)):
            offenders.append(str(rel))
    assert not offenders, f"runtime modules importing smsdispatch.devtools: {offenders}"


def test_a_worker_process_loads_no_development_tool():
    """What a worker and a producer import (the app, its tasks, every gateway, the webhooks) leaves
    smsdispatch.devtools unloaded."""
    code = (
        "import sys; import smsdispatch, smsdispatch.worker, smsdispatch.tasks, smsdispatch.webhooks, "
        "smsdispatch.polling, smsdispatch.task_events, smsdispatch.redis_transport; "
        "from smsdispatch.gateways import registry; registry.specs(); "
        "print(sorted(m for m in sys.modules if m.startswith('smsdispatch.devtools')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
