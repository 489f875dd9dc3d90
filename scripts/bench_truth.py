#!/usr/bin/env python3
"""Do edgekit's figures tell the truth? Two checks through the real CLI on the `local` target.

a) Latency at declared shapes: for ONNX models with dynamic H/W, `edgekit profile` at a declared
   size against a bare onnxruntime loop on the same file, same input, same thread count, each in
   a fresh process, interleaved A B A B. Until the agent timed real samples at the declared
   shapes, every dynamic dim was fed as 1; the bare loop also times that old input, to show how
   far off the old figure was.
b) Ranking stability: the same profile run again and again (each measuring anew); how often the
   chosen variant changes between runs that were sure of their choice (its confidence interval
   apart from the runner-up's).

Writes the `truth` section of BENCHMARKS.md.

    .venv/bin/python scripts/bench_truth.py [--rounds 3] [--sizes 64,160,320] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests" / "models"))

from benchlib import OtherLoad, command_line, host_description, publish  # noqa: E402

PROFILE = """
[build]
recipes = {recipes}
[bench]
warmup_s = {warmup_s}
min_runs = {min_runs}
min_s = {min_s}
max_s = 20.0
threads = {threads}
parity_samples = {parity}
[select]
objective = "p50_ms"
"""

# A loop with nothing of edgekit in it: ORT defaults but the thread count, the edgekit agent's
# stopping rule (min_runs and min_s both met), median. Then the same at every dynamic dim = 1,
# the input edgekit fed before it timed real samples at the declared shapes.
BARE = r"""
import json, sys, time
import numpy as np, onnxruntime as ort
path, npz, threads, warmup_s, min_runs, min_s = sys.argv[1], sys.argv[2], int(sys.argv[3]), *map(float, sys.argv[4:7])
opts = ort.SessionOptions(); opts.log_severity_level = 3
opts.intra_op_num_threads = threads; opts.inter_op_num_threads = 1
s = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
i = s.get_inputs()[0]
declared = np.load(npz)[i.name][:1]
ones = np.zeros([d if isinstance(d, int) else 1 for d in i.shape], dtype=declared.dtype) + declared.mean()

def median_ms(x):
    feeds = {i.name: x}
    end = time.perf_counter() + warmup_s
    while time.perf_counter() < end:
        s.run(None, feeds)
    t, start = [], time.perf_counter()
    while len(t) < min_runs or time.perf_counter() - start < min_s:
        a = time.perf_counter(); s.run(None, feeds); t.append((time.perf_counter() - a) * 1000)
    return float(np.median(t))

