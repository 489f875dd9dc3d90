"""The latency protocol: cold start apart, warm up, then measure until both a minimum count and
a minimum duration are met. All samples are kept and returned."""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import time
from typing import Dict, List, Optional

from . import cpuload, emulation, memory
from . import power as power_mod
from . import thermal
from .latency import measure, measure_at_rate, warm_up
from .sampler import Sampler, measure_idle, summary
from .files import private_dirs, verified, write_replacing
from .protocol import AgentError, BenchRequest
from .runners import call_feeds, first_batch, generated_inputs, load_npz, make_runner
from .stats import noise_warning, summarize


@contextlib.contextmanager
def _inference_errors():
    """A runtime's exception during inference becomes the documented error kind."""
    try:
        yield
    except MemoryError:
        raise AgentError("out_of_memory", "the device ran out of memory during inference")
    except AgentError:
        raise
    except Exception as exc:
        raise AgentError("run_failed", "inference failed: {}".format(" ".join(str(exc).split())[:300]))


def _timed(runner, feeds) -> float:
    start = time.perf_counter()
    with _inference_errors():
        runner.run(feeds)
    return (time.perf_counter() - start) * 1000.0


def _described(feeds: Dict[str, object]) -> List[dict]:
    """The inputs a benchmark really ran on: the file's, whatever the artifact records."""
    return [{"name": k, "shape": list(v.shape), "dtype": str(v.dtype)} for k, v in feeds.items()]


def bench(req: BenchRequest) -> dict:
    """One variant's cold start, warmup, timed window, memory, power and thermal state."""
    path = verified(req.artifact, req.sha256)
    warnings: List[str] = []
    warmup_max_s = req.warmup_max_s if req.warmup_max_s is not None else max(2.0, 4 * req.warmup_s)
    cooled = None
    if req.cooldown_c is not None:
        cooled = thermal.cooldown(req.root, req.cooldown_c, req.cooldown_max_s)
        if not cooled["reached"]:
            warnings.append("cooldown to {} C not reached ({}); measuring anyway".format(
                req.cooldown_c, cooled.get("reason") or "{:.1f} C after {:.0f} s".format(cooled["end_c"], cooled["waited_s"])))
    before = thermal.snapshot(req.root)
    sensor, reasons = power_mod.discover(req.root, req.power)
    try:
        doc = _bench(req, path, warmup_max_s, warnings, sensor, reasons)
    finally:
        if sensor is not None:
            sensor.close()
    after = thermal.snapshot(req.root)
    govs = thermal.governors(req.root)
    doc["thermal"] = {"before": before, "after": after, "governors": govs, "cooldown": cooled}
    doc["warnings"].extend(thermal.warnings(before, after, govs))
    doc["settings"].update({"cooldown_c": req.cooldown_c, "warmup_max_s": warmup_max_s, "rate_hz": req.rate_hz})
    return doc


