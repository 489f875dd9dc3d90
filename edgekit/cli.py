"""`edgekit` commands: parse, call the pipeline, print. No logic of its own.

Errors from anywhere arrive as EdgekitError and leave here as one line on stderr with the
error's exit code (2: bad input, 3: device, 4: nothing selectable, 1: anything else).
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any, Callable

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from . import __version__
from .config import (available, check_against_graph, graph_inputs, load_model_spec, load_profile, load_target,
                     model_name_problem, parse_input)
from .errors import EdgekitError, SpecError, UsageError
from .records import emulated
from .report.safe import cell, finite, printable
from .settings import ModelSpec

def _console(stderr: bool) -> Console:
    """Tables stay one row per variant when piped: plain text is wide rather than wrapped."""
    console = Console(stderr=stderr, soft_wrap=stderr)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(stderr=stderr, soft_wrap=stderr, width=160)
    return console


out = _console(stderr=False)
err = _console(stderr=True)


def _fail(message: str, code: int) -> None:
    err.print(f"[bold red]error:[/] {escape(printable(message))}", highlight=False, markup=True)
    sys.exit(code)


def _say(console: Console, message: str) -> None:
    """One line of text that may hold device or user strings: never markup, never escapes."""
    console.print(printable(message), highlight=False, markup=False)


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
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


class _ProgressSteps:
    """A stage's steps on one progress task: each new step completes the one before it."""

    progress: Progress
    task: Any
    _started: bool = False

    def step(self, label: str) -> None:
        if self._started:
            self.progress.advance(self.task)
        self._started = True
        self.progress.update(self.task, item=label)


def _bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class _Count(ProgressColumn):
    """Steps as N/M; an upload's task as bytes sent of its size."""

    def render(self, task: Any) -> Text:
        if task.fields.get("upload"):
            return Text(f"{_bytes(task.completed)}/{_bytes(task.total or 0)}")
        return Text(f"{int(task.completed)}/{int(task.total or 0)}")


class _Upload:
    """One upload's figures: bytes, rate and time left from what went out so far."""

    def __init__(self, label: str, total: int, now: float) -> None:
        self.label, self.total, self.started, self.sent, self.last_line = label, total, now, 0, now

    def line(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-6)
        rate = self.sent / elapsed
        left = (self.total - self.sent) / rate if rate > 0 else None
        share = 100.0 * self.sent / self.total if self.total else 100.0
        eta = f", about {_duration(left)} left" if left is not None and self.sent < self.total else ""
        return (f"uploading {self.label}: {_bytes(self.sent)} of {_bytes(self.total)} ({share:.0f} %), "
                f"{_bytes(rate)}/s{eta}")


class RichEvents(_ProgressSteps):
    """Progress bars on stderr for a person at a terminal; plain notes otherwise. Uploads show
    bytes, rate and time left: a bar at a terminal, a line every PROGRESS_EVERY_S otherwise (a log
    or CI shows that a 14 MB model is still going out over a slow link)."""

    PROGRESS_EVERY_S = 10.0

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.progress = Progress(TextColumn("{task.description:<24}"), BarColumn(), _Count(),
                                 TextColumn("{task.fields[item]}"), TimeElapsedColumn(),
                                 console=err, transient=True, disable=quiet or not err.is_terminal)
        self.task: Any = None
        self._upload: _Upload | None = None
        self._upload_task: Any = None

    def transfer(self, label: str, sent: int, total: int) -> None:
        import time

        if self.quiet:
            return
        now = time.monotonic()
        if self._upload is None or self._upload.label != label or sent < self._upload.sent:
            self._end_upload()
            self._upload = _Upload(label, total, now)
            if err.is_terminal:
                self._upload_task = self.progress.add_task("upload", total=total, item=label, upload=True)
        up = self._upload
        up.sent = sent
        if err.is_terminal:
            self.progress.update(self._upload_task, completed=sent, item=up.line(now).split(": ", 1)[1])
        elif now - up.last_line >= self.PROGRESS_EVERY_S and sent < total:
            up.last_line = now
            _say(err, up.line(now))
        if sent >= total:
            if not err.is_terminal and now - up.started >= self.PROGRESS_EVERY_S:
                _say(err, f"uploaded {label}: {_bytes(total)} in {_duration(now - up.started)}")
            self._end_upload()

    def _end_upload(self) -> None:
        if self._upload_task is not None:
            self.progress.remove_task(self._upload_task)
        self._upload, self._upload_task = None, None

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

    def note(self, message: str) -> None:
        if not self.quiet:
            _say(err, message)


