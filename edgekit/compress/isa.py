"""Defaults that depend on the target CPU, chosen from the probe's `cpu.isa` list. Light: no imports.

ONNX Runtime's x86 int8 kernels multiply uint8 activations by int8 weights with `pmaddubsw`,
whose int16 intermediate sums saturate when both operands are large; VNNI (`vpdpbusd`)
accumulates in int32 and does not. Without VNNI, 7-bit weights (`reduce_range`) keep the sums
in range. ARM kernels accumulate in int32 (sdot/udot or widening multiplies), so full range is
safe there.
"""

from __future__ import annotations

VNNI = ("avx512_vnni", "avx_vnni", "amx_int8")
ARM = ("asimd", "asimddp", "i8mm", "fp")


def int8_types(isa: tuple[str, ...] | None) -> tuple[str, str]:
    """(types, reason) for ORT int8 on a target with these ISA flags (None: not known)."""
    if isa is None:
        return ("u8s8-reduced", "target ISA unknown (no probe): u8s8 with 7-bit weights cannot saturate "
                "int16 sums on x86 CPUs without VNNI, and costs little elsewhere; profile on the target "
                "to pick full range where it is safe")
    flags = set(isa)
    if flags & set(VNNI):
        found = sorted(flags & set(VNNI))[0]
        return ("u8s8", f"target has {found}: int8 dot products accumulate in int32, full-range u8s8 is safe")
    if flags & set(ARM):
        if "asimddp" in flags:
            return ("u8s8", "ARM target with asimddp: ORT's int8 kernels use sdot/udot, accumulating in int32; "
                    "full-range u8s8 is safe")
        return ("u8s8", "ARM target without asimddp (no int8 dot product, e.g. Cortex-A72/A53): ORT's int8 kernels "
                "use widening NEON multiplies that accumulate in int32, so full-range u8s8 is safe; expect a "
                "smaller int8 speed-up than on cores with dot product")
    return ("u8s8-reduced", "x86 target without VNNI (isa: " + (", ".join(isa) or "none") + "): u8s8 goes "
            "through pmaddubsw whose int16 sums can saturate; 7-bit weights (reduce_range) avoid it")