def _bench(req: BenchRequest, path: str, warmup_max_s: float, warnings: List[str], sensor, reasons) -> dict:
    runtime, sha256, inputs, warmup_s, threads = req.runtime, req.sha256, req.inputs, req.warmup_s, req.threads
    min_runs, min_s, max_s, max_runs, root = req.min_runs, req.min_s, req.max_s, req.max_runs, req.root
    power_interval_s, idle_s, rate_hz, provider = req.power_interval_s, req.idle_s, req.rate_hz, req.provider
    rss = {"start": memory.peak_rss_mb()}
    t = time.perf_counter()
    runner = make_runner(runtime, provider)
    import_ms = (time.perf_counter() - t) * 1000.0
    rss["before_load"] = memory.peak_rss_mb()  # the runtime's own libraries are in from here on
    nvmap_before = memory.nvmap_used_mb(root)
    t = time.perf_counter()
    try:
        runner.load(path, threads)
    except MemoryError:
        raise AgentError("out_of_memory", "the device ran out of memory loading the model")
    load_ms = (time.perf_counter() - t) * 1000.0
    rss["after_load"] = memory.peak_rss_mb()

    specs = runner.input_specs()
    if not inputs and (specs is None or any(spec["shape"] is None for spec in specs)):
        raise AgentError("bad_request", "the artifact does not record its input shapes: the host passes --inputs; "
                         "run the agent with --inputs FILE.npz")
    feeds = first_batch(load_npz(inputs)) if inputs else generated_inputs(specs)
    first_ms = _timed(runner, feeds)

    warm = warm_up(lambda: _timed(runner, feeds), warmup_s, max(warmup_max_s, warmup_s), first_ms)
    if not warm["steady"]:
        warnings.append("latency did not settle within the {:.0f} s warmup bound (window medians {}): "
                        "the device may be throttling or busy".format(
                            max(warmup_max_s, warmup_s), ", ".join("{:.3g}".format(m) for m in warm["medians_ms"])))

    idle = measure_idle(sensor, idle_s, power_interval_s) if sensor is not None and idle_s > 0 else None
    sampler = Sampler(sensor, power_interval_s).start() if sensor is not None else None
    rate = None
    call = functools.partial(_timed, runner, feeds)
    counters = cpuload.start()
    start = time.perf_counter()
    if rate_hz:
        samples, rate = measure_at_rate(call, rate_hz, min_runs, min_s, max_s, max_runs)
    else:
        with _inference_errors():
            samples = measure(runner.bind(feeds), min_runs, min_s, max_s, max_runs)
    measured_s = time.perf_counter() - start
    load = cpuload.finish(counters)
    window = sampler.stop() if sampler is not None else None
    if sensor is None:
        power_doc = {"available": False, "reason": "; ".join(reasons)}
    else:
        power_doc = summary(sensor, window, idle, len(samples), sampler.interval_s)
        if power_doc.get("available") and power_doc["samples"] < 10:
            warnings.append("only {} power samples in the window: raise min_s for a steadier energy figure"
                            .format(power_doc["samples"]))
        warnings.extend(n for n in power_doc.get("notes", []) if "unplug" in n)
    busy = cpuload.warning(load)
    if busy:
        warnings.append(busy)
    if len(samples) < min_runs:
        warnings.append("stopped at max_s={}s after {} runs, fewer than min_runs={}".format(max_s, len(samples), min_runs))
    rss["after_run"] = memory.peak_rss_mb()
    mem: Dict[str, object] = {"peak_rss_mb_" + k: v for k, v in rss.items()}
    mem["peak_rss_mb"] = rss["after_run"]
    if nvmap_before is not None:  # Jetson unified memory: GPU buffers do not show in RSS
        mem["nvmap_used_mb_before_load"] = nvmap_before
        mem["nvmap_used_mb_after_run"] = memory.nvmap_used_mb(root)
    if rss["before_load"] is not None and rss["after_run"] is not None:
        mem["model_rss_mb"] = rss["after_run"] - rss["before_load"]

    emulated = emulation.detect()
    if emulated.get("emulated"):
        warnings.append("emulated: not a latency figure ({})".format(emulated["program"]))
    stats = summarize(samples)
    noisy = noise_warning(stats)
    if noisy:
        warnings.append(noisy)
    return {
        "command": "bench",
        "runtime": runner.describe(),
        "artifact": {"path": path, "sha256": sha256},
        "settings": {"warmup_s": warmup_s, "min_runs": min_runs, "min_s": min_s, "max_s": max_s,
                     "threads": threads, "inputs": "file" if inputs else "generated",
                     "power_interval_s": power_interval_s, "idle_s": idle_s},
        "inputs": _described(feeds),
        "model_inputs": specs,
        "cold": {"import_ms": import_ms, "load_ms": load_ms, "first_inference_ms": first_ms},
        "warmup": warm,
        "window": {"runs": len(samples), "seconds": measured_s},
        "latency": stats,
        "rate": rate,
        "samples_ms": samples,
        "memory": mem,
        "power": power_doc,
        "load": load,
        "emulation": emulated,
        "warnings": warnings,
    }


def run(runtime: str, artifact: str, sha256: Optional[str], inputs: str, outputs: str, threads: int = 0,
        provider: str = "auto") -> dict:
    """Outputs for supplied inputs: each array in `inputs` holds batches on a leading axis."""
    import numpy as np

    path = verified(artifact, sha256)
    arrays = load_npz(inputs)
    runner = make_runner(runtime, provider)
    runner.load(path, threads)
    count = {len(v) for v in arrays.values()}
    if len(count) != 1:
        raise AgentError("bad_request", "inputs hold different batch counts: {}".format(sorted(count)))
    results: List[list] = []
    for i in range(count.pop()):
        feeds = call_feeds(arrays, i)
        try:
            outs = runner.run(feeds)
        except Exception as exc:
            raise AgentError("run_failed", "inference failed on batch {}: {}".format(i, " ".join(str(exc).split())[:300]))
        results.append(outs)
    stacked = {}
    for j in range(len(results[0]) if results else 0):
        shapes = sorted({tuple(np.shape(r[j])) for r in results})
        if len(shapes) > 1:
            raise AgentError("run_failed", "output {} changes shape between batches ({}): send batches of one "
                             "shape".format(j, ", ".join(map(str, shapes))))
        stacked["output_{}".format(j)] = np.stack([r[j] for r in results])
    try:  # a fresh file renamed into place: a link left at `outputs` is replaced, never written through
        private_dirs(os.path.dirname(os.path.abspath(os.path.expanduser(outputs))))
        outputs = write_replacing(outputs, lambda fh: np.savez(fh, **stacked))
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise AgentError("disk_full", "no space left on the device for {}".format(outputs))
        raise AgentError("bad_request", "cannot write {}: {}".format(outputs, exc.strerror))
    return {"command": "run", "batches": len(results), "outputs": outputs, "runtime": runner.describe(),
            "emulation": emulation.detect()}
