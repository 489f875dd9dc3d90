"""The only place that composes stages: compress -> measure -> select -> deploy, per target
(`run_target`) or over a fleet (`profile_fleet`), and the device commands (rollback, status, trust).

It reports progress through `Events` and never prints, so the CLI decides what a person (or a
`--json` reader) sees.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import numpy as np

from .agent.protocol import Probe
from .compress.build import build_variant
from .compress.context import BuildContext, LazyModel
from .compress.derived import DerivedStore
from .compress.parity import onnx_outputs
from .compress.runtimes import outputs as artifact_outputs
from .compress.store import ArtifactStore, cache_key, file_sha256
from .device import Device, capability_warnings, connect, holder_name
from .graph import check_onnx, describe_onnx
from .errors import ConnectionLost, DeviceError, EdgekitError, ModelError, SelectionError, SpecError, TransportError, UsageError
from .model import (batches, check_model_accepts_inputs, example_inputs, generated_dataset, import_entry,
                    load_data, load_torch_model, reference_outputs, weights_digest)
from .records import Measurement, Variant
from .results import ResultsStore, check_store
from .rounds import Round, merge, paired_ratios, round_order, round_settings
from .select import Selection, choose_named, select
from .settings import BenchSettings, ModelSpec, Profile, Target, TechniqueSettings

SMOKE_SAMPLES = 64


class Events:
    """Progress hooks; the defaults do nothing."""

    def stage(self, name: str, total: int) -> None: ...
    def step(self, label: str) -> None: ...
    def note(self, message: str) -> None: ...
    def transfer(self, label: str, sent: int, total: int) -> None:
        """An upload to a device is under way: `sent` of `total` bytes of `label`."""


@dataclass(frozen=True)
class Workspace:
    """Host-side state: the artifact cache and the results store."""

    home: Path
    db_path: Path

    @property
    def artifacts(self) -> ArtifactStore:
        return ArtifactStore(self.home / "cache")

    @property
    def derived(self) -> DerivedStore:
        """Weights digests per checkpoint file and reference outputs, beside the artifacts."""
        return DerivedStore(self.home / "cache")


# --------------------------------------------------------------------------- compress


def prepare(spec: ModelSpec, workspace: Workspace | None = None) -> BuildContext:
    """Load and check model and data. Raises before anything is written anywhere.

    With a workspace, nothing is derived again from bytes it was derived from before: the
    reference outputs come from the derived cache (keyed by the weights, the inputs and the
    evaluation data's content), and when the weights are fixed by a file (a checkpoint, a .pt
    module) whose hash was seen before, the model is not even loaded: it loads on first use, which
    a run whose every artifact is cached never reaches. The digest recorded for that file keys the
    artifacts exactly as a full load would.
    """
    derived = workspace.derived if workspace is not None else None
    weights_key = derived.weights_key(spec) if derived is not None else None
    known_digest = derived.weights_digest(weights_key) if derived is not None else None
    model = None if known_digest is not None else _load_checked(spec)
    calibration = load_data(spec.calibration, spec, "calibration")
    evaluation = load_data(spec.evaluation, spec, "evaluation")
    metric = import_entry(spec.metric, "[data] metric") if spec.metric else None
    cached: list[str] = []
    if spec.is_onnx:
        assert spec.path is not None
        digest = file_sha256(spec.path)
    elif known_digest is not None:
        digest = known_digest
        cached.append("weights digest")
    else:
        digest = weights_digest(model)
    reference, reference_key = None, None
    if evaluation is not None and derived is not None:
        reference_key = derived.reference_key(spec, digest, evaluation)
        reference = derived.reference(reference_key)
    if reference is not None:
        cached.append("reference outputs")
    # A broken ONNX file would otherwise be built, cached and pushed, failing only on the device.
    # Checked once per content (a cached reference means it ran before).
    check_file = spec.is_onnx and reference is None and not (derived is not None and derived.onnx_checked(digest))
    if check_file:
        check_onnx(spec.path)
    if reference is None and evaluation is not None:
        if spec.is_onnx:
            reference = _onnx_reference(spec, evaluation)
        else:
            if model is None:
                model = _lazy_model(spec, digest, derived, weights_key).get()
            reference = reference_outputs(model, evaluation, spec)
    names = tuple(t.name for t in describe_onnx(spec.path).outputs) if spec.is_onnx else ()
    held = model if model is not None or spec.is_onnx else _lazy_model(spec, digest, derived, weights_key)
    ctx = BuildContext(spec, held, digest, calibration, evaluation, reference, metric=metric, output_names=names,
                       cached=tuple(cached))
    if evaluation is not None and reference is not None:
        bad = sum(int((~np.isfinite(r)).sum()) for r in reference if r.dtype.kind == "f")
        if bad:
            raise ModelError(f"the original model gives {bad} NaN or infinite output values on the evaluation data. "
                             f"Fix: check the model and the data; no variant can be judged against them")
        ctx.compare(reference)  # a user metric that fails, fails here, before any build
    if derived is not None:  # only what passed every check above is kept
        if model is not None and known_digest is None:  # hashed again: loading may have rewritten it
            derived.save_weights_digest(derived.weights_key(spec), spec, digest)
        if reference_key is not None and "reference outputs" not in cached:
            derived.save_reference(reference_key, reference)
        if check_file:
            derived.save_onnx_checked(digest)
    return ctx


def _load_checked(spec: ModelSpec) -> object | None:
    """The torch model, proven to accept the declared inputs (None for an ONNX file)."""
    model = load_torch_model(spec)
    check_model_accepts_inputs(model, spec)
    return model


def _lazy_model(spec: ModelSpec, digest: str, derived: DerivedStore | None, weights_key: str | None) -> LazyModel:
    def mismatch(got: str) -> ModelError:
        if derived is not None:
            derived.forget_weights_digest(weights_key)  # the next run loads and records afresh
        source = f"factory {spec.factory} with checkpoint {spec.checkpoint}" if spec.factory else f"module {spec.path}"
        return ModelError(f"model {spec.name}: {source} now gives other weights (digest {got[:12]}) than were "
                          f"recorded for the same file ({digest[:12]}): the code that builds it changed. Fix: run "
                          f"the command again (the record is dropped)")

    return LazyModel(lambda: _load_checked(spec), digest, mismatch)


def _onnx_reference(spec: ModelSpec, evaluation) -> list[np.ndarray]:
    assert spec.path is not None
    try:
        return onnx_outputs(spec.path, evaluation, spec)
    except EdgekitError:
        raise
    except Exception as exc:
        raise ModelError(f"model {spec.path.name} does not run on the declared inputs in onnxruntime "
                         f"({' '.join(str(exc).split())[:300]}). Fix: check [model] inputs (edgekit inspect "
                         f"{spec.path.name} lists what the graph expects)") from None


def bench_feeds(ctx: BuildContext) -> tuple[dict[str, np.ndarray], str]:
    """What the device times the model on: one call's real inputs at the declared shapes (the
    first evaluation call, else calibration), generated ones only when there is no data."""
    for name, data in (("evaluation", ctx.evaluation), ("calibration", ctx.calibration)):
        if data is not None:
            return next(batches(data, ctx.spec)), f"{name} data"
    return example_inputs(ctx.spec), "generated"


def compress(ctx: BuildContext, recipes: tuple[str, ...], workspace: Workspace,
             events: Events = Events(), max_accuracy_drop: float | None = None,
             isa: tuple[str, ...] | None = None,
             techniques: TechniqueSettings | None = None) -> list[tuple[Variant, bool]]:
    """Build each recipe. The budget flags variants over it (and drives onnx:int8-mixed); a known
    target ISA picks the int8 defaults; `techniques` (the profile's [techniques] table) sets
    technique-step defaults. `ctx` is left as it was: a fleet run hands one context to every
    target, each with its own ISA and budget."""
    changes: dict[str, Any] = {}
    if max_accuracy_drop is not None:
        changes["max_accuracy_drop"] = max_accuracy_drop
    if isa is not None:
        changes["isa"] = tuple(isa)
    if techniques is not None:
        changes["techniques"] = techniques
    if changes:
        ctx = ctx.replace(**changes)
    store = workspace.artifacts
    events.stage("compress", len(recipes))
    built = []
    first_with: dict[str, str] = {}  # sha256 -> the recipe that made it first
    for recipe in recipes:
        events.step(recipe)
        variant, cached = build_variant(recipe, ctx, store)
        variant = _unless_duplicate(variant, first_with)
        if variant.status != "ok":
            events.note(f"{recipe}: failed: {variant.error}")
        for warning in variant.warnings:
            events.note(f"{recipe}: warning: {warning}")
        built.append((variant, cached))
    return built


def compress_model(model: ModelSpec, prof: Profile, workspace: Workspace, recipes: tuple[str, ...] = (),
                   events: Events = Events()) -> list[tuple[Variant, bool]]:
    """`edgekit compress`: load and check the model, then build `recipes` (else the profile's) with
    the profile's accuracy budget and technique defaults; no device is involved."""
    ctx = prepare(model, workspace)
    return compress(ctx, tuple(recipes) or prof.recipes, workspace, events,
                    prof.select.constraints.get("max_accuracy_drop"), techniques=prof.techniques)


def _unless_duplicate(variant: Variant, first_with: dict[str, str]) -> Variant:
    """Two recipes that write the same bytes are one variant under two names (e.g. onnxruntime
    1.32's Entropy calibration equals MinMax): keep the first, fail the other, so nothing is
    benchmarked twice and no report lists a difference that is not there."""
    if variant.status != "ok" or not variant.sha256:
        return variant
    first = first_with.setdefault(variant.sha256, variant.recipe)
    if first == variant.recipe:
        return variant
    return dataclasses.replace(variant, status="failed",
                               error=f"identical to {first} (same sha256 {variant.sha256[:12]}): drop one of them")


# --------------------------------------------------------------------------- measure


def settings_key(settings: BenchSettings, probe: Probe, feeds: dict[str, np.ndarray] | None = None) -> str:
    """Same artifact + same key = comparable measurements (what `--reuse` may take from the store).
    The inputs timed are part of it: one ONNX file at two declared sizes is two measurements."""
    return cache_key({
        "feeds": {k: [list(np.shape(v)), str(np.asarray(v).dtype),
                      hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest()[:16]]
                  for k, v in sorted((feeds or {}).items())},
        "bench": settings.to_dict(),
        "arch": probe.arch,
        "cpu": probe.cpu_model,
        "cores": probe.cores,
        "python": probe.python,
        "runtimes": {k: v.get("version") for k, v in probe.runtimes.items()},
    })[:16]


def _failed(target: str, variant: Variant, key: str, kind: str, message: str) -> Measurement:
    return Measurement(target=target, variant_id=variant.id, sha256=variant.sha256, status="failed",
                       error_kind=kind, error_message=message, settings_key=key,
                       document={"error": {"kind": kind, "message": message}})


EMULATED_RUNS = 10


def bench_settings_for(settings: BenchSettings, probe: Probe) -> BenchSettings:
    """Under emulation timings mean nothing: run each variant only enough to prove it runs, once."""
    if not probe.emulated:
        return settings
    return dataclasses.replace(settings, warmup_s=0.0, min_runs=min(settings.min_runs, EMULATED_RUNS), min_s=0.0,
                               max_runs=min(settings.max_runs, EMULATED_RUNS), cooldown_c=None, rate_hz=None,
                               rounds=1)


@dataclass(frozen=True)
class BenchInputs:
    """The feeds every variant is timed on, pushed once to the device (`Device.push_inputs`)."""

    remote: str
    feeds: dict[str, np.ndarray]
    source: str  # "evaluation data", "calibration data" or "generated"


def bench_once(device: Device, variant: Variant, remote: str, settings: BenchSettings,
               inputs: BenchInputs | None = None) -> dict[str, Any]:
    """Every benchmark of a profile goes through here: one fresh agent `bench` process, on the
    pushed inputs; the device must say it timed the shapes it was sent."""
    doc = device.bench(variant, remote, settings, inputs.remote if inputs else None)
    doc["inputs_source"] = inputs.source if inputs else "generated by the agent"
    check_bench_inputs(doc, inputs.feeds if inputs else None, device.target.name)
    return doc


def parity_data(ctx: BuildContext | None, settings: BenchSettings) -> dict[str, Any] | None:
    """What a device parity figure was computed from, so a reused one is known to fit this run."""
    if ctx is None or settings.parity_samples <= 0:
        return None
    return {"samples": settings.parity_samples,
            "evaluation": ctx.evaluation.digest() if ctx.evaluation is not None else None}


def bench_variants(device: Device, variants: list[Variant], settings: BenchSettings, results: ResultsStore,
                   run_id: int, probe: Probe, reuse: bool = False,
                   events: Events = Events(), ctx: BuildContext | None = None) -> dict[str, Measurement]:
    """Measure the built variants on the device in interleaved rounds, then run `parity_samples`
    evaluation samples of each there and compare the outputs with the host's.

    With `reuse`, one earlier run on this target that measured every variant with the same settings
    (and parity data) supplies all of them; otherwise, and by default, all are measured afresh:
    a ranking never mixes measurements taken under different conditions.
    """
    target = device.target.name
    settings = bench_settings_for(settings, probe)
    if probe.emulated:
        events.note(f"{target} runs under emulation ({probe.emulation.get('program')}): each variant runs "
                    f"{EMULATED_RUNS} times to check it works; its timings are not latency figures")
    feeds, source = bench_feeds(ctx) if ctx is not None else ({}, "generated")
    key = settings_key(settings, probe, feeds)
    out: dict[str, Measurement] = {}
    todo: list[Variant] = []
    for v in (v for v in variants if v.status == "ok"):
        if not probe.usable(v.runtime):
            out[v.id] = _failed(target, v, key, "runtime_missing", f"{v.runtime} is not usable on {target}")
            results.save_measurement(run_id, out[v.id])
        else:
            todo.append(v)
    wanted_parity = parity_data(ctx, settings)
    have = len(ctx.evaluation) if ctx is not None and ctx.evaluation is not None else None
    if wanted_parity is not None and have is not None and have < settings.parity_samples and todo:
        events.note(f"device parity on {target} runs all {have} evaluation samples, fewer than the "
                    f"{settings.parity_samples} the profile's parity_samples asks for")
    if reuse and todo:
        found = results.comparable_run(target, [v.sha256 for v in todo], key, wanted_parity, before_run=run_id)
        if found is not None:
            source, by_sha = found
            for v in todo:
                out[v.id] = dataclasses.replace(by_sha[v.sha256], variant_id=v.id, reused=True, reused_from=source)
            events.note(f"reusing run {source}'s measurements of all {len(todo)} variants on {target} (--reuse)")
            return out
        events.note(f"--reuse: no earlier run on {target} measured all {len(todo)} variants with these settings; "
                    "measuring them all")
    inputs = BenchInputs(device.push_inputs(feeds), feeds, source) if feeds and todo else None
    out.update(_measure_all(device, todo, settings, key, events, ctx, wanted_parity, inputs))
    for v in todo:
        results.save_measurement(run_id, out[v.id])
    return out


def _measure_all(device: Device, variants: list[Variant], settings: BenchSettings, key: str, events: Events,
                 ctx: BuildContext | None, wanted_parity: dict[str, Any] | None,
                 inputs: BenchInputs | None = None) -> dict[str, Measurement]:
    """Rounds A B C, B C A, ...: each variant once per round, each time in a fresh agent process;
    then per variant one document, its paired ratios against the baseline, and its device parity.

    A variant that fails in any round is out of the ranking (its earlier rounds are dropped, as a
    partial set is not comparable); the others carry on.
    """
    target = device.target.name
    failed: dict[str, Measurement] = {}
    remotes: dict[str, str] = {}
    for v in variants:
        try:
            remotes[v.id] = device.push(v)
        except ConnectionLost:
            raise  # the lock is gone: nothing more may happen on the device
        except DeviceError as exc:
            failed[v.id] = _failed(target, v, key, exc.kind, str(exc))
    n, each = settings.rounds, round_settings(settings)
    done: dict[str, list[Round]] = {v.id: [] for v in variants}
    events.stage(f"bench on {target}" + (f" ({n} rounds)" if n > 1 else ""), len(remotes) * n)
    for index in range(n):
        for position, v in enumerate(round_order([v for v in variants if v.id in remotes], index)):
            if v.id in failed:
                continue
            events.step(f"{v.recipe} ({index + 1}/{n})" if n > 1 else v.recipe)
            started = time.time()
            try:
                doc = bench_once(device, v, remotes[v.id], each, inputs)
            except ConnectionLost:
                raise
            except DeviceError as exc:
                failed[v.id] = _failed(target, v, key, exc.kind, str(exc))
                continue
            done[v.id].append(Round(index, position, started, time.time(), doc))
    docs = {v.id: merge(done[v.id]) for v in variants if v.id not in failed}
    baseline = next((v for v in variants if v.id in docs), None)
    out: dict[str, Measurement] = dict(failed)
    for v in (v for v in variants if v.id in docs):
        doc = docs[v.id]
        paired = paired_ratios(doc, docs[baseline.id], baseline.recipe) if baseline is not None and n > 1 else None
        if paired is not None:
            doc["paired"] = paired
        if wanted_parity is not None:
            doc["parity"] = _device_parity_doc(ctx, device, v, remotes[v.id], settings.parity_samples)
            doc["parity_data"] = wanted_parity
        for warning in doc.get("warnings", []):
            events.note(f"{v.recipe}: warning: {warning}")
        out[v.id] = Measurement(target=target, variant_id=v.id, sha256=v.sha256, status="ok",
                                stats=doc["latency"], memory=doc["memory"], cold=doc["cold"],
                                settings_key=key, document=doc)
    return out


def _device_parity_doc(ctx: BuildContext, device: Device, variant: Variant, remote: str,
                       samples: int) -> dict[str, Any]:
    try:
        return device_parity(ctx, device, variant, remote, samples)
    except (DeviceError, ModelError) as exc:  # it ran in the benchmark but not on real inputs: keep both facts
        kind = getattr(exc, "kind", "bad_output")
        return {"passed": False, "samples": 0, "problems": [f"could not run evaluation samples ({kind}): {exc}"]}


# --------------------------------------------------------------------------- deploy


@dataclass
class RunResult:
    """One run on one target: what was built, measured and chosen there, and what a deploy installed."""

    target: str
    model: str
    run_id: int
    variants: list[Variant]
    cached: dict[str, bool]
    selection: Selection
    probe: dict[str, Any]
    smoke: dict[str, Any] = field(default_factory=dict)
    status: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        chosen = self.selection.chosen
        return {
            "target": self.target,
            "model": self.model,
            "run_id": self.run_id,
            "objective": self.selection.objective,
            "emulated": self.selection.emulated,
            "chosen": chosen.variant.id if chosen else None,
            "chosen_recipe": chosen.variant.recipe if chosen else None,
            "variants": [_row_dict(r, self.cached.get(r.variant.id, False)) for r in self.selection.rows],
            "smoke_test": self.smoke,
            "deployment": self.status,
        }


def _row_dict(row, cached: bool) -> dict[str, Any]:
    m = row.measurement
    return {
        "id": row.variant.id, "recipe": row.variant.recipe, "format": row.variant.format,
        "precision": row.variant.precision, "size_bytes": row.variant.size_bytes, "sha256": row.variant.sha256,
        "path": row.variant.path or None, "metrics": row.variant.metrics, "status": row.status, "reason": row.reason, "cached": cached,
        "measurement_reused": bool(m and m.reused), "reused_from_run": m.reused_from if m else None,
        "latency": m.stats if m else None, "memory": m.memory if m else None, "cold": m.cold if m else None,
        "error": {"kind": m.error_kind, "message": m.error_message} if m and m.status != "ok" else None,
        "emulated": bool(m and m.emulated),
        "device_parity": m.parity if m else None,
        "inputs": m.document.get("inputs") if m else None,
        "inputs_source": m.document.get("inputs_source") if m else None,
        "paired": m.paired or None if m else None, "load": m.document.get("load") if m else None,
    }


def measure(ctx: BuildContext, target: Target, prof: Profile, device: Device, workspace: Workspace,
            command: str = "profile", reuse: bool = False, events: Events = Events(),
            built: list[tuple[Variant, bool]] | None = None,
            build_lock: threading.Lock | None = None) -> RunResult:
    """probe -> compress -> bench -> select on a connected, locked device; the run is in the store
    (closed again) when this returns.

    `build_lock` serialises compression when several devices are measured at once: builds are
    CPU-bound and cached by content, so a second device with the same ISA reuses the first's.
    """
    result, results = _measure(ctx, target, prof, device, workspace, command, reuse, events, built, build_lock)
    results.close()
    return result


def _measure(ctx: BuildContext, target: Target, prof: Profile, device: Device, workspace: Workspace,
             command: str, reuse: bool, events: Events, built: list[tuple[Variant, bool]] | None,
             build_lock: threading.Lock | None) -> tuple[RunResult, ResultsStore]:
    """`measure`, leaving the store open for a deploy's records. It is opened only once the device
    answered and the variants are built: bad input found before leaves no run behind."""
    device.on_upload = events.transfer
    events.stage(f"probe {target.name}", 1)
    events.step("probe")
    probe = device.probe()  # first: the target's ISA picks the int8 defaults
    device.check_probe(probe)
    if built is None:
        with build_lock or contextlib.nullcontext():
            built = compress(ctx, prof.recipes, workspace, events, prof.select.constraints.get("max_accuracy_drop"),
                             probe.isa, prof.techniques)
    results = ResultsStore(workspace.db_path)
    try:
        return _record_run(ctx, target, prof, device, command, reuse, events, built, probe, results), results
    except BaseException:
        results.close()
        raise


def _record_run(ctx: BuildContext, target: Target, prof: Profile, device: Device, command: str, reuse: bool,
                events: Events, built: list[tuple[Variant, bool]], probe: Probe,
                results: ResultsStore) -> RunResult:
    """Start the run in the store, bench, and keep what was measured and decided."""
    variants = [v for v, _ in built]
    run_id = results.start_run(command, ctx.spec.name, prof.name)
    results.save_probe(run_id, target.name, probe.doc)
    results.save_profile(run_id, {"name": prof.name, "source": prof.source, "recipes": list(prof.recipes),
                                  "bench": prof.bench.to_dict(), "select": {
                                      "objective": prof.select.objective,
                                      "constraints": dict(prof.select.constraints)}})
    for v in variants:
        results.save_variant(v)  # failed builds too: reports show why they are missing
    measured = bench_variants(device, variants, prof.bench, results, run_id, probe, reuse, events, ctx)
    for v in variants:
        m = measured.get(v.id)
        results.link_variant(run_id, target.name, v.id, m.store_id if m else None)
    selection = select(variants, measured, prof.select)
    results.save_decisions(run_id, target.name, selection.decisions())  # as decided now, for every later report
    return RunResult(target.name, ctx.spec.name, run_id, variants, {v.id: c for v, c in built}, selection, probe.doc)


def check_bench_inputs(doc: dict[str, Any], feeds: dict[str, np.ndarray] | None, target: str) -> None:
    """The device must say it timed the shapes it was sent: a figure at other shapes is not this model's."""
    if feeds is None:
        return
    used = {i.get("name"): i.get("shape") for i in doc.get("inputs") or [] if isinstance(i, dict)}
    sent = {k: list(np.asarray(v).shape) for k, v in feeds.items()}
    if used != sent:  # by name: the agent reports the file's own array names
        raise DeviceError(f"target {target}: the device benchmarked inputs {used}, not the {sent} it was sent. "
                          f"Fix: update edgekit on the host and run again (the agent is pushed afresh)",
                          kind="bad_output")


def device_parity(ctx: BuildContext, device: Device, variant: Variant, remote: str, samples: int) -> dict[str, Any]:
    """The artifact's outputs on the device against the original model's, judged per output by
    what the same artifact achieves on the host for the same samples.

    For every output the device may differ from the reference by at most twice the host's max abs
    diff and 1.5 times its mean abs diff, lose at most 0.01 of its cosine, and a classifier output
    at most one more top-1 match (or 2 %, whichever is larger). Comparing like with like keeps a
    small sample from failing a good build, while a runtime that computes differently on this
    device (another ISA, another kernel) shows up. A non-finite value never passes.
    """
    if ctx.evaluation is not None:
        data = ctx.evaluation.head(max(samples, ctx.spec.batch_size))
    else:
        data = generated_dataset(ctx.spec)
    feeds = list(batches(data, ctx.spec))
    calls = len(feeds)
    if ctx.evaluation is not None and ctx.reference is not None:
        reference = [r[:calls] for r in ctx.reference]
    elif ctx.model is not None:
        reference = reference_outputs(ctx.model, data, ctx.spec)
    else:
        reference = onnx_outputs(ctx.spec.path, data, ctx.spec)
    on_host = ctx.compare(artifact_outputs(variant.format, Path(variant.path), data, ctx.spec), reference, data)
    on_device = ctx.compare(device.run(variant, remote, feeds), reference, data)
    return judge_device(on_host, on_device)


def judge_device(on_host: dict[str, Any], on_device: dict[str, Any]) -> dict[str, Any]:
    """Device figures against the host's for the same artifact and samples (pure)."""
    problems = []
    if on_device.get("nonfinite"):
        problems.append(f"{on_device['nonfinite']} NaN or infinite output values on the device")
    outputs = []
    for host, dev in zip(on_host["outputs"], on_device["outputs"]):
        allowed_diff = max(2 * host["max_abs_diff"], 1e-4 * max(1.0, host["reference_max_abs"]))
        allowed_mean = max(1.5 * host["mean_abs_diff"], 1e-5 * max(1.0, host["reference_max_abs"]))
        allowed_cos = host["mean_cosine"] - 0.01
        name = dev["name"]
        if not dev.get("nonfinite"):
            if dev["max_abs_diff"] > allowed_diff:
                problems.append(f"{name}: max abs diff {dev['max_abs_diff']:.3g} > {allowed_diff:.3g}")
            if dev["mean_abs_diff"] > allowed_mean:
                problems.append(f"{name}: mean abs diff {dev['mean_abs_diff']:.3g} > {allowed_mean:.3g}")
            if dev["mean_cosine"] < allowed_cos:
                problems.append(f"{name}: cosine {dev['mean_cosine']:.4f} < {allowed_cos:.4f}")
        outputs.append({"name": name, "max_abs_diff": dev["max_abs_diff"], "allowed_max_abs_diff": allowed_diff,
                        "mean_abs_diff": dev["mean_abs_diff"], "allowed_mean_abs_diff": allowed_mean,
                        "mean_cosine": dev["mean_cosine"], "host_mean_cosine": host["mean_cosine"],
                        "host_max_abs_diff": host["max_abs_diff"]})
    if "top1_agreement" in on_device:
        slack = max(0.02, 1.0 / on_device["samples"])
        if on_device["top1_agreement"] < on_host["top1_agreement"] - slack:
            problems.append(f"top-1 agreement {on_device['top1_agreement']:.3f} < {on_host['top1_agreement']:.3f} "
                            f"on the host - {slack:.3f}")
    worst = max(outputs, key=lambda o: o["max_abs_diff"] / o["allowed_max_abs_diff"])
    doc = {"passed": not problems, "problems": problems, "samples": on_device["samples"], "outputs": outputs,
           "max_abs_diff": worst["max_abs_diff"], "allowed_max_abs_diff": worst["allowed_max_abs_diff"],
           "mean_abs_diff": on_device["mean_abs_diff"], "mean_cosine": on_device["mean_cosine"],
           "host_mean_cosine": on_host["mean_cosine"], "host_max_abs_diff": on_host["max_abs_diff"],
           "top1_agreement": on_device.get("top1_agreement"), "host_top1_agreement": on_host.get("top1_agreement"),
           "nonfinite": on_device.get("nonfinite", 0)}
    if "accuracy" in on_device:
        doc.update(accuracy=on_device["accuracy"], host_accuracy=on_host.get("accuracy"))
    if "metric" in on_device:
        doc.update(metric=on_device["metric"], host_metric=on_host.get("metric"))
    return doc


def smoke_test(ctx: BuildContext, device: Device, variant: Variant, installed_path: str) -> dict[str, Any]:
    """The installed copy, checked the same way before it becomes current."""
    return device_parity(ctx, device, variant, installed_path, SMOKE_SAMPLES)


def deploy(ctx: BuildContext, target: Target, prof: Profile, device: Device, workspace: Workspace,
           reuse: bool = False, events: Events = Events(), variant_recipe: str | None = None) -> RunResult:
    """Measure, choose (or take `variant_recipe`), stage it, smoke-test it on the device, then
    switch `current`. Any failure before the switch leaves the previous deployment current.
    """
    result, results = _measure(ctx, target, prof, device, workspace, "deploy", reuse, events, None, None)
    with results:
        if variant_recipe:
            from .compress.registry import canonical_name

            choose_named(result.selection, variant_recipe, target.name, canonical_name(variant_recipe))
            results.save_decisions(result.run_id, target.name, result.selection.decisions())  # the user's choice
        chosen = result.selection.chosen
        if chosen is None and result.selection.emulated:
            eligible = [r.variant.recipe for r in result.selection.rows if r.status == "eligible"]
            raise SelectionError(f"{target.name} runs under emulation, so its timings cannot choose a variant "
                                 f"(eligible there: {', '.join(eligible) or 'none'}). Fix: name one: edgekit "
                                 f"deploy --target {target.name} --variant {eligible[0] if eligible else 'RECIPE'}")
        if chosen is None:
            reasons = "; ".join(f"{r.variant.recipe}: {r.reason}" for r in result.selection.rows)
            raise SelectionError(f"no variant meets profile {prof.name} on {target.name} ({reasons}). "
                                 f"Fix: relax [select] constraints in {prof.source} or add recipes")
        variant = chosen.variant
        events.stage(f"install on {target.name}", 3)
        events.step("stage")
        remote = device.push(variant)
        staged = device.install(ctx.spec.name, variant, remote)
        events.step("smoke test")
        result.smoke = smoke_test(ctx, device, variant, staged["path"])
        if not result.smoke["passed"]:
            message = "; ".join(result.smoke["problems"])
            results.record_deployment(result.run_id, target.name, ctx.spec.name, variant.id, "install", False,
                                      f"smoke test failed: {message}")
            raise DeviceError(f"target {target.name}: the installed {variant.recipe} failed its smoke test "
                              f"({message}); the previous deployment stays current", kind="smoke_failed")
        events.step("switch current")
        result.status = device.activate(ctx.spec.name, variant.id)
        results.record_deployment(result.run_id, target.name, ctx.spec.name, variant.id, "install", True,
                                  json.dumps(result.smoke))
    return result


# --------------------------------------------------------------------------- one target, a fleet


def run_target(target: Target, prof: Profile, workspace: Workspace, *, model: ModelSpec | BuildContext,
               install: bool = False, variant: str | None = None, reuse: bool = False, wait_s: float = 0.0,
               events: Events = Events(), built: list[tuple[Variant, bool]] | None = None,
               build_lock: threading.Lock | None = None) -> RunResult:
    """connect -> lock -> prepare -> measure -> [deploy] on one target; the store is closed again
    when this returns.

    The store is checked first, then the device connected (which writes nothing), so a store that
    cannot keep the results, an unreachable board or a refused key is reported in seconds, before
    the model work; the device is written to (agent, lock) only once the model loads. A prepared
    `BuildContext` (a fleet prepares once) skips the loading.
    """
    if variant is not None and not install:
        raise UsageError("a variant can only be named for a deploy. Fix: drop --variant")
    command = "deploy" if install else "profile"
    check_store(workspace.db_path)
    with connect(target) as device:
        ctx = model if isinstance(model, BuildContext) else prepare(model, workspace)
        with device.locked(holder_name(command), wait_s):
            if install:
                return deploy(ctx, target, prof, device, workspace, reuse, events, variant)
            return measure(ctx, target, prof, device, workspace, command, reuse, events, built, build_lock)


def profile_fleet(model: ModelSpec | BuildContext, targets: list[Target], prof: Profile, workspace: Workspace,
                  reuse: bool = False, wait_s: float = 0.0,
                  events_for: Callable[[str], Events] = lambda name: Events()
                  ) -> dict[str, RunResult | EdgekitError]:
    """`run_target` on every target at once, one thread per device (the work is waiting on devices).

    The model is prepared once, before any device is touched. Each device is probed first and gets
    variants built for its own ISA (one build at a time; targets that share defaults share the
    cached artifacts). A device that fails yields its error and the others carry on.
    """
    check_store(workspace.db_path)
    ctx = model if isinstance(model, BuildContext) else prepare(model, workspace)
    build_lock = threading.Lock()

    def one(target: Target) -> RunResult | EdgekitError:
        events = events_for(target.name)
        try:
            return run_target(target, prof, workspace, model=ctx, reuse=reuse, wait_s=wait_s, events=events,
                              build_lock=build_lock)
        except EdgekitError as exc:
            events.note(f"failed: {exc}")
            return exc

    with ThreadPoolExecutor(max_workers=max(1, len(targets))) as pool:
        futures = {t.name: pool.submit(one, t) for t in targets}
        return {name: future.result() for name, future in futures.items()}


# --------------------------------------------------------------------------- rollback


def rollback(device: Device, results: ResultsStore, model: str) -> dict[str, Any]:
    """Switch `model` back to its previous deployment, recording it so that a failure at any point
    says what the device did.

    The intent is committed before the switch. If recording the outcome then fails, the error says
    the device did switch; the next rollback finds that intent with the device in the state it
    describes and records it instead of switching back.
    """
    import sqlite3

    from .errors import StoreError

    target = device.target.name
    before = device.status(model)["models"].get(model) or {}
    current, previous = before.get("current"), before.get("previous")
    pending = results.pending_rollback(target, model)
    if pending is not None:
        if pending["message"] == f"pending: {previous} -> {current}":  # that switch happened
            results.finish_deployment(pending["id"], True, f"{previous} -> {current} (recorded by a later rollback)")
            doc = device.status(model)
            doc["note"] = (f"an earlier rollback had switched {model} to {current} but could not record it; "
                           f"recorded now, nothing switched")
            return doc
        results.finish_deployment(pending["id"], False, f"{pending['message'][9:]}: the device did not switch")
    intent = results.start_rollback(target, model, current, previous)
    try:
        doc = device.rollback(model)
    except EdgekitError as exc:
        results.finish_deployment(intent, False, str(exc)[:500])
        raise
    try:
        results.finish_deployment(intent, True, f"{current} -> {previous}")
    except (StoreError, sqlite3.Error) as exc:
        raise StoreError(f"target {target}: {model} IS rolled back, now {previous} (previous {current}), but the "
                         f"results store {results.path} could not record it ({' '.join(str(exc).split())[:200]}). "
                         f"Fix: do not roll back again until the store is repaired; then run the same rollback "
                         f"once: it records this switch instead of switching back") from None
    return doc


def rollback_target(target: Target, workspace: Workspace, model: str | None = None, wait_s: float = 0.0
                    ) -> dict[str, Any]:
    """Connect, lock and `rollback` the model (the only one deployed when None); the device's status after."""
    check_store(workspace.db_path)  # the switch is recorded: a store that cannot take it stops us before it
    with connect(target) as device, device.locked(holder_name("rollback"), wait_s):
        if model is None:
            deployed = list(device.status()["models"])
            if len(deployed) != 1:
                raise SpecError(f"--model is needed: {target.name} has {len(deployed)} deployed models "
                                f"({', '.join(deployed) or 'none'}). Fix: add --model NAME")
            model = deployed[0]
        with ResultsStore(workspace.db_path) as results:
            return rollback(device, results, model)


def gc_target(target: Target, keep_days: float, dry_run: bool = False, wait_s: float = 0.0) -> dict[str, Any]:
    """Connect, lock, and remove from the device what no deployment uses and no run will miss."""
    if not keep_days >= 0 or keep_days == float("inf"):
        raise UsageError(f"--keep-days {keep_days}: must be a number of days >= 0. Fix: e.g. --keep-days 7")
    with connect(target) as device, device.locked(holder_name("gc"), wait_s):
        return device.gc(keep_days, dry_run)


def status(target: Target, model: str | None = None) -> dict[str, Any]:
    """What is deployed on the target (read only: no lock, nothing recorded)."""
    with connect(target) as device:
        return device.status(model)


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class TargetCheck:
    """What `targets check` found: the probe, what the target lacks, and the int8 default it picks."""

    target: str
    probe: dict[str, Any]
    warnings: list[str]
    int8_types: str
    int8_reason: str


def target_definition(target: Target) -> dict[str, Any]:
    """A target's fields, and for SSH where ~/.ssh/config resolves its host to."""
    doc: dict[str, Any] = {**target.__dict__, "runtimes": list(target.runtimes)}
    if target.transport == "ssh":
        from .transport.ssh import resolve

        ep = resolve(target.host, target.user, target.port)
        doc["resolved"] = {"hostname": ep.hostname, "port": ep.port, "user": ep.user,
                           "identity_files": ep.identity_files, "proxy_jump": ep.proxy_jump}
    return doc


def check_target(target: Target) -> TargetCheck:
    """Connect and probe, writing nothing but the agent."""
    from .compress.isa import int8_types

    with connect(target) as device:
        probe = device.probe()
    types, why = int8_types(probe.isa)
    return TargetCheck(target.name, probe.doc, capability_warnings(target, probe), types, why)


@dataclass(frozen=True)
class HostKeyOffer:
    """The host key a device presents, by the name known_hosts files use, and whether it is trusted."""

    target: str
    host: str
    key_type: str
    fingerprint: str
    key_base64: str
    trusted: bool

    @property
    def line(self) -> str:
        return f"{self.host} {self.key_type} {self.fingerprint}"


def offered_host_key(target: Target) -> HostKeyOffer:
    """Ask the device for its host key (nothing else is sent); a key other than the recorded one is refused."""
    from .transport.ssh import SSHTransport, fingerprint, load_known_hosts

    if target.transport != "ssh":
        raise SpecError(f"target {target.name} uses the {target.transport} transport: there is no host key to trust")
    transport = SSHTransport(target.name, target.host, target.user, target.port, target.connect_timeout)
    try:
        key = transport.host_key()
    finally:
        transport.close()
    host = transport.endpoint.known_hosts_name
    known = load_known_hosts().lookup(host) or {}
    if key.get_name() in known and known[key.get_name()] != key:
        raise TransportError(f"target {target.name}: {host} presents {fingerprint(key)} but a different "
                             f"{key.get_name()} key is recorded: possible interception. Fix: if the device was "
                             f"re-installed, remove the old key first (ssh-keygen -R '{host}' -f FILE) and run "
                             f"this again")
    return HostKeyOffer(target.name, host, key.get_name(), fingerprint(key), key.get_base64(),
                        trusted=key.get_name() in known)


def trust(offer: HostKeyOffer) -> Path:
    """Record the offered key in edgekit's known_hosts; returns that file."""
    from .transport.ssh import record_host_key

    return record_host_key(offer.host, offer.key_type, offer.key_base64)