# --------------------------------------------------------------------------- shared options


def _remember_allow_pickle(ctx: click.Context, _param: Any, value: bool) -> None:
    """--allow-pickle is kept on the click context for `resolve_spec` (not a parameter of every command)."""
    ctx.meta["edgekit.allow_pickle"] = bool(value)


def _allow_pickle() -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx and ctx.meta.get("edgekit.allow_pickle"))


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
        click.option("--allow-pickle", is_flag=True, expose_value=False, callback=_remember_allow_pickle,
                     help="Let a pickled torch module (--model-path, or the spec's path) load: unpickling runs "
                          "the code it holds, so only for files you trust."),
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
        onnx_file = model_path is not None and model_path.suffix == ".onnx" and model_path.is_file()
        if not inputs and not onnx_file:
            raise SpecError("--input is required with --factory/--model-path. Fix: add --input NAME:1x3x224x224")
        for flag, path in (("--checkpoint", checkpoint), ("--model-path", model_path)):
            if path is not None and not path.is_file():
                raise SpecError(f"{flag} {path}: file not found. Fix: check the path")
        for flag, ref in (("--calibration", calibration), ("--evaluation", evaluation)):
            if ref and ref.endswith((".npz", ".npy")) and not Path(ref).is_file():
                raise SpecError(f"{flag} {ref}: file not found. Fix: check the path")
        default_name = (factory or "").rpartition(":")[2] or (model_path.stem if model_path else "model")
        def flag_error(problem: str, fix: str) -> SpecError:
            return SpecError(f"--model-path {model_path}: {problem}. Fix: {fix}")

        declared = tuple(parse_input(i) for i in inputs)
        if onnx_file:
            if declared:
                check_against_graph(declared, model_path, flag_error)
            else:
                declared = graph_inputs(model_path, flag_error, flags=True)
        if model_name is None and model_name_problem(default_name):
            raise SpecError(f"the model name would be {default_name!r}, taken from the "
                            f"{'factory' if factory else 'file name'}, and {model_name_problem(default_name)}. "
                            f"Fix: add --name NAME")
        _check_name(model_name)
        return ModelSpec(name=model_name or default_name, inputs=declared,
                         factory=factory, checkpoint=checkpoint.resolve() if checkpoint else None,
                         path=model_path.resolve() if model_path else None, calibration=calibration,
                         evaluation=evaluation, source="flags", allow_pickle=_allow_pickle())
    if spec_path is None and Path("edgekit.toml").is_file():
        spec_path = Path("edgekit.toml")
    if spec_path is not None:
        spec = load_model_spec(spec_path)
    else:
        from .examples import digits

        spec = digits.spec()
        _say(err, f"No model given: using the bundled example {spec.name} ({spec.source}).")
    if model_name is not None:
        _check_name(model_name)
        spec = ModelSpec(**{**spec.__dict__, "name": model_name})
    if _allow_pickle() and not spec.allow_pickle:
        spec = ModelSpec(**{**spec.__dict__, "allow_pickle": True})
    return spec


def _check_name(name: str | None, flag: str = "--name") -> None:
    problem = model_name_problem(name) if name is not None else None
    if problem:
        raise SpecError(f"{flag} {problem}. Fix: e.g. {flag} detector-v2")


def _workspace(home: Path, db: Path | None):
    from .pipeline import Workspace

    return Workspace(home=home, db_path=db or home / "results.db")


def _check_store(workspace: Any) -> None:
    from .results import check_store

    check_store(workspace.db_path)


