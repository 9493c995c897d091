"""HTML that is escaped unless it says otherwise: `Html`, `escape`, and the page templates.

Every value put into a template is escaped (`html.escape`, quotes included, so it is safe in text and
in a quoted attribute) unless it is an `Html`, which only `render`, `join` and `escape` itself make.
So a message's text, metadata or error, or anything else that came from a caller or a gateway, reaches
the page as text whatever it holds.

A template file (templates/<page>.html, package data) is read with `string.Template` (``${name}``;
``$$`` is a dollar sign) and may hold several parts: the page itself first, then each named part after
a line ``<!-- part: <name> -->`` (a table row, a warning), rendered by the view as often as needed.
A placeholder without a value raises KeyError: a template and its view cannot drift apart unseen.
"""

from __future__ import annotations

import functools
import html
import re
import string
from collections.abc import Iterable
from importlib import resources
from typing import Any

TEMPLATES = resources.files(__package__) / "templates"
_PART = re.compile(r"^<!-- part: (\w+) -->\n", re.MULTILINE)


class Html(str):
    """Text that is HTML already: put into a template as it is."""


def escape(value: Any) -> Html:
    if isinstance(value, Html):
        return value
    return Html(html.escape("" if value is None else str(value), quote=True))


def join(parts: Iterable[Any], separator: str = "") -> Html:
    return Html(escape(separator).join(escape(p) for p in parts))


@functools.cache
def parts(page: str) -> dict[str, string.Template]:
    """A template file's parts by name; the page itself is "main"."""
    text = (TEMPLATES / f"{page}.html").read_text(encoding="utf-8")
    pieces = _PART.split(text)
    found = {"main": string.Template(pieces[0])}
    for name, body in zip(pieces[1::2], pieces[2::2], strict=True):
        found[name] = string.Template(body)
    return found


def render(page: str, part: str = "main", /, **values: Any) -> Html:
    return Html(parts(page)[part].substitute({k: escape(v) for k, v in values.items()}))
