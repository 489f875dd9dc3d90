"""`edgekit` commands: parse, call the pipeline, print. No logic of its own.

Errors from anywhere arrive as EdgekitError and leave here as one line on stderr with the
error's exit code (2: bad input, 3: device, 4: nothing selectable, 1: anything else).
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from . import __version__
from .errors import EdgekitError, SpecError
from .spec import ModelSpec, available, load_model_spec, load_profile, load_target, parse_input

def _console(stderr: bool) -> Console:
    """Tables stay one row per variant when piped: plain text is wide rather than wrapped."""
    console = Console(stderr=stderr, soft_wrap=stderr)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(stderr=stderr, soft_wrap=stderr, width=160)
    return console


out = _console(stderr=False)
err = _console(stderr=True)


def _fail(message: str, code: int) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, markup=True)
    sys.exit(code)


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except EdgekitError as exc:
            _fail(str(exc).replace("[", r"\["), exc.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted; results measured so far are kept in the store", 130)
    return wrapper


class RichEvents:
    """Progress bars on stderr for a person at a terminal; plain notes otherwise."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.progress = Progress(TextColumn("{task.description:<24}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[item]}"), TimeElapsedColumn(),
                                 console=err, transient=True, disable=quiet or not err.is_terminal)
        self.task: Any = None

    def __enter__(self) -> RichEvents:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._finish()
        self.progress.stop()

    def _finish(self) -> None:
        if self.task is not None:
            self.progress.update(self.task, completed=self.progress.tasks[self.task].total, item="")

    def stage(self, name: str, total: int) -> None:
        self._finish()
        self.task = self.progress.add_task(name, total=total, item="")
        self._started = False

    def step(self, label: str) -> None:
        if self._started:
            self.progress.advance(self.task)
        self._started = True
        self.progress.update(self.task, item=label)

    def note(self, message: str) -> None:
        if not self.quiet:
            err.print(message, highlight=False, markup=False)


# --------------------------------------------------------------------------- shared options


def model_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--spec", "spec_path", type=click.Path(dir_okay=False, path_type=Path),
                     help="Model spec (default: ./edgekit.toml if present, else the bundled example)."),
        click.option("--factory", help="Torch model factory, module:function."),
        click.option("--checkpoint", type=click.Path(path_type=Path), help="state_dict for the factory's model."),
        click.option("--model-path", type=click.Path(path_type=Path), help="A .pt/.ts module or an .onnx file."),
        click.option("--input", "inputs", multiple=True, help="NAME:SHAPE[:DTYPE], e.g. input:1x3x224x224."),
        click.option("--calibration", help="Calibration data: module:function or .npz."),
        click.option("--evaluation", help="Evaluation data (inputs, labels): module:function or .npz."),
        click.option("--name", "model_name", help="Model name (default: from the spec)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def workspace_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--db", type=click.Path(dir_okay=False, path_type=Path),
                      help="Results store (default: HOME/results.db).")(fn)
    fn = click.option("--home", type=click.Path(file_okay=False, path_type=Path),
                      default=lambda: os.environ.get("EDGEKIT_HOME", ".edgekit"), show_default=".edgekit",
                      help="Host-side cache and results folder.")(fn)
    return fn


def resolve_spec(spec_path: Path | None, factory: str | None, checkpoint: Path | None, model_path: Path | None,
                 inputs: tuple[str, ...], calibration: str | None, evaluation: str | None,
                 model_name: str | None) -> ModelSpec:
    if factory or model_path:
        if spec_path:
            raise SpecError("--spec and --factory/--model-path both given. Fix: use one or the other")
        if not inputs:
            raise SpecError("--input is required with --factory/--model-path. Fix: add --input NAME:1x3x224x224")
        for flag, path in (("--checkpoint", checkpoint), ("--model-path", model_path)):
            if path is not None and not path.is_file():
                raise SpecError(f"{flag} {path}: file not found. Fix: check the path")
        for flag, ref in (("--calibration", calibration), ("--evaluation", evaluation)):
            if ref and ref.endswith((".npz", ".npy")) and not Path(ref).is_file():
                raise SpecError(f"{flag} {ref}: file not found. Fix: check the path")
        default_name = (factory or "").rpartition(":")[2] or (model_path.stem if model_path else "model")
        return ModelSpec(name=model_name or default_name, inputs=tuple(parse_input(i) for i in inputs),
                         factory=factory, checkpoint=checkpoint.resolve() if checkpoint else None,
                         path=model_path.resolve() if model_path else None, calibration=calibration,
                         evaluation=evaluation, source="flags")
    if spec_path is None and Path("edgekit.toml").is_file():
        spec_path = Path("edgekit.toml")
    if spec_path is not None:
        spec = load_model_spec(spec_path)
    else:
        from .examples import digits

        spec = digits.spec()
        err.print(f"No model given: using the bundled example {spec.name} ({spec.source}).", highlight=False)
    if model_name:
        spec = ModelSpec(**{**spec.__dict__, "name": model_name})
    return spec


