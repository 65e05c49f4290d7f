"""Hardware-aware quantization defaults: what is fast and accurate on the CPU we run on."""

from __future__ import annotations

from dataclasses import dataclass

from edgeslim.environment import cpu_info


@dataclass(frozen=True)
class Target:
    """Int8-relevant capabilities of a CPU."""

    arch: str  # "x86" or "arm" or other
    avx2: bool
    vnni: bool  # x86 AVX512-VNNI / AVX-VNNI: int8 dot products with 32-bit accumulation
    amx: bool
    arm_dot: bool  # Arm SDOT/UDOT
    bf16: bool = False  # bf16 arithmetic in hardware (x86 AVX512_BF16 / AMX-BF16, Arm BF16)

    @property
    def name(self) -> str:
        if self.arch == "x86":
            return "amx" if self.amx else "avx512_vnni" if self.vnni else "avx2" if self.avx2 else "x86"
        return "arm64-dotprod" if self.arm_dot else self.arch


def detect() -> Target:
    """The current CPU's Target (tests build Targets by hand or through from_facts)."""
    info = cpu_info()
    return from_facts(str(info["machine"]), set(info["flags"]))  # type: ignore[call-overload]


def from_facts(machine: str, flags: set[str]) -> Target:
    """The Target of a CPU described by its machine name and /proc/cpuinfo flags."""
    machine = machine.lower()
    arch = machine
    if machine in ("x86_64", "amd64", "i686"):
        arch = "x86"
    elif machine.startswith(("aarch64", "arm")):
        arch = "arm"
    return Target(
        arch,
        "avx2" in flags,
        bool(flags & {"avx512_vnni", "avx_vnni"}),
        "amx_int8" in flags,
        "asimddp" in flags,
        bool(flags & {"avx512_bf16", "amx_bf16", "bf16"}),
    )


def int8_defaults(target: Target) -> dict[str, object]:
    """Defaults for int8 modes on `target`.

    - per-channel weights everywhere: on MiniLM dynamic per-channel gives cosine 0.990 vs 0.957
      per-tensor (shared/MEASURED.md).
    - U8 activations x S8 weights: on x86 without VNNI, s8 x s8 MatMulInteger runs ~6x slower.
    - reduce_range (7-bit weights) on x86 without VNNI: AVX2's u8 x s8 multiply-add
      (vpmaddubsw) saturates at 16 bits; 7-bit weights keep pairs of products in range.
    """
    no_vnni_x86 = target.arch == "x86" and not (target.vnni or target.amx)
    return {"per_channel": True, "reduce_range": no_vnni_x86, "activation_type": "U8", "weight_type": "S8"}


def int8_speed_warning(target: Target, activation_type: str) -> str | None:
    """A warning when int8 is likely no faster than fp32 here, else None."""
    if target.arch == "x86" and not target.avx2:
        return "this CPU has no AVX2: int8 kernels are likely no faster than fp32"
    if target.arch == "arm" and not target.arm_dot:
        return "this Arm CPU has no dot-product instructions: int8 is likely no faster than fp32"
    if target.arch == "x86" and not target.vnni and activation_type == "S8":
        return "s8 activations without VNNI run ~6x slower than u8 here: int8 will be slower than fp32"
    return None
