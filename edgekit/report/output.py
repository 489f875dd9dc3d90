"""Where command output goes: the two consoles, one-line messages, strict JSON, whole files.

Every string that may come from a device, a store or a user passes `safe.printable` here, so a
hostile probe or model name cannot move the cursor or restyle the terminal.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from .safe import finite, printable


def _console(stderr: bool) -> Console:
    """Tables stay one row per variant when piped: plain text is wide rather than wrapped."""
    console = Console(stderr=stderr, soft_wrap=stderr)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(stderr=stderr, soft_wrap=stderr, width=160)
    return console


out = _console(stderr=False)
err = _console(stderr=True)


def say(console: Console, message: str) -> None:
    """One line of text that may hold device or user strings: never markup, never escapes."""
    console.print(printable(message), highlight=False, markup=False)


def error_line(message: str) -> None:
    """The one line an error leaves on stderr (the caller exits with the error's code)."""
    err.print(f"[bold red]error:[/] {escape(printable(message))}", highlight=False, markup=True)


def emit_json(doc: Any) -> None:
    """Strict JSON on stdout: a non-finite number (a device's NaN output diff) is null, with a note."""
    clean, count = finite(doc)
    if count:
        err.print(f"note: {count} non-finite number{'s' if count > 1 else ''} (NaN or infinity) printed as null",
                  highlight=False, markup=False)
    sys.stdout.write(json.dumps(clean, indent=2, default=str, allow_nan=False) + "\n")


def write_whole(path: Path, text: str) -> None:
    """Whole or not at all: a reader never sees half a report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def emit(text: str, output: Path | None) -> None:
    """A rendered document to stdout, or whole to `output` with a note on stderr."""
    if output is None:
        sys.stdout.write(text)
    else:
        write_whole(output, text)
        say(err, f"Wrote {output}")


def show(items: list[Any], console: Console = out) -> None:
    """Rendered parts in order: tables as rich renders them, strings as plain safe lines (`say`)."""
    for item in items:
        if isinstance(item, str):
            say(console, item)
        else:
            console.print(item)