def _workspace(home: Path, db: Path | None):
    from .pipeline import Workspace

    return Workspace(home=home, db_path=db or home / "results.db")


def _emit_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")


# --------------------------------------------------------------------------- commands


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgekit")
def main() -> None:
    """Compress a model for edge devices, measure every build on the device, deploy the best."""


@main.command()
@model_options
@workspace_options
@click.option("--profile", "profile_name", default="balanced", show_default=True, help="Profile name or .toml path.")
@click.option("--recipe", "recipes", multiple=True, help="Build these recipes instead of the profile's.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document instead of a table.")
@handle_errors
def compress(spec_path, factory, checkpoint, model_path, inputs, calibration, evaluation, model_name,
             home, db, profile_name, recipes, as_json) -> None:
    """Build the profile's variants, each with parity and accuracy against the original."""
    from .compress.registry import parse_recipe
    from .pipeline import compress as run_compress, prepare
    from .report.table import compress_table

    prof = load_profile(profile_name)
    for r in recipes:
        parse_recipe(r)
    spec = resolve_spec(spec_path, factory, checkpoint, model_path, inputs, calibration, evaluation, model_name)
    ctx = prepare(spec)
    with RichEvents(quiet=as_json) as events:
        built = run_compress(ctx, tuple(recipes) or prof.recipes, _workspace(home, db), events, prof.techniques)
    if as_json:
        _emit_json({"model": spec.name, "variants": [{**v.to_dict(), "cached": c} for v, c in built]})
    else:
        out.print(compress_table(built))
    if all(v.status != "ok" for v, _ in built):
        sys.exit(1)


def _measure_command(command: str, target_name: str, profile_name: str, spec_args: tuple, home: Path,
                     db: Path | None, force: bool, as_json: bool) -> None:
    from . import pipeline
    from .device import connect
    from .report.table import compress_table, selection_table

    target = load_target(target_name)
    prof = load_profile(profile_name)
    spec = resolve_spec(*spec_args)
    ctx = pipeline.prepare(spec)
    workspace = _workspace(home, db)
    with connect(target) as device, RichEvents(quiet=as_json) as events:
        if command == "deploy":
            result = pipeline.deploy(ctx, target, prof, device, workspace, force, events)
        else:
            result, results = pipeline.measure(ctx, target, prof, device, workspace, "profile", force, events)
            results.close()
    if as_json:
        _emit_json(result.to_dict())
        return
    out.print(compress_table([(v, result.cached[v.id]) for v in result.variants]))
    out.print(selection_table(result.selection, target.name))
    if command == "deploy":
        chosen = result.selection.chosen.variant
        smoke = result.smoke
        out.print(f"Smoke test on {target.name}: passed ({smoke['samples']} samples, max |diff| "
                  f"{smoke['max_abs_diff']:.3g} <= {smoke['allowed_max_abs_diff']:.3g})", highlight=False)
        deployed = result.status["models"][spec.name]
        out.print(f"Installed {chosen.recipe} ({chosen.id}) on {target.name}: {deployed['path']}", highlight=False)
        out.print(f"Results: {workspace.db_path} (run {result.run_id}). "
                  f"Undo with: edgekit rollback --target {target.name}", highlight=False)
    elif result.selection.chosen is None:
        sys.exit(4)


@main.command()
@click.option("--target", "target_name", required=True, help="Target name (see `edgekit targets list`).")
@click.option("--profile", "profile_name", default="balanced", show_default=True)
@model_options
@workspace_options
@click.option("--force", is_flag=True, help="Measure again even when the store holds the same measurement.")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def profile(target_name, profile_name, spec_path, factory, checkpoint, model_path, inputs, calibration,
            evaluation, model_name, home, db, force, as_json) -> None:
    """Compress, measure every variant on the target and show which one the profile picks."""
    _measure_command("profile", target_name, profile_name, (spec_path, factory, checkpoint, model_path, inputs,
                     calibration, evaluation, model_name), home, db, force, as_json)


