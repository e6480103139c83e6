"""What this machine computes fast, read from facts a test can fake: CPU flags and model, GPU compute capability.

The one place where the speed defaults that depend on the machine or the run are decided (`resolve_precision`,
`resolve_jit_compile`), and where the machine is described for reports and benchmarks (`CpuFacts.describe`).
Imports no TensorFlow: the caller passes what TensorFlow says about its GPU.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

# x86 flags of native bfloat16 arithmetic: AVX-512 BF16 (Intel Cooper Lake+, AMD Zen 4+) and AMX (Sapphire
# Rapids+). Without them oneDNN and Eigen emulate bfloat16 in float32 and convert at every op: slower, not faster.
BFLOAT16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
# NVIDIA GPUs compute bfloat16 natively from Ampere (compute capability 8.0) on.
BFLOAT16_GPU_CAPABILITY = (8, 0)
# The flags that explain a speed figure: vector width, bfloat16, matrix units.
NOTABLE_CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")


@dataclass(frozen=True)
class Device:
    """The device a process trains on, as `runtime.select_device` chose it."""

    kind: Literal["cpu", "gpu"]
    name: str  # the CPU's processor or architecture, or the first GPU's name
    count: int = 1  # GPUs visible (all of one kind)

    @property
    def is_gpu(self) -> bool:
        return self.kind == "gpu"

    def describe(self) -> str:
        """"cpu (x86_64)" or "gpu (2x NVIDIA H100)": the log's and metrics.json's `device`."""
        return f"gpu ({self.count}x {self.name})" if self.is_gpu else f"cpu ({self.name})"

    @classmethod
    def of(cls, device: Device | str) -> Device:
        """`device`, or the Device a description ("cpu (x86_64)", "gpu (1x T4)", "cpu") names."""
        if isinstance(device, Device):
            return device
        kind, _, rest = device.partition(" ")
        count, _, name = rest.strip("()").partition("x ") if kind == "gpu" else ("1", "", rest.strip("()"))
        return cls("gpu" if kind == "gpu" else "cpu", name, int(count) if count.isdigit() else 1)


@dataclass(frozen=True)
class CpuFacts:
    model: str  # "AMD EPYC 9R14 96-Core Processor", or the architecture when /proc/cpuinfo says nothing
    flags: frozenset[str]  # empty when unknown (no /proc/cpuinfo: macOS, Windows)
    cores: int  # usable by this process
    # TensorFlow's native bfloat16 kernels on a CPU are oneDNN's: turned off (TF_ENABLE_ONEDNN_OPTS=0), Eigen
    # emulates bfloat16; capped below them (ONEDNN_MAX_CPU_ISA=AVX2, ...), a bfloat16 convolution aborts.
    onednn: bool = True
    onednn_max_isa: str | None = None

    @property
    def bfloat16_aborts(self) -> bool:
        """Whether oneDNN's instruction-set cap stops bfloat16 convolutions (they abort, not slow down)."""
        return bool(self.onednn_max_isa) and self.onednn_max_isa.strip().upper() not in BFLOAT16_ONEDNN_ISAS

    @property
    def bfloat16_blocked_by(self) -> str | None:
        """The setting that keeps oneDNN's bfloat16 kernels from running, e.g. "ONEDNN_MAX_CPU_ISA=AVX2"."""
        if self.bfloat16_aborts:
            return f"ONEDNN_MAX_CPU_ISA={self.onednn_max_isa}"
        return None if self.onednn else "TF_ENABLE_ONEDNN_OPTS=0"

    @property
    def native_bfloat16(self) -> bool:
        return bool(self.flags & set(BFLOAT16_CPU_FLAGS)) and self.bfloat16_blocked_by is None

    def describe(self) -> str:
        """"AMD EPYC ... (2 cores; avx2, avx512f, avx512_bf16)", the facts a speed figure depends on."""
        notable = [flag for flag in NOTABLE_CPU_FLAGS if flag in self.flags]
        return f"{self.model} ({self.cores} cores; {', '.join(notable) or 'flags unknown'})"


# oneDNN's ONEDNN_MAX_CPU_ISA values that still allow its bfloat16 kernels; any lower cap (AVX2, AVX512_CORE,
# ...) makes a bfloat16 convolution abort the step rather than run slowly.
BFLOAT16_ONEDNN_ISAS = {"ALL", "DEFAULT", "AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX",
                        "AVX512_CORE_AMX_FP16", "AVX10_1_512", "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16",
                        "AVX10_2_512", "AVX10_2_512_AMX_2"}


