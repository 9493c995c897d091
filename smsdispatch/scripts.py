"""The Lua scripts, one `.lua` file each in smsdispatch/lua/, loaded by name.

Each script opens with a comment header: what it does, one line per KEYS[i] and ARGV[i], and what it
returns. Every key a script touches arrives in KEYS; a script that must touch keys known only once it
runs (the reminders' hashes) says so in a `-- keys built:` line.

Functions shared by several scripts (the ledger's claim, the record update, a circuit's count, ...)
are libraries in smsdispatch/lua/lib/. A script names the ones it uses in its header:

    -- requires: claim, update_record

and `source(name)` puts those files, in that order, before the script's own text: the script Redis
runs is exactly those files one after the other, nothing is generated.
"""

from __future__ import annotations

import functools
import re
from importlib import resources

import redis
from redis.commands.core import Script

LUA = resources.files(__package__) / "lua"
_REQUIRES = re.compile(r"^-- requires:(.*)$", re.MULTILINE)


def header(text: str) -> list[str]:
    """The leading comment lines of a Lua file."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("--"):
            break
        lines.append(line)
    return lines


def requires(text: str) -> list[str]:
    """The libraries a script's header names on its `-- requires:` line."""
    found = _REQUIRES.search("\n".join(header(text)))
    return [name.strip() for name in found.group(1).split(",") if name.strip()] if found else []


def library(name: str) -> str:
    return (LUA / "lib" / f"{name}.lua").read_text(encoding="utf-8")


@functools.cache
def source(name: str) -> str:
    """The script `name` (smsdispatch/lua/<name>.lua) as Redis runs it: its libraries, then itself."""
    text = (LUA / f"{name}.lua").read_text(encoding="utf-8")
    return "\n".join([*(library(lib) for lib in requires(text)), text])


def register(client: redis.Redis, name: str) -> Script:
    """The script `name`, registered with `client` (EVALSHA, loaded on demand)."""
    return client.register_script(source(name))
