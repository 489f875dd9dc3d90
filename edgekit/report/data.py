"""Rows for every view (HTML, terminal, JSON, CSV, Markdown), gathered from the results store.

Selection is not re-implemented here: a report shows the decisions each run recorded when it
made them; a run from before decisions were recorded goes through `select.select` again with the
profile it recorded, so a report says what the run decided either way.
Figures a measurement does not hold (power on a board without a sensor) stay None; views print "-".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import __version__
from ..config import load_profile
from ..errors import EdgekitError, SpecError, UsageError
from ..records import Measurement, Run, Variant, emulated
from ..results import ResultsStore
from ..select import Selection, choose_named, recorded, select
from ..settings import SelectSettings
from . import fmt


@dataclass
class VariantRow:
    """One variant on one target in one run, with the decision `select` made about it."""

    target: str
    run_id: int
    variant: Variant
    measurement: Measurement | None
    status: str  # chosen | eligible | rejected
    reason: str
    measured_at: str | None = None
    pareto: bool = False

    @property
    def ok(self) -> bool:
        return self.measurement is not None and self.measurement.status == "ok"

    @property
    def emulated(self) -> bool:
        """Timed under emulation: views say so and show no latency, memory or power figure."""
        return self.measurement is not None and self.measurement.emulated

    @property
    def timed(self) -> bool:
        return self.ok and not self.emulated

    @property
    def parity(self) -> dict[str, Any]:
        return self.measurement.parity if self.measurement is not None else {}

    @property
    def reused_from(self) -> int | None:
        """The run that took this measurement, when this run reused it."""
        m = self.measurement
        return m.reused_from if m is not None and m.reused else None

    def stat(self, key: str) -> float | None:
        if not self.timed:
            return None
        value = self.measurement.stats.get(key)
        return float(value) if isinstance(value, (int, float)) else None

    @property
    def ci95(self) -> tuple[float, float] | None:
        ci = self.measurement.stats.get("ci95_median_ms") if self.timed else None
        return (float(ci[0]), float(ci[1])) if ci and len(ci) == 2 else None

    @property
    def samples(self) -> list[float]:
        return [float(x) for x in self.measurement.document.get("samples_ms", [])] if self.timed else []

    @property
    def peak_rss_mb(self) -> float | None:
        value = self.measurement.memory.get("peak_rss_mb") if self.timed else None
        return float(value) if isinstance(value, (int, float)) else None

    @property
    def power(self) -> dict[str, Any]:
        power = self.measurement.document.get("power") if self.timed else None
        return power if isinstance(power, dict) else {}

    @property
    def avg_power_w(self) -> float | None:
        return _first_number(self.power, ("avg_w", "average_w", "mean_w"))

    @property
    def energy_mj(self) -> float | None:
        return _first_number(self.power, ("energy_per_inference_mj", "energy_mj"))

    @property
    def power_note(self) -> str:
        """Why there is no power figure: the agent's reason, or that it did not measure power."""
        if self.avg_power_w is not None or self.energy_mj is not None:
            return ""
        if not self.ok:
            return "not measured"
        if self.emulated:
            return "emulated: not a power figure"
        reason = self.power.get("reason") or self.power.get("unavailable") or self.power.get("error")
        return f"unavailable: {reason}" if isinstance(reason, str) and reason else "not measured"

    @property
    def accuracy(self) -> float | None:
        return _number(self.variant.metrics.get("accuracy"))

    @property
    def accuracy_drop(self) -> float | None:
        return _number(self.variant.metrics.get("accuracy_drop"))

    @property
    def cosine(self) -> float | None:
        return _number(self.variant.metrics.get("mean_cosine"))

    @property
    def inputs(self) -> str:
        """What the device timed: shapes and where they came from (`fmt.inputs`)."""
        return fmt.inputs(self.measurement.document) if self.ok else ""

    @property
    def runtime(self) -> dict[str, Any]:
        rt = self.measurement.document.get("runtime") if self.measurement else None
        return rt if isinstance(rt, dict) else {}


@dataclass
class TargetReport:
    """One run on one target: its variants, the decision, and what the numbers were measured on."""

    target: str
    run_id: int
    model: str | None
    profile: str | None
    objective: str
    constraints: dict[str, float]
    started: str
    edgekit_version: str
    command: str
    probe: dict[str, Any]
    rows: list[VariantRow]
    notes: list[str] = field(default_factory=list)
    unfinished: str | None = None  # why this run's choice was never a finished decision (see `unfinished`)

    @property
    def chosen(self) -> VariantRow | None:
        return next((r for r in self.rows if r.status == "chosen"), None)

    @property
    def fidelity(self) -> FidelityAxis:
        return fidelity_axis(self.constraints, self.rows)

    @property
    def emulated(self) -> bool:
        return emulated(self.probe) or any(r.emulated for r in self.rows)

    def row(self, recipe: str) -> VariantRow | None:
        return next((r for r in self.rows if r.variant.recipe == recipe), None)


