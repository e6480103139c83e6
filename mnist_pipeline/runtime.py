"""Process-wide runtime setup: seeds, determinism, device selection, environment lookups.

The only module that touches `tf.config` or environment variables. Call `select_device` before any tensor
is created: TensorFlow fixes its visible devices when it first initializes.
"""

from __future__ import annotations

import io
import logging
import os
import platform
import random
import signal
import sys
import threading
import warnings

import numpy as np

from mnist_pipeline import hardware
from mnist_pipeline.errors import ConfigError, DeviceError, PipelineError, StopNow, brief

DATA_DIR_ENV = "MNIST_DATA_DIR"


def data_dir(configured: str | None) -> str | None:
    """The data dir to read: the configured one (flag or config), else $MNIST_DATA_DIR, else None (download).
    An empty one is refused: quietly reading other data (or downloading) in its place would mislead."""
    if configured is not None and not configured.strip():
        raise ConfigError(f"--data-dir {configured!r} is empty; name the folder with the data, or leave the option "
                          f"out to read ${DATA_DIR_ENV} or Keras's download")
    return configured or os.environ.get(DATA_DIR_ENV) or None


def prepare_environment() -> None:
    """Settings TensorFlow and Keras read once, at import: call before importing either."""
    # The models and trainer are written against TensorFlow; a KERAS_BACKEND=jax left in the shell would
    # make Keras hand them JAX arrays.
    os.environ["KERAS_BACKEND"] = "tensorflow"
    # Keeps most of TensorFlow's C++ INFO lines out of the terminal; errors still show.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # TensorFlow turns its oneDNN CPU kernels on by itself only on some CPUs (not on AMD's); they ran the CNN's
    # train step faster side by side (docs/benchmarks.md has the figures and machines) and are the only native
    # bfloat16 path on CPU. Results stay deterministic (the bit-exact resume tests pass with it); 0 opts out.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


def quiet_native_logs() -> None:
    """Keep TensorFlow's log lines off the terminal, so an error is the only line a failing command prints.

    TensorFlow's C++ side writes to file descriptor 2 directly, some of it (absl's and oneDNN's lines at
    import) whatever TF_CPP_MIN_LOG_LEVEL says. So fd 2 goes to /dev/null and Python's `sys.stderr`, which
    every message of ours uses, to a copy of the real stderr. Python warnings and log records from
    TensorFlow, Keras and absl are dropped too. Nothing to do when stderr is not the process's own (tests).
    """
    try:
        if sys.stderr.fileno() != 2:
            return
    except (AttributeError, ValueError, io.UnsupportedOperation):
        return
    sys.stderr.flush()
    terminal = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    sys.stderr = open(terminal, "w", buffering=1, encoding=sys.stderr.encoding,  # noqa: SIM115 - for the process
                      errors="backslashreplace")
    warnings.filterwarnings("ignore", module=r"(tensorflow|keras|absl|tf_keras|google)(\.|$)")
    # Finalizers that fail at exit print "Exception ignored in ..." with a traceback: after another worker
    # died, TensorFlow's eager all-reduce leaves a ThreadPool whose __del__ does. Never ours to act on.
    sys.unraisablehook = _drop_unraisable
    for name in ("tensorflow", "absl", "keras"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _drop_unraisable(unraisable) -> None:
    return None


def select_device(choice: str) -> hardware.Device:
    """Make `choice` (auto | cpu | gpu) the device TensorFlow uses; return it."""
    try:
        import tensorflow as tf
    except ImportError as exc:
        raise PipelineError(f"TensorFlow cannot be imported ({brief(exc)}); install one build: "
                            f"pip install -e '.[cpu]' (or '.[gpu]' for CUDA), or run `make install`") from None

    gpus = tf.config.list_physical_devices("GPU")
    if choice == "cpu" or (choice == "auto" and not gpus):
        if gpus:
            tf.config.set_visible_devices([], "GPU")
        return hardware.Device("cpu", platform.processor() or platform.machine())
    if not gpus:
        raise DeviceError("--device gpu: TensorFlow sees no GPU (no CUDA device, or the CPU-only build is "
                          "installed); use --device cpu or auto, or install the CUDA build: pip install -e '.[gpu]'")
    for gpu in gpus:
        # Grow GPU memory as needed instead of reserving all of it, so several runs can share a card.
        tf.config.experimental.set_memory_growth(gpu, True)
    names = [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus]
    return hardware.Device("gpu", names[0], len(gpus))


def using_gpu() -> bool:
    """Whether TensorFlow trains on a GPU (after `select_device`), for code that does not have its Device."""
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))