@main.command()
@click.option("--target", "target_name", required=True, help="Target name (see `edgekit targets list`).")
@click.option("--profile", "profile_name", default="balanced", show_default=True)
@model_options
@workspace_options
@click.option("--force", is_flag=True, help="Measure again even when the store holds the same measurement.")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def deploy(target_name, profile_name, spec_path, factory, checkpoint, model_path, inputs, calibration,
           evaluation, model_name, home, db, force, as_json) -> None:
    """Compress, measure, choose, install and smoke-test the best variant on the target."""
    _measure_command("deploy", target_name, profile_name, (spec_path, factory, checkpoint, model_path, inputs,
                     calibration, evaluation, model_name), home, db, force, as_json)


def _device_command(target_name: str, action: str, model: str | None, home: Path, db: Path | None) -> dict:
    from .device import connect
    from .results import ResultsStore

    target = load_target(target_name)
    with connect(target) as device:
        if action == "status":
            return device.status(model)
        if model is None:
            deployed = list(device.status()["models"])
            if len(deployed) != 1:
                raise SpecError(f"--model is needed: {target.name} has {len(deployed)} deployed models "
                                f"({', '.join(deployed) or 'none'}). Fix: add --model NAME")
            model = deployed[0]
        doc = device.rollback(model)
    with ResultsStore(_workspace(home, db).db_path) as results:
        results.record_deployment(None, target.name, model, doc["models"][model]["current"], "rollback", True)
    return doc


def _print_status(doc: dict, target: str) -> None:
    if not doc["models"]:
        out.print(f"{target}: nothing deployed under {doc['workdir']}", highlight=False)
    for model, info in doc["models"].items():
        record = info.get("deployment") or {}
        out.print(f"{target} · {model}: current {info['current'] or '-'} "
                  f"({record.get('meta', {}).get('recipe', '?')}, installed {record.get('installed', '?')}); "
                  f"previous {info['previous'] or '-'}", highlight=False)
        if info.get("path"):
            out.print(f"  {info['path']}", highlight=False)


@main.command()
@click.option("--target", "target_name", required=True)
@click.option("--model", help="Model name (needed when several are deployed).")
@workspace_options
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def rollback(target_name, model, home, db, as_json) -> None:
    """Switch the target back to the previous deployment."""
    doc = _device_command(target_name, "rollback", model, home, db)
    _emit_json(doc) if as_json else _print_status(doc, target_name)


@main.command()
@click.option("--target", "target_name", required=True)
@click.option("--model", help="Only this model.")
@workspace_options
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def status(target_name, model, home, db, as_json) -> None:
    """What is deployed on the target."""
    doc = _device_command(target_name, "status", model, home, db)
    _emit_json(doc) if as_json else _print_status(doc, target_name)


@main.group()
def targets() -> None:
    """Device definitions."""


@targets.command("list")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def targets_list(as_json) -> None:
    """Every known target; ./targets and ~/.config/edgekit/targets override the built-ins."""
    from rich.table import Table

    found = [load_target(str(path)) for path in available("targets").values()]
    if as_json:
        _emit_json([{**t.__dict__, "runtimes": list(t.runtimes)} for t in found])
        return
    table = Table(title="Targets", title_justify="left")
    for col in ("name", "transport", "host", "arch", "runtimes", "defined in"):
        table.add_column(col)
    for t in found:
        host = "this machine" if t.transport == "local" else f"{t.user + '@' if t.user else ''}{t.host}"
        table.add_row(t.name, t.transport, host, t.arch or "-", ", ".join(t.runtimes) or "-", t.source)
    out.print(table)


@main.command()
def recipes() -> None:
    """The recipes a profile can list."""
    from rich.table import Table

    from .compress.registry import RECIPES

    table = Table(title="Recipes", title_justify="left")
    for col in ("recipe", "format", "precision", "runtime", "what"):
        table.add_column(col)
    for r in RECIPES.values():
        table.add_row(r.name, r.format, r.precision, r.runtime, r.summary)
    out.print(table)
    # technique steps (issue 7): they go in front of any recipe above
    from rich.markup import escape

    from .compress.techniques import SUMMARIES

    steps = Table(title="Technique steps: STEP+...+RECIPE, e.g. prune:0.5+kd+onnx:int8-static", title_justify="left")
    for col in ("step", "what"):
        steps.add_column(col)
    for example, what in SUMMARIES.items():
        steps.add_row(escape(example), escape(what))
    out.print(steps)
