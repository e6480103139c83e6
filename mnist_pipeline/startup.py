"""Runtime start-up for a run: device, tf.distribute strategy, precision and seeds, decided once, in order.

`start_runtime` is called once per process, before TensorFlow creates anything; its `Runtime` says where the
run trains. The settings themselves are made by `runtime` (the only module touching tf.config).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mnist_pipeline import distribute, hardware, runtime
from mnist_pipeline.config import RunConfig
from mnist_pipeline.errors import ConfigError


@dataclass(frozen=True)
class Runtime:
    """Where a run trains, from `start_runtime`."""

    device: hardware.Device
    strategy: Any  # tf.distribute.Strategy, or None for one device
    topology: distribute.Topology
    precision: hardware.Precision
    cpu: str  # the CPU and the flags a speed figure depends on (`hardware.CpuFacts.describe`)
    warning: str | None = None  # a slow choice the run goes ahead with (bfloat16 that this machine emulates)


def start_runtime(cfg: RunConfig, distributed: bool = True, kept_precision: str | None = None) -> Runtime:
    """Environment, device, tf.distribute strategy (unless not `distributed`), precision and seeds, before
    TensorFlow creates anything. Runs on a CPU are made deterministic (op determinism). `kept_precision`: the
    policy a resumed run's checkpoint trained under, kept whatever this machine would choose."""
    runtime.prepare_environment()
    device = runtime.select_device(cfg.training.device)
    strategy, topology = (distribute.create_strategy(cfg.training.distribute, cfg.training.batch_size, device)
                          if distributed else (None, distribute.Topology("none", 1)))
    cpu = runtime.cpu()
    capability = runtime.gpu_capability() if device.is_gpu else None
    requested = cfg.training.compute_precision
    precision = (hardware.Precision(kept_precision, requested, "kept from the checkpoint this run goes on from")
                 if kept_precision else hardware.resolve_precision(requested, device, cpu, capability,
                                                                   convolutional=cfg.model.name == "cnn"))
    if precision.policy == "mixed_bfloat16" and not device.is_gpu and cpu.bfloat16_aborts:
        fix = ("unset ONEDNN_MAX_CPU_ISA to resume this run (a resumed run keeps the precision it trained with)"
               if kept_precision else "unset ONEDNN_MAX_CPU_ISA, or set training.precision: auto or float32")
        raise ConfigError(f"training.precision = mixed_bfloat16 cannot train with {cpu.bfloat16_blocked_by}: oneDNN "
                          f"then aborts bfloat16 convolutions; {fix}")
    runtime.set_precision(precision.policy, device, "training.mixed_precision = true"
                          if cfg.training.mixed_precision else f"training.precision = {cfg.training.precision}")
    deterministic = not device.is_gpu
    if deterministic and cfg.training.jit_compile is True and cfg.model.name == "cnn" and strategy is None:
        # TensorFlow raises UnimplementedError at the first step otherwise: said before anything is built.
        # (Under a strategy the trainer leaves XLA off anyway.)
        raise ConfigError("training.jit_compile = true cannot train the cnn on a CPU: runs on a CPU are "
                          "deterministic, and XLA has no deterministic max-pooling gradient; set "
                          "training.jit_compile: false")
    runtime.seed_everything(cfg.training.seed, deterministic=deterministic)
    return Runtime(device, strategy, topology, precision, cpu.describe(),
                   hardware.bfloat16_warning(precision, device, cpu, capability))