def set_precision(precision: str, device: hardware.Device, setting: str = "") -> None:
    """The Keras policy `precision` names (float32, mixed_bfloat16 or mixed_float16; see
    `hardware.resolve_precision` for auto), process-wide; float16 only on a GPU. `setting` is how the config
    asked for it, for the error."""
    import keras

    from mnist_pipeline.errors import ConfigError

    if precision == "mixed_float16" and not device.is_gpu:
        raise ConfigError(f"{setting or 'training.precision = mixed_float16'} needs a GPU (float16 on a CPU is "
                          f"slower, not faster); use training.precision: auto on a CPU (bfloat16 where it is "
                          f"native), or train with "
                          f"--device gpu on a machine that has one")
    keras.mixed_precision.set_global_policy(precision)


def cpu() -> hardware.CpuFacts:
    """This machine's CPU as TensorFlow may use it: its flags, and oneDNN's settings from the environment
    (TF_ENABLE_ONEDNN_OPTS, ONEDNN_MAX_CPU_ISA or its older name DNNL_MAX_CPU_ISA)."""
    onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1").strip().lower() not in ("0", "false")
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or None
    return hardware.read_cpu(onednn_max_isa=cap, onednn=onednn)


def gpu_capability() -> tuple[int, int] | None:
    """The first visible GPU's CUDA compute capability, or None (no GPU, or TensorFlow does not say)."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability") if gpus else None
    return tuple(capability) if capability else None


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy, TensorFlow and Keras; with `deterministic`, make TF ops reproducible too.

    Op determinism is for CPU runs: on GPU some ops (e.g. sparse softmax cross-entropy) refuse to run
    under it, and it costs speed.
    """
    import keras
    import tensorflow as tf

    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)  # also seeds TF and Keras's global SeedGenerator
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def library_versions() -> dict[str, str]:
    import keras
    import tensorflow as tf

    return {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__}


class _SignalHandlers:
    """`_handle` on SIGINT and SIGTERM inside a `with` block, what was there before put back after it. Only the
    main thread can install handlers; elsewhere the block runs without them."""

    previous: dict

    def __enter__(self):
        self.previous = {}
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGINT, signal.SIGTERM):
                self.previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)

    def _handle(self, number, frame) -> None:
        raise NotImplementedError


class StopSignals(_SignalHandlers):
    """SIGINT / SIGTERM during training: the first asks to stop after the current step, a second stops now.

    Install in the main thread. `exit_code` follows the shell convention 128 + signal number (130, 143).
    """

    def __init__(self):
        self.received: int | None = None

    def _handle(self, number, frame) -> None:
        if self.received is not None:
            raise StopNow(f"{signal.Signals(number).name} again: stopped at once", 128 + number)
        self.received = number

    def requested(self) -> bool:
        return self.received is not None

    @property
    def exit_code(self) -> int:
        return 128 + (self.received or signal.SIGINT)

    @property
    def name(self) -> str:
        return signal.Signals(self.received or signal.SIGINT).name



class StopAtOnce(_SignalHandlers):
    """SIGINT / SIGTERM during a short job that cannot stop half-way (an export): raise StopNow at once, so the
    job's own cleanup runs and the CLI prints `message` with the exit code 128 + signal number (130, 143).

    Outside the main thread (where Python cannot install handlers) it does nothing.
    """

    def __init__(self, message: str):
        self.message = message


    def _handle(self, number, frame) -> None:
        raise StopNow(f"{signal.Signals(number).name}: {self.message}", 128 + number)
