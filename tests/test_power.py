"""Power sensors and the sampler, against trees and stubs built from real board captures."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest

from edgekit.agent import power
from edgekit.agent.sampler import Sampler, measure_idle, summary

import sensor_trees as devices


def as_unprivileged(fn):
    """fn() in a forked child running as nobody (root reads any file, so root-only files need this)."""
    if os.geteuid() != 0:
        return fn()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            out = {"ok": fn()}
        except BaseException as exc:  # noqa: BLE001 - carried back to the parent
            out = {"error": type(exc).__name__, "message": str(exc)}
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as fh:
        data = fh.read()
    os.waitpid(pid, 0)
    return json.loads(data)


@pytest.fixture
def open_root():
    """A root that an unprivileged user can traverse (pytest's tmp dirs are 0700)."""
    d = Path(tempfile.mkdtemp(prefix="edgekit-root-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d)


def _open_up(root: Path) -> None:
    for dirpath, dirnames, _ in os.walk(root):
        for name in dirnames:
            os.chmod(os.path.join(dirpath, name), 0o755)


# --------------------------------------------------------------------------- parsers


@pytest.mark.parametrize("capture, expected", [
    ("tegrastats_orin_nano.txt", [("VDD_IN", 2.957), ("VDD_IN", 4.742), ("VDD_IN", 4.915)]),
    ("tegrastats_nano_jp4.txt", [("POM_5V_IN", 0.933), ("POM_5V_IN", 0.933), ("POM_5V_IN", 2.545)]),
])
def test_tegrastats_lines_parse_to_rails_and_the_input_rail(capture, expected):
    lines = devices.output_lines(capture)
    assert len(lines) == len(expected)
    for line, (rail, watts) in zip(lines, expected):
        rails = power.parse_tegrastats(line)
        assert len(rails) == 3 and "RAM" not in rails and "SWAP" not in rails
        total, name = power.board_total(rails)
        assert (name, total) == (rail, pytest.approx(watts))
    assert power.parse_tegrastats(lines[2])[("POM_5V_CPU" if "POM" in lines[2] else "VDD_SOC")] > 0


def test_pi5_pmic_pairs_rails_by_name_and_names_what_it_excludes():
    rails, voltage_only = power.parse_pmic(devices.capture("pmic_read_adc_pi5.txt"))
    assert len(rails) == 12
    assert voltage_only == ["BATT", "EXT5V"]
    assert rails["VDD_CORE"] == pytest.approx(6.22421 * 0.861733)  # current(7) with volt(15)
    assert sum(rails.values()) == pytest.approx(devices.PI5_PMIC_W, abs=1e-3)


@pytest.mark.parametrize("current, voltage, status, notes", [
    (-394000, 4352000, "Discharging", []),                     # ABI units and sign
    (-394, 4352, "Discharging", ["mA", "mV"]),                 # vendor mA / mV
    (394000, 4352000, "Discharging", ["positive"]),            # vendor sign
    (-252, 4352000, "Charging", ["mA", "negative", "unplug"]),  # battery.nvim capture: CHARGING, -252
])
def test_android_units_and_sign_are_normalised_and_recorded(current, voltage, status, notes):
    watts, said = power.battery_power(current, voltage, status)
    assert watts == pytest.approx(abs(current if abs(current) >= 10000 else current * 1000) * 4.352 / 1e6)
    text = " ".join(said)
    for word in notes:
        assert word in text
    if not notes:
        assert said == []


def test_termux_captures_parse_and_without_voltage_power_is_unavailable(tmp_path, monkeypatch):
    docs = devices.termux_outputs()
    assert [power.parse_termux(d)[0] for d in docs] == [-394, -252, 232]
    assert [power.parse_termux(d)[2] for d in docs] == ["DISCHARGING", "CHARGING", "NOT_CHARGING"]
    devices.stub(tmp_path / "bin", "termux-battery-status", {"": docs[0]})
    monkeypatch.setenv("PATH", devices.path_with(tmp_path / "bin")["PATH"])
    sensor, reasons = power.discover(str(tmp_path / "root"), "termux-battery-status")
    assert sensor is None and "no voltage" in reasons[0]
    # a device whose voltage_now is readable (4352 mV of the dumpsys capture, in uV)
    devices.write(tmp_path / "root", "sys/class/power_supply/battery/voltage_now", "4352000")
    sensor, _ = power.discover(str(tmp_path / "root"), "termux-battery-status")
    assert sensor.read()[0] == pytest.approx(0.394 * 4.352)
    assert any("mA" in n for n in sensor.notes)


# --------------------------------------------------------------------------- sysfs sensors


def test_orin_nano_hwmon_uses_vdd_in_and_skips_the_shunt_sum(tmp_path):
    expected = devices.orin_nano(tmp_path)
    sensor, _ = power.discover(str(tmp_path))
    assert (sensor.name, sensor.rail) == ("jetson-ina3221-hwmon", "VDD_IN")
    total, rails = sensor.read()
    assert total == pytest.approx(expected) == pytest.approx(5064 * 936 / 1e6)
    assert sorted(rails) == ["VDD_CPU_GPU_CV", "VDD_IN", "VDD_SOC"]


def test_agx_orin_sums_rails_and_skips_nc_and_unreadable_channels(tmp_path):
    expected = devices.agx_orin(tmp_path)
    # a mainline-style disabled channel: labelled, but its input cannot be read
    hw = next((tmp_path / "sys/bus/i2c/drivers/ina3221/1-0040/hwmon").iterdir())
    (hw / "in3_input").unlink()
    (hw / "in3_input").mkdir()
    sensor, _ = power.discover(str(tmp_path))
    assert sensor.name == "jetson-ina3221-hwmon" and sensor.rail.startswith("sum(")
    total, rails = sensor.read()
    assert "NC" not in rails and "VIN_SYS_5V0" not in rails and "VDDQ_VDD2_1V8AO" in rails
    assert total == pytest.approx(expected - 5056 * 288 / 1e6)
    assert any("VIN_SYS_5V0" in n for n in sensor.notes)


def test_nano_jp4_iio_uses_pom_5v_in(tmp_path):
    expected = devices.nano_jp4(tmp_path)
    sensor, _ = power.discover(str(tmp_path))
    assert (sensor.name, sensor.rail) == ("jetson-ina3221x-iio", "POM_5V_IN")
    assert sensor.read()[0] == pytest.approx(expected) == pytest.approx(2.545)


def test_android_power_supply_and_permission_denied(open_root):
    expected = devices.android(open_root)
    sensor, _ = power.discover(str(open_root))
    assert sensor.name == "android-power-supply" and sensor.read()[0] == pytest.approx(expected)
    os.chmod(open_root / "sys/class/power_supply/battery/current_now", 0o400)
    _open_up(open_root)
    out = as_unprivileged(lambda: power.discover(str(open_root), "android-power-supply")[1])
    assert "permission denied" in out["ok"][0] and "adb shell" in out["ok"][0]


def test_rapl_prefers_psys_handles_wraparound_and_reports_root_only(open_root):
    entries = devices.rapl(open_root)
    base = open_root / "sys/devices/virtual/powercap/intel-rapl"
    sensor, _ = power.discover(str(open_root), "rapl")
    assert (sensor.name, sensor.rail, sensor.counter) == ("rapl", "psys", True)
    first = sensor.read()[0]
    (base / "intel-rapl:1/energy_uj").write_text(str(int(entries["intel-rapl:1/energy_uj"]) + 5_000_000))
    assert sensor.read()[0] - first == pytest.approx(5.0)

    shutil.rmtree(base / "intel-rapl:1")  # no psys: package + dram; the package counter wraps
    shutil.rmtree(base / "intel-rapl:2")
    sensor, _ = power.discover(str(open_root), "rapl")
    assert sensor.rail == "sum(package-0)"
    top = int(entries["intel-rapl:0/max_energy_range_uj"])
    (base / "intel-rapl:0/energy_uj").write_text(str(top - 1_000_000))
    start = sensor.read()[0]
    (base / "intel-rapl:0/energy_uj").write_text("2000000")
    assert sensor.read()[0] - start == pytest.approx(3.0) and "counter wrapped" in sensor.notes

    os.chmod(base / "intel-rapl:0/energy_uj", 0o400)
    _open_up(open_root)
    out = as_unprivileged(lambda: power.discover(str(open_root), "rapl")[1])
    assert "energy_uj is root-only" in out["ok"][0]


def test_pi5_stub_vcgencmd(tmp_path, monkeypatch):
    expected = devices.pi5(tmp_path / "root", tmp_path / "bin")
    monkeypatch.setenv("PATH", devices.path_with(tmp_path / "bin")["PATH"])
    sensor, reasons = power.discover(str(tmp_path / "root"))
    assert sensor.name == "rpi5-pmic", reasons
    assert sensor.read()[0] == pytest.approx(expected, abs=1e-3)
    assert "EXT5V" in sensor.notes[0] and "BATT" in sensor.notes[0]


def test_tegrastats_fallback_reads_a_running_tegrastats(tmp_path, monkeypatch):
    line = devices.output_lines("tegrastats_orin_nano.txt")[1]
    devices.stub(tmp_path / "bin", "tegrastats", {"--interval": line + "\n"}, loop_s=0.05)
    monkeypatch.setenv("PATH", devices.path_with(tmp_path / "bin")["PATH"])
    sensor, reasons = power.discover(str(tmp_path / "empty"))
    try:
        assert sensor.name == "tegrastats", reasons
        assert sensor.rail == "VDD_IN" and sensor.read()[0] == pytest.approx(4.742)
        assert any("ina3221" in r for r in reasons)
    finally:
        sensor.close()
    assert sensor.proc.poll() is not None


def test_nothing_found_says_why_for_every_sensor(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    sensor, reasons = power.discover(str(tmp_path))
    assert sensor is None and len(reasons) == len(power.FINDERS)
    assert power.discover(str(tmp_path), "off")[1] == ["power measurement disabled (--power off)"]
    assert "unknown sensor" in power.discover(str(tmp_path), "bogus")[1][-1]


# --------------------------------------------------------------------------- sampler


class HeldHwmon:
    """A test thread that keeps an Orin Nano hwmon tree at a given current (power = 5064 mV x mA)."""

    def __init__(self, root: Path) -> None:
        devices.orin_nano(root)
        self.file = root / devices.HWMON / "curr1_input"
        self.ma = 936
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._hold, daemon=True)

    def _hold(self) -> None:
        while not self.stop.wait(0.005):
            tmp = self.file.with_suffix(".tmp")
            tmp.write_text(f"{self.ma}\n")
            os.replace(tmp, self.file)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def test_sampler_energy_is_power_times_window(tmp_path):
    with HeldHwmon(tmp_path):
        sensor, _ = power.discover(str(tmp_path))
        watts = 5064 * 936 / 1e6
        sampler = Sampler(sensor, 0.01).start()
        t0 = time.perf_counter()
        time.sleep(0.3)
        window = sampler.stop()
        elapsed = time.perf_counter() - t0
    assert len(window.samples) >= 3
    assert window.seconds == pytest.approx(elapsed, rel=0.05)
    assert window.energy_j() == pytest.approx(watts * window.seconds, rel=1e-6)
    assert window.avg_w() == pytest.approx(watts)
    doc = summary(sensor, window, None, runs=100, interval_s=0.01)
    assert doc["energy_per_inference_mj"] == pytest.approx(watts * window.seconds / 100 * 1000)
    assert doc["peak_w"] == pytest.approx(watts) and doc["rail"] == "VDD_IN"


def test_sampler_sees_a_step_and_energy_above_idle(tmp_path):
    with HeldHwmon(tmp_path) as held:
        sensor, _ = power.discover(str(tmp_path))
        idle = measure_idle(sensor, 0.1, 0.01)
        sampler = Sampler(sensor, 0.01).start()
        time.sleep(0.15)
        held.ma = 2 * 936
        time.sleep(0.3)
        window = sampler.stop()
    idle_w, busy_w = 5064 * 936 / 1e6, 5064 * 2 * 936 / 1e6
    doc = summary(sensor, window, idle, runs=10, interval_s=0.01)
    assert doc["idle_w"] == pytest.approx(idle_w)
    assert doc["peak_w"] == pytest.approx(busy_w)
    assert idle_w < doc["avg_w"] < busy_w
    above = (doc["avg_w"] - idle_w) * window.seconds / 10 * 1000
    assert doc["energy_above_idle_per_inference_mj"] == pytest.approx(above)
    assert 0 < above < doc["energy_per_inference_mj"]


def test_sampler_differences_an_energy_counter(open_root):
    devices.rapl(open_root)
    psys = open_root / "sys/devices/virtual/powercap/intel-rapl/intel-rapl:1/energy_uj"
    sensor, _ = power.discover(str(open_root), "rapl")
    sampler = Sampler(sensor, 0.01).start()
    time.sleep(0.05)
    psys.write_text(str(int(psys.read_text()) + 2_000_000))  # 2 J inside the window
    time.sleep(0.05)
    window = sampler.stop()
    assert window.energy_j() == pytest.approx(2.0)
    assert window.avg_w() == pytest.approx(2.0 / window.seconds)
    assert max(window.powers()) >= window.avg_w()


# --------------------------------------------------------------------------- bench --root


@pytest.fixture(scope="module")
def agent(tmp_path_factory) -> Path:
    from edgekit.bundle import write_agent

    return write_agent(tmp_path_factory.mktemp("agent") / "edgekit-agent.pyz")


def _bench(agent, artifact, root, env=None, *extra):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, str(agent), "bench", "--artifact", artifact, "--runtime", "onnxruntime",
                           "--root", str(root), "--warmup-s", "0.05", "--min-runs", "20", "--min-s", "0.3",
                           "--idle-s", "0.1", "--power-interval-s", "0.02", *extra],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize("board, sensor, rail", [
    ("orin_nano", "jetson-ina3221-hwmon", "VDD_IN"),
    ("nano_jp4", "jetson-ina3221x-iio", "POM_5V_IN"),
    ("pi5", "rpi5-pmic", "sum(12 PMIC rails)"),
    ("android", "android-power-supply", "battery"),
])
def test_bench_with_a_board_root_reports_its_sensor_and_total(agent, built, tmp_path, board, sensor, rail):
    _, variants = built
    root, env = tmp_path / "root", None
    if board == "pi5":
        expected = devices.pi5(root, tmp_path / "bin")
        env = devices.path_with(tmp_path / "bin")
    else:
        expected = getattr(devices, board)(root)
    doc = _bench(agent, variants["onnx:fp32"].path, root, env)
    p = doc["power"]
    assert p["available"] is True, p
    assert (p["sensor"], p["rail"]) == (sensor, rail)
    assert p["avg_w"] == pytest.approx(expected, rel=1e-3) and p["peak_w"] == pytest.approx(expected, rel=1e-3)
    assert p["idle_w"] == pytest.approx(expected, rel=1e-3)
    assert p["energy_per_inference_mj"] == pytest.approx(p["energy_j"] / doc["window"]["runs"] * 1000)
    assert p["energy_j"] == pytest.approx(expected * p["window_s"], rel=1e-3)
    assert p["window_s"] > 0
    assert abs(p["energy_above_idle_per_inference_mj"]) < 1e-3 * p["energy_per_inference_mj"]
    assert p["samples"] >= 2 and doc["latency"]["n"] == doc["window"]["runs"]
    if board == "pi5":  # vcgencmd get_throttled 0x50005: undervoltage and throttling, now and since boot
        assert doc["thermal"]["after"]["throttled"]["now"] == ["undervoltage", "throttled"]
        assert any("undervoltage" in w for w in doc["warnings"])


def test_bench_without_a_sensor_says_why(agent, built, tmp_path):
    _, variants = built
    env = dict(os.environ, PATH=os.path.dirname(os.path.realpath(__import__("sys").executable)))
    doc = _bench(agent, variants["onnx:fp32"].path, tmp_path, env)
    assert doc["power"]["available"] is False
    assert "ina3221" in doc["power"]["reason"] and "rapl" in doc["power"]["reason"]
    doc = _bench(agent, variants["onnx:fp32"].path, tmp_path, env, "--power", "off")
    assert doc["power"] == {"available": False, "reason": "power measurement disabled (--power off)"}
