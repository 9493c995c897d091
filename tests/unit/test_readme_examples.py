"""The README's Flask, FastAPI and testing sections show tested code: every Python snippet there is
taken, line for line, from the examples or their tests (pieces separated by a `...` line), and every
module a command names exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()

#: Each section, and the files its snippets must come from.
SOURCES = {
    "Flask": ["examples/flask_app/app.py", "examples/flask_app/sms.py", "examples/flask_app/worker.py"],
    "FastAPI": ["examples/fastapi_app/main.py", "examples/fastapi_app/sms.py", "examples/fastapi_app/worker.py"],
    "Testing your app": ["tests/examples/test_flask_app.py"],
}


def section(title: str) -> str:
    return README.split(f"\n### {title}\n", 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]


def pieces(title: str) -> list[str]:
    blocks = re.findall(r"```python\n(.*?)```", section(title), re.S)
    return [piece.strip("\n") for block in blocks for piece in re.split(r"^\.\.\.$", block, flags=re.M)
            if piece.strip()]


def found_in(piece: str, text: str) -> bool:
    """The piece's lines, in a row, at any one indentation."""
    lines = piece.splitlines()
    return any("\n".join(" " * indent + line if line else line for line in lines) in text
               for indent in range(0, 17, 4))


@pytest.mark.parametrize("title", sorted(SOURCES))
def test_every_snippet_is_the_examples_code(title):
    texts = [(ROOT / path).read_text() for path in SOURCES[title]]
    assert pieces(title), f"no Python snippet under '### {title}'"
    missing = [piece for piece in pieces(title) if not any(found_in(piece, text) for text in texts)]
    assert not missing, f"snippets under '### {title}' that are not in {SOURCES[title]}:\n\n" + "\n---\n".join(missing)


@pytest.mark.parametrize("title", sorted(SOURCES))
def test_every_module_a_command_names_exists(title):
    modules = re.findall(r"(?:-A|--app|--factory) (examples[\w.]*)", section(title))
    for module in modules:
        path = ROOT / module.replace(".", "/")
        assert path.with_suffix(".py").is_file() or (path / "__init__.py").is_file(), module


def test_the_five_line_test_of_the_issue_is_in_the_readme():
    assert "def test_signup_sends_code(client, sms_outbox):" in section("Testing your app")