def _emit_json(doc: Any) -> None:
    """Strict JSON on stdout: a non-finite number (a device's NaN output diff) is null, with a note."""
    clean, count = finite(doc)
    if count:
        err.print(f"note: {count} non-finite number{'s' if count > 1 else ''} (NaN or infinity) printed as null",
                  highlight=False, markup=False)
    sys.stdout.write(json.dumps(clean, indent=2, default=str, allow_nan=False) + "\n")


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
    workspace = _workspace(home, db)
    ctx = prepare(spec, workspace)
    with RichEvents(quiet=as_json) as events:
        built = run_compress(ctx, tuple(recipes) or prof.recipes, workspace, events,
                             prof.select.constraints.get("max_accuracy_drop"), techniques=prof.techniques)
    if as_json:
        _emit_json({"model": spec.name, "variants": [{**v.to_dict(), "cached": c} for v, c in built]})
    else:
        out.print(compress_table(built))
    if all(v.status != "ok" for v, _ in built):
        sys.exit(1)


def reuse_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--force", is_flag=True, help="Kept for compatibility, does nothing: every variant is "
                      "measured afresh unless --reuse is given.")(fn)
    fn = click.option("--reuse", is_flag=True, help="Take every measurement from one earlier run on the target "
                      "that measured all these variants with the same settings (marked as reused); if no run "
                      "did, measure them all.")(fn)
    return fn


def _reuse(reuse: bool, force: bool) -> bool:
    if reuse and force:
        raise UsageError("--reuse and --force contradict each other (--force means: measure). Fix: drop one")
    return reuse


def _run_measure(pipeline: Any, command: str, ctx: Any, target: Any, prof: Any, device: Any, workspace: Any,
                 reuse: bool, events: Any, variant: str | None = None) -> Any:
    if command == "deploy":
        return pipeline.deploy(ctx, target, prof, device, workspace, reuse, events, variant)
    result, results = pipeline.measure(ctx, target, prof, device, workspace, "profile", reuse, events)
    results.close()
    return result


def _measure_command(command: str, target_name: str, profile_name: str, spec_args: tuple, home: Path,
                     db: Path | None, reuse: bool, as_json: bool, wait_s: float = 0.0,
                     variant: str | None = None) -> None:
    from . import pipeline
    from .device import connect, holder_name
    from .report.table import compress_table, selection_table

    target = load_target(target_name)
    prof = load_profile(profile_name)
    spec = resolve_spec(*spec_args)
    workspace = _workspace(home, db)
    _check_store(workspace)  # a store that cannot keep the results fails now, not after compressing
    # Connect first (writes nothing): an unreachable board or a refused key is reported in seconds,
    # before the model work; the device is written to (agent, lock) only once the model loads.
    with connect(target) as device:
        ctx = pipeline.prepare(spec, workspace)
        with device.locked(holder_name(command), wait_s), RichEvents(quiet=as_json) as events:
            result = _run_measure(pipeline, command, ctx, target, prof, device, workspace, reuse, events, variant)
    if as_json:
        _emit_json(result.to_dict())
        return
    out.print(compress_table([(v, result.cached[v.id]) for v in result.variants]))
    out.print(selection_table(result.selection, target.name))
    if command == "deploy":
        chosen = result.selection.chosen.variant
        smoke = result.smoke
        _say(out, f"Smoke test on {target.name}: passed ({smoke['samples']} samples, max |diff| "
                  f"{smoke['max_abs_diff']:.3g} <= {smoke['allowed_max_abs_diff']:.3g})")
        deployed = result.status["models"][spec.name]
        _say(out, f"Installed {chosen.recipe} ({chosen.id}) on {target.name}: {deployed['path']}")
        _say(out, f"Results: {workspace.db_path} (run {result.run_id}). "
                  f"Undo with: edgekit rollback --target {target.name}")
    elif result.selection.chosen is None and result.selection.emulated:
        _say(out, f"{target.name} runs under emulation: its timings are not latency figures, so no variant is "
                  f"chosen there. The device parity column is what this target proves.")
    elif result.selection.chosen is None:
        sys.exit(4)


