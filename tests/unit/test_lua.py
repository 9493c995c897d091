"""The Lua scripts as files (smsdispatch/lua/): each documents its KEYS and ARGV, takes every key it
touches in KEYS, exists when the code loads it, and ships with the package."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from smsdispatch import scripts
from smsdispatch.records import INT_FIELDS, JSON_FIELDS, RESULT_FIELDS

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "smsdispatch"
LUA = PACKAGE / "lua"
SCRIPTS = sorted(p.stem for p in LUA.glob("*.lua"))
LIBRARIES = sorted(p.stem for p in (LUA / "lib").glob("*.lua"))
# An index the header documents: KEYS[3], ARGV[11..15], KEYS[7..], ARGV[2m-1] (per message).
_DOC = re.compile(r"^-- (KEYS|ARGV)\[([^\]]+)\]")
_USE = re.compile(r"\b(KEYS|ARGV)\[(\d+)\]")
_CALL = re.compile(r"redis\.call\('\w+', ([^,)]+)")


def _text(name: str) -> str:
    return (LUA / f"{name}.lua").read_text(encoding="utf-8")


def _body(text: str) -> str:
    return "\n".join(text.splitlines()[len(scripts.header(text)):])


def _documented(header: list[str], kind: str) -> list[tuple[int, int]]:
    """The index ranges the header documents for KEYS or ARGV (an open range ends at infinity)."""
    ranges = []
    for line in header:
        m = _DOC.match(line)
        if not m or m.group(1) != kind:
            continue
        low, _, high = m.group(2).partition("..")
        first = int(re.match(r"\d+", low).group()) if re.match(r"\d+", low) else 1
        if not high and low.isdigit():
            ranges.append((first, first))
        else:
            ranges.append((first, int(high) if high.isdigit() else 10**9))
    return ranges


def _loaded_by_the_code() -> set[str]:
    names = set()
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        names |= set(re.findall(r"scripts\.register\([^,]+, \"(\w+)\"\)", text))
        names |= set(re.findall(r"scripts\.source\(\"(\w+)\"\)", text))
    return names


def test_there_are_scripts_and_libraries():
    assert len(SCRIPTS) >= 20 and {"claim", "update_record", "circuit_record"} <= set(LIBRARIES)


@pytest.mark.parametrize("name", SCRIPTS)
def test_each_script_opens_with_a_header_naming_its_keys_argv_and_return(name):
    text = _text(name)
    header = scripts.header(text)
    assert header and header[0].startswith(f"-- {name}: "), f"{name}.lua: the header's first line names the script"
    for kind in ("KEYS", "ARGV"):
        assert _documented(header, kind) or f"-- {kind}: none" in header, f"{name}.lua: no {kind} lines"
    assert any(line.startswith("-- returns") for line in header), f"{name}.lua: the header says what it returns"
    # every index the script uses is one its header documents
    for kind, index in _USE.findall(_body(text)):
        assert any(lo <= int(index) <= hi for lo, hi in _documented(header, kind)), \
            f"{name}.lua uses {kind}[{index}], which its header does not document"


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_key_a_script_touches_comes_in_keys(name):
    """A command's key is KEYS[...], or the script says in a `-- keys built:` line why it cannot be
    (keys known only while it runs)."""
    text = _text(name)
    builds = any(line.startswith("-- keys built:") for line in scripts.header(text))
    for first in _CALL.findall(_body(text)):
        assert not re.fullmatch(r"ARGV\[[^\]]+\]", first.strip()), f"{name}.lua: a key name passed in ARGV ({first})"
        assert first.startswith("KEYS[") or builds, f"{name}.lua: a key not in KEYS ({first}) and no `keys built:`"


@pytest.mark.parametrize("name", LIBRARIES)
def test_each_library_documents_its_function_and_takes_keys_as_arguments(name):
    text = (LUA / "lib" / f"{name}.lua").read_text(encoding="utf-8")
    assert scripts.header(text)[0].startswith(f"-- library {name}: ")
    assert re.search(rf"^local function {name}\(", text, re.MULTILINE) or name == "record_result"
    params = {p.strip() for ps in re.findall(r"local function \w+\(([^)]*)\)", text) for p in ps.split(",")}
    for first in _CALL.findall(text):
        assert first in params, f"lib/{name}.lua: key {first} is not an argument of its functions"


def test_every_script_the_code_loads_exists_and_every_file_is_loaded():
    loaded = _loaded_by_the_code()
    assert loaded == set(SCRIPTS)
    for name in SCRIPTS:
        assert set(scripts.requires(_text(name))) <= set(LIBRARIES), name


def test_a_script_is_its_libraries_then_itself():
    source = scripts.source("ledger_finish")
    assert scripts.requires(_text("ledger_finish")) == ["index_number", "update_record", "record_result",
                                                         "store_result", "circuit_record"]
    positions = [source.index(f"-- library {lib}:") for lib in scripts.requires(_text("ledger_finish"))]
    assert positions == sorted(positions) and source.endswith(_text("ledger_finish"))
    assert "%(" not in source


def test_the_result_fields_in_lua_are_the_records():
    text = (LUA / "lib" / "record_result.lua").read_text(encoding="utf-8")
    names = re.search(r"local RESULT_FIELDS = \{([^}]*)\}", text).group(1)
    assert tuple(re.findall(r"'(\w+)'", names)) == RESULT_FIELDS
    ints = re.search(r"local RESULT_INTS = \{([^}]*)\}", text).group(1)
    assert set(re.findall(r"(\w+) = true", ints)) == INT_FIELDS & set(RESULT_FIELDS)
    json = re.search(r"local RESULT_JSON = \{([^}]*)\}", text).group(1)
    assert set(re.findall(r"(\w+) = true", json)) == JSON_FIELDS & set(RESULT_FIELDS)


def test_importlib_resources_finds_every_script():
    for name in SCRIPTS:
        assert (scripts.LUA / f"{name}.lua").is_file()
    for name in LIBRARIES:
        assert (scripts.LUA / "lib" / f"{name}.lua").is_file()


def test_the_built_package_carries_the_scripts(tmp_path):
    """What a wheel (and so the image: Dockerfile pip-installs the package) carries: setuptools'
    build_py from a copy of the project, outside any git checkout."""
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(ROOT / "pyproject.toml", src)
    shutil.copy(ROOT / "README.md", src)
    shutil.copytree(PACKAGE, src / "smsdispatch", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "build"
    subprocess.run([sys.executable, "-c", "from setuptools import setup; setup()", "-q", "build_py",
                    "--build-lib", str(out)], cwd=src, check=True, capture_output=True)
    built = {p.relative_to(out / "smsdispatch").as_posix() for p in (out / "smsdispatch" / "lua").rglob("*.lua")}
    assert built == {f"lua/{n}.lua" for n in SCRIPTS} | {f"lua/lib/{n}.lua" for n in LIBRARIES}


def test_a_library_that_calls_another_comes_after_it_in_every_script():
    """A library calling another library's function (update_record calls index_number) only works where
    the script requires that one too, and earlier."""
    defined = {lib: re.search(r"^local function (\w+)", (LUA / "lib" / f"{lib}.lua").read_text(), re.M).group(1)
               for lib in LIBRARIES}
    for name in SCRIPTS:
        required = scripts.requires(_text(name))
        for n, lib in enumerate(required):
            body = _body((LUA / "lib" / f"{lib}.lua").read_text(encoding="utf-8"))
            for other, function in defined.items():
                if other != lib and re.search(rf"\b{function}\(", body):
                    assert other in required[:n], f"{name}: {lib} calls {function}, so must require {other} first"
