"""`edgekit` commands: parse, call the pipeline, render. No orchestration, no SQL, no file writes.

Shared options and the error wrapper are in cli_options; what is printed is rendered under
report/ (output, progress, runs, device). Heavy modules are imported inside the commands, so
`edgekit --help` and the target commands start fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.markup import escape

from . import __version__
from .cli_options import (format_options, handle_errors, model_options, resolve_spec, reuse_answer, reuse_options,
                          significance_options, wait_option, workspace, workspace_options)
from .config import available, check_name_flag, load_profile, load_target
from .errors import SpecError
from .report.output import emit, emit_json, err, out, say, show, write_whole
from .report.safe import printable

if TYPE_CHECKING:
    from .pipeline import RunResult


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
    from .pipeline import compress_model
    from .report.progress import RichEvents
    from .report.table import compress_table

    prof = load_profile(profile_name)
    for r in recipes:
        parse_recipe(r)
    spec = resolve_spec(spec_path, factory, checkpoint, model_path, inputs, calibration, evaluation, model_name)
    with RichEvents(quiet=as_json) as events:
        built = compress_model(spec, prof, workspace(home, db), tuple(recipes), events)
    if as_json:
        emit_json({"model": spec.name, "variants": [{**v.to_dict(), "cached": c} for v, c in built]})
    else:
        out.print(compress_table(built))
    if all(v.status != "ok" for v, _ in built):
        sys.exit(1)


def _run_one(target_name: str, profile_name: str, spec_args: tuple, home: Path, db: Path | None, reuse: bool,
             as_json: bool, wait_s: float, install: bool, variant: str | None = None) -> None:
    from .pipeline import run_target
    from .report.progress import RichEvents
    from .report.runs import run_summary

    target, prof, spec = load_target(target_name), load_profile(profile_name), resolve_spec(*spec_args)
    ws = workspace(home, db)
    with RichEvents(quiet=as_json) as events:
        result = run_target(target, prof, ws, model=spec, install=install, variant=variant, reuse=reuse,
                            wait_s=wait_s, events=events)
    emit_json(result.to_dict()) if as_json else show(run_summary(result, install, ws.db_path))
    if not install and _nothing_chosen(result):
        sys.exit(4)


def _nothing_chosen(result: RunResult) -> bool:
    """Exit 4 says "no variant meets the profile here", with or without --json, for one target or any
    target of a fleet: a CI job reads the code, not the table. Emulated timings choose nothing by design."""
    return result.selection.chosen is None and not result.selection.emulated


def _run_fleet(names: list[str], profile_name: str, spec_args: tuple, home: Path, db: Path | None,
               reuse: bool, as_json: bool, wait_s: float) -> None:
    from .errors import EdgekitError
    from .pipeline import profile_fleet
    from .report.progress import FleetEvents, fleet_progress
    from .report.runs import fleet_doc, fleet_summary

    targets = [load_target(name) for name in names]  # every file is checked before any device is touched
    prof, spec, ws = load_profile(profile_name), resolve_spec(*spec_args), workspace(home, db)
    progress = fleet_progress(quiet=as_json)
    lines = {t.name: FleetEvents(progress, t.name, as_json) for t in targets}
    with progress:
        outcome = profile_fleet(spec, targets, prof, ws, reuse, wait_s, lines.__getitem__)
        for name, result in outcome.items():
            lines[name].done(not isinstance(result, EdgekitError))
    emit_json(fleet_doc(outcome)) if as_json else show(fleet_summary(outcome, ws.db_path))
    failed = [r for r in outcome.values() if isinstance(r, EdgekitError)]
    if failed:
        sys.exit(max(getattr(r, "exit_code", 1) for r in failed))
    if any(_nothing_chosen(r) for r in outcome.values()):
        sys.exit(4)


@main.command()
@click.option("--target", "target_names", required=True, multiple=True,
              help="Target name (see `edgekit targets list`); repeat to profile several devices at once.")
@click.option("--profile", "profile_name", default="balanced", show_default=True)
@model_options
@workspace_options
@reuse_options
@wait_option
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def profile(target_names, profile_name, spec_path, factory, checkpoint, model_path, inputs, calibration,
            evaluation, model_name, home, db, reuse, force, wait_s, as_json) -> None:
    """Compress, measure every variant on the target(s) in interleaved rounds and show which one the
    profile picks."""
    reuse = reuse_answer(reuse, force)
    spec_args = (spec_path, factory, checkpoint, model_path, inputs, calibration, evaluation, model_name)
    names = list(dict.fromkeys(target_names))
    if len(names) == 1:
        _run_one(names[0], profile_name, spec_args, home, db, reuse, as_json, wait_s, install=False)
    else:
        _run_fleet(names, profile_name, spec_args, home, db, reuse, as_json, wait_s)


@main.command()
@click.option("--target", "target_name", required=True, help="Target name (see `edgekit targets list`).")
@click.option("--profile", "profile_name", default="balanced", show_default=True)
@model_options
@workspace_options
@reuse_options
@wait_option
@click.option("--variant", "variant", metavar="RECIPE",
              help="Deploy this variant instead of the profile's choice (needed where timings are emulated); "
                   "it must still meet the accuracy constraints and match the host's outputs on the device.")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def deploy(target_name, profile_name, spec_path, factory, checkpoint, model_path, inputs, calibration,
           evaluation, model_name, home, db, reuse, force, wait_s, variant, as_json) -> None:
    """Compress, measure, choose, install and smoke-test the best variant on the target."""
    _run_one(target_name, profile_name, (spec_path, factory, checkpoint, model_path, inputs, calibration,
             evaluation, model_name), home, db, reuse_answer(reuse, force), as_json, wait_s, True, variant)


@main.command()
@click.option("--target", "target_name", required=True)
@click.option("--model", help="Model name (needed when several are deployed).")
@workspace_options
@wait_option
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def rollback(target_name, model, home, db, wait_s, as_json) -> None:
    """Switch the target back to the previous deployment."""
    from .pipeline import rollback_target
    from .report.device import status_lines

    check_name_flag(model, "--model")
    doc = rollback_target(load_target(target_name), workspace(home, db), model, wait_s)
    emit_json(doc) if as_json else show(status_lines(doc, target_name))


@main.command()
@click.option("--target", "target_name", required=True)
@click.option("--keep-days", type=float, default=7.0, show_default=True,
              help="Keep what was pushed or installed more recently than this.")
@click.option("--dry-run", is_flag=True, help="List what would go; remove nothing.")
@wait_option
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def gc(target_name, keep_days, dry_run, wait_s, as_json) -> None:
    """Remove from the device what no deployment uses: never current or previous, nor their artifacts."""
    from .pipeline import gc_target
    from .report.device import gc_lines

    doc = gc_target(load_target(target_name), keep_days, dry_run, wait_s)
    emit_json(doc) if as_json else show(gc_lines(doc, target_name))


@main.command()
@click.option("--target", "target_name", required=True)
@click.option("--model", help="Only this model.")
@workspace_options
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def status(target_name, model, home, db, as_json) -> None:
    """What is deployed on the target."""
    from .pipeline import status as device_status
    from .report.device import status_lines

    check_name_flag(model, "--model")
    doc = device_status(load_target(target_name), model)
    emit_json(doc) if as_json else show(status_lines(doc, target_name))


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
        emit_json(io.to_dict())
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
    from .report.device import target_doc, targets_table

    found = [load_target(str(path)) for path in available("targets").values()]
    emit_json([target_doc(t) for t in found]) if as_json else out.print(targets_table(found))


@targets.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def targets_show(name, as_json) -> None:
    """One target's definition, with ~/.ssh/config applied."""
    from .pipeline import target_definition
    from .report.device import definition_lines

    doc = target_definition(load_target(name))
    emit_json(doc) if as_json else show(definition_lines(doc))


