"""A model file runs no code without consent: a pickle whose unpickling creates a file, loaded
through the real torch.load, by the loader and by the CLI."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from conftest import run_cli
from edgekit.errors import ModelError, SpecError
from edgekit.model import load_torch_model
from edgekit.config import load_model_spec
from edgekit.settings import InputSpec, ModelSpec


class _Payload:
    """Unpickles by evaluating an expression: leaves a marker file, then returns a real module."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"__import__('pathlib').Path({str(self.marker)!r}).touch() or "
                       f"__import__('torch').nn.Sequential(__import__('torch').nn.Linear(64, 10)).eval()",))


@pytest.fixture
def evil(tmp_path) -> tuple[Path, Path]:
    marker = tmp_path / "CODE-RAN"
    path = tmp_path / "model.pt"
    torch.save(_Payload(marker), path)
    assert not marker.exists()
    return path, marker


def spec_for(path: Path, **kw) -> ModelSpec:
    return ModelSpec(name="m", inputs=(InputSpec("x", (1, 64)),), path=path, **kw)


def test_a_pickled_module_is_refused_without_consent(evil):
    path, marker = evil
    with pytest.raises(ModelError) as info:
        load_torch_model(spec_for(path))
    message = str(info.value)
    assert "pickled torch module" in message and "--allow-pickle" in message and "allow_pickle = true" in message
    assert "\n" not in message and not marker.exists()


def test_with_consent_it_loads_and_its_code_runs(evil):
    path, marker = evil
    model = load_torch_model(spec_for(path, allow_pickle=True))
    assert isinstance(model, torch.nn.Module) and marker.exists()


def test_other_files_get_their_own_reason(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(2048))
    with pytest.raises(ModelError, match="not a TorchScript or pickled torch module"):
        load_torch_model(spec_for(junk, allow_pickle=True))
    weights = tmp_path / "weights.pt"
    torch.save(torch.nn.Linear(64, 10).state_dict(), weights)
    with pytest.raises(ModelError, match=r"holds OrderedDict \(weights\), not a module.*checkpoint"):
        load_torch_model(spec_for(weights))
    scripted = tmp_path / "m.ts"
    torch.jit.save(torch.jit.script(torch.nn.Linear(64, 10)), scripted)
    assert isinstance(load_torch_model(spec_for(scripted)), torch.nn.Module)  # TorchScript needs no consent


def test_spec_key_allow_pickle(tmp_path, evil):
    path, _ = evil
    spec = tmp_path / "edgekit.toml"
    spec.write_text(f'[model]\nname = "m"\npath = "{path}"\ninputs = [{{ name = "x", shape = [1, 64] }}]\n'
                    'allow_pickle = "yes"\n')
    with pytest.raises(SpecError, match=r"allow_pickle: expected true or false.*Fix: write allow_pickle = true"):
        load_model_spec(spec)
    spec.write_text(spec.read_text().replace('"yes"', "true"))
    assert load_model_spec(spec).allow_pickle is True


def test_cli_refuses_then_takes_the_flag(workdir, evil):
    path, marker = evil
    args = ("compress", "--model-path", str(path), "--input", "x:1x64", "--recipe", "onnx:fp32", "--json")
    proc = run_cli(*args)
    assert proc.returncode == 2, proc.stderr
    assert "--allow-pickle" in proc.stderr and "Traceback" not in proc.stderr and not marker.exists()
    proc = run_cli(*args, "--allow-pickle")
    assert proc.returncode == 0, proc.stderr
    assert marker.exists()
