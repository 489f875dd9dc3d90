#!/usr/bin/env python3
"""Neuron merging against structured pruning at the same ratio: accuracy (or parity), params, MACs, latency.

The claim under test: with no fine-tuning, `merge:R` keeps clearly more accuracy than `prune:R`
at the same size and speed (Kim et al., "Neuron Merging: Compensating for Pruned Neurons",
NeurIPS 2020). Each ratio gets `prune:R`, `merge:R,criterion=l2` (the very channels prune removes,
so the two differ only in the compensation) and `merge:R` (criterion=cosine: the channels merging
reproduces best go), once without fine-tuning and once with the same small budget for all.

Every variant is built through the real compressor and judged end to end against the original
model: MNIST (`edgekit/examples/mnist.py`) and the bundled 8x8 digits CNN by accuracy on their
held-out splits; a MobileNetV2-shaped
network with random weights (no labels) by top-1 agreement and cosine with the original on crops
of scikit-learn's two real sample photos, as `bench_compress.py` does. Latency: ONNX Runtime on
this host, variants interleaved in rounds, ratio to the original's `onnx:fp32` in the same round.
Writes its own section of BENCHMARKS.md.

    .venv/bin/python scripts/bench_merge.py [--epochs 2] [--rounds 20] [--only digits|mnist|mobilenet]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from benchlib import OtherLoad, command_line, host_description, publish  # noqa: E402

BASELINE = "onnx:fp32"
RATIOS = (0.3, 0.5)


def recipes(ratio: float, epochs: int) -> list[str]:
    tune = f",epochs={epochs}" if epochs else ",epochs=0"
    out = [f"prune:{ratio}{tune}", f"merge:{ratio},criterion=l2{tune}", f"merge:{ratio}{tune}"]
    return [r.replace(",epochs=0", "") if r.startswith("merge") else r for r in out]


def mnv2():
    """bench_compress's MobileNetV2, seeded before its layers are built so every run gets the same weights."""
    import torch

    from bench_compress import mobilenet_v2

    torch.manual_seed(0)
    return mobilenet_v2()


def mnv2_calibration():
    from bench_compress import mnv2_calibration as cal

    return cal()


def mnv2_evaluation():
    from bench_compress import mnv2_evaluation as ev

    return ev()


# --------------------------------------------------------------------------- timing


def _session(path: str, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = threads, 1, 3
    return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])


def latency_ratios(paths: dict[str, str], x: np.ndarray, threads: int, rounds: int, runs: int) -> dict[str, dict]:
    """Median ms per variant and the median over rounds of (variant / baseline in the same round);
    the order of the variants rotates from round to round."""
    sessions = {r: _session(p, threads) for r, p in paths.items()}
    name = next(iter(sessions.values())).get_inputs()[0].name
    feeds = [{name: x[i % len(x):i % len(x) + 1]} for i in range(runs)]
    for s in sessions.values():
        for f in feeds[:5]:
            s.run(None, f)
    keys = list(sessions)
    times: dict[str, list[float]] = {r: [] for r in keys}
    for i in range(rounds):
        for r in keys[i % len(keys):] + keys[:i % len(keys)]:
            samples = []
            for f in feeds:
                t = time.perf_counter()
                sessions[r].run(None, f)
                samples.append(time.perf_counter() - t)
            times[r].append(statistics.median(samples))
    base = times[BASELINE]
    return {r: {"ms": statistics.median(t) * 1e3, "ratio": statistics.median(a / b for a, b in zip(t, base))}
            for r, t in times.items()}


# --------------------------------------------------------------------------- one model


def _pair_errors(step: dict) -> tuple[float | None, float | None]:
    """Median over the merged layers of the consumer-output error: merged, and pruning's for the same channels."""
    merged = [(r["compensation_error"], r["error_if_pruned"]) for r in step.get("layers", [])
              if r.get("merged") and r.get("compensation_error") is not None]
    if not merged:
        return None, None
    return statistics.median(m for m, _ in merged), statistics.median(p for _, p in merged)


