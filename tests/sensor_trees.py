"""Fake device trees and command stubs, each built only from a real capture in tests/fixtures/devices/.

Every builder names the capture it reads (copied verbatim from the shared fixtures), so a figure
in a test can be traced to the board text it came from.
"""

from __future__ import annotations

import os
import re
import stat
import sys
from pathlib import Path

CAPTURES = Path(__file__).parent / "fixtures" / "devices"


def capture(name: str) -> str:
    return (CAPTURES / name).read_text()


def output_lines(name: str) -> list[str]:
    """The capture's lines that are command output (comment lines start with '#')."""
    return [line for line in capture(name).splitlines() if line.strip() and not line.startswith("#")]


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if text.endswith("\n") else text + "\n")
    return path


def stub(bindir: Path, name: str, outputs: dict[str, str], loop_s: float | None = None) -> Path:
    """An executable `name` printing outputs[first argument] ('' key: any argument); a Python
    script so it runs the same everywhere. `loop_s`: print the '' output forever at that period."""
    bindir.mkdir(parents=True, exist_ok=True)
    path = bindir / name
    body = [f"#!{sys.executable}", "import sys, time", f"OUT = {outputs!r}",
            "arg = sys.argv[1] if len(sys.argv) > 1 else ''",
            "text = OUT.get(arg, OUT.get(''))",
            "if text is None:", "    sys.stderr.write('unknown command ' + arg + '\\n'); sys.exit(1)"]
    if loop_s is None:
        body.append("sys.stdout.write(text)")
    else:
        body += ["while True:", "    sys.stdout.write(text); sys.stdout.flush()", f"    time.sleep({loop_s})"]
    path.write_text("\n".join(body) + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def path_with(bindir: Path) -> dict[str, str]:
    """An environment whose PATH finds the stubs first."""
    env = dict(os.environ)
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    return env


# --------------------------------------------------------------------------- Jetson

HWMON = "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon1"


def orin_hwmon_values() -> dict[str, str]:
    """{attribute: value} for the channel lines of jetson_orin_hwmon_tree.txt (in1_label VDD_IN, ...)."""
    values = {}
    for line in capture("jetson_orin_hwmon_tree.txt").splitlines():
        m = re.match(r"^  ((?:in|curr)[1-7]_(?:label|input))\s+(.+?)(?:\s{2,}.*)?$", line)
        if m and not m.group(2).startswith(("shunt", "sum of currents")):
            if m.group(1) == "in7_input":
                continue  # the capture describes it, gives no value
            values[m.group(1)] = m.group(2).strip()
    return values


def orin_nano(root: Path) -> float:
    """Orin Nano JetPack 5/6 hwmon tree from jetson_orin_hwmon_tree.txt; returns the expected VDD_IN watts."""
    values = orin_hwmon_values()
    write(root, HWMON + "/name", "ina3221")
    write(root, "sys/bus/i2c/drivers/ina3221/1-0040/name", "ina3221")
    for attr, value in values.items():
        write(root, f"{HWMON}/{attr}", value)
    assert values["in1_label"] == "VDD_IN" and values["in7_label"] == "sum of shunt voltages"
    write(root, "proc/device-tree/model", "NVIDIA Jetson Orin Nano Developer Kit\x00")
    return int(values["in1_input"]) * int(values["curr1_input"]) / 1e6


def agx_orin(root: Path) -> float:
    """AGX Orin: labels from jetson_ina3221_rail_labels_devicetree.txt source (1), NC channels on the
    second chip as NVIDIA's JetPack tree labels them; the mV/mA numbers are the Orin Nano capture's
    (no AGX values are captured). No input rail, so the total is the sum of the readable rails."""
    values = orin_hwmon_values()
    labels = {"1-0040": ("VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0"), "1-0041": ("NC", "VDDQ_VDD2_1V8AO", "NC")}
    total = 0.0
    for chip, (l1, l2, l3) in labels.items():
        d = f"sys/bus/i2c/drivers/ina3221/{chip}/hwmon/hwmon{2 if chip.endswith('0') else 3}"
        write(root, d + "/name", "ina3221")
        for n, label in enumerate((l1, l2, l3), 1):
            write(root, f"{d}/in{n}_label", label)
            if label == "NC":
                # the driver answers -ENODATA on reads: a directory in its place fails the read the same way
                (root / d / f"in{n}_input").mkdir(parents=True)
                (root / d / f"curr{n}_input").mkdir(parents=True)
                continue
            write(root, f"{d}/in{n}_input", values[f"in{n}_input"])
            write(root, f"{d}/curr{n}_input", values[f"curr{n}_input"])
            total += int(values[f"in{n}_input"]) * int(values[f"curr{n}_input"]) / 1e6
        write(root, f"{d}/in7_label", "sum of shunt voltages")
    return total


def nano_jp4(root: Path) -> float:
    """Jetson Nano JetPack 4 ina3221x IIO tree: directory and attribute names from
    jetson_jp4_ina3221x_iio_attributes.txt, rail names from the device-tree notes (Nano: POM_5V_IN |
    POM_5V_GPU | POM_5V_CPU), mW values from the third line of tegrastats_nano_jp4.txt."""
    line = output_lines("tegrastats_nano_jp4.txt")[2]
    d = "sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0"
    for n, rail in enumerate(("POM_5V_IN", "POM_5V_GPU", "POM_5V_CPU")):
        mw = re.search(rf"{rail} (\d+)/", line).group(1)
        write(root, f"{d}/rail_name_{n}", rail)
        write(root, f"{d}/in_power{n}_input", mw)
        write(root, f"{d}/crit_current_limit_{n}", "4000 ma")
    write(root, "proc/device-tree/model", "NVIDIA Jetson Nano Developer Kit\x00")
    return int(re.search(r"POM_5V_IN (\d+)/", line).group(1)) / 1000.0


# --------------------------------------------------------------------------- Raspberry Pi

PI5_PMIC_W = 7.2398  # sum of V x I over the 12 paired rails of pmic_read_adc_pi5.txt, by hand


def pi5(root: Path, bindir: Path, throttled: str = "throttled=0x50005") -> float:
    """A `vcgencmd` stub answering pmic_read_adc (pmic_read_adc_pi5.txt) and get_throttled /
    measure_temp (pi_vcgencmd_misc.txt); returns the expected raw rail sum."""
    pmic = "\n".join(output_lines("pmic_read_adc_pi5.txt")) + "\n"
    misc = output_lines("pi_vcgencmd_misc.txt")
    assert throttled in misc
    stub(bindir, "vcgencmd", {"pmic_read_adc": pmic, "get_throttled": throttled + "\n",
                              "measure_temp": next(x for x in misc if x.startswith("temp=")) + "\n"})
    write(root, "proc/device-tree/model", "Raspberry Pi 5 Model B Rev 1.0\x00")
    return PI5_PMIC_W


# --------------------------------------------------------------------------- Android


def android(root: Path, current: str = "-394000", voltage: str = "4352000", status: str = "Discharging") -> float:
    """power_supply/battery in ABI units (android_battery_samples.txt): voltage 4352 mV from the
    dumpsys capture as uV, current -394 mA from the neofetch termux capture as uA, discharging."""
    base = "sys/class/power_supply/battery"
    write(root, f"{base}/current_now", current)
    write(root, f"{base}/voltage_now", voltage)
    write(root, f"{base}/status", status)
    write(root, f"{base}/type", "Battery")
    return 0.394 * 4.352


def termux_outputs() -> list[str]:
    """The three verbatim termux-battery-status JSON documents of android_battery_samples.txt."""
    text = capture("android_battery_samples.txt")
    return re.findall(r"^\{\n.*?^\}", text, flags=re.S | re.M)


# --------------------------------------------------------------------------- RAPL


def rapl(root: Path) -> dict[str, str]:
    """The powercap tree of rapl_powercap_tree.txt (alumet's fixture values) under
    /sys/devices/virtual/powercap/intel-rapl; returns {relative file: value}."""
    entries = {}
    for line in output_lines("rapl_powercap_tree.txt"):
        key, _, value = line.partition(" = ")
        entries[key.strip()] = value.strip()
        write(root, f"sys/devices/virtual/powercap/intel-rapl/{key.strip()}", value.strip())
    return entries
