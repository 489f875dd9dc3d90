"""The declared formats, recipes, technique steps and `[techniques]` keys as one document (JSON)
and as the Markdown tables the README embeds, both read from `registry.py` alone, so what
`edgekit recipes` prints, what the README says and what the parser accepts are the same facts.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from .options import Option
from .registry import ALIASES, FORMATS, GRAMMAR, PROFILE_OPTIONS, RECIPES, TECHNIQUES

SCHEMA = 1


def catalog() -> dict[str, Any]:
    """Everything a recipe name may say, as plain data."""
    return {
        "schema": SCHEMA,
        "grammar": GRAMMAR,
        "formats": [{"name": f.name, "title": f.title, "runtime": f.runtime, "suffix": f.suffix, "extra": f.extra,
                     "note": f.note or None, "recipes": [r.name for r in RECIPES.values() if r.format == f.name]}
                    for f in FORMATS.values()],
        "recipes": [{"name": r.name, "format": r.format, "precision": r.precision, "runtime": r.runtime,
                     "uses_calibration": r.uses_calibration, "extra": r.extra, "summary": r.summary,
                     "options": [o.to_dict() for o in r.options]} for r in RECIPES.values()],
        "techniques": [{"name": t.name, "usage": t.usage, "example": t.example, "summary": t.summary,
                        "value": t.value.to_dict() if t.value else None,
                        # `default` is the option's own; `step_default` what this step uses unless told
                        "options": [{**o.to_dict(), "step_default": t.default(o.name)} for o in t.options],
                        "must_precede": list(t.before), "once": t.once,
                        "aliases": _aliases(t.name)}
                       for t in TECHNIQUES.values()],
        "profile_techniques": [o.to_dict() for o in PROFILE_OPTIONS.values()],
    }


def _aliases(technique: str) -> list[str]:
    return sorted(a for a, (name, _) in ALIASES.items() if name == technique)


# --------------------------------------------------------------------------- Markdown


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    return f"`{text}`"


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def formats_markdown() -> str:
    """format | recipes | needs."""
    rows = []
    for f in FORMATS.values():
        needs = f"`pip install 'edgekit[{f.extra}]'`" if f.extra else "-"
        if f.note:
            needs += f" ({f.note})"
        names = ", ".join(_code(r.name) for r in RECIPES.values() if r.format == f.name)
        rows.append((f"{f.title} (`{f.runtime}`)", names, needs))
    return _table(("format", "recipes", "needs"), rows)


def recipes_markdown() -> str:
    """recipe | what | calibration data | options."""
    rows = [(_code(r.name), r.summary, "yes" if r.uses_calibration else "-",
             ", ".join(_code(o.name) for o in r.options)) for r in RECIPES.values()]
    return _table(("recipe", "what", "calibration data", "options (`?KEY=VALUE&...`)"), rows)


def _option_row(option: Option, where: str, default: str | None = None) -> tuple[str, ...]:
    return (_code(option.name), where, _code(option.values) if option.type in ("bool", "choice") else option.values,
            default if default is not None else option.default_text, option.help)


def recipe_options_markdown() -> str:
    """One row per distinct option declaration: option | recipes | values | default | what."""
    seen: dict[Option, list[str]] = {}
    for r in RECIPES.values():
        for o in r.options:
            seen.setdefault(o, []).append(r.name)
    rows = []
    for option, names in seen.items():
        where = "every recipe" if len(names) == len(RECIPES) else ", ".join(_code(n) for n in names)
        rows.append(_option_row(option, where))
    return _table(("option", "recipes", "values", "default", "what"), rows)


def techniques_markdown() -> str:
    """step | what | options, then one row per option: option | steps | values | default | what."""
    steps = []
    for t in TECHNIQUES.values():
        head = [t.name + (f":{t.value.name.upper()}" if t.value else "")]
        head += [f"{a}:{t.value.name.upper()}" for a in _aliases(t.name)] if t.value else []
        value = f"{t.value.name.upper()}: {t.value.help}, {t.value.expected}" if t.value else "-"
        order = f"; goes before {' and '.join(t.before)} (it would retrain the weights they set)" if t.before else ""
        steps.append((", ".join(_code(h) for h in head), value, ", ".join(_code(o.name) for o in t.options),
                      t.summary + order))
    options: dict[str, list[str]] = {}
    for t in TECHNIQUES.values():
        for o in t.options:
            options.setdefault(o.name, []).append(t.name)
    rows = []
    for name, users in options.items():
        by_step = {u: TECHNIQUES[u].default(name) for u in users}
        common = Counter(by_step.values()).most_common(1)[0][0]
        default = "; ".join([common, *(f"{u}: {d}" for u, d in by_step.items() if d != common)])
        rows.append(_option_row(TECHNIQUES[users[0]].accepted[name], ", ".join(users), default))
    return "\n\n".join((_table(("step", "value", "options (`,KEY=VALUE`)", "what"), steps),
                        _table(("option", "steps", "values", "default", "what"), rows)))


def profile_techniques_markdown() -> str:
    """The `[techniques]` table of a profile: key | values | default | what."""
    rows = [(_code(o.name), _code(o.values) if o.type in ("bool", "choice") else o.values, o.default_text, o.help)
            for o in PROFILE_OPTIONS.values()]
    return _table(("key", "values", "default", "what"), rows)


# the README's generated sections, each between `<!-- NAME:begin ... -->` and `<!-- NAME:end -->`
SECTIONS = {
    "recipes": lambda: "\n\n".join((formats_markdown(), recipes_markdown(), recipe_options_markdown())),
    "techniques": lambda: "\n\n".join((techniques_markdown(), "A profile's `[techniques]` table sets the "
                                       "defaults:", profile_techniques_markdown())),
}


def markdown() -> str:
    """Every section, for `edgekit recipes --markdown`."""
    return "\n\n".join(f"## {name.capitalize()}\n\n{render()}" for name, render in SECTIONS.items()) + "\n"