def read_cpu(cpuinfo: str | None = None, onednn_max_isa: str | None = None, onednn: bool = True) -> CpuFacts:
    """This machine's CPU from `cpuinfo` (the text of /proc/cpuinfo; read from there when None), as TensorFlow
    may use it: with oneDNN on or off (`onednn`) and capped at `onednn_max_isa` (see `CpuFacts`)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            cpuinfo = ""
    model, flags = "", frozenset()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return CpuFacts(model or platform.processor() or platform.machine(), flags, cores, onednn, onednn_max_isa)


@dataclass(frozen=True)
class Precision:
    """The Keras policy a run trains under, and why (for the header line and metrics.json)."""

    policy: str  # float32, mixed_bfloat16 or mixed_float16
    requested: str  # what the config said: auto or a policy
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"policy": self.policy, "requested": self.requested, "reason": self.reason}


def resolve_precision(requested: str, device: Device | str, cpu: CpuFacts,
                      gpu_capability: tuple[int, int] | None = None, convolutional: bool = True) -> Precision:
    """`auto`: mixed_bfloat16 where `device` computes bfloat16 natively (a CPU with one of
    BFLOAT16_CPU_FLAGS, a GPU of compute capability >= 8.0) and the model is `convolutional`; float32
    elsewhere, and when it cannot tell. A dense-only model this small spends its step on casts and memory
    rather than arithmetic: bfloat16 made the MLP slower even on a CPU with native bfloat16 (docs/benchmarks.md
    has the figures). Any other request is kept as it is (a slow one is warned about: see `bfloat16_warning`)."""
    native, fact = _native_bfloat16(device, cpu, gpu_capability)
    if requested != "auto":
        return Precision(requested, requested, "as configured")
    if native and not convolutional:
        return Precision("float32", "auto", "auto: a dense-only model trains faster in float32")
    return Precision("mixed_bfloat16" if native else "float32", "auto", f"auto: {fact}")


def bfloat16_warning(precision: Precision, device: Device | str, cpu: CpuFacts,
                     gpu_capability: tuple[int, int] | None = None) -> str | None:
    """The warning for bfloat16 that `device` would only emulate, or None (also when it cannot tell)."""
    native, fact = _native_bfloat16(device, cpu, gpu_capability)
    if precision.policy != "mixed_bfloat16" or native or not _knows(device, cpu, gpu_capability):
        return None
    return (f"warning: {fact}, so mixed_bfloat16 is emulated and runs several times slower than float32 here "
            f"(docs/benchmarks.md has the measurements); set training.precision: auto or float32")


def _native_bfloat16(device: Device | str, cpu: CpuFacts, gpu_capability: tuple[int, int] | None
                     ) -> tuple[bool, str]:
    """(whether `device` computes bfloat16 natively, the fact that says so, short enough for a header line)."""
    if Device.of(device).is_gpu:
        if gpu_capability is None:
            return False, "this GPU's compute capability is unknown"
        major, minor = gpu_capability
        native = tuple(gpu_capability) >= BFLOAT16_GPU_CAPABILITY
        return native, f"this GPU is compute capability {major}.{minor}{'' if native else ' (bfloat16 from 8.0)'}"
    flags = [flag for flag in BFLOAT16_CPU_FLAGS if flag in cpu.flags]
    if flags and cpu.bfloat16_blocked_by:
        return False, f"{cpu.bfloat16_blocked_by} keeps oneDNN's bfloat16 kernels off"
    if flags:
        return True, f"this CPU has {' and '.join(flags)}"
    if not cpu.flags:
        return False, "this CPU's flags are unknown"
    return False, f"this CPU has no {' or '.join(BFLOAT16_CPU_FLAGS)}"


def _knows(device: Device | str, cpu: CpuFacts, gpu_capability: tuple[int, int] | None) -> bool:
    """Whether the facts can tell native from emulated (no warning on a guess)."""
    return gpu_capability is not None if Device.of(device).is_gpu else bool(cpu.flags)


# XLA compiles a group of steps once, then runs each faster: below this many steps a run spends longer
# compiling than it gains. Set with room for a CPU that compiles several times slower than the one it was
# measured on (docs/guide/speed.md has the figures and machines).
XLA_MIN_STEPS = 2_000


def resolve_jit_compile(requested: bool | str, model_name: str, params: dict, steps: int) -> tuple[bool, str]:
    """`auto`: XLA for a dense model without batch norm (linear, mlp, deep_mlp) on a run of at least
    XLA_MIN_STEPS optimizer steps; off for the rest. The cnn cannot be compiled deterministically on a CPU
    (no deterministic max-pooling gradient), and batch norm's stack ran slower compiled. True or false as
    configured otherwise."""
    if requested != "auto":
        return bool(requested), "as configured"
    if model_name == "cnn":
        return False, "auto: no deterministic XLA max-pooling gradient"
    if params.get("batch_norm"):
        return False, "auto: dense layers with batch norm ran slower compiled"
    if steps < XLA_MIN_STEPS:
        return False, f"auto: {steps:,} {'step is' if steps == 1 else 'steps are'} too few to repay the compile"
    return True, f"auto: {steps:,} steps of a dense model repay the compile"