@targets.command("check")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def targets_check(name, as_json) -> None:
    """Connect, probe, and print what the device offers and what it lacks."""
    from .pipeline import check_target
    from .report.device import check_lines

    found = check_target(load_target(name))
    if as_json:
        emit_json({"target": found.target, "reachable": True, "probe": found.probe, "warnings": found.warnings,
                   "int8_default": {"types": found.int8_types, "reason": found.int8_reason}})
    else:
        show(check_lines(found.probe, found.warnings, found.int8_types, found.int8_reason))


@targets.command("trust")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Record the key without asking (only after checking its fingerprint).")
@handle_errors
def targets_trust(name, yes) -> None:
    """Show the device's host key fingerprint and, once confirmed, record it as trusted."""
    from .pipeline import offered_host_key, trust

    offer = offered_host_key(load_target(name))
    if offer.trusted:
        say(out, f"already trusted: {offer.line}")
        return
    err.print(f"The device {offer.host} presents this host key:\n  {offer.key_type} {offer.fingerprint}\n"
              f"Compare it with the device's own (on the device: ssh-keygen -lf "
              f"/etc/ssh/ssh_host_{offer.key_type.split('-')[-1]}_key.pub).", highlight=False, markup=False)
    if not yes:
        if not sys.stdin.isatty():
            raise SpecError(f"not recording the key for {name} without confirmation. Fix: check the fingerprint, "
                            f"then run: edgekit targets trust {name} --yes")
        if not click.confirm("Trust this key?", default=False, err=True):
            raise SpecError("key not recorded")
    path = trust(offer)
    say(out, f"trusted: {offer.line} (recorded in {path})")


