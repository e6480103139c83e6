"""What `mnist train` would refuse on this machine, checked before a sweep starts (every trial would fail
on it): a missing data folder, a precision the CPU cannot run, XLA for the CNN on a CPU."""

from __future__ import annotations

from pathlib import Path

from mnist_pipeline.errors import ConfigError, quote


def trainable_here(cfg) -> None:
    """What `mnist train` refuses when it starts on this machine, before TensorFlow: a data folder that is not
    there, a precision the CPU cannot run (float16 needs a GPU; bfloat16 convolutions abort under a oneDNN
    instruction-set cap), XLA for the CNN on a CPU. Said up front, since every trial would fail on it."""
    from mnist_pipeline import runtime
    from mnist_pipeline.data.sources import OFFLINE_HINT

    data_dir = runtime.data_dir(cfg.data.data_dir)  # refuses an empty one, as `mnist train` does
    path = Path(data_dir).expanduser() if data_dir else None
    if path and not path.exists():
        raise ConfigError(f"data folder {quote(str(path))} does not exist; {OFFLINE_HINT}")
    if path and not path.is_dir() and path.suffix != ".npz":
        raise ConfigError(f"data folder {quote(str(path))} is a file, not a folder or an .npz; {OFFLINE_HINT}")
    training = cfg.training
    on_cpu = training.device == "cpu" or (training.device == "auto" and not _gpu_visible())
    if not on_cpu:
        return
    precision = training.compute_precision
    setting = ("training.mixed_precision = true" if training.mixed_precision
               else f"training.precision = {training.precision}")
    if precision == "mixed_float16":
        raise ConfigError(f"{setting} needs a GPU (float16 on a CPU is slower, not faster); use "
                          f"training.precision: auto on a CPU, or --device gpu on a machine that has one")
    cpu = runtime.cpu()
    if precision == "mixed_bfloat16" and cpu.bfloat16_aborts:
        raise ConfigError(f"training.precision = mixed_bfloat16 cannot train with {cpu.bfloat16_blocked_by}: oneDNN "
                          f"then aborts bfloat16 convolutions; unset ONEDNN_MAX_CPU_ISA, or set training.precision: "
                          f"auto or float32")
    if training.jit_compile is True and cfg.model.name == "cnn" and training.distribute.strategy == "none":
        raise ConfigError("training.jit_compile = true cannot train the cnn on a CPU: runs on a CPU are "
                          "deterministic, and XLA has no deterministic max-pooling gradient; set "
                          "training.jit_compile: false")


def _gpu_visible() -> bool:
    """Whether TensorFlow could see a GPU, judged without importing it: an NVIDIA device node, not hidden."""
    import os

    hidden = os.environ.get("CUDA_VISIBLE_DEVICES", "x").strip() in ("", "-1")
    return not hidden and Path("/dev/nvidia0").exists()