@main.command()
@click.option("--target", "target_names", required=True, multiple=True,
              help="Target name (see `edgekit targets list`); repeat to profile several devices at once.")
@click.option("--profile", "profile_name", default="balanced", show_default=True)
@model_options
@workspace_options
@reuse_options
@click.option("--wait", "wait_s", type=float, default=0.0, is_flag=False, flag_value=600.0,
              help="If the device is busy with another run, wait for it (600 s, or the seconds given).")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def profile(target_names, profile_name, spec_path, factory, checkpoint, model_path, inputs, calibration,
            evaluation, model_name, home, db, reuse, force, wait_s, as_json) -> None:
    """Compress, measure every variant on the target(s) in interleaved rounds and show which one the
    profile picks."""
    reuse = _reuse(reuse, force)
    spec_args = (spec_path, factory, checkpoint, model_path, inputs, calibration, evaluation, model_name)
    names = list(dict.fromkeys(target_names))
    if len(names) == 1:
        _measure_command("profile", names[0], profile_name, spec_args, home, db, reuse, as_json, wait_s)
    else:
        _profile_fleet(names, profile_name, spec_args, home, db, reuse, as_json, wait_s)


class FleetEvents(_ProgressSteps):
    """One live progress line per device, all in one rich Progress shared by the device threads."""

    def __init__(self, progress: Progress, target: str, quiet: bool) -> None:
        self.progress, self.target, self.quiet = progress, target, quiet
        self.task = progress.add_task(f"{target}: connect", total=1, item="")
        self._started = False

    def stage(self, name: str, total: int) -> None:
        self.progress.update(self.task, description=f"{self.target}: {name}", total=max(total, 1), completed=0,
                             item="")
        self._started = False

    def note(self, message: str) -> None:
        if not self.quiet:
            _say(self.progress.console, f"{self.target}: {message}")

    def transfer(self, label: str, sent: int, total: int) -> None:
        """An upload on this device's line at a terminal; a line every PROGRESS_EVERY_S otherwise."""
        import time

        if self.quiet:
            return
        now = time.monotonic()
        up = getattr(self, "_upload", None)
        if up is None or up.label != label or sent < up.sent:
            up = self._upload = _Upload(label, total, now)
        up.sent = sent
        if self.progress.console.is_terminal:
            self.progress.update(self.task, item=up.line(now)[len("uploading "):])
        elif now - up.last_line >= RichEvents.PROGRESS_EVERY_S and sent < total:
            up.last_line = now
            _say(self.progress.console, f"{self.target}: {up.line(now)}")
        if sent >= total:
            self._upload = None

    def done(self, ok: bool) -> None:
        total = self.progress.tasks[self.task].total
        self.progress.update(self.task, completed=total, item="done" if ok else "FAILED")