@main.command()
@click.option("--json", "fmt_", flag_value="json", help="The catalog as a JSON document.")
@click.option("--markdown", "fmt_", flag_value="markdown", help="The README's recipe and technique tables.")
def recipes(fmt_: str | None) -> None:
    """The recipes and technique steps a profile can list, with every option."""
    from .compress import catalog

    if fmt_ == "json":
        emit_json(catalog.catalog())
    elif fmt_ == "markdown":
        sys.stdout.write(catalog.markdown())
    else:
        from .report.table import recipes_tables

        for table in recipes_tables(catalog.catalog()):
            out.print(table)


# --------------------------------------------------------------------------- reports


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

    with open_store(workspace(home, db).db_path) as store:
        rep = gather(store, tuple(targets), tuple(runs), model)
    if fmt_ in ("json", "csv", "markdown"):
        emit({"json": formats.to_json, "csv": formats.to_csv, "markdown": formats.to_markdown}[fmt_](rep), output)
    elif fmt_ == "table":
        from .report.table import report_table

        for t in rep.targets:
            out.print(report_table(t))
    else:
        from .report.html import render

        path = output or Path("report.html")
        write_whole(path, render(rep))
        say(out, f"Wrote {path} ({', '.join(t.target for t in rep.targets)})")


@main.command()
@workspace_options
@click.option("--target", "targets", multiple=True, help="Targets side by side (latest run each), or the one "
                                                          "target of --run/--baseline.")
@click.option("--run", "runs", multiple=True, type=int, help="Runs of one target over time (repeatable).")
@click.option("--baseline", type=int, help="Compare this run with the latest (or --run) on the target.")
@click.option("--model", help="Only runs of this model.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write here, not stdout.")
@significance_options
@format_options
@handle_errors
def compare(home, db, targets, runs, baseline, model, output, alpha, min_change, fmt_) -> None:
    """Same recipes on several targets, or one target over runs, with significant changes flagged."""
    from .report import formats
    from .report.compare import columns, compare as make
    from .report.data import open_store

    with open_store(workspace(home, db).db_path) as store:
        kind, cols = columns(store, tuple(targets), tuple(runs), baseline, model)
    comparison = make(cols, kind, alpha, min_change)
    if fmt_:
        emit({"json": formats.comparison_json, "csv": formats.comparison_csv,
               "markdown": formats.comparison_markdown}[fmt_](comparison), output)
        return
    from .report.table import comparison_table

    out.print(comparison_table(comparison))
    from .report.formats import verdict_line

    say(out, verdict_line(comparison))


@main.command()
@workspace_options
@click.option("--target", "target_name", required=True, help="The target whose chosen variant is checked.")
@click.option("--run", "run_id", type=int, help="The run to check (default: the latest on the target).")
@click.option("--max-p90-ms", type=float, help="Fail when the chosen variant's p90 latency is above this.")
@click.option("--max-accuracy-drop", type=float, help="Fail above this accuracy drop (fraction: 0.01 = 1 point).")
@click.option("--baseline", type=int, help="Fail when slower than in this run (significantly; see compare).")
@significance_options
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def check(home, db, target_name, run_id, max_p90_ms, max_accuracy_drop, baseline, alpha, min_change,
          as_json) -> None:
    """CI gate: exit 1 with the offending figures when the target's chosen variant misses a limit."""
    from .report.check import run_checks
    from .report.data import latest_run, open_store, target_report

    with open_store(workspace(home, db).db_path) as store:
        t = target_report(store, run_id or latest_run(store, target_name), target_name)
        base = target_report(store, baseline, target_name) if baseline is not None else None
    checks = run_checks(t, max_p90_ms, max_accuracy_drop, base, alpha, min_change)
    failed = [c for c in checks if not c.ok]
    if as_json:
        emit_json({"target": t.target, "run_id": t.run_id, "passed": not failed,
                    "checks": [c.__dict__ for c in checks]})
    else:
        for c in checks:
            out.print(("[green]PASS[/] " if c.ok else "[bold red]FAIL[/] ") + escape(printable(f"{c.name}: {c.message}")),
                      highlight=False)
    if failed:
        sys.exit(1)
