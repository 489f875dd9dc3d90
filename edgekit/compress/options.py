"""One option of a recipe, a technique step or the profile's `[techniques]` table, declared once.

The same declaration parses the option out of a recipe name (`types=u8u8`, `prune:0.5,epochs=3`),
checks it in a profile's TOML, and describes it in `edgekit recipes` and the README, so the three
cannot drift apart. Light on purpose: profiles are validated before anything heavy loads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# bool, choice: words (any case, kept lowercase); int, float: finite numbers in `low..high`;
# entry: "module:function"; names: a list of non-empty strings (TOML only)
TYPES = ("bool", "choice", "int", "float", "entry", "names")


@dataclass(frozen=True)
class Option:
    name: str
    type: str  # one of TYPES
    default: Any  # the value when none is given; None when `default_from` decides it
    help: str
    choices: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    open_low: bool = False  # `low` itself is not allowed
    open_high: bool = False
    default_from: str = ""  # where the default comes from when the declaration cannot know it
    example: str = ""  # a valid value for a fix, when the default cannot serve as one

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise ValueError(f"option {self.name}: type {self.type!r} is not one of {', '.join(TYPES)}")
        if (self.type == "choice") != bool(self.choices):
            raise ValueError(f"option {self.name}: choices go with type choice, and only with it")

    # ------------------------------------------------------------------ describing

    @property
    def range(self) -> str:
        """The allowed numbers in words ('' when any finite number will do)."""
        low, high = self.low, self.high
        if low is not None and high is not None:
            if self.open_low and self.open_high:
                return f"between {low:g} and {high:g} (exclusive)"
            if not (self.open_low or self.open_high):
                return f"in {low:g}..{high:g}"
            return f"{'>' if self.open_low else '>='} {low:g} and {'<' if self.open_high else '<='} {high:g}"
        if low is not None:
            return f"{'>' if self.open_low else '>='} {low:g}"
        if high is not None:
            return f"{'<' if self.open_high else '<='} {high:g}"
        return ""

    @property
    def expected(self) -> str:
        """What a value must be, completing "must be ..."."""
        if self.type == "bool":
            return "true or false"
        if self.type == "choice":
            return f"one of {', '.join(self.choices)}"
        if self.type == "entry":
            return "module:function"
        if self.type == "names":
            return "a list of strings"
        kind = "a whole number" if self.type == "int" else "a number"
        return f"{kind} {self.range}".strip()

    @property
    def values(self) -> str:
        """The allowed values, short, for tables: `true|false`, `minmax|entropy`, `50..100`, `> 0`."""
        if self.type == "bool":
            return "true|false"
        if self.type == "choice":
            return "|".join(self.choices)
        if self.type in ("entry", "names"):
            return self.expected
        return (self.range.removeprefix("in ") or ("integer" if self.type == "int" else "number"))

    def text(self, value: Any) -> str:
        """A value as a recipe name or a table writes it."""
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, float):
            return f"{value:g}"
        if isinstance(value, (tuple, list)):
            return ", ".join(str(v) for v in value) or "none"
        return str(value)

    @property
    def default_text(self) -> str:
        if self.default is None:
            return self.default_from or "none"
        return self.text(self.default)

    @property
    def fix_value(self) -> str:
        """A valid value to show in a fix."""
        if self.example:
            return self.example
        if self.default is not None and self.type not in ("names", "entry"):
            return self.text(self.default)
        return self.choices[0] if self.choices else "..."

    @property
    def toml_value(self) -> str:
        """A valid value as a profile's TOML writes it."""
        if self.type == "names":
            return '["..."]'
        if self.type == "bool":
            return self.fix_value
        return self.fix_value if self.type in ("int", "float") else f'"{self.fix_value}"'

    def to_dict(self) -> dict[str, Any]:
        default = list(self.default) if isinstance(self.default, tuple) else self.default
        return {"name": self.name, "type": self.type, "default": default, "default_from": self.default_from or None,
                "choices": list(self.choices) or None, "range": self.range.removeprefix("in ") or None,
                "values": self.values,
                "low": self.low, "high": self.high, "open_low": self.open_low, "open_high": self.open_high,
                "help": self.help}

    # ------------------------------------------------------------------ parsing and checking

    def parse(self, text: str) -> Any:
        """A value written in a recipe name -> the typed value. ValueError says what it must be."""
        text = text.strip()
        if self.type in ("bool", "choice", "entry"):
            return self.check(text)
        if self.type == "names":
            return self.check([part.strip() for part in text.split(",")])
        try:
            number = int(text) if self.type == "int" else float(text)
        except ValueError:
            kind = "a whole number" if self.type == "int" else "a number"
            raise ValueError(f"is not {kind}: must be {self.expected}") from None
        return self.check(number)

    def check(self, value: Any) -> Any:
        """A typed value (from TOML, or parsed) -> the value as the code uses it, or ValueError."""
        wrong = ValueError(f"must be {self.expected}")
        if self.type == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true"
            raise wrong
        if self.type == "choice":
            if isinstance(value, str) and value.lower() in self.choices:
                return value.lower()
            raise wrong
        if self.type == "entry":
            if isinstance(value, str) and value.strip() and ":" in value:
                return value
            raise wrong
        if self.type == "names":
            if isinstance(value, (list, tuple)) and all(isinstance(v, str) and v for v in value):
                return tuple(value)
            raise wrong
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                (self.type == "int" and not isinstance(value, int)):
            raise wrong
        if not math.isfinite(value) or not self._in_range(value):
            raise wrong
        return int(value) if self.type == "int" else float(value)

    def spelling(self, text: str) -> str:
        """A recipe option's value as it goes into the recipe name: words lowercase, numbers as
        written (that spelling is part of existing variant names and artifact cache keys)."""
        self.parse(text)
        text = text.strip()
        return text.lower() if self.type in ("bool", "choice") else text

    def _in_range(self, x: float) -> bool:
        if self.low is not None and (x < self.low or (self.open_low and x == self.low)):
            return False
        return not (self.high is not None and (x > self.high or (self.open_high and x == self.high)))
