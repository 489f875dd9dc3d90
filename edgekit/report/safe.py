"""Text from devices, stores and user files, made safe to print on a terminal.

A device's hostname, a runtime's version string, a model name kept in an old store or an error
message can hold terminal escape sequences (which recolour, retitle or rewrite the screen: ECMA-48
section 5) or rich markup (`[/x]` is a closing tag without an opening one, and rich raises). Every
such string goes through `printable` before it reaches a console, and into tables as `Text`,
which rich never parses as markup.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from rich.text import Text

# ESC-introduced sequences: CSI (ESC [ ... final), OSC / DCS / PM / APC strings up to BEL or ST,
# and two-character escapes; the same with their one-character C1 introducers (0x9b CSI, 0x9d OSC...).
_ESCAPES = re.compile(r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?|(?:\x1b[\]PX^_]|[\x90\x9d\x98\x9e\x9f])[^\x07\x1b\x9c]*"
                      r"(?:\x07|\x1b\\|\x9c)?|\x1b.?", re.S)
# C0 and C1 controls, DEL, and the bidirectional overrides that reorder what a reader sees
# (Unicode TR #9; the "Trojan Source" attack, CVE-2021-42574).
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_SPACES = re.compile("[\t\n\r\x0b\x0c]")


def printable(value: Any) -> str:
    """`value` as one line of plain text: escape sequences and control characters removed, line
    breaks and tabs turned into spaces. Markup is left alone: print it with markup=False or as Text."""
    text = value if isinstance(value, str) else str(value)
    return _CONTROLS.sub("", _SPACES.sub(" ", _ESCAPES.sub("", text)))


def text(value: Any, style: str = "") -> Text:
    """A table cell, title or caption that shows `value` as it is, never as markup."""
    return Text(printable(value), style=style)


def cell(value: Any) -> Any:
    """Strings become safe Text; rich renderables already built here pass through."""
    return text(value) if isinstance(value, str) else value


def finite(value: Any) -> tuple[Any, int]:
    """`value` with every NaN and infinity replaced by None (JSON's null), and how many there were:
    RFC 8259 has no such numbers, and strict parsers (jq, JavaScript's JSON.parse) reject them."""
    count = 0

    def walk(v: Any) -> Any:
        nonlocal count
        if isinstance(v, float) and not math.isfinite(v):
            count += 1
            return None
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [walk(x) for x in v]
        return v

    return walk(value), count


def strict_json(value: Any, **options: Any) -> str:
    """JSON text any parser reads: non-finite numbers as null (see `finite`)."""
    clean, _ = finite(value)
    return json.dumps(clean, allow_nan=False, **options)
