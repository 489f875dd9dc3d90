"""The host carries the agent's power figures: profile keys, device options, Measurement.energy_mj."""

from __future__ import annotations

import pytest

from edgekit.device import Device
from edgekit.errors import SpecError
from edgekit.config import load_profile
from edgekit.records import Measurement
from edgekit.settings import BenchSettings, Target


def _profile(tmp_path, bench: str):
    path = tmp_path / "p.toml"
    path.write_text(f'[build]\nrecipes = ["onnx:fp32"]\n[bench]\n{bench}\n')
    return load_profile(str(path))


def test_profile_bench_power_cooldown_and_rate(tmp_path):
    p = _profile(tmp_path, 'power = "rapl"\ncooldown_c = 55\nrate_hz = 30')
    assert (p.bench.power, p.bench.cooldown_c, p.bench.rate_hz) == ("rapl", 55, 30)
    assert _profile(tmp_path, "").bench.power == "auto"
    with pytest.raises(SpecError, match=r"\[bench\] power: 'ina' is not a sensor.*use auto, off or one of"):
        _profile(tmp_path, 'power = "ina"')
    with pytest.raises(SpecError, match=r"rate_hz"):
        _profile(tmp_path, "rate_hz = 0")


def test_device_passes_power_root_cooldown_and_rate():
    from edgekit.records import Variant

    target = Target(name="orin", transport="local", power="jetson-ina3221-hwmon", sensor_root="/fixtures/orin")
    device = Device.__new__(Device)
    device.target = target
    variant = Variant(id="v", recipe="onnx:fp32", format="onnx", precision="fp32", runtime="onnxruntime", model="m",
                      sha256="0" * 64)
    argv = device.bench_request(variant, "/w/a.onnx", BenchSettings(cooldown_c=50.0, rate_hz=30.0)).to_argv()
    assert {"--power=jetson-ina3221-hwmon", "--root=/fixtures/orin", "--cooldown-c=50.0", "--rate-hz=30.0"} <= set(argv)
    assert "--power=off" in device.bench_request(variant, "/w/a.onnx", BenchSettings(power="off")).to_argv()


def test_measurement_energy_figure():
    doc = {"power": {"available": True, "energy_per_inference_mj": 1.5}}
    m = Measurement(target="t", variant_id="v", sha256="s", status="ok", document=doc)
    assert m.figure("energy_mj") == 1.5 and m.power["available"]
    assert Measurement(target="t", variant_id="v", sha256="s", status="ok").figure("energy_mj") is None
