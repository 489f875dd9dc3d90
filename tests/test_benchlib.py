"""scripts/benchlib.py: each benchmark writes only its own section, describes the host from the
probe, and counts its own subprocesses as its own load."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import benchlib  # noqa: E402
from sensor_trees import capture, write  # noqa: E402


def test_write_section_replaces_only_its_own_section(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    benchlib.write_section("one", "## One\n\n| a |\n|---|\n| 1 |", path)
    benchlib.write_section("two", "## Two", path)
    benchlib.write_section("one", "## One again", path)
    text = path.read_text()
    assert text.startswith("# Benchmarks\n")
    assert benchlib.read_section("one", path) == "## One again"
    assert benchlib.read_section("two", path) == "## Two"
    assert text.count("<!-- bench:one -->") == 1 and text.index("bench:one") < text.index("bench:two")
    assert benchlib.read_section("three", path) is None
    with pytest.raises(ValueError, match="section name"):
        benchlib.write_section("no spaces", "x", path)


def test_compress_only_keeps_rows_of_its_own_section(tmp_path):
    """`bench_compress.py --only` keeps the other model's rows; the deploy and agent tables sit
    above the compress section and must not be taken for compress rows."""
    import bench_compress

    path = tmp_path / "BENCHMARKS.md"
    shutil.copy(ROOT / "BENCHMARKS.md", path)
    rows = [r for r in benchlib.section_rows("compress", path) if r.startswith("| MobileNetV2 224 |")]
    digits = [r for r in benchlib.section_rows("compress", path) if r.startswith("| digits CNN 8x8 |")]
    assert rows and digits
    foreign = benchlib.section_rows("deploy", path) + benchlib.section_rows("agent", path)
    assert foreign
    assert bench_compress.previous_rows(rows, path) == digits

    # A foreign row already inside the section (what the old filter left there) does not survive.
    text = path.read_text().replace(digits[0], foreign[0] + "\n" + digits[0])
    path.write_text(text)
    assert foreign[0] in benchlib.section_rows("compress", path)
    assert bench_compress.previous_rows(rows, path) == digits


def test_host_description_names_the_int8_isa_of_this_host():
    flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith(("flags", "Features"))).split(":", 1)[1].split()
    text = benchlib.host_description()
    assert ("AVX-512 VNNI" in text) == ("avx512_vnni" in flags)
    assert ("no VNNI" in text) == ("avx2" in flags and not {"avx512_vnni", "avx_vnni"} & set(flags))
    assert f"{len(os.sched_getaffinity(0))} usable core" in text
    assert f"Python {sys.version.split()[0]}" in text


def test_host_description_of_an_x86_without_vnni_and_of_a_pi4(tmp_path):
    from edgekit.agent.probe import probe

    avx2_only = {"arch": "x86_64", "cpu": {"model": "AMD EPYC 7B13", "isa": ["sse4_2", "avx", "avx2", "fma"],
                                            "isa_family": "x86"},
                 "cores": {"online": 8, "usable": 2}, "python": {"version": "3.11.7"},
                 "runtimes": {"onnxruntime": {"version": "1.32.0"}}}
    assert benchlib.host_description(avx2_only) == ("AMD EPYC 7B13, 2 usable cores of 8 online, AVX2 (no AVX-512, "
                                                    "no VNNI), Python 3.11.7, onnxruntime 1.32.0")
    assert "tflite not installed" in benchlib.host_description(avx2_only, runtimes=("onnxruntime", "tflite"))

    write(tmp_path, "/proc/cpuinfo", capture("rpi4_cpuinfo_aarch64.txt"))  # a real Raspberry Pi 4 capture
    pi = benchlib.host_description(probe(str(tmp_path)), runtimes=())
    assert pi.startswith("Cortex-A72")
    assert "NEON (no asimddp, no i8mm)" in pi and "AVX" not in pi


def test_own_subprocesses_are_not_other_load():
    """A live child's CPU is ours: the tree walk counts it before it is reaped."""
    child = subprocess.Popen([sys.executable, "-c", "import sys, time\nend = time.process_time() + 0.4\n"
                              "while time.process_time() < end: pass\nprint('done', flush=True)\nsys.stdin.read()"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        before = benchlib._tree_ticks()
        assert child.stdout.readline().strip() == "done"
        burnt = benchlib._tree_ticks() - before
    finally:
        child.stdin.close()
        child.wait(10)
    assert burnt >= 0.3 * os.sysconf("SC_CLK_TCK"), burnt

    with benchlib.OtherLoad() as load:
        time.sleep(0.05)
    assert load.cores >= 0 and load.seconds >= 0.05 and "cores on average" in load.describe()


def _row(recipe: str, status: str, p50: float, ci: list[float], paired: dict | None = None) -> dict:
    row = {"recipe": recipe, "status": status, "latency": {"p50_ms": p50, "ci95_median_ms": ci}}
    if paired is not None:
        row["paired"] = paired
    return row


def test_truth_ranking_reads_the_paired_ci_when_rows_carry_one():
    import bench_truth

    apart = {"objective": "p50_ms", "variants": [_row("a", "chosen", 1.0, [0.9, 1.1]),
                                                 _row("b", "eligible", 1.5, [1.4, 1.6]),
                                                 _row("c", "rejected", 0.5, [0.4, 0.6])]}
    d = bench_truth.decision(apart)
    assert (d["chosen"], d["runner_up"], d["sure"], d["kind"]) == ("a", "b", True, "median")

    # Median CIs apart, but the paired ratios' CIs overlap: the paired reading decides.
    paired = {"objective": "p50_ms", "variants": [
        _row("a", "chosen", 1.0, [0.9, 1.1], {"ratio": 1.0, "ci95": [0.95, 1.2]}),
        _row("b", "eligible", 1.5, [1.4, 1.6], {"ratio": 1.1, "ci95": [1.0, 1.3]})]}
    d = bench_truth.decision(paired)
    assert (d["sure"], d["kind"]) == (False, "paired")

    runs = [{"chosen": c, "sure": s} for c, s in (("a", True), ("b", False), ("b", True), ("b", True), ("a", True))]
    assert bench_truth.flips(runs) == 2  # a->b and b->a among the sure runs; the unsure one does not count
