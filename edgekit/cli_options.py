"""The options several commands share, and what turns them into settings: model flags into a
`ModelFlags`, --home/--db into a `Workspace`, --reuse/--force into one answer; plus the wrapper
that turns every edgekit error into one line and its exit code.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import click

from .config import ModelFlags, spec_from_flags
from .errors import EdgekitError, UsageError
from .report.output import err, error_line, say
from .settings import ModelSpec

if TYPE_CHECKING:
    from .pipeline import Workspace

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Errors from anywhere arrive as EdgekitError and leave as one line on stderr with the error's
    exit code (2: bad input, 3: device, 4: nothing selectable, 1: anything else)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except EdgekitError as exc:
            _fail(str(exc), exc.exit_code)
        except sqlite3.Error as exc:  # the store failed after it opened (ResultsStore reports the rest)
            from .results import store_error

            error = store_error(None, exc)
            _fail(str(error), error.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted; measurements completed so far are kept in the store (a profile stores its "
                  "variants once their last round ends)", 130)
    return wrapper


def _fail(message: str, code: int) -> None:
    error_line(message)
    sys.exit(code)


def _options(*options: Decorator) -> Decorator:
    def apply(fn: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            fn = option(fn)
        return fn
    return apply


def _remember_allow_pickle(ctx: click.Context, _param: Any, value: bool) -> None:
    """--allow-pickle is kept on the click context for `resolve_spec` (not a parameter of every command)."""
    ctx.meta["edgekit.allow_pickle"] = bool(value)


def _allow_pickle() -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx and ctx.meta.get("edgekit.allow_pickle"))


model_options = _options(
    click.option("--spec", "spec_path", type=click.Path(dir_okay=False, path_type=Path),
                 help="Model spec (default: ./edgekit.toml if present, else the bundled example)."),
    click.option("--factory", help="Torch model factory, module:function."),
    click.option("--checkpoint", type=click.Path(path_type=Path), help="state_dict for the factory's model."),
    click.option("--model-path", type=click.Path(path_type=Path), help="A .pt/.ts module or an .onnx file."),
    click.option("--input", "inputs", multiple=True, help="NAME:SHAPE[:DTYPE], e.g. input:1x3x224x224."),
    click.option("--calibration", help="Calibration data: module:function or .npz."),
    click.option("--evaluation", help="Evaluation data (inputs, labels): module:function or .npz."),
    click.option("--name", "model_name", help="Model name (default: from the spec)."),
    click.option("--allow-pickle", is_flag=True, expose_value=False, callback=_remember_allow_pickle,
                 help="Let a pickled torch module (--model-path, or the spec's path) load: unpickling runs "
                      "the code it holds, so only for files you trust."),
)

workspace_options = _options(
    click.option("--home", type=click.Path(file_okay=False, path_type=Path),
                 default=lambda: os.environ.get("EDGEKIT_HOME", ".edgekit"), show_default=".edgekit",
                 help="Host-side cache and results folder."),
    click.option("--db", type=click.Path(dir_okay=False, path_type=Path), help="Results store (default: HOME/results.db)."),
)

reuse_options = _options(
    click.option("--reuse", is_flag=True, help="Take every measurement from one earlier run on the target "
                 "that measured all these variants with the same settings (marked as reused); if no run "
                 "did, measure them all."),
    click.option("--force", is_flag=True, help="Kept for compatibility, does nothing: every variant is "
                 "measured afresh unless --reuse is given."),
)

wait_option = click.option("--wait", "wait_s", type=float, default=0.0, is_flag=False, flag_value=600.0,
                           help="If the device is busy with another run, wait for it (600 s, or the seconds given).")

format_options = _options(
    click.option("--json", "fmt_", flag_value="json", help="A JSON document."),
    click.option("--csv", "fmt_", flag_value="csv", help="CSV, one row per variant."),
    click.option("--markdown", "fmt_", flag_value="markdown", help="Markdown (for a pull-request comment)."),
)

significance_options = _options(
    click.option("--alpha", type=click.FloatRange(0, 1, min_open=True), default=0.01, show_default=True,
                 help="Mann-Whitney U significance level."),
    click.option("--min-change", type=click.FloatRange(0, 10), default=0.05, show_default=True,
                 help="Smallest median change (fraction) that counts, however significant."),
)


def resolve_spec(spec_path: Path | None, factory: str | None, checkpoint: Path | None, model_path: Path | None,
                 inputs: tuple[str, ...], calibration: str | None, evaluation: str | None,
                 model_name: str | None) -> ModelSpec:
    """The model the flags name (`config.spec_from_flags`), saying so when the bundled example stands in."""
    flags = ModelFlags(spec_path, factory, checkpoint, model_path, tuple(inputs), calibration, evaluation,
                       model_name, _allow_pickle())
    spec = spec_from_flags(flags)
    if flags.uses_example:
        say(err, f"No model given: using the bundled example {spec.name} ({spec.source}).")
    return spec


def workspace(home: Path, db: Path | None) -> Workspace:
    """--home and --db as a Workspace (imported late: the pipeline is heavy, --help is not)."""
    from .pipeline import Workspace

    return Workspace(home=home, db_path=db or home / "results.db")


def reuse_answer(reuse: bool, force: bool) -> bool:
    """--reuse, refusing --force beside it (--force is the default now, kept for old scripts)."""
    if reuse and force:
        raise UsageError("--reuse and --force contradict each other (--force means: measure). Fix: drop one")
    return reuse
