#!/usr/bin/env python3
"""Every recipe's size, host latency and accuracy/parity, for a MobileNetV2-shaped net and the digits CNN.

Latency is a ratio to ONNX fp32 measured in the same run, variants interleaved (A B C A B C ...)
so machine noise hits them alike. Writes its section of BENCHMARKS.md.

    .venv/bin/python scripts/bench_compress.py [--rounds 5] [--runs 20] [--threads 2]
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

from benchlib import BENCHMARKS, OtherLoad, host_description, section_rows, write_section  # noqa: E402

ALL = ("onnx:fp32", "onnx:fp16", "onnx:int8-dynamic", "onnx:int8-static", "onnx:int8-static?types=u8u8",
       "onnx:int8-static?calibration=entropy", "onnx:int8-mixed", "torchscript:fp32", "torchscript:int8",
       "tflite:fp32", "tflite:fp16", "tflite:int8-dynamic", "tflite:int8-static", "executorch:fp32",
       "executorch:int8")


# --------------------------------------------------------------------------- MobileNetV2 (built here)

def mobilenet_v2(num_classes: int = 1000):
    """MobileNetV2 (Sandler et al. 2018): inverted residual blocks, width 1.0, 224x224 input."""
    import torch
    from torch import nn

    def conv_bn(cin, cout, k, s, groups=1, act=True):
        layers = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        return layers + ([nn.ReLU6()] if act else [])

    class InvertedResidual(nn.Module):
        def __init__(self, cin, cout, stride, expand):
            super().__init__()
            hidden = cin * expand
            layers = conv_bn(cin, hidden, 1, 1) if expand != 1 else []
            layers += conv_bn(hidden, hidden, 3, stride, groups=hidden) + conv_bn(hidden, cout, 1, 1, act=False)
            self.block = nn.Sequential(*layers)
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            return x + self.block(x) if self.residual else self.block(x)

    settings = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1)]
    layers, cin = conv_bn(3, 32, 3, 2), 32
    for t, c, n, s in settings:
        for i in range(n):
            layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
            cin = c
    layers += conv_bn(cin, 1280, 1, 1) + [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1280, num_classes)]
    torch.manual_seed(0)
    net = nn.Sequential(*layers)
    for m in net.modules():  # BN statistics of a trained net, not the identity of a fresh one
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def photo_crops(n: int) -> np.ndarray:
    """n 224x224 crops of scikit-learn's two real sample photos, ImageNet-normalised, NCHW."""
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(0)
    images = load_sample_images().images
    out = []
    for i in range(n):
        img = images[i % len(images)]
        y, x = rng.integers(0, img.shape[0] - 224), rng.integers(0, img.shape[1] - 224)
        crop = img[y:y + 224, x:x + 224].astype(np.float32) / 255.0
        out.append(((crop - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]).transpose(2, 0, 1))
    return np.stack(out).astype(np.float32)


_CROPS: dict[str, np.ndarray] = {}


def mnv2_calibration():
    return _CROPS.setdefault("cal", photo_crops(48))[:32]


def mnv2_evaluation():
    return _CROPS.setdefault("cal", photo_crops(48))[32:]


# --------------------------------------------------------------------------- host runners

def runner(variant, threads: int):
    """A zero-argument callable doing one inference of the artifact with its own runtime."""
    path = variant.path
    shape = variant.inputs[0]["shape"]
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    if variant.format == "onnx":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = threads, 1, 3
        s = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        name = s.get_inputs()[0].name
        return lambda: s.run(None, {name: x})
    if variant.format == "tflite":
        from ai_edge_litert.interpreter import Interpreter

        from edgekit.compress.runtimes import quantize_array

        it = Interpreter(model_path=path, num_threads=threads)
        it.allocate_tensors()
        d = it.get_input_details()[0]
        xq = quantize_array(x, d)

        def run():
            it.set_tensor(d["index"], xq)
            it.invoke()
        return run
    if variant.format == "executorch":
        import torch
        from executorch.runtime import Runtime

        method = Runtime.get().load_program(path).load_method("forward")
        xt = torch.from_numpy(x)
        return lambda: method.execute([xt])
    if variant.format == "torchscript":
        import torch

        torch.set_num_threads(threads)
        m = torch.jit.load(path)
        xt = torch.from_numpy(x)

        def run():
            with torch.no_grad():
                m(xt)
        return run
    raise ValueError(variant.format)


def interleaved(runs: dict[str, object], rounds: int, per_round: int) -> dict[str, float]:
    """Median ms per variant; each round times every variant once, in rotating order."""
    samples: dict[str, list[float]] = {k: [] for k in runs}
    for fn in runs.values():
        fn()  # warm-up
    keys = list(runs)
    for r in range(rounds):
        for k in keys[r % len(keys):] + keys[:r % len(keys)]:
            for _ in range(per_round):
                t = time.perf_counter()
                runs[k]()
                samples[k].append((time.perf_counter() - t) * 1e3)
    return {k: statistics.median(v) for k, v in samples.items()}


