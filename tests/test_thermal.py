"""Thermal state, throttling flags, cooldown and the probe's Jetson facts, from real captures."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from edgekit.agent import thermal

import sensor_trees as devices


def test_get_throttled_splits_current_and_since_boot_bits():
    answers = [x for x in devices.output_lines("pi_vcgencmd_misc.txt") if x.startswith("throttled=")]
    decoded = [thermal.decode_throttled(a) for a in answers]
    assert [d["raw"] for d in decoded] == ["0x50005", "0x0", "0x60002"]
    assert decoded[0]["now"] == ["undervoltage", "throttled"] == decoded[0]["since_boot"]
    assert decoded[1]["now"] == [] == decoded[1]["since_boot"]
    assert decoded[2]["now"] == ["arm_frequency_capped"]
    assert decoded[2]["since_boot"] == ["arm_frequency_capped", "throttled"]
    with pytest.raises(ValueError):
        thermal.decode_throttled("temp=43.8'C")


def orin_thermal(root):
    """Zones named and valued as in tegrastats line (a) of tegrastats_orin_nano.txt; cpufreq and
    governor per core from `jetson_clocks --show` in jetson_nvpmodel_jetson_clocks_orin_nano.txt."""
    line = devices.output_lines("tegrastats_orin_nano.txt")[0]
    import re

    zones = re.findall(r"(\w+)@([\d.]+)C", line)
    for n, (name, temp) in enumerate(zones):
        devices.write(root, f"sys/class/thermal/thermal_zone{n}/type", name)
        devices.write(root, f"sys/class/thermal/thermal_zone{n}/temp", str(round(float(temp) * 1000)))
    for line in devices.output_lines("jetson_nvpmodel_jetson_clocks_orin_nano.txt"):
        m = re.match(r"(cpu\d+):.*Governor=(\w+).*CurrentFreq=(\d+)", line)
        if m:
            devices.write(root, f"sys/devices/system/cpu/{m.group(1)}/cpufreq/scaling_cur_freq", m.group(3))
            devices.write(root, f"sys/devices/system/cpu/{m.group(1)}/cpufreq/scaling_governor", m.group(2))
    return dict(zones)


def test_orin_snapshot_and_warnings(tmp_path):
    zones = orin_thermal(tmp_path)
    snap = thermal.snapshot(str(tmp_path))
    assert snap["temps_c"]["cpu"] == pytest.approx(44.125) and len(snap["temps_c"]) == len(zones) == 6
    assert snap["cpu_mhz"] == {"cpu0": 960.0, "cpu1": 729.6, "cpu2": 729.6, "cpu3": 960.0, "cpu4": 729.6, "cpu5": 729.6}
    govs = thermal.governors(str(tmp_path))
    assert govs == ["ondemand"]
    slower = dict(snap, cpu_mhz={k: 729.6 for k in snap["cpu_mhz"]})
    said = thermal.warnings(snap, slower, govs)
    assert "ondemand" in said[0] and "960 to 730 MHz" in said[1]
    assert thermal.warnings(snap, snap, ["performance"]) == []


def test_cooldown_waits_for_the_temperature_and_is_bounded(tmp_path):
    orin_thermal(tmp_path)
    hot = tmp_path / "sys/class/thermal/thermal_zone4/temp"  # tj
    hot.write_text("60000\n")

    def cool():
        time.sleep(0.3)
        hot.write_text("40000\n")

    t = threading.Thread(target=cool)
    t.start()
    done = thermal.cooldown(str(tmp_path), 50.0, max_s=30, poll_s=0.05)
    t.join()
    assert done["reached"] and done["start_c"] == 60.0 and done["end_c"] < 50 and done["waited_s"] >= 0.25
    never = thermal.cooldown(str(tmp_path), 10.0, max_s=0.2, poll_s=0.05)
    assert never["reached"] is False and never["end_c"] == 44.531 and never["waited_s"] < 30
    assert thermal.cooldown(str(tmp_path / "none"), 50.0, max_s=1)["reason"] == "no readable thermal zone"


def test_probe_reads_jetpack_nvpmodel_nvmap_and_the_power_sensor(tmp_path):
    from edgekit.bundle import write_agent

    agent = write_agent(tmp_path / "agent.pyz")
    root = tmp_path / "root"
    devices.orin_nano(root)
    text = devices.capture("jetson_nv_tegra_release_meminfo.txt")
    release = next(x for x in text.splitlines() if x.startswith("# R35"))
    devices.write(root, "etc/nv_tegra_release", release)
    meminfo = "MemTotal:        7620000 kB\n" + "\n".join(devices.output_lines("jetson_nv_tegra_release_meminfo.txt"))
    devices.write(root, "proc/meminfo", meminfo)
    nvp = devices.output_lines("jetson_nvpmodel_jetson_clocks_orin_nano.txt")[1:3]  # "NV Power Mode: 15W", "0"
    devices.stub(tmp_path / "bin", "nvpmodel", {"-q": "\n".join(nvp) + "\n"})
    proc = subprocess.run([sys.executable, str(agent), "probe", "--root", str(root)], capture_output=True, text=True,
                          env=devices.path_with(tmp_path / "bin"), timeout=120)
    doc = json.loads(proc.stdout)
    assert doc["board"]["l4t"] == "35.4.1" and doc["board"]["jetpack"] == "5.1.2"
    assert doc["board"]["nvpmodel"] == {"mode": "15W", "id": 0}
    assert doc["board"]["model"] == "NVIDIA Jetson Orin Nano Developer Kit"
    assert doc["memory"]["nvmap_used_bytes"] == 805068 * 1024
    assert doc["power_sensor"]["name"] == "jetson-ina3221-hwmon" and doc["power_sensor"]["rail"] == "VDD_IN"


def test_l4t_versions():
    from edgekit.agent.probe import l4t

    text = devices.capture("jetson_nv_tegra_release_meminfo.txt")
    r32 = next(x for x in text.splitlines() if x.startswith("# R32"))
    assert l4t(r32) == {"l4t": "32.6.1", "jetpack": "4.6", "jetpack_major": "4"}
    assert l4t("# R36 (release), REVISION: 9.9, GCID: 1")["jetpack"] is None
    assert l4t("garbage") is None
