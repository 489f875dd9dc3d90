"""ONNX graphs shaped like the ones other exporters produce, built in the test process.

Our own exports (torch.onnx dynamo, opset 18, weights as initializers, static shapes) are the
easy case. Users bring files from elsewhere, and those are where quantizers and shape checks
break. Each builder here imitates one such export, with deterministic (seeded numpy) weights,
writes it to `path` and returns the path:

- `constant_weights_onnx`: a small conv net whose every weight is a `Constant` node, opset 12,
  dynamic height/width - what paddle2onnx (PaddleOCR detection/recognition models) and
  tf2onnx with constant folding off emit.
- `older_exporter_onnx`: the same kind of net through torch's TorchScript exporter
  (`dynamo=False`) at opset 11 - the files of older torch versions and of model zoos.
- `vad_like_onnx`: a recurrent voice-activity detector laid out like Silero VAD's ONNX export:
  an `If` on the sample rate whose branches hold all the compute (MatMul, LSTM, Gemm) on
  weights from the outer graph, a scalar int64 `sr` input and a state tensor with batch on
  axis 1.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np

SEED = 0
IMAGE_SHAPE = (1, 3, 32, 32)  # the example input of both conv nets (H and W are dynamic in the first)
CLASSES = 10
VAD_SAMPLES = 512  # one 32 ms chunk at 16 kHz, Silero VAD's window
VAD_HIDDEN = 64


def _conv_net():
    """conv3x3(3->16) relu -> conv3x3(16->32) relu -> global avg pool -> linear(32->10), seeded weights."""
    import torch
    from torch import nn

    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, CLASSES))
    rng = np.random.default_rng(SEED)
    with torch.no_grad():
        for p in net.parameters():
            fan_in = int(np.prod(p.shape[1:])) if p.dim() > 1 else p.shape[0]
            p.copy_(torch.from_numpy((rng.standard_normal(p.shape) / np.sqrt(fan_in)).astype(np.float32)))
    return net.eval()


def _torchscript_export(path: Path, opset: int, dynamic_axes: dict | None) -> None:
    import torch

    x = torch.from_numpy(np.random.default_rng(SEED).standard_normal(IMAGE_SHAPE).astype(np.float32))
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_conv_net(), (x,), str(path), input_names=["input"], output_names=["output"],
                          opset_version=opset, dynamo=False, dynamic_axes=dynamic_axes,
                          do_constant_folding=True)


def constant_weights_onnx(path: Path) -> Path:
    """Imitates a paddle2onnx export: opset 12, every weight a `Constant` node (no initializers),
    input [1, 3, height, width] with symbolic H/W (OCR models take any image size)."""
    import onnx

    path = Path(path)
    _torchscript_export(path, 12, {"input": {2: "height", 3: "width"}})
    model = onnx.load(str(path))
    graph = model.graph
    constants = [onnx.helper.make_node("Constant", [], [init.name], name=f"const_{init.name}", value=init)
                 for init in graph.initializer]
    names = {init.name for init in graph.initializer}
    kept_inputs = [i for i in graph.input if i.name not in names]  # old exporters also list weights as inputs
    del graph.input[:]
    graph.input.extend(kept_inputs)
    del graph.initializer[:]
    nodes = constants + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    dims = graph.input[0].type.tensor_type.shape.dim
    assert dims[2].dim_param == "height" and dims[3].dim_param == "width"
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def older_exporter_onnx(path: Path) -> Path:
    """Imitates a file from an older torch (TorchScript exporter, `dynamo=False`) at opset 11:
    weights are initializers, shapes are static, but the opset is below what per-channel QDQ needs."""
    path = Path(path)
    _torchscript_export(path, 11, None)
    return path


def _vad_branch(tag: str, rng: np.random.Generator, weights: dict[str, np.ndarray]):
    """One sample-rate branch: input projection (MatMul), one LSTM step, output head (Gemm) + sigmoid.

    The weights go into `weights` (outer-graph initializers); the branch only names them, as the
    branches of a real export do.
    """
    from onnx import TensorProto, helper

    h = VAD_HIDDEN

    def w(name: str, shape: tuple[int, ...], scale: float) -> str:
        weights[f"{tag}.{name}"] = (rng.standard_normal(shape) * scale).astype(np.float32)
        return f"{tag}.{name}"

    wi, bi = w("proj.weight", (VAD_SAMPLES, h), 1 / np.sqrt(VAD_SAMPLES)), w("proj.bias", (h,), 0.1)
    lw, lr, lb = w("lstm.W", (1, 4 * h, h), 1 / np.sqrt(h)), w("lstm.R", (1, 4 * h, h), 1 / np.sqrt(h)), \
        w("lstm.B", (1, 8 * h), 0.1)
    wo, bo = w("head.weight", (h, 1), 1 / np.sqrt(h)), w("head.bias", (1,), 0.1)
    p = f"{tag}_"
    nodes = [
        helper.make_node("MatMul", ["input", wi], [p + "proj"], name=p + "proj_matmul"),
        helper.make_node("Add", [p + "proj", bi], [p + "proj_b"], name=p + "proj_add"),
        helper.make_node("Relu", [p + "proj_b"], [p + "feat"], name=p + "relu"),
        helper.make_node("Unsqueeze", [p + "feat", "axes0"], [p + "seq"], name=p + "to_seq"),  # [1, 1, h]
        helper.make_node("LSTM", [p + "seq", lw, lr, lb, "", "h0", "c0"], [p + "y", p + "hn", p + "cn"],
                         name=p + "lstm", hidden_size=h),
        helper.make_node("Squeeze", [p + "hn", "axes0"], [p + "last"], name=p + "last"),  # [1, h]
        helper.make_node("Gemm", [p + "last", wo, bo], [p + "logit"], name=p + "head_gemm"),
        helper.make_node("Sigmoid", [p + "logit"], [p + "out"], name=p + "sigmoid"),
        helper.make_node("Concat", [p + "hn", p + "cn"], [p + "state"], name=p + "state_concat", axis=0),
    ]
    outputs = [helper.make_tensor_value_info(p + "out", TensorProto.FLOAT, [1, 1]),
               helper.make_tensor_value_info(p + "state", TensorProto.FLOAT, [2, 1, h])]
    return helper.make_graph(nodes, f"branch_{tag}", [], outputs)


def vad_like_onnx(path: Path) -> Path:
    """Imitates Silero VAD's ONNX export: inputs `input` [1, 512] float32, `sr` int64 scalar,
    `state` [2, 1, 64] float32 (LSTM h and c, batch on axis 1); an `If` on sr == 16000 picks a
    branch, each with its own MatMul/LSTM/Gemm on outer-graph weights; outputs `output` [1, 1]
    (speech probability) and `stateN` [2, 1, 64]. Every compute op lives inside the If."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(SEED)
    weights: dict[str, np.ndarray] = {}
    then_branch = _vad_branch("sr16k", rng, weights)
    else_branch = _vad_branch("sr8k", rng, weights)
    weights["sr16000"] = np.array(16000, dtype=np.int64)
    weights["axes0"] = np.array([0], dtype=np.int64)
    weights["split_hc"] = np.array([1, 1], dtype=np.int64)
    nodes = [
        helper.make_node("Equal", ["sr", "sr16000"], ["is16k"], name="sr_is_16k"),
        helper.make_node("Split", ["state", "split_hc"], ["h0", "c0"], name="split_state", axis=0),
        helper.make_node("If", ["is16k"], ["output", "stateN"], name="sample_rate_if",
                         then_branch=then_branch, else_branch=else_branch),
    ]
    graph = helper.make_graph(
        nodes, "vad_like",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, VAD_SAMPLES]),
         helper.make_tensor_value_info("sr", TensorProto.INT64, []),
         helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, 1, VAD_HIDDEN])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1]),
         helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [2, 1, VAD_HIDDEN])],
        initializer=[numpy_helper.from_array(v, k) for k, v in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)], producer_name="vad-like")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    path = Path(path)
    onnx.save(model, str(path))
    return path


def vad_feeds(n: int, sr: int = 16000, seed: int = 1) -> list[dict[str, np.ndarray]]:
    """`n` chunks of noisy audio-like input for the VAD graph, each with a zero state."""
    rng = np.random.default_rng(seed)
    return [{"input": (rng.standard_normal((1, VAD_SAMPLES)) * 0.3).astype(np.float32),
             "sr": np.array(sr, dtype=np.int64),
             "state": np.zeros((2, 1, VAD_HIDDEN), dtype=np.float32)} for _ in range(n)]