# --------------------------------------------------------------------------- the table

def bench(name: str, spec, recipes, args, home: Path) -> list[str]:
    from edgekit.pipeline import Workspace, compress, prepare

    t0 = time.time()
    ctx = prepare(spec)
    built = compress(ctx, recipes, Workspace(home, home / "r.db"), max_accuracy_drop=0.01)
    print(f"{name}: built {len(built)} variants in {time.time() - t0:.0f} s", file=sys.stderr)
    ok = {v.recipe: v for v, _ in built if v.status == "ok"}
    runs = {r: runner(v, args.threads) for r, v in ok.items()}
    ms = interleaved(runs, args.rounds, args.runs)
    base_size, base_ms = ok["onnx:fp32"].size_bytes, ms["onnx:fp32"]
    rows = []
    for v, _ in built:
        if v.status != "ok":
            rows.append(f"| {name} | `{v.recipe}` | failed: {v.error[:80]} | | | | | | |")
            continue
        m = v.metrics
        acc = f"{m['accuracy'] * 100:.1f}" if "accuracy" in m else "-"
        drop = f"{m['accuracy_drop'] * 100:+.1f}" if "accuracy_drop" in m else "-"
        rows.append(f"| {name} | `{v.recipe}` | {v.size_bytes / 1e6:.2f} | {v.size_bytes / base_size:.2f} | "
                    f"{ms[v.recipe]:.2f} | {ms[v.recipe] / base_ms:.2f} | {acc} | {drop} | "
                    f"{m.get('top1_agreement', 0) * 100:.1f} / {m.get('mean_cosine', 0):.4f} |")
    return rows


HEADER = "| model | recipe | MB | size ratio | ms | latency ratio | accuracy % | drop pts | top-1 agree % / cosine |"


def previous_rows(rows: list[str], path: Path = BENCHMARKS) -> list[str]:
    """The rows of the last run's compress table for models this run did not measure. Only this
    section's rows, and only rows shaped like its table: the deploy and agent tables above it in
    BENCHMARKS.md are not compress rows."""
    mine = {r.split("|")[1] for r in rows}
    return [line for line in section_rows("compress", path)
            if line.count("|") == HEADER.count("|") and line.split("|")[1] not in mine]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=20, help="inferences per variant per round")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=("digits", "mobilenet"))
    args = parser.parse_args()

    from edgekit.examples import digits
    from edgekit.settings import InputSpec, ModelSpec

    sys.modules.setdefault("bench_compress", sys.modules[__name__])
    sys.path.insert(0, str(Path(__file__).parent))
    rows = []
    with tempfile.TemporaryDirectory() as tmp, OtherLoad() as load:
        if args.only in (None, "digits"):
            rows += bench("digits CNN 8x8", digits.spec(), ALL, args, Path(tmp) / "digits")
        if args.only in (None, "mobilenet"):
            spec = ModelSpec(name="mobilenet-v2", inputs=(InputSpec("input", (1, 3, 224, 224)),),
                             factory="bench_compress:mobilenet_v2", calibration="bench_compress:mnv2_calibration",
                             evaluation="bench_compress:mnv2_evaluation")
            mnv2 = tuple(r for r in ALL if r != "onnx:int8-mixed")  # per-layer search over 52 convs: too slow here
            rows += bench("MobileNetV2 224", spec, mnv2, args, Path(tmp) / "mnv2")
    text = "\n".join([
        "## Compression recipes (`scripts/bench_compress.py`)",
        "",
        f"Host: {host_description()}; while it ran, {load.describe()} (shared, noisy). {args.threads} threads. "
        f"Latency: median of {args.rounds} interleaved rounds x {args.runs} runs, batch 1, each format's own runtime; "
        "ratio to ONNX fp32 of the same model in the same run. Accuracy: digits on its 500-sample held-out split; "
        "MobileNetV2 has random weights (no labels), so only parity: top-1 agreement / mean cosine with torch on 16 "
        "crops of scikit-learn's sample photos (drop = 1 - agreement).",
        "",
        f"Command: `.venv/bin/python scripts/bench_compress.py --rounds {args.rounds} --runs {args.runs} "
        f"--threads {args.threads}{' --only ' + args.only if args.only else ''}` · "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        HEADER,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
    ])
    if args.only:  # keep the other model's rows from the last full run
        kept = previous_rows(rows)
        text += "\n" + "\n".join(kept) + f"\n\n(`--only {args.only}` re-ran {args.only}; other rows from the previous run)"
    write_section("compress", text)
    print(text)


if __name__ == "__main__":
    main()
