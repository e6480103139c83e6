"""hardware: the CPU facts read from /proc/cpuinfo text, and `auto` precision resolved from faked CPU flags and GPUs."""

import pytest

from mnist_pipeline.hardware import CpuFacts, bfloat16_warning, read_cpu, resolve_precision

ZEN3 = "processor : 0\nmodel name : AMD EPYC 7R13 Processor\nflags : fpu sse2 avx avx2 fma\n"
ZEN4 = "processor : 0\nmodel name : AMD EPYC 9R14 96-Core Processor\nflags : fpu avx2 avx512f avx512_bf16\n"
SAPPHIRE_RAPIDS = "model name : Intel(R) Xeon(R) Platinum 8488C\nflags : avx2 avx512f amx_tile amx_bf16\n"


def test_cpu_facts_name_the_model_and_the_flags_that_matter():
    zen4 = read_cpu(ZEN4 + "processor : 1\nmodel name : AMD EPYC 9R14 96-Core Processor\nflags : fpu\n")
    assert zen4.model == "AMD EPYC 9R14 96-Core Processor"
    assert zen4.native_bfloat16  # the first CPU's flags
    assert "avx2, avx512f, avx512_bf16" in zen4.describe()
    assert "cores" in zen4.describe()
    assert not read_cpu(ZEN3).native_bfloat16
    assert read_cpu(SAPPHIRE_RAPIDS).native_bfloat16
    unknown = read_cpu("")  # no /proc/cpuinfo (macOS, Windows)
    assert unknown.flags == frozenset()
    assert unknown.model
    assert "flags unknown" in unknown.describe()


@pytest.mark.parametrize(("cpuinfo", "device", "capability", "policy"), [
    (ZEN4, "cpu (x86_64)", None, "mixed_bfloat16"),
    (SAPPHIRE_RAPIDS, "cpu (x86_64)", None, "mixed_bfloat16"),
    (ZEN3, "cpu (x86_64)", None, "float32"),
    ("", "cpu (arm64)", None, "float32"),  # cannot tell: the safe choice
    (ZEN3, "gpu (1x NVIDIA H100)", (9, 0), "mixed_bfloat16"),
    (ZEN3, "gpu (1x NVIDIA A100)", (8, 0), "mixed_bfloat16"),
    (ZEN4, "gpu (1x Tesla T4)", (7, 5), "float32"),  # the GPU trains, not the CPU
    (ZEN4, "gpu (1x ?)", None, "float32"),
])
def test_auto_precision_is_bfloat16_only_where_the_device_computes_it_natively(cpuinfo, device, capability, policy):
    chosen = resolve_precision("auto", device, read_cpu(cpuinfo), capability)
    assert chosen.policy == policy
    assert chosen.requested == "auto"
    assert chosen.reason.startswith("auto: this " + device.split()[0].upper())
    assert (" has no " in chosen.reason or "unknown" in chosen.reason or "(bfloat16 from 8.0)" in chosen.reason) == (
        policy == "float32")


def test_an_explicit_precision_is_kept_and_emulated_bfloat16_is_warned_about_with_its_cost():
    zen3, zen4 = read_cpu(ZEN3), read_cpu(ZEN4)
    forced = resolve_precision("mixed_bfloat16", "cpu (x86_64)", zen3)
    assert forced.policy == "mixed_bfloat16"
    assert forced.reason == "as configured"
    warning = bfloat16_warning(forced, "cpu (x86_64)", zen3)
    assert warning.startswith("warning: this CPU has no avx512_bf16 or amx_bf16, so mixed_bfloat16 is emulated")
    assert "docs/benchmarks.md" in warning
    assert "training.precision: auto or float32" in warning
    assert bfloat16_warning(forced, "cpu (x86_64)", zen4) is None
    assert bfloat16_warning(forced, "cpu (arm64)", CpuFacts("arm64", frozenset(), 2)) is None  # a guess: silent
    assert "compute capability 7.5" in bfloat16_warning(forced, "gpu (1x T4)", zen4, (7, 5))
    assert bfloat16_warning(resolve_precision("float32", "cpu (x86_64)", zen3), "cpu (x86_64)", zen3) is None
    assert resolve_precision("mixed_float16", "gpu (1x T4)", zen3, (7, 5)).policy == "mixed_float16"


def test_auto_keeps_dense_only_models_in_float32_even_where_bfloat16_is_native():
    for device, capability in (("cpu (x86_64)", None), ("gpu (1x NVIDIA H100)", (9, 0))):
        dense = resolve_precision("auto", device, read_cpu(ZEN4), capability, convolutional=False)
        assert dense.policy == "float32"
        assert dense.reason == "auto: a dense-only model trains faster in float32"
    assert resolve_precision("mixed_bfloat16", "cpu", read_cpu(ZEN4), convolutional=False).policy == "mixed_bfloat16"


@pytest.mark.parametrize(("requested", "model", "params", "steps", "on"), [
    ("auto", "mlp", {}, 16_840, True),  # mlp.yaml as shipped: 40 epochs of full MNIST
    ("auto", "mlp", {}, 112, False),  # a 2-epoch try on mnist-small: the compile would cost more than it saves
    ("auto", "linear", {}, 2_000, True),
    ("auto", "deep_mlp", {"batch_norm": True}, 16_840, False),
    ("auto", "cnn", {}, 100_000, False),  # no deterministic XLA max-pooling gradient on a CPU
    (True, "mlp", {}, 10, True),
    (False, "mlp", {}, 100_000, False),
])
def test_auto_jit_compile_is_on_only_where_a_long_run_of_a_dense_model_repays_it(requested, model, params, steps,
                                                                                    on):
    from mnist_pipeline.hardware import resolve_jit_compile

    chosen, reason = resolve_jit_compile(requested, model, params, steps)
    assert chosen is on
    assert reason.startswith("auto: " if requested == "auto" else "as configured")


def test_onednn_turned_off_means_emulated_bfloat16_said_as_such():
    # TF_ENABLE_ONEDNN_OPTS=0 on a Zen 4: Eigen emulates bfloat16 (docs/benchmarks.md: 6.4x slower there).
    off = read_cpu(ZEN4, onednn=False)
    assert not off.native_bfloat16
    assert "avx512_bf16" in off.flags
    chosen = resolve_precision("auto", "cpu (x86_64)", off)
    assert chosen.policy == "float32"
    assert chosen.reason == "auto: TF_ENABLE_ONEDNN_OPTS=0 keeps oneDNN's bfloat16 kernels off"
    forced = resolve_precision("mixed_bfloat16", "cpu (x86_64)", off)
    assert bfloat16_warning(forced, "cpu (x86_64)", off).startswith(
        "warning: TF_ENABLE_ONEDNN_OPTS=0 keeps oneDNN's bfloat16 kernels off, so mixed_bfloat16 is emulated")


def test_a_onednn_cap_below_bfloat16_hides_the_bfloat16_flags():
    # ONEDNN_MAX_CPU_ISA=AVX2 on a Zen 4: oneDNN then aborts bfloat16 convolutions, so `auto` must not pick them.
    assert not read_cpu(ZEN4, onednn_max_isa="AVX2").native_bfloat16
    assert not read_cpu(ZEN4, onednn_max_isa="avx512_core").native_bfloat16
    assert read_cpu(ZEN4, onednn_max_isa="AVX512_CORE_BF16").native_bfloat16
    assert read_cpu(SAPPHIRE_RAPIDS, onednn_max_isa="ALL").native_bfloat16
    capped = resolve_precision("auto", "cpu (x86_64)", read_cpu(ZEN4, onednn_max_isa="AVX2"))
    assert capped.policy == "float32"
