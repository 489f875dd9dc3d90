"""Is this Python running under user-mode emulation (qemu-user)?

qemu answers `/proc/self/exe` with the guest binary, but not the per-thread path
`/proc/self/task/<tid>/exe`, where the kernel names the program it really runs: the emulator.
When that program's ELF machine differs from the one Python reports, every timing taken here
is the emulator's, not the board's. On a real board both agree.
"""

from __future__ import annotations

import os
import platform
from typing import Optional

# ELF e_machine values (System V ABI) -> platform.machine() spellings.
ELF_MACHINES = {3: "i686", 40: "arm", 62: "x86_64", 183: "aarch64", 243: "riscv64", 21: "ppc64", 22: "s390x"}


def elf_machine(path: str) -> Optional[str]:
    try:
        with open(path, "rb") as fh:
            head = fh.read(20)
    except OSError:
        return None
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    order = "little" if head[5] == 1 else "big"
    code = int.from_bytes(head[18:20], order)
    return ELF_MACHINES.get(code, "elf-{}".format(code))


def _same(a: str, b: str) -> bool:
    arm = ("arm", "armv7l", "armv6l", "armv8l")
    return a == b or (a in arm and b in arm) or {a, b} <= {"aarch64", "arm64"}


def detect(task_exe: Optional[str] = None, reported: Optional[str] = None) -> dict:
    """{"emulated": bool|None, ...}: None when the real executable cannot be read."""
    reported = reported or platform.machine()
    if task_exe is None:
        task_exe = "/proc/self/task/{}/exe".format(os.getpid())
    real = elf_machine(task_exe)
    if real is None:
        return {"emulated": None, "reason": "cannot read {}".format(task_exe)}
    try:
        program = os.readlink(task_exe)
    except OSError:
        program = None
    emulated = not _same(real, reported)
    doc = {"emulated": emulated, "machine": reported, "host_machine": real, "program": program}
    if emulated:
        doc["reason"] = "Python reports {} but the process runs {} ({} binary): user-mode emulation; " \
                        "timings are the emulator's, not the board's".format(reported, program, real)
    return doc
