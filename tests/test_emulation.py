"""Emulation detection and ARM facts in the agent's probe, checked on real binaries and a real Pi 4 capture."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from edgekit.agent import emulation, probe
from edgekit.compress.isa import int8_types

CAPTURES = Path(__file__).parent / "fixtures" / "devices"


def test_a_native_process_is_not_emulated():
    doc = emulation.detect()
    assert doc["emulated"] is False and doc["host_machine"] == doc["machine"]


def test_a_real_x86_binary_behind_an_aarch64_python_means_emulation():
    # What qemu-user shows: Python says aarch64, the kernel's executable (the emulator) is x86-64.
    real = shutil.which("sh") or sys.executable
    assert emulation.elf_machine(real) == "x86_64"
    doc = emulation.detect(task_exe=real, reported="aarch64")
    assert doc["emulated"] is True and doc["host_machine"] == "x86_64"
    assert "not the board's" in doc["reason"]


def test_an_unreadable_executable_says_unknown_not_native(tmp_path):
    not_elf = tmp_path / "script"
    not_elf.write_text("#!/bin/sh\n")
    assert emulation.detect(task_exe=str(not_elf))["emulated"] is None
    assert emulation.detect(task_exe=str(tmp_path / "missing"))["emulated"] is None


def pi4_root(tmp_path: Path) -> str:
    capture = (CAPTURES / "rpi4_cpuinfo_aarch64.txt").read_text()
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "cpuinfo").write_text("".join(l for l in capture.splitlines(True) if not l.startswith("#")))
    return str(tmp_path)


def test_pi4_cpuinfo_names_the_core_the_board_and_the_missing_dot_product(tmp_path):
    root = pi4_root(tmp_path)
    cpu = probe.cpu_facts(root)
    assert cpu["isa_family"] == "arm" and cpu["isa"] == ["fp", "asimd"]
    assert cpu["core"] == "Cortex-A72" and cpu["model"] == "Cortex-A72" and cpu["hardware"] == "BCM2835"
    assert cpu["missing"] == ["asimddp", "i8mm"]
    # No /proc/device-tree/model in this tree: the kernel's cpuinfo `Model:` line names the board.
    assert probe.board(root, cpu)["model"] == "Raspberry Pi 4 Model B Rev 1.1"


def test_int8_defaults_say_why_for_arm_with_and_without_dot_product():
    types, why = int8_types(("fp", "asimd"))
    assert types == "u8s8" and "without asimddp" in why
    types, why = int8_types(("fp", "asimd", "asimddp"))
    assert types == "u8s8" and "sdot" in why
    assert int8_types(("sse4_2", "avx2"))[0] == "u8s8-reduced"