def _profile_fleet(names: list[str], profile_name: str, spec_args: tuple, home: Path, db: Path | None,
                   reuse: bool, as_json: bool, wait_s: float) -> None:
    from . import pipeline
    from .report.table import compress_table, selection_table

    targets = [load_target(name) for name in names]  # every file is checked before any device is touched
    prof = load_profile(profile_name)
    spec = resolve_spec(*spec_args)
    workspace = _workspace(home, db)
    _check_store(workspace)
    ctx = pipeline.prepare(spec, workspace)
    progress = Progress(TextColumn("{task.description:<32}"), BarColumn(), _Count(),
                        TextColumn("{task.fields[item]}"), TimeElapsedColumn(), console=err,
                        disable=as_json or not err.is_terminal)
    lines: dict[str, FleetEvents] = {}

    def events_for(name: str) -> FleetEvents:
        lines[name] = FleetEvents(progress, name, as_json)
        return lines[name]

    for t in targets:
        events_for(t.name)
    with progress:
        outcome = pipeline.profile_fleet(ctx, targets, prof, workspace, reuse, wait_s, lines.__getitem__)
        for name, result in outcome.items():
            lines[name].done(not isinstance(result, EdgekitError))
    failed = {name: r for name, r in outcome.items() if isinstance(r, EdgekitError)}
    if as_json:
        _emit_json({"targets": {name: ({"error": {"kind": getattr(r, "kind", "error"), "message": str(r)}}
                                       if name in failed else r.to_dict()) for name, r in outcome.items()}})
    else:
        built: dict[str, tuple[Any, bool]] = {}  # each target's builds (per ISA), each artifact once
        for name, result in outcome.items():
            if name not in failed:
                built.update({v.id: (v, result.cached.get(v.id, False)) for v in result.variants})
        if built:
            out.print(compress_table(list(built.values())))
        for name, result in outcome.items():
            if name in failed:
                _say(out, f"{name}: FAILED: {result}")
            else:
                out.print(selection_table(result.selection, name))
        _say(out, f"Profiled {len(outcome) - len(failed)} of {len(outcome)} targets; results: {workspace.db_path}")
    if failed:
        sys.exit(max(getattr(r, "exit_code", 1) for r in failed.values()))


@main.command()
@click.option("--target", "target_name", required=True, help="Target name (see `edgekit targets list`).")
@click.option("--profile", "profile_name", default="balanced", show_default=True)
@model_options
@workspace_options
@reuse_options
@click.option("--wait", "wait_s", type=float, default=0.0, is_flag=False, flag_value=600.0,
              help="If the device is busy with another run, wait for it (600 s, or the seconds given).")
@click.option("--variant", "variant", metavar="RECIPE",
              help="Deploy this variant instead of the profile's choice (needed where timings are emulated); "
                   "it must still meet the accuracy constraints and match the host's outputs on the device.")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def deploy(target_name, profile_name, spec_path, factory, checkpoint, model_path, inputs, calibration,
           evaluation, model_name, home, db, reuse, force, wait_s, variant, as_json) -> None:
    """Compress, measure, choose, install and smoke-test the best variant on the target."""
    _measure_command("deploy", target_name, profile_name, (spec_path, factory, checkpoint, model_path, inputs,
                     calibration, evaluation, model_name), home, db, _reuse(reuse, force), as_json, wait_s, variant)


def _device_command(target_name: str, action: str, model: str | None, home: Path, db: Path | None,
                    wait_s: float = 0.0) -> dict:
    from contextlib import nullcontext

    from .device import connect, holder_name
    from .pipeline import rollback
    from .results import ResultsStore

    _check_name(model, "--model")
    target = load_target(target_name)
    workspace = _workspace(home, db)
    if action == "rollback":  # the switch is recorded: a store that cannot take it stops us before it
        _check_store(workspace)
    with connect(target) as device, (device.locked(holder_name(action), wait_s) if action != "status"
                                     else nullcontext()):
        if action == "status":
            return device.status(model)
        if model is None:
            deployed = list(device.status()["models"])
            if len(deployed) != 1:
                raise SpecError(f"--model is needed: {target.name} has {len(deployed)} deployed models "
                                f"({', '.join(deployed) or 'none'}). Fix: add --model NAME")
            model = deployed[0]
        with ResultsStore(workspace.db_path) as results:
            return rollback(device, results, model)


def _print_status(doc: dict, target: str) -> None:
    if doc.get("note"):
        _say(out, f"note: {doc['note']}")
    if not doc["models"]:
        _say(out, f"{target}: nothing deployed under {doc['workdir']}")
    for model, info in doc["models"].items():
        record = info.get("deployment") or {}
        _say(out, f"{target} · {model}: current {info['current'] or '-'} "
                  f"({record.get('meta', {}).get('recipe', '?')}, installed {record.get('installed', '?')}); "
                  f"previous {info['previous'] or '-'}")
        if info.get("path"):
            _say(out, f"  {info['path']}")