def bench(label: str, spec, all_recipes: list[str], settings, args, home: Path) -> tuple[list[dict], dict]:
    from edgekit.pipeline import Workspace, compress, prepare

    t0 = time.time()
    ctx = prepare(spec)
    built = {}
    for r in [BASELINE, *all_recipes]:
        t = time.time()
        (v, _), = compress(ctx, (r,), Workspace(home, home / "results.db"), techniques=settings)
        if v.status != "ok":
            print(f"{label} {r}: FAILED {v.error}", file=sys.stderr)
            continue
        built[r] = (v, time.time() - t)
        print(f"{label}: built {r} in {time.time() - t:.0f}s", file=sys.stderr)
    x = ctx.evaluation.inputs["input"]
    with OtherLoad() as load:
        lat = latency_ratios({r: v.path for r, (v, _) in built.items()}, x, args.threads, args.rounds, args.runs)
    rows = []
    for r, (v, seconds) in built.items():
        step = v.techniques[0] if v.techniques else None
        merged_err, pruned_err = _pair_errors(step) if step else (None, None)
        layers = step.get("layers", []) if step else []
        rows.append({
            "recipe": r, "metrics": v.metrics, "build_s": seconds,
            "params": step["after"]["params"] if step else None, "macs": step["after"]["macs"] if step else None,
            "before": (step["before"]["params"], step["before"]["macs"]) if step else None,
            "ms": lat[r]["ms"], "ratio": lat[r]["ratio"],
            "merged_layers": (sum(bool(x.get("merged")) for x in layers), len(layers)) if r.startswith("merge") else None,
            "pair_error": (merged_err, pruned_err),
        })
    ref = next((row["before"] for row in rows if row["before"]), (None, None))
    for row in rows:
        if row["params"] is None:
            row["params"], row["macs"] = ref
    info = {"seconds": time.time() - t0, "load": load.describe(), "eval": len(x),
            "reference_accuracy": built[BASELINE][0].metrics.get("accuracy") if BASELINE in built else None}
    return rows, info