@dataclass
class Report:
    generated: str
    edgekit_version: str
    db: str
    targets: list[TargetReport]


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _first_number(doc: dict[str, Any], keys: tuple[str, ...]) -> float | None:
    for key in keys:
        value = _number(doc.get(key))
        if value is not None:
            return value
    return None


@dataclass(frozen=True)
class FidelityAxis:
    """The fidelity figure a run was judged by, as a plot axis: higher is better on every axis."""

    key: str
    label: str
    scale: float = 1.0  # shown value = figure * scale
    y_max: float | None = None

    def value(self, row: VariantRow) -> float | None:
        figure = _number(row.variant.metrics.get(self.key))
        return None if figure is None else figure * self.scale


def fidelity_axis(constraints: dict[str, float], rows: list[VariantRow]) -> FidelityAxis:
    """The profile's own fidelity constraint picks the axis: a user metric, cosine, top-1
    agreement, or label accuracy; `max_accuracy_drop` on outputs without classes is judged by
    cosine (see `select.fidelity_violations`), so it is drawn by cosine too."""
    has = lambda key: any(_number(r.variant.metrics.get(key)) is not None for r in rows)  # noqa: E731
    if "max_metric_drop" in constraints and has("metric"):
        name = next((r.variant.metrics.get("metric_name") for r in rows if r.variant.metrics.get("metric_name")), "metric")
        return FidelityAxis("metric", f"{name} (user metric)")
    if "min_cosine" in constraints and has("mean_cosine"):
        return FidelityAxis("mean_cosine", "cosine to the original (worst output)", y_max=1.0)
    if "min_top1_agreement" in constraints and has("top1_agreement"):
        return FidelityAxis("top1_agreement", "top-1 agreement (%)", 100.0, 100.0)
    if has("accuracy"):
        return FidelityAxis("accuracy", "accuracy (%)", 100.0, 100.0)
    return FidelityAxis("mean_cosine", "cosine to the original (worst output)", y_max=1.0)


def pareto_front(rows: list[VariantRow], axis: FidelityAxis | None = None) -> list[VariantRow]:
    """Measured rows no other row beats on both p90 latency and the run's fidelity figure."""
    axis = axis or FidelityAxis("accuracy", "accuracy (%)", 100.0, 100.0)
    points = [r for r in rows if r.stat("p90_ms") is not None and axis.value(r) is not None]
    front = []
    for r in points:
        lat, acc = r.stat("p90_ms"), axis.value(r)
        dominated = any(o.stat("p90_ms") <= lat and axis.value(o) >= acc
                        and (o.stat("p90_ms") < lat or axis.value(o) > acc) for o in points if o is not r)
        if not dominated:
            front.append(r)
    return sorted(front, key=lambda r: r.stat("p90_ms"))


# --------------------------------------------------------------------------- reading the store


def _settings(store: ResultsStore, run: Run, notes: list[str]) -> SelectSettings:
    recorded = store.run_profile(run.id)
    if recorded is not None:
        doc = recorded.get("select", {})
        return SelectSettings(objective=doc.get("objective", "p90_ms"), constraints=doc.get("constraints", {}))
    if run.profile:
        try:
            return load_profile(run.profile).select
        except SpecError:
            pass
    notes.append(f"run {run.id} did not record its profile ({run.profile or 'none'}) and it cannot be "
                 "found now: selection shown with the default p90_ms objective and no constraints")
    return SelectSettings()


def _measurement(store: ResultsStore, measurement_id: int, run_id: int) -> Measurement | None:
    """The measurement a run used; one another run made is marked as reused from that run."""
    m = store.measurement(measurement_id)
    if m is not None and m.run_id != run_id:
        m.reused, m.reused_from = True, m.run_id
    return m


def open_store(path: Path) -> ResultsStore:
    """The store, read for a report; a missing file is a usage error, not an empty new store."""
    if not path.is_file():
        raise UsageError(f"no results store at {path}. Fix: run `edgekit profile --target local` first, "
                         "or pass --db / --home where the results are")
    return ResultsStore(path)


