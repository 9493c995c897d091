"""The repository stands on its own: no reference leads outside it, and every reference to docs/ resolves.

Code, tests, tools and the README cite the project's own documents (docs/gateways/<name>.md,
docs/celery-redis.md H<n>, docs/architecture.md); none may point at notes kept outside the repo.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

#: Where code and text that ship with the project live (docs/ is checked by the same rules).
SCANNED_DIRS = ("smsdispatch", "tests", "bench", "chaos", "docs", "examples")
SCANNED_FILES = ("README.md", "Makefile", "docker-compose.yml", "Dockerfile", "pyproject.toml")
SUFFIXES = {".py", ".md", ".txt", ".toml", ".yml", ".yaml", ".cfg", ".ini", ".sh", ""}

#: References to documents outside the repository. Written so that this file does not match itself.
OUTSIDE = [
    re.compile(r"providers\.md"),
    re.compile(r"\.\./shared\b"),
    re.compile(r"celery-redis[-_ ]notes"),
    re.compile(r"hazard \d+ of the notes", re.IGNORECASE),
    re.compile(r"/work/share[d]\b"),
]
DOC_PATH = re.compile(r"\bdocs/[\w./-]*\w\.md\b")
HAZARD_REF = re.compile(r"docs/celery-redis\.md,? (H\d+)")
HAZARD_HEADING = re.compile(r"^## (H\d+)\. ", re.MULTILINE)
MD_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
CODE_PATH = re.compile(r"`((?:smsdispatch|tests|bench|chaos)/[\w/.-]+\.py)`")
FILE_AND_NAME = re.compile(r"`((?:smsdispatch/)?[\w/]+\.py)` `([A-Za-z_][\w.]*)`")


def scanned() -> list[Path]:
    files = [ROOT / name for name in SCANNED_FILES if (ROOT / name).is_file()]
    for top in SCANNED_DIRS:
        for path in sorted((ROOT / top).rglob("*")):
            if path.is_file() and path.suffix in SUFFIXES and "__pycache__" not in path.parts:
                files.append(path)
    return files


def text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def test_the_scan_covers_the_project():
    names = {p.relative_to(ROOT).as_posix() for p in scanned()}
    assert {"README.md", "Makefile", "smsdispatch/tasks.py", "docs/celery-redis.md", "docs/architecture.md",
            "tests/unit/test_docs.py"} <= names


def test_nothing_points_outside_the_repository():
    found = [f"{p.relative_to(ROOT)}:{n}: {line.strip()[:100]}"
             for p in scanned() for n, line in enumerate(text(p).splitlines(), 1)
             if any(rx.search(line) for rx in OUTSIDE)]
    assert not found, "references to documents outside the repo:\n" + "\n".join(found)


def test_every_docs_path_exists():
    missing = [f"{p.relative_to(ROOT)}: {ref}" for p in scanned() for ref in DOC_PATH.findall(text(p))
               if not (ROOT / ref).is_file()]
    assert not missing, "docs/ paths that do not exist:\n" + "\n".join(missing)


def test_every_cited_hazard_exists():
    defined = set(HAZARD_HEADING.findall(text(DOCS / "celery-redis.md")))
    assert {"H1", "H6", "H9"} <= defined
    missing = [f"{p.relative_to(ROOT)}: {h}" for p in scanned() for h in HAZARD_REF.findall(text(p))
               if h not in defined]
    assert not missing, "hazards cited but not in docs/celery-redis.md:\n" + "\n".join(missing)


def test_hazards_are_numbered_in_order():
    numbers = [int(h[1:]) for h in HAZARD_HEADING.findall(text(DOCS / "celery-redis.md"))]
    assert numbers == list(range(1, len(numbers) + 1))


@pytest.mark.parametrize("page", sorted(p.relative_to(ROOT).as_posix() for p in [ROOT / "README.md",
                                                                                 *DOCS.rglob("*.md")]))
def test_relative_links_resolve(page):
    path = ROOT / page
    broken = [link for link in MD_LINK.findall(text(path))
              if "://" not in link and not link.startswith("mailto:") and not (path.parent / link).exists()]
    assert not broken, f"{page}: broken links {broken}"


def test_code_paths_named_in_docs_exist():
    missing = [f"{p.relative_to(ROOT)}: {ref}" for p in DOCS.rglob("*.md") for ref in CODE_PATH.findall(text(p))
               if not (ROOT / ref).is_file()]
    assert not missing, "files named in docs/ that do not exist:\n" + "\n".join(missing)


def test_functions_named_in_docs_exist():
    """`file.py` `Name` or `Class.method`: each part is defined (or assigned) in that file."""
    missing = []
    for page in DOCS.rglob("*.md"):
        for file, name in FILE_AND_NAME.findall(text(page)):
            path = ROOT / file if file.startswith("smsdispatch/") else ROOT / "smsdispatch" / file
            if not path.is_file():
                missing.append(f"{page.relative_to(ROOT)}: {file} (no such file)")
                continue
            source = text(path)
            for part in name.split("."):
                if not re.search(rf"(def|class) {re.escape(part)}\b|^\s*{re.escape(part)}\b.*=", source, re.MULTILINE):
                    missing.append(f"{page.relative_to(ROOT)}: {file} `{name}` ({part} not defined there)")
    assert not missing, "names in docs/ not found in their files:\n" + "\n".join(missing)


def test_architecture_lists_every_module():
    page = text(DOCS / "architecture.md")
    modules = sorted(p.relative_to(ROOT / "smsdispatch").as_posix() for p in (ROOT / "smsdispatch").rglob("*.py"))
    unlisted = [m for m in modules if Path(m).name not in page]
    assert not unlisted, f"modules missing from the package tree in docs/architecture.md: {unlisted}"


def test_every_gateway_has_its_page():
    from smsdispatch.gateways.registry import BUILTIN as GATEWAY_NAMES
    assert [g for g in GATEWAY_NAMES if not (DOCS / "gateways" / f"{g}.md").is_file()] == []