def _int(n) -> str:
    return "-" if n is None else f"{n:,}"


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def table(rows: list[dict], labelled: bool) -> list[str]:
    quality = "accuracy % (drop pts)" if labelled else "top-1 agree % / cosine"
    lines = [f"| recipe | {quality} | params | MACs | latency ms | ratio vs fp32 | merged layers | "
             f"pair error merged / pruned (median) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        m = row["metrics"]
        if labelled:
            q = f"{_pct(m.get('accuracy'))} ({100 * m.get('accuracy_drop', 0):+.1f})"
        else:
            q = f"{_pct(m.get('top1_agreement'))} / {m.get('mean_cosine', float('nan')):.4f}"
        merged = "-" if row["merged_layers"] is None else f"{row['merged_layers'][0]} of {row['merged_layers'][1]}"
        me, pe = row["pair_error"]
        err = "-" if me is None else f"{me:.3f} / {pe:.3f}"
        lines.append(f"| `{row['recipe']}` | {q} | {_int(row['params'])} | {_int(row['macs'])} | {row['ms']:.3f} | "
                     f"{row['ratio']:.2f} | {merged} | {err} |")
    return lines


def _split(recipe: str) -> tuple[str, float, int]:
    """(method, ratio, epochs) of a row: method is prune, merge-l2 or merge-cosine."""
    head = recipe.split("+")[0]
    name, _, rest = head.partition(":")
    ratio, *opts = rest.split(",")
    kv = dict(o.split("=") for o in opts)
    method = name if name == "prune" else f"merge-{kv.get('criterion', 'cosine')}"
    return method, float(ratio), int(kv.get("epochs", 0))


def comparison(rows: list[dict], labelled: bool) -> tuple[list[str], list[str]]:
    """A table of prune against both merges per ratio and budget, and the measured answer to the claim."""
    key = "accuracy" if labelled else "mean_cosine"
    cells: dict[tuple[float, int], dict[str, float]] = {}
    for row in rows:
        if row["recipe"] == BASELINE or row["metrics"].get(key) is None:
            continue
        method, ratio, epochs = _split(row["recipe"])
        cells.setdefault((ratio, epochs), {})[method] = row["metrics"][key]
    show = (lambda v: f"{100 * v:.1f}") if labelled else (lambda v: f"{v:.4f}")
    delta = (lambda d: f"{100 * d:+.1f}") if labelled else (lambda d: f"{d:+.4f}")
    unit = "accuracy %" if labelled else "cosine"
    lines = [f"| ratio | fine-tuning | prune ({unit}) | merge, criterion=l2 (vs prune) | merge, criterion=cosine (vs prune) |",
             "|---:|---|---:|---:|---:|"]
    gains: dict[bool, list[float]] = {False: [], True: []}
    for (ratio, epochs), c in sorted(cells.items()):
        if "prune" not in c:
            continue
        out = [f"{ratio:g}", "none" if not epochs else f"{epochs} epochs", show(c["prune"])]
        for method in ("merge-l2", "merge-cosine"):
            if method in c:
                out.append(f"{show(c[method])} ({delta(c[method] - c['prune'])})")
                gains[bool(epochs)].append(c[method] - c["prune"])
            else:
                out.append("-")
        lines.append("| " + " | ".join(out) + " |")
    claim = []
    for tuned, label in ((False, "before fine-tuning"), (True, "after the same fine-tuning")):
        g = gains[tuned]
        if g:
            claim.append(f"{label}, merge minus prune ranges {delta(min(g))} to {delta(max(g))}"
                         f"{' points' if labelled else ' cosine'} over {len(g)} comparisons "
                         f"({sum(x > 0 for x in g)} in merge's favour)")
    return lines, claim


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=2, help="the fine-tuning budget every fine-tuned row gets")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--rounds", type=int, default=20, help="interleaved latency rounds")
    ap.add_argument("--runs", type=int, default=50, help="inferences per variant per round (MNIST)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", choices=("digits", "mnist", "mobilenet"))
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    sys.modules.setdefault("bench_merge", sys.modules[__name__])

    from edgekit.examples import digits, mnist
    from edgekit.settings import InputSpec, ModelSpec, TechniqueSettings

    t0 = time.time()
    settings = TechniqueSettings(lr=args.lr)
    sections = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "digits"):
            digit_recipes = [f"{r}+onnx:fp32" for ratio in RATIOS for e in (0, args.epochs) for r in recipes(ratio, e)]
            rows, info = bench("digits", digits.spec(), digit_recipes, settings, args, Path(tmp) / "digits")
            sections.append(("digits CNN (`edgekit/examples/digits.py`, 8x8 scikit-learn digits)", rows, info, True,
                             args.runs))
        if args.only in (None, "mnist"):
            mnist_recipes = [f"{r}+onnx:fp32" for ratio in RATIOS for e in (0, args.epochs) for r in recipes(ratio, e)]
            rows, info = bench("MNIST", mnist.spec(), mnist_recipes, settings, args, Path(tmp) / "mnist")
            sections.append(("MNIST CNN (`edgekit/examples/mnist.py`)", rows, info, True, args.runs))
        if args.only in (None, "mobilenet"):
            spec = ModelSpec(name="mobilenet-v2", inputs=(InputSpec("input", (1, 3, 224, 224)),),
                             factory="bench_merge:mnv2", calibration="bench_merge:mnv2_calibration",
                             evaluation="bench_merge:mnv2_evaluation", task="classification")
            runs = args.runs
            args.runs = max(5, args.runs // 10)  # 224x224: ~100x the MNIST net's work per inference
            rows, info = bench("MobileNetV2", spec, [f"{r}+onnx:fp32" for ratio in RATIOS for r in recipes(ratio, 0)],
                               settings, args, Path(tmp) / "mnv2")
            sections.append(("MobileNetV2-shaped, 224x224, random weights (`bench_compress.py`'s, seeded)", rows,
                             info, False, args.runs))
            args.runs = runs
    lines = [
        "## Neuron merging against pruning (`scripts/bench_merge.py`)",
        "",
        f"Command: `{command_line()}` · {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} · took "
        f"{time.time() - t0:.0f} s. Host (shared): {host_description(runtimes=('onnxruntime', 'torch'))}.",
        "",
        "Per ratio: `prune:R` (torch-pruning, l2 group importance), `merge:R,criterion=l2` (the same channels, each "
        "folded into its most similar kept channel before it goes), `merge:R` (criterion=cosine: the channels merging "
        "reproduces best go). Same ratio, same layers shrunk by the same counts: params, MACs and latency are equal "
        f"by construction and measured anyway. Fine-tuned rows: {args.epochs} epochs (Adam, lr {args.lr}, batch 64, "
        "no augmentation) on the example's `[data] training` split (disjoint from evaluation), the same for all three. Latency: ONNX Runtime "
        f"{args.threads} thread(s), batch 1, {args.rounds} interleaved rounds, ratio = median over rounds of (variant "
        "median / `onnx:fp32` median of the original in the same round). 'pair error': per merged layer, the relative "
        "L2 change of its consumer layers' output on 8 calibration samples, merged against pruning the same channels "
        "(the step's own report, `variant.json`), median over the merged layers.",
    ]
    for title, rows, info, labelled, runs in sections:
        lines += ["", f"### {title}", ""]
        if labelled:
            lines.append(f"Accuracy end to end through the exported ONNX on {info['eval']} held-out samples; the "
                         f"original scores {100 * info['reference_accuracy']:.1f} %. {runs} inferences per round. "
                         f"While timing, {info['load']}. Built and timed in {info['seconds']:.0f} s.")
        else:
            lines.append(f"No labels: top-1 agreement and mean cosine with the original on {info['eval']} crops of "
                         f"scikit-learn's sample photos (a random network's logits lie close together, so top-1 flips "
                         f"easily; the cosine is the steadier figure). No fine-tuned rows: the weights are random, there is no "
                         f"labelled split, and training would re-estimate BatchNorm statistics from two photos, so "
                         f"'recovery' would mean nothing. Most of this network's channels sit in expand -> depthwise "
                         f"-> project blocks, where the depthwise convolution filters each channel with its own "
                         f"kernel: those layers fall back to pruning (the 'merged layers' column), only the residual "
                         f"streams and the last 1x1 convolution merge. {runs} inferences per round. While timing, "
                         f"{info['load']}. Built and timed in {info['seconds']:.0f} s.")
        summary, claim = comparison(rows, labelled)
        lines += ["", *table(rows, labelled), "", *summary, "", "Measured: " + "; ".join(claim) + "."]
    markdown = "\n".join(lines)
    publish("merge", markdown, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