def target_report(store: ResultsStore, run_id: int, target: str) -> TargetReport:
    """The run's variants on `target`, selected with the run's own profile."""
    run = store.run(run_id)
    if run is None:
        raise UsageError(f"--run {run_id}: no such run in {store.path}. Fix: use a run id printed by `edgekit profile` or `edgekit deploy`")
    on = store.targets_of(run_id)
    if target not in on:
        raise UsageError(f"run {run_id} did not measure on {target} (it measured on {', '.join(on) or 'nothing'}). "
                         "Fix: pick a run that measured this target")
    notes: list[str] = []
    settings = _settings(store, run, notes)
    # a run that never linked (it stopped while measuring, or predates links): its own measurements
    links = store.run_links(run_id, target) or store.run_measured(run_id, target)
    variants: list[Variant] = []
    measurements: dict[str, Measurement] = {}
    for variant_id, measurement_id in links:
        v = store.variant(variant_id)
        if v is None:
            notes.append(f"variant {variant_id} is missing from the store")
            continue
        variants.append(v)
        if measurement_id is not None:
            found = _measurement(store, measurement_id, run_id)
            if found:
                measurements[v.id] = found
    decisions = store.decisions(run_id, target)
    if decisions:  # what the run decided when it ran, whatever select.py says now
        selection = recorded(decisions[0].objective, decisions, {v.id: v for v in variants}, measurements)
    else:  # a run from before decisions were recorded: decided again with its own profile
        selection = select(variants, measurements, settings)
    _apply_named_deployment(store, selection, run_id, target)
    rows = [VariantRow(target, run_id, r.variant, r.measurement, r.status, r.reason,
                       measurements[r.variant.id].created if r.variant.id in measurements else None)
            for r in selection.rows]
    for r in pareto_front(rows, fidelity_axis(dict(settings.constraints), rows)):
        r.pareto = True
    stopped = unfinished(store, run, target)
    if stopped:
        notes.append(stopped)
    return TargetReport(target=target, run_id=run_id, model=run.model, profile=run.profile,
                        objective=settings.objective, constraints=dict(settings.constraints),
                        started=run.started, edgekit_version=run.edgekit_version, command=run.command,
                        probe=store.probe(run_id, target) or {}, rows=rows, notes=notes, unfinished=stopped)


def unfinished(store: ResultsStore, run: Run, target: str) -> str | None:
    """Why the run's choice on `target` is not a finished decision, or None.

    A run links its variants to their measurements once measuring is done (`run_variants`), and
    a deploy records its install (ok or not) when it ends: a run that has its profile recorded but
    no links stopped while measuring; a deploy with no successful install never installed its choice.
    """
    if store.run_profile(run.id) is not None and not store.run_links(run.id, target):
        return f"run {run.id} stopped before it finished measuring on {target}: its figures are partial"
    if run.command == "deploy":
        installs = store.deployments(run.id, target, "install")
        if not installs:
            return f"deploy run {run.id} installed nothing on {target} (it stopped or found nothing to install)"
        if not any(d.ok for d in installs):
            return f"deploy run {run.id} did not install its choice on {target} ({installs[-1].message or 'failed'})"
    return None


def _apply_named_deployment(store: ResultsStore, selection: Selection, run_id: int, target: str) -> None:
    """A deploy run that installed a variant the user named (`--variant`) shows that variant as chosen."""
    installed = [d for d in store.deployments(run_id, target, "install") if d.ok]
    chosen = selection.chosen
    if not installed or (chosen is not None and chosen.variant.id == installed[-1].variant_id):
        return
    try:
        choose_named(selection, installed[-1].variant_id, target)
    except EdgekitError:  # the profile rules it out now: show the selection as it stands
        pass


def known_targets(store: ResultsStore) -> list[str]:
    return store.targets()


def latest_run(store: ResultsStore, target: str, model: str | None = None, before: int | None = None) -> int:
    """The newest run that measured on `target` (optionally: of `model`, older than run `before`)."""
    run_id = store.latest_run(target, model, before)
    if run_id is None:
        known = ", ".join(known_targets(store)) or "none"
        what = f"{target}" + (f" for model {model}" if model else "") + (f" before run {before}" if before else "")
        raise UsageError(f"no measurements on {what} in {store.path} (targets measured: {known}). "
                         f"Fix: run `edgekit profile --target {target}` first")
    return run_id


def run_targets(store: ResultsStore, run_id: int) -> list[str]:
    targets = store.targets_of(run_id)
    if not targets:
        raise UsageError(f"--run {run_id}: no such run with measurements in {store.path}. "
                         "Fix: use a run id printed by `edgekit profile` or `edgekit deploy`")
    return targets


def gather(store: ResultsStore, targets: tuple[str, ...] = (), runs: tuple[int, ...] = (),
           model: str | None = None) -> Report:
    """Explicit runs (each on its targets, or only `targets`), else the latest run on each target."""
    pairs: list[tuple[int, str]] = []
    if runs:
        for run_id in runs:
            on = run_targets(store, run_id)
            chosen = [t for t in on if t in targets] if targets else on
            if targets and not chosen:
                raise UsageError(f"--run {run_id} measured on {', '.join(on)}, not on {', '.join(targets)}. "
                                 "Fix: drop --target or pick another run")
            pairs += [(run_id, t) for t in chosen]
    else:
        names = list(targets) or known_targets(store)
        if not names:
            raise UsageError(f"{store.path} holds no measurements yet. "
                             "Fix: run `edgekit profile --target local` (or deploy) first")
        pairs = [(latest_run(store, t, model), t) for t in names]
    reports = [target_report(store, run_id, t) for run_id, t in pairs]
    return Report(generated=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  edgekit_version=__version__, db=str(store.path), targets=reports)