@main.command()
@click.option("--target", "target_name", required=True)
@click.option("--model", help="Model name (needed when several are deployed).")
@workspace_options
@click.option("--wait", "wait_s", type=float, default=0.0, is_flag=False, flag_value=600.0,
              help="If the device is busy with another run, wait for it (600 s, or the seconds given).")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def rollback(target_name, model, home, db, wait_s, as_json) -> None:
    """Switch the target back to the previous deployment."""
    doc = _device_command(target_name, "rollback", model, home, db, wait_s)
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


@main.command()
@click.argument("model_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def inspect(model_file, as_json) -> None:
    """An ONNX file's inputs and outputs, dynamic dimensions named: what [model] inputs must declare."""
    from .graph import describe_onnx
    from .report.table import graph_table

    if not model_file.is_file():
        raise SpecError(f"{model_file}: file not found. Fix: check the path")
    io = describe_onnx(model_file)
    if as_json:
        _emit_json(io.to_dict())
        return
    out.print(graph_table(io, model_file.name))


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
        table.add_row(*map(cell, (t.name, t.transport, host, t.arch or "-", ", ".join(t.runtimes) or "-", t.source)))
    out.print(table)


@targets.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def targets_show(name, as_json) -> None:
    """One target's definition, with ~/.ssh/config applied."""
    target = load_target(name)
    doc: dict[str, Any] = {**target.__dict__, "runtimes": list(target.runtimes)}
    if target.transport == "ssh":
        from .transport.ssh import resolve

        ep = resolve(target.host, target.user, target.port)
        doc["resolved"] = {"hostname": ep.hostname, "port": ep.port, "user": ep.user,
                           "identity_files": ep.identity_files, "proxy_jump": ep.proxy_jump}
    if as_json:
        _emit_json(doc)
        return
    for key, value in doc.items():
        if value not in (None, "", [], ()):
            _say(out, f"{key:<16} {value}")


@targets.command("check")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def targets_check(name, as_json) -> None:
    """Connect, probe, and print what the device offers and what it lacks."""
    from .compress.isa import int8_types
    from .device import capability_warnings, connect

    target = load_target(name)
    with connect(target) as device:
        probe = device.probe()
    warnings = capability_warnings(target, probe)
    cpu = probe.get("cpu", {})
    types, why = int8_types(tuple(cpu["isa"]) if isinstance(cpu.get("isa"), list) else None)
    if as_json:
        _emit_json({"target": target.name, "reachable": True, "probe": probe, "warnings": warnings,
                    "int8_default": {"types": types, "reason": why}})
        return
    runtimes = ", ".join(f"{k} {v.get('version', '')}" + (f" ({', '.join(v['providers'])})" if v.get("providers") else "")
                         for k, v in probe.get("runtimes", {}).items()) or "none"
    mem = probe.get("memory", {}).get("usable_bytes")
    board = probe.get("board", {})
    lines = [
        ("reachable", f"yes ({probe.get('hostname')})"),
        ("arch", f"{probe.get('arch')} {probe.get('cpu', {}).get('model') or ''}".strip()),
        ("isa", (" ".join(cpu.get("isa", [])) or "-")
         + (f" (no {', '.join(cpu['missing'])})" if cpu.get("missing") else "")),
        ("int8", f"{types}: {why}"),
        ("cores", f"{probe.get('cores', {}).get('usable')} usable of {probe.get('cores', {}).get('online')}"),
        ("memory", f"{mem / 2**20:.0f} MiB usable" if mem else "-"),
        ("board", board.get("model") or board.get("nv_tegra_release") or "-"),
        ("os", probe.get("os", {}).get("name") or "-"),
        ("python", f"{probe.get('python', {}).get('version')} ({probe.get('python', {}).get('executable')})"),
        ("numpy", probe.get("numpy") or "MISSING"),
        ("runtimes", runtimes),
        ("governor", probe.get("governor") or "-"),
    ]
    if emulated(probe):
        emulation = probe["emulation"]
        lines.append(("emulated", f"yes, by {emulation.get('program')} on {emulation.get('host_machine')}: "
                                  "timings there are not latency figures"))
    for key, value in lines:
        _say(out, f"{key:<10} {value}")
    for warning in warnings:
        _say(out, f"warning: {warning}")


@targets.command("trust")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Record the key without asking (only after checking its fingerprint).")
@handle_errors
def targets_trust(name, yes) -> None:
    """Show the device's host key fingerprint and, once confirmed, record it as trusted."""
    from .errors import TransportError
    from .transport.ssh import SSHTransport, edgekit_known_hosts, fingerprint, load_known_hosts

    target = load_target(name)
    if target.transport != "ssh":
        raise SpecError(f"target {name} uses the {target.transport} transport: there is no host key to trust")
    transport = SSHTransport(target.name, target.host, target.user, target.port, target.connect_timeout)
    try:
        key = transport.host_key()
    finally:
        transport.close()
    host = transport.endpoint.known_hosts_name
    known = load_known_hosts().lookup(host) or {}
    print_line = f"{host} {key.get_name()} {fingerprint(key)}"
    if key.get_name() in known:
        if known[key.get_name()] == key:
            out.print(f"already trusted: {print_line}", highlight=False, markup=False)
            return
        raise TransportError(f"target {name}: {host} presents {fingerprint(key)} but a different "
                           f"{key.get_name()} key is recorded: possible interception. Fix: if the device was "
                           f"re-installed, remove the old key first (ssh-keygen -R '{host}' -f FILE) and run this again")
    err.print(f"The device {host} presents this host key:\n  {key.get_name()} {fingerprint(key)}\n"
              f"Compare it with the device's own (on the device: ssh-keygen -lf /etc/ssh/ssh_host_{key.get_name().split('-')[-1]}_key.pub).",
              highlight=False, markup=False)
    if not yes:
        if not sys.stdin.isatty():
            raise SpecError(f"not recording the key for {name} without confirmation. Fix: check the fingerprint, "
                            f"then run: edgekit targets trust {name} --yes")
        if not click.confirm("Trust this key?", default=False, err=True):
            raise SpecError("key not recorded")
    path = edgekit_known_hosts()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(path, "a") as fh:
        fh.write(f"{host} {key.get_name()} {key.get_base64()}\n")
    os.chmod(path, 0o600)
    out.print(f"trusted: {print_line} (recorded in {path})", highlight=False, markup=False)


@main.command()
@click.option("--json", "fmt_", flag_value="json", help="The catalog as a JSON document.")
@click.option("--markdown", "fmt_", flag_value="markdown", help="The README's recipe and technique tables.")
def recipes(fmt_: str | None) -> None:
    """The recipes and technique steps a profile can list, with every option."""
    from .compress import catalog

    if fmt_ == "json":
        _emit_json(catalog.catalog())
    elif fmt_ == "markdown":
        sys.stdout.write(catalog.markdown())
    else:
        from .report.table import recipes_tables

        for table in recipes_tables(catalog.catalog()):
            out.print(table)


# --------------------------------------------------------------------------- reports


def _write(path: Path, text: str) -> None:
    """Whole or not at all: a reader never sees half a report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def format_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--markdown", "fmt_", flag_value="markdown", help="Markdown (for a pull-request comment).")(fn)
    fn = click.option("--csv", "fmt_", flag_value="csv", help="CSV, one row per variant.")(fn)
    fn = click.option("--json", "fmt_", flag_value="json", help="A JSON document.")(fn)
    return fn


def _emit(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text)
    else:
        _write(output, text)
        _say(err, f"Wrote {output}")


@main.command()
@workspace_options
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write here (default: report.html; stdout for --json/--csv/--markdown).")
@click.option("--target", "targets", multiple=True, help="Only these targets (repeatable; default: all measured).")
@click.option("--run", "runs", multiple=True, type=int, help="These runs (repeatable; default: latest per target).")
@click.option("--model", help="Only runs of this model.")
@format_options
@click.option("--table", "fmt_", flag_value="table", help="Terminal tables instead of HTML.")
@handle_errors
def report(home, db, output, targets, runs, model, fmt_) -> None:
    """A self-contained HTML report (plots, tables, provenance) that opens offline."""
    from .report import formats
    from .report.data import gather, open_store

    with open_store(_workspace(home, db).db_path) as store:
        rep = gather(store, tuple(targets), tuple(runs), model)
    if fmt_ in ("json", "csv", "markdown"):
        _emit({"json": formats.to_json, "csv": formats.to_csv, "markdown": formats.to_markdown}[fmt_](rep), output)
    elif fmt_ == "table":
        from .report.table import report_table

        for t in rep.targets:
            out.print(report_table(t))
    else:
        from .report.html import render

        path = output or Path("report.html")
        _write(path, render(rep))
        _say(out, f"Wrote {path} ({', '.join(t.target for t in rep.targets)})")


def _significance_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--min-change", type=click.FloatRange(0, 10), default=0.05, show_default=True,
                      help="Smallest median change (fraction) that counts, however significant.")(fn)
    fn = click.option("--alpha", type=click.FloatRange(0, 1, min_open=True), default=0.01, show_default=True,
                      help="Mann-Whitney U significance level.")(fn)
    return fn


@main.command()
@workspace_options
@click.option("--target", "targets", multiple=True, help="Targets side by side (latest run each), or the one "
                                                          "target of --run/--baseline.")
@click.option("--run", "runs", multiple=True, type=int, help="Runs of one target over time (repeatable).")
@click.option("--baseline", type=int, help="Compare this run with the latest (or --run) on the target.")
@click.option("--model", help="Only runs of this model.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write here, not stdout.")
@_significance_options
@format_options
@handle_errors
def compare(home, db, targets, runs, baseline, model, output, alpha, min_change, fmt_) -> None:
    """Same recipes on several targets, or one target over runs, with significant changes flagged."""
    from .report import formats
    from .report.compare import columns, compare as make
    from .report.data import open_store

    with open_store(_workspace(home, db).db_path) as store:
        kind, cols = columns(store, tuple(targets), tuple(runs), baseline, model)
    comparison = make(cols, kind, alpha, min_change)
    if fmt_:
        _emit({"json": formats.comparison_json, "csv": formats.comparison_csv,
               "markdown": formats.comparison_markdown}[fmt_](comparison), output)
        return
    from .report.table import comparison_table

    out.print(comparison_table(comparison))
    from .report.formats import verdict_line

    _say(out, verdict_line(comparison))


@main.command()
@workspace_options
@click.option("--target", "target_name", required=True, help="The target whose chosen variant is checked.")
@click.option("--run", "run_id", type=int, help="The run to check (default: the latest on the target).")
@click.option("--max-p90-ms", type=float, help="Fail when the chosen variant's p90 latency is above this.")
@click.option("--max-accuracy-drop", type=float, help="Fail above this accuracy drop (fraction: 0.01 = 1 point).")
@click.option("--baseline", type=int, help="Fail when slower than in this run (significantly; see compare).")
@_significance_options
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def check(home, db, target_name, run_id, max_p90_ms, max_accuracy_drop, baseline, alpha, min_change,
          as_json) -> None:
    """CI gate: exit 1 with the offending figures when the target's chosen variant misses a limit."""
    from .report.check import run_checks
    from .report.data import latest_run, open_store, target_report

    with open_store(_workspace(home, db).db_path) as store:
        t = target_report(store, run_id or latest_run(store, target_name), target_name)
        base = target_report(store, baseline, target_name) if baseline is not None else None
    checks = run_checks(t, max_p90_ms, max_accuracy_drop, base, alpha, min_change)
    failed = [c for c in checks if not c.ok]
    if as_json:
        _emit_json({"target": t.target, "run_id": t.run_id, "passed": not failed,
                    "checks": [c.__dict__ for c in checks]})
    else:
        for c in checks:
            out.print(("[green]PASS[/] " if c.ok else "[bold red]FAIL[/] ") + escape(printable(f"{c.name}: {c.message}")),
                      highlight=False)
    if failed:
        sys.exit(1)
