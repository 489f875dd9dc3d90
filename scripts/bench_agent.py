#!/usr/bin/env python3
"""Harness overhead of the agent: its measured median against a bare `session.run` loop on the
same artifact, both in fresh processes, interleaved A B A B in one run; and the CV of the median
over the repeated runs. Writes the `agent` section of BENCHMARKS.md.

    .venv/bin/python scripts/bench_agent.py [--rounds 6] [--min-s 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from benchlib import OtherLoad, host_description, write_section  # noqa: E402

BARE = r"""
import sys, time, numpy as np, onnxruntime as ort
path, threads, warm, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
opts = ort.SessionOptions(); opts.log_severity_level = 3
if threads > 0:
    opts.intra_op_num_threads = threads; opts.inter_op_num_threads = 1
s = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
i = s.get_inputs()[0]
x = np.random.default_rng(0).standard_normal([d if isinstance(d, int) and d > 0 else 1 for d in i.shape]).astype("float32")
feeds = {i.name: x}
for _ in range(warm):
    s.run(None, feeds)
t = []
for _ in range(runs):
    a = time.perf_counter(); s.run(None, feeds); t.append((time.perf_counter() - a) * 1000)
t.sort()
print(t[len(t) // 2] if len(t) % 2 else (t[len(t) // 2 - 1] + t[len(t) // 2]) / 2)
"""


def mobilenet_like(path: Path, size: int = 96) -> Path:
    """A MobileNetV1-shaped net (depthwise-separable blocks), exported to ONNX, random weights."""
    import torch
    from torch import nn

    def block(cin, cout, stride):
        return nn.Sequential(nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU6(),
                             nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU6())

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6(),
                        block(32, 64, 1), block(64, 128, 2), block(128, 128, 1), block(128, 256, 2),
                        block(256, 256, 1), block(256, 512, 2), block(512, 512, 1), block(512, 1024, 2),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1024, 100)).eval()
    x = torch.randn(1, 3, size, size)
    torch.onnx.export(net, (x,), str(path), input_names=["input"], output_names=["output"], dynamo=True,
                      external_data=False, verbose=False)
    return path


def digits_fp32(workdir: Path) -> Path:
    from edgekit.examples import digits
    from edgekit.pipeline import Workspace, compress, prepare

    ctx = prepare(digits.spec())
    built = compress(ctx, ("onnx:fp32",), Workspace(workdir, workdir / "results.db"))
    return Path(built[0][0].path)


def agent_median(agent: Path, model: Path, threads: int, min_runs: int, min_s: float) -> tuple[float, int]:
    proc = subprocess.run([sys.executable, str(agent), "bench", "--artifact", str(model), "--runtime", "onnxruntime",
                           "--threads", str(threads), "--min-runs", str(min_runs), "--min-s", str(min_s),
                           "--warmup-s", "0.5", "--power", "off", "--idle-s", "0"],
                          capture_output=True, text=True, check=True)
    doc = json.loads(proc.stdout)
    return doc["latency"]["p50_ms"], doc["latency"]["n"] + doc["warmup"]["runs"]


def bare_median(model: Path, threads: int, warm: int, runs: int) -> float:
    proc = subprocess.run([sys.executable, "-c", BARE, str(model), str(threads), str(warm), str(runs)],
                          capture_output=True, text=True, check=True)
    return float(proc.stdout.strip())


def cv(values: list[float]) -> float:
    return statistics.stdev(values) / statistics.mean(values) if len(values) > 1 else 0.0


def measure(name: str, agent: Path, model: Path, rounds: int, threads: int, min_s: float) -> dict:
    ratios, agent_meds, bare_meds = [], [], []
    warm, runs = 200, 400  # the bare loop's counts; updated from the agent's own after the first round
    for r in range(rounds):
        if r % 2:  # alternate which of the pair goes first
            b = bare_median(model, threads, warm, runs)
            a, total = agent_median(agent, model, threads, 50, min_s)
        else:
            a, total = agent_median(agent, model, threads, 50, min_s)
            b = bare_median(model, threads, warm, runs)
        runs = max(50, total // 2)
        warm = max(10, total - runs)
        agent_meds.append(a)
        bare_meds.append(b)
        ratios.append(a / b)
        print(f"{name} round {r + 1}: agent {a:.4f} ms, bare {b:.4f} ms, ratio {a / b:.3f}", file=sys.stderr)
    return {"name": name, "agent_ms": statistics.median(agent_meds), "bare_ms": statistics.median(bare_meds),
            "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "cv_agent": cv(agent_meds), "cv_bare": cv(bare_meds), "rounds": rounds}


def section(rows: list[dict], args, load) -> str:
    lines = [
        "## Agent harness overhead (`scripts/bench_agent.py`)",
        "",
        f"Agent `bench` median vs a bare `session.run` loop on the same ONNX artifact, each in a fresh process, "
        f"interleaved in one run ({args.rounds} rounds, {args.threads} thread(s), min_s={args.min_s}, power off). "
        f"Ratio = agent median / bare median (goal <= 1.02); CV = spread of the median over the rounds. "
        f"Host: {host_description(runtimes=('onnxruntime',))}; while it ran, {load.describe()} (shared machine, so absolute "
        f"times are indicative only).",
        "",
        "| model | agent p50 ms | bare p50 ms | ratio (median) | ratio range | CV agent median | CV bare median |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['name']} | {r['agent_ms']:.4f} | {r['bare_ms']:.4f} | {r['ratio']:.3f} | "
                     f"{r['ratio_min']:.3f}-{r['ratio_max']:.3f} | {r['cv_agent']:.1%} | {r['cv_bare']:.1%} |")
    lines += ["", f"Command: `.venv/bin/python scripts/bench_agent.py --rounds {args.rounds} --min-s {args.min_s} "
                  f"--threads {args.threads}` · {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--min-s", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    from edgekit.bundle import write_agent

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        agent = write_agent(tmp / "edgekit-agent.pyz")
        models = {"mobilenet-like 1x3x96x96": mobilenet_like(tmp / "mobilenet.onnx"),
                  "digits CNN 1x1x8x8": digits_fp32(tmp)}
        with OtherLoad() as load:
            rows = [measure(name, agent, model, args.rounds, args.threads, args.min_s)
                    for name, model in models.items()]
    text = section(rows, args, load)
    write_section("agent", text)
    print(text)


if __name__ == "__main__":
    main()
