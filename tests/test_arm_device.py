"""The pi-arm test device: a Raspberry Pi 4's aarch64 userland under qemu, reached over real SSH.

What x86 cannot show: the same artifacts computed by aarch64 builds of numpy, onnxruntime and
LiteRT, compared on the device with the host's outputs. The userland is built once and cached
(scripts/build_arm_device.py, about a minute); each agent process then starts in ~5 s under
emulation, so these tests are slow.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from conftest import run_cli

pytestmark = pytest.mark.slow

ARM_PROFILE = """
[build]
recipes = ["onnx:fp32", "onnx:int8-static", "tflite:fp32", "tflite:int8-static"]
[bench]
parity_samples = 64
[select]
objective = "p90_ms"
constraints = { max_accuracy_drop = 0.01 }
"""


def _json(proc) -> dict:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture
def pi_arm(ssh_devices, workdir, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")  # the report table is wide: keep rich from folding its cells
    (workdir / "profiles" / "arm.toml").write_text(ARM_PROFILE)
    return ssh_devices("pi-arm")


def test_targets_check_sees_a_pi4_without_dot_product_under_emulation(pi_arm):
    doc = _json(run_cli("targets", "check", "pi-arm", "--json"))
    probe = doc["probe"]
    assert probe["arch"] == "aarch64"
    assert probe["board"]["model"] == "Raspberry Pi 4 Model B Rev 1.1"
    assert probe["cpu"]["core"] == "Cortex-A72" and probe["cpu"]["isa_family"] == "arm"
    assert "asimd" in probe["cpu"]["isa"] and "asimddp" not in probe["cpu"]["isa"]
    assert "asimddp" in probe["cpu"]["missing"]
    assert probe["os"]["name"].startswith("Debian GNU/Linux 12")
    assert set(probe["runtimes"]) >= {"onnxruntime", "tflite"}
    assert probe["emulation"]["emulated"] is True and probe["emulation"]["host_machine"] == "x86_64"
    assert doc["int8_default"]["types"] == "u8s8" and "without asimddp" in doc["int8_default"]["reason"]

    text = run_cli("targets", "check", "pi-arm")
    assert text.returncode == 0, text.stderr
    assert "aarch64 Cortex-A72" in text.stdout and "(no asimddp, i8mm)" in text.stdout
    assert "Raspberry Pi 4 Model B" in text.stdout and "not latency figures" in text.stdout


def test_profile_and_deploy_on_pi_arm_report_parity_per_variant_and_never_rank_emulated_timings(pi_arm, workdir):
    # One fleet run with this x86 machine: each target gets variants built for its own ISA.
    fleet = _json(run_cli("profile", "--target", "pi-arm", "--target", "local", "--profile", "arm", "--json"))
    doc, local = fleet["targets"]["pi-arm"], fleet["targets"]["local"]
    assert doc["emulated"] is True and doc["chosen"] is None
    assert local["emulated"] is False and local["chosen"]
    rows = {r["recipe"]: r for r in doc["variants"]}
    assert set(rows) == {"onnx:fp32", "onnx:int8-static", "tflite:fp32", "tflite:int8-static"}
    for recipe, row in rows.items():
        assert row["emulated"] is True, recipe
        assert row["status"] != "chosen" and "emulated: not a latency figure" in row["reason"], (recipe, row["reason"])
        parity = row["device_parity"]
        assert parity["samples"] == 64 and parity["passed"], (recipe, parity)
        # The device computed these with aarch64 kernels: agreement with the torch original is real.
        assert parity["top1_agreement"] >= 0.95, (recipe, parity)
        assert parity["top1_agreement"] >= parity["host_top1_agreement"] - 0.02
        print(f"pi-arm parity {recipe}: top-1 {parity['top1_agreement']:.4f} (host {parity['host_top1_agreement']:.4f}), "
              f"max|diff| {parity['max_abs_diff']:.3g} (host {parity['host_max_abs_diff']:.3g})")
    # The ISA-aware default chose full-range int8 for an ARM core without dot product, and for this
    # host what its own probe implies (7-bit weights without VNNI: then two artifacts from one recipe).
    db = sqlite3.connect(workdir / ".edgekit" / "results.db")
    local_int8 = next(r for r in local["variants"] if r["recipe"] == "onnx:int8-static")
    options = {}
    for name, vid in (("pi-arm", rows["onnx:int8-static"]["id"]), ("local", local_int8["id"])):
        options[name] = json.loads(db.execute("SELECT document FROM variants WHERE id=?", (vid,)).fetchone()[0])["options"]
    from edgekit.agent.probe import probe
    from edgekit.compress.isa import int8_types

    host_types = int8_types(tuple(probe("/")["cpu"]["isa"]))[0]
    assert options["pi-arm"]["types"] == "u8s8" and options["local"]["types"] == host_types
    if host_types != "u8s8":  # two artifacts, each with its own target's reason
        assert "without asimddp" in options["pi-arm"]["types_reason"]
        assert local_int8["id"] != rows["onnx:int8-static"]["id"]
    else:  # the same settings: one cached artifact serves both targets
        assert local_int8["id"] == rows["onnx:int8-static"]["id"]

    # Selection cannot pick on emulated timings: deploy asks for an explicit choice ...
    refused = run_cli("deploy", "--target", "pi-arm", "--profile", "arm", "--reuse")
    assert refused.returncode == 4 and "emulation" in refused.stderr and "--variant" in refused.stderr
    # ... and with one, installs it after the on-device smoke test (--reuse: the fleet run's measurements).
    done = _json(run_cli("deploy", "--target", "pi-arm", "--profile", "arm", "--variant", "tflite:int8-static",
                         "--reuse", "--json"))
    assert done["chosen_recipe"] == "tflite:int8-static" and done["smoke_test"]["passed"]
    assert all(r["reused_from_run"] == doc["run_id"] for r in done["variants"])
    current = pi_arm.device_path(".edgekit/deployments/digits-cnn/current")
    assert os.readlink(current) == done["chosen"]

    table = run_cli("report", "--table", "--target", "pi-arm")
    assert table.returncode == 0, table.stderr
    assert "emulated" in table.stdout and "✓ 100.0%" in table.stdout and "named with --variant" in table.stdout
    html = Path("report.html")
    assert run_cli("report", "-o", str(html)).returncode == 0
    page = html.read_text()
    section = page[page.index('id="target-pi-arm"'):]
    section = section[:section.index("</section>")]
    assert "Emulated: not a latency figure" in section and section.count('data-parity="pass"') == 4