print(json.dumps({"declared_ms": median_ms(declared), "ones_ms": median_ms(ones), "shape": list(declared.shape)}))
"""


def edgekit(*args: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "edgekit", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"edgekit {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return proc


def measure_again_flags(env: dict, cwd: Path) -> list[str]:
    """The flags that make `edgekit profile` measure instead of reusing the store: `--force`
    today; if reuse becomes opt-in (`--reuse`) and `--force` goes, measuring is the default."""
    help_text = edgekit("profile", "--help", cwd=cwd, env=env).stdout
    return ["--force"] if "--force" in help_text else []


def profile_doc(cwd: Path, env: dict, profile: str, spec: Optional[str], again: list[str]) -> dict:
    args = ["profile", "--target", "local", "--profile", profile, "--json", *again]
    if spec:
        args += ["--spec", spec]
    return json.loads(edgekit(*args, cwd=cwd, env=env).stdout)


# --------------------------------------------------------------------------- a) latency at declared shapes

MODELS = {  # name -> (builder, input name, what it is)
    "dynamic_conv_onnx": ("shapes:dynamic_conv_onnx", "image", "3 convs, dynamic H/W, output at input size"),
    "constant_weights_onnx": ("exported:constant_weights_onnx", "input",
                              "paddle2onnx-like: opset 12, Constant-node weights, dynamic H/W"),
}


def build_model(ref: str, path: Path) -> Path:
    module, _, fn = ref.partition(":")
    return getattr(__import__(module), fn)(path)


def latency_truth(project: Path, env: dict, args, again: list[str]) -> list[dict]:
    import hashlib

    import numpy as np
    from shapes import photos

    (project / "profiles" / "truth-fp32.toml").write_text(PROFILE.format(
        recipes='["onnx:fp32"]', warmup_s=args.warmup_s, min_runs=args.min_runs, min_s=args.min_s,
        threads=args.threads, parity=4))
    cases = []
    for name, (ref, input_name, _) in MODELS.items():
        model = build_model(ref, project / f"{name}.onnx")
        for size in args.sizes:
            npz = project / f"{name}-{size}.npz"
            np.savez(npz, **{input_name: photos(8, size)})
            spec = project / f"{name}-{size}.toml"
            spec.write_text(f'[model]\nname = "{name}-{size}"\npath = "{model.name}"\n'
                            f'inputs = [{{ name = "{input_name}", shape = [1, 3, {size}, {size}] }}]\n'
                            f'[data]\nevaluation = "{npz.name}"\n')
            cases.append({"model": name, "size": size, "path": model, "npz": npz, "spec": spec.name,
                          "sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
                          "edgekit": [], "bare": [], "ones": [], "ratios": []})
    for r in range(args.rounds):
        for case in cases:
            def ek() -> None:
                doc = profile_doc(project, env, "truth-fp32", case["spec"], again)
                row = next(v for v in doc["variants"] if v["recipe"] == "onnx:fp32")
                if row.get("status") == "rejected" or not row.get("latency"):
                    raise SystemExit(f"{case['spec']}: onnx:fp32 not measured: {row.get('reason')}")
                case["edgekit"].append(row["latency"]["p50_ms"])
                case["timed"] = (row.get("inputs"), row.get("inputs_source"), row.get("sha256"))

            def bare() -> None:
                proc = subprocess.run([sys.executable, "-c", BARE, str(case["path"]), str(case["npz"]),
                                       str(args.threads), str(args.warmup_s), str(args.min_runs), str(args.min_s)],
                                      capture_output=True, text=True, check=True, env=env)
                doc = json.loads(proc.stdout)
                case["bare"].append(doc["declared_ms"])
                case["ones"].append(doc["ones_ms"])

            for step in ((ek, bare) if r % 2 == 0 else (bare, ek)):  # alternate which goes first
                step()
            case["ratios"].append(case["edgekit"][-1] / case["bare"][-1])
            print(f"round {r + 1} {case['model']} {case['size']}: edgekit {case['edgekit'][-1]:.3f} ms, bare "
                  f"{case['bare'][-1]:.3f} ms, ratio {case['ratios'][-1]:.3f}; all-1 dims {case['ones'][-1]:.4f} ms",
                  file=sys.stderr, flush=True)
    return cases


def latency_table(cases: list[dict]) -> list[str]:
    lines = ["| model | declared input | edgekit timed (source) | edgekit p50 ms | bare p50 ms | ratio (median) | "
             "ratio per round | old all-1 input: bare p50 ms (x too low) |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for c in cases:
        inputs, source, sha = c["timed"]
        timed = ", ".join(f"{i['name']} {'x'.join(map(str, i['shape']))} {i['dtype']}" for i in inputs or ()) or "?"
        same = sha == c["sha256"]  # edgekit's onnx:fp32 of an .onnx is the file itself: one model timed
        ones, bare = statistics.median(c["ones"]), statistics.median(c["bare"])
        lines.append(
            f"| `{c['model']}` | 1x3x{c['size']}x{c['size']} | {timed} ({source}){'' if same else ', ARTIFACT DIFFERS'} | "
            f"{statistics.median(c['edgekit']):.3f} | {bare:.3f} | {statistics.median(c['ratios']):.3f} | "
            f"{' '.join(f'{x:.2f}' for x in c['ratios'])} | {ones:.4f} ({bare / ones:.0f}x) |")
    return lines


# --------------------------------------------------------------------------- b) ranking stability

def _pair(value) -> Optional[tuple[float, float]]:
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
        return float(value[0]), float(value[1])
    return None


def confidence_interval(row: dict) -> Optional[tuple[str, tuple[float, float]]]:
    """(kind, (lo, hi)) of one `edgekit profile --json` variant row, on the scale the ranking uses.

    Today: the CI of the median, `latency.ci95_median_ms`. Once the ranking times variants in
    interleaved rounds, a row may carry a paired ratio (`paired` with `ratio` and `ci95`, in the
    row, its `latency` or its `measurement`); that is the better interval, so it wins when present.
    Paired ratios are taken to share one reference across a run's rows, so two rows' intervals
    compare directly. The one place to adapt if those fields move."""
    for holder in (row, row.get("measurement") or {}, row.get("latency") or {}):
        paired = holder.get("paired") if isinstance(holder, dict) else None
        if isinstance(paired, dict) and _pair(paired.get("ci95")):
            return "paired", _pair(paired["ci95"])
    ci = _pair((row.get("latency") or {}).get("ci95_median_ms"))
    return ("median", ci) if ci else None


def _apart(a: dict, b: dict) -> Optional[bool]:
    """Whether two rows' intervals are disjoint; None when either lacks one. Mixed kinds fall back
    to the median CIs so both sides are on one scale."""
    ia, ib = confidence_interval(a), confidence_interval(b)
    if ia and ib and ia[0] != ib[0]:
        ia = ("median", _pair((a.get("latency") or {}).get("ci95_median_ms")))
        ib = ("median", _pair((b.get("latency") or {}).get("ci95_median_ms")))
    if not (ia and ib and ia[1] and ib[1]):
        return None
    (lo_a, hi_a), (lo_b, hi_b) = ia[1], ib[1]
    return hi_a < lo_b or hi_b < lo_a


def decision(doc: dict) -> dict:
    """The chosen recipe of one profile run, its runner-up and whether the run was sure of it."""
    rows = doc["variants"]
    objective = doc.get("objective") or "p50_ms"
    chosen = next((r for r in rows if r.get("status") == "chosen"), None)

    def value(r: dict) -> float:
        return (r.get("latency") or {}).get(objective, float("inf"))

    others = sorted((r for r in rows if r.get("status") == "eligible" and r is not chosen), key=value)
    runner = others[0] if others else None
    sure = _apart(chosen, runner) if chosen and runner else None
    kind = (confidence_interval(chosen) or ("none",))[0] if chosen else "none"
    return {"chosen": chosen["recipe"] if chosen else None, "runner_up": runner["recipe"] if runner else None,
            "sure": bool(sure), "kind": kind,
            "chosen_ms": value(chosen) if chosen else None, "runner_ms": value(runner) if runner else None,
            "reason": chosen.get("reason") if chosen else None,
            "p50": {r["recipe"]: (r.get("latency") or {}).get("p50_ms") for r in rows}}


def ranking_stability(project: Path, env: dict, args, again: list[str]) -> list[dict]:
    (project / "profiles" / "truth-rank.toml").write_text(PROFILE.format(
        recipes=json.dumps(args.recipes), warmup_s=args.warmup_s, min_runs=args.min_runs, min_s=args.rank_min_s,
        threads=args.threads, parity=8))
    runs = []
    for i in range(args.runs):
        d = decision(profile_doc(project, env, "truth-rank", None, again))
        runs.append(d)
        print(f"ranking run {i + 1}: chosen {d['chosen']} ({d['chosen_ms']:.4f} ms), runner-up {d['runner_up']} "
              f"({d['runner_ms']:.4f} ms), CIs {'apart' if d['sure'] else 'overlap'}", file=sys.stderr, flush=True)
    return runs


def flips(runs: list[dict]) -> int:
    """Changes of the chosen recipe between consecutive runs that were each sure of their choice."""
    sure = [r["chosen"] for r in runs if r["sure"]]
    return sum(a != b for a, b in zip(sure, sure[1:]))


def ranking_table(runs: list[dict], recipes: list[str]) -> list[str]:
    lines = ["| run | chosen | runner-up | chosen / runner-up p50 | CIs | " + " | ".join(f"`{r}` p50 ms" for r in recipes)
             + " |", "|---:|---|---|---:|---|" + "---:|" * len(recipes)]
    for i, r in enumerate(runs, 1):
        ratio = f"{r['chosen_ms'] / r['runner_ms']:.3f}" if r["chosen_ms"] and r["runner_ms"] else "-"
        cells = " | ".join(f"{r['p50'][x]:.4f}" if r["p50"].get(x) is not None else "-" for x in recipes)
        lines.append(f"| {i} | `{r['chosen']}` | `{r['runner_up']}` | {ratio} | "
                     f"{'apart' if r['sure'] else 'overlap'} ({r['kind']}) | {cells} |")
    return lines


# --------------------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="A B rounds per model and size (latency truth)")
    ap.add_argument("--sizes", default="64,160,320", help="declared H = W sizes, comma-separated")
    ap.add_argument("--runs", type=int, default=5, help="repeated profile runs (ranking stability)")
    ap.add_argument("--recipes", default="onnx:fp32,onnx:fp16,onnx:int8-static,tflite:fp32",
                    help="recipes ranked on the bundled digits example, comma-separated")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warmup-s", type=float, default=0.3)
    ap.add_argument("--min-runs", type=int, default=30)
    ap.add_argument("--min-s", type=float, default=0.5, help="bench time per variant (latency truth)")
    ap.add_argument("--rank-min-s", type=float, default=0.5, help="bench time per variant (ranking stability)")
    ap.add_argument("--skip", choices=("latency", "ranking"), help="leave one part out (a quick look)")
    ap.add_argument("--no-write", action="store_true", help="print the section, leave BENCHMARKS.md alone")
    args = ap.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    args.recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    command = command_line()

    scratch = Path(tempfile.mkdtemp(prefix="edgekit-bench-truth-"))
    env = dict(os.environ, HOME=str(scratch / "home"), XDG_CONFIG_HOME=str(scratch / "config"),
               EDGEKIT_CACHE=os.environ.get("EDGEKIT_CACHE", str(Path.home() / ".cache" / "edgekit")),
               PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    (scratch / "home").mkdir()
    cases, runs = [], []
    try:
        for part in ("latency", "ranking"):
            (scratch / part / "profiles").mkdir(parents=True)
        again = measure_again_flags(env, scratch)
        with OtherLoad() as load_a:
            if args.skip != "latency":
                cases = latency_truth(scratch / "latency", env, args, again)
        with OtherLoad() as load_b:
            if args.skip != "ranking":
                runs = ranking_stability(scratch / "ranking", env, args, again)
    finally:
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)

    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    host = host_description(runtimes=("onnxruntime", "tflite"))
    lines = ["## Do edgekit's figures tell the truth? (`scripts/bench_truth.py`)", "",
             f"Command: `{command}` · {date}. Host: {host}.", ""]
    if cases:
        ratios = [statistics.median(c["ratios"]) for c in cases]
        lines += [
            "### Latency at declared shapes",
            "",
            f"`edgekit profile --target local {' '.join(again)} --json` (profile: `onnx:fp32` only, {args.threads} "
            f"thread(s), warmup {args.warmup_s} s, at least {args.min_runs} runs and {args.min_s} s) in a temporary "
            f"project whose edgekit.toml declares the size, against a bare onnxruntime loop on the same file (same "
            f"input sample, same threads, same stopping rule), each in a fresh process, interleaved A B / B A over "
            f"{args.rounds} rounds; medians over the rounds. Models from tests/models: "
            + "; ".join(f"`{n}` ({d})" for n, (_, _, d) in MODELS.items())
            + f". Ratio = edgekit p50 / bare p50 (goal 0.95-1.05). While it ran, {load_a.describe()}.",
            "",
            *latency_table(cases),
            "",
            f"Ratios {min(ratios):.3f}-{max(ratios):.3f} over {len(cases)} model/size cases; "
            f"{sum(0.95 <= x <= 1.05 for x in ratios)} of {len(cases)} within the goal; "
            f"{sum(0.95 <= x <= 1.05 for c in cases for x in c['ratios'])} of {sum(len(c['ratios']) for c in cases)} "
            f"single rounds. The p50 columns are medians over the rounds taken apart, the ratio is paired within a "
            f"round: a round where other work landed on one side only (a shared core doubles a 1-thread latency) moves "
            f"one column's median but only that round's ratio. The last column is the figure "
            f"edgekit reported before it timed real samples at the declared shapes (it fed every dynamic dim as 1): "
            f"the same bare loop on a 1x3x1x1 input.",
            "",
        ]
    if runs:
        n_sure = sum(r["sure"] for r in runs)
        lines += [
            "### Ranking stability",
            "",
            f"The bundled digits example profiled {args.runs} times on `local` with "
            + ", ".join(f"`{r}`" for r in args.recipes)
            + f" (objective p50, {args.threads} thread(s), at least {args.min_runs} runs and {args.rank_min_s} s per "
            f"variant, `{' '.join(again) or 'measuring each run'}` so every run measures). A run is sure of its choice "
            f"when the chosen variant's 95% interval is apart from the runner-up's (median CI today; a paired-ratio CI "
            f"where rows carry one). While it ran, {load_b.describe()}.",
            "",
            *ranking_table(runs, args.recipes),
            "",
            f"Sure runs: {n_sure} of {len(runs)}. Chosen variant changed between sure runs: {flips(runs)} time(s) "
            f"(goal 0). Chosen per run: " + ", ".join(f"`{r['chosen']}`" for r in runs) + ".",
        ]
    markdown = "\n".join(lines)
    publish("truth", markdown, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
