"""tf.distribute from the config: the strategy, its replicas and workers, and which process is the chief.

The only module that reads or writes TF_CONFIG. It parses it without TensorFlow, so `mnist train` knows a
chief (which writes the run folder) from another worker before TensorFlow loads.
"""

from __future__ import annotations

import contextlib
import faulthandler
import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass

from mnist_pipeline.errors import ConfigError, DeviceError, PipelineError, WorkerLost, brief, plural, quote
from mnist_pipeline.hardware import Device

TF_CONFIG = "TF_CONFIG"
# Set beside TF_CONFIG by `set_workers`, holding the TF_CONFIG it wrote: messages then name --workers, which the
# user typed, not a TF_CONFIG they never set. An environment variable because the CLI and the pipeline meet only
# in the environment TensorFlow reads.
_FROM_WORKERS = "MNIST_TF_CONFIG_FROM_WORKERS"
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+(%[A-Za-z0-9_.\-]+)?\]|[A-Za-z0-9_.\-]+)$")  # a name, IPv4, or [IPv6]
MAX_TF_CONFIG_CHARS = 64 * 1024  # a cluster of thousands of workers fits; more is not a cluster description
MAX_WORKERS = 1024


@dataclass(frozen=True)
class Cluster:
    """This process's place among the workers TF_CONFIG names (MultiWorkerMirroredStrategy's view)."""

    workers: tuple[str, ...]  # host:port of every task, the chief first
    index: int  # this process's position in `workers`
    has_chief: bool = False  # TF_CONFIG names a "chief" task (else worker 0 is the chief)

    @property
    def chief(self) -> bool:
        return self.index == 0

    def describe(self) -> str:
        return f"worker {self.index} of {len(self.workers)}" + (" (chief)" if self.chief else "")


@dataclass(frozen=True)
class Topology:
    """What a run trains on; a resumed run must have the same (see `check_same`)."""

    strategy: str  # none | mirrored | multi_worker
    replicas: int
    workers: int = 1
    devices: tuple[str, ...] = ()
    chief: bool = True  # this process writes the run folder

    def to_dict(self) -> dict:
        return {"strategy": self.strategy, "replicas": self.replicas, "workers": self.workers,
                "devices": list(self.devices)}

    def describe(self, device: Device) -> str:
        """Where training runs, for the log: the device alone, or the strategy and its replicas."""
        if self.strategy == "none":
            return device.describe()
        workers = f" on each of {self.workers} workers" if self.workers > 1 else ""
        return f"{self.strategy}, {plural(self.replicas, 'replica')} ({', '.join(self.devices)}{workers})"

    def check_same(self, recorded: dict | None, run_dir) -> None:
        """Refuse to resume a run that trained on another number of replicas or workers: each replica's slice
        of a batch, and so every step, would differ."""
        recorded = recorded or {"strategy": "none", "replicas": 1, "workers": 1}  # before tf.distribute support
        was = (recorded.get("strategy"), recorded.get("replicas"), recorded.get("workers"))
        if was != (self.strategy, self.replicas, self.workers):
            raise ConfigError(f"--resume {run_dir}: the run trained with {_shape(*was)}, this process has "
                              f"{_shape(self.strategy, self.replicas, self.workers)}; resume it with the same "
                              f"devices visible and the same workers (--workers), or start a new run")


@contextlib.contextmanager
def lost_workers(topology: Topology):
    """Turn the errors TensorFlow raises in a step when another worker has died (a reset connection, a failed
    health check) or hangs (a collective past its timeout) into one line naming the cause."""
    if topology.workers == 1:
        yield
        return
    import tensorflow as tf

    # The chief's message gets the resume command from the pipeline; the others cannot know the folder.
    after = "" if topology.chief else "; restart every worker with `mnist train --resume <the chief's run folder>`"
    try:
        yield
    except tf.errors.DeadlineExceededError:
        raise WorkerLost(f"{cluster_from_env().describe()}: another worker did not answer within training.distribute."
                         f"timeout_seconds (it hangs, or is far slower){after}") from None
    except (tf.errors.UnavailableError, tf.errors.CancelledError, tf.errors.AbortedError,
            tf.errors.InternalError) as exc:
        raise WorkerLost(f"{cluster_from_env().describe()}: lost contact with another worker "
                         f"({_peer_cause(exc)}){after}") from None


def _peer_cause(exc) -> str:
    """The line of TensorFlow's message that says what happened to the peer."""
    if "stopped sending heartbeats" in str(exc):  # TensorFlow's coordination service noticed
        return "it stopped sending heartbeats: it hangs, or its machine is unreachable"
    for line in str(exc).splitlines():
        line = line.strip()
        if "aborted by" in line or "is down" in line or "Connection" in line or "Socket closed" in line:
            return brief(Exception(line.split("by: ", 1)[-1]), 120)
    return brief(exc, 120)


def _shape(strategy, replicas, workers) -> str:
    return f"strategy {strategy}, {plural(replicas, 'replica')} on {plural(workers, 'worker')}"


def cluster_from_env() -> Cluster | None:
    """The cluster TF_CONFIG describes, or None when it is not set. Raises ConfigError when it is malformed."""
    text = os.environ.get(TF_CONFIG, "").strip()
    if not text:
        return None
    fix = ('; expected {"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": N}} '
           '(a "chief" list of one task is allowed too)')
    if len(text) > MAX_TF_CONFIG_CHARS:
        raise ConfigError(f"TF_CONFIG is {len(text):,} characters, more than a cluster description needs "
                          f"({MAX_TF_CONFIG_CHARS // 1024} KiB at most){fix}")
    try:
        spec = json.loads(text)  # bounded above: nesting deep enough to exhaust the stack cannot fit
        cluster, task = spec["cluster"], spec["task"]
        unknown = set(cluster) - {"chief", "worker"}
        if unknown:
            raise ConfigError(f"TF_CONFIG names {', '.join(sorted(unknown))} tasks, but mnist train runs "
                              f"MultiWorkerMirroredStrategy: only 'chief' and 'worker' tasks{fix}")
        chief, workers = list(cluster.get("chief", [])), list(cluster.get("worker", []))
        kind, index = task["type"], task["index"]
    except ConfigError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        raise ConfigError(f"TF_CONFIG is not a cluster description{fix}") from None
    addresses = chief + workers
    if len(chief) > 1 or not addresses or not all(isinstance(a, str) for a in addresses):
        raise ConfigError(f"TF_CONFIG: the cluster must list host:port addresses, at most one chief{fix}")
    check_addresses(addresses, "TF_CONFIG")
    tasks = {"chief": chief, "worker": workers}
    if kind not in tasks or isinstance(index, bool) or not isinstance(index, int) \
            or not 0 <= index < len(tasks[kind]):
        raise ConfigError(f"TF_CONFIG: task {quote(str(kind))} {quote(str(index))} is not in the cluster{fix}")
    return Cluster(tuple(addresses), index + (len(chief) if kind == "worker" else 0), bool(chief))


def check_addresses(addresses: list[str], where: str) -> None:
    """Refuse what no worker can listen on, before the chief waits its whole start-up timeout for it: a
    port outside 1-65535 or not plain digits, a host with colons outside brackets (IPv6 is `[::1]:2900`), an
    empty entry, or one worker named twice (`node:2900` and `node:02900` are one address)."""
    if len(addresses) > MAX_WORKERS:
        raise ConfigError(f"{where}: {len(addresses):,} workers, more than the {MAX_WORKERS:,} allowed")
    seen: dict[tuple[str, int], str] = {}
    for address in addresses:
        host, sep, port = address.strip().rpartition(":")
        if not address.strip():
            problem = f"an empty entry in {quote(','.join(addresses))}"
        elif not sep or not host:
            problem = f"{quote(address)} is not host:port"
        elif not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535:
            problem = f"{quote(address)}: the port must be a number from 1 to 65535"
        elif not _HOST.match(host):
            problem = (f"{quote(address)}: the host has a colon or a character no host name has "
                       f"(write an IPv6 address in brackets, e.g. [::1]:2900)")
        else:
            key = (host.lower(), int(port))
            if key in seen:
                raise ConfigError(f"{where} lists an address twice ({quote(seen[key])} and {quote(address)}); "
                                  f"give every worker its own host:port")
            seen[key] = address
            continue
        raise ConfigError(f"{where}: {problem}; expected host:port addresses separated by commas, e.g. "
                          f"node1:2222,node2:2222")


def set_workers(workers: str, index: int | None) -> None:
    """`mnist train --workers HOST:PORT,... --worker-index I`: write the TF_CONFIG they mean."""
    if os.environ.get(TF_CONFIG, "").strip():
        raise ConfigError("--workers: TF_CONFIG is already set; use one of them (unset TF_CONFIG, or drop "
                          "--workers and --worker-index)")
    addresses = [a.strip() for a in workers.split(",")]
    if len(addresses) > 1 and addresses[-1] == "":  # a trailing comma, as in a list: forgiven
        addresses.pop()
    check_addresses(addresses, "--workers")
    if index is None or not 0 <= index < len(addresses):
        raise ConfigError(f"--worker-index: give this machine's position in --workers, 0 to {len(addresses) - 1} "
                          f"(0 is the chief, which writes the run folder)")
    text = json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}})
    os.environ[TF_CONFIG] = os.environ[_FROM_WORKERS] = text


def _from_workers() -> bool:
    """Whether TF_CONFIG is the one --workers wrote (not the user's own)."""
    return bool(os.environ.get(_FROM_WORKERS)) and os.environ.get(_FROM_WORKERS) == os.environ.get(TF_CONFIG)


def check_environment(strategy: str) -> Cluster | None:
    """The cluster this process belongs to (multi_worker), after checking that TF_CONFIG agrees with the
    configured strategy. Needs no TensorFlow."""
    cluster = cluster_from_env()
    if strategy == "multi_worker" and cluster is None:
        raise ConfigError("training.distribute.strategy = multi_worker needs the list of workers: set TF_CONFIG, "
                          "or pass --workers HOST:PORT,... --worker-index I (the same list on every worker)")
    if strategy != "multi_worker" and cluster is not None and _from_workers():
        # Only --resume gets here with --workers (a new run with --workers is multi_worker): its saved config
        # decides, so the one change that helps is dropping the flag.
        raise ConfigError(f"--workers: the run trained with training.distribute.strategy = {strategy}, on one "
                          f"machine, and a resumed run keeps that; drop --workers and --worker-index")
    if strategy != "multi_worker" and cluster is not None:
        raise ConfigError(f"TF_CONFIG is set, but training.distribute.strategy is {strategy}: set it to multi_worker "
                          f"to train with the workers TF_CONFIG names, or unset TF_CONFIG")
    return cluster


def create_strategy(settings, batch_size: int, device: Device | str):
    """(strategy or None, Topology) for a `config.DistributeConfig`; call right after `runtime.select_device`,
    before TensorFlow creates anything (logical CPU devices and the cluster are fixed at initialization)."""
    import tensorflow as tf

    if settings.strategy == "none":
        return None, Topology("none", 1)
    if settings.strategy == "mirrored":
        strategy, topology = _mirrored(tf, settings.devices)
    else:
        strategy, topology = _multi_worker(tf, settings)
    if batch_size % topology.replicas:
        raise ConfigError(f"training.batch_size = {batch_size} does not split evenly over {topology.replicas} "
                          f"replicas; use a multiple of {topology.replicas} (the batch size is the global batch)")
    return strategy, topology


def _mirrored(tf, devices):
    gpus = tf.config.list_physical_devices("GPU")  # after select_device: the visible ones
    if devices is None:
        if not gpus:
            raise DeviceError("training.distribute.strategy = mirrored: TensorFlow sees no GPU; name the devices "
                              "(e.g. --set training.distribute.devices=[CPU:0,CPU:1] splits the CPU), or use "
                              "strategy none")
        devices = tuple(f"GPU:{i}" for i in range(len(gpus)))
    elif devices[0].startswith("GPU"):
        missing = [name for name in devices if int(name.split(":")[1]) >= len(gpus)]
        if missing:
            raise DeviceError(f"training.distribute.devices: TensorFlow sees {plural(len(gpus), 'GPU')}, not "
                              f"{', '.join(missing)}; name visible GPUs, or leave devices null to use them all")
    else:
        # Logical CPU devices, so that MirroredStrategy can place one replica on each; they share the cores.
        cpu = tf.config.list_physical_devices("CPU")[0]
        count = max(int(name.split(":")[1]) for name in devices) + 1
        try:
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
        except RuntimeError as exc:  # TensorFlow already initialized (only when called twice in one process)
            raise PipelineError(f"cannot split the CPU into {plural(count, 'device')} ({brief(exc)})") from None
    strategy = tf.distribute.MirroredStrategy([f"/{name.lower()}" for name in devices])
    return strategy, Topology("mirrored", strategy.num_replicas_in_sync, 1, tuple(devices))


# Prints the one-line error for `_while_workers_join` if faulthandler writes anything (its timeout fired).
_WATCHER = "import sys\nif sys.stdin.buffer.read():\n    sys.stderr.write('error: ' + sys.argv[1] + '\\n')"


@contextlib.contextmanager
def _while_workers_join(cluster: Cluster, seconds: int):
    """Bound the wait for the other workers, and let Ctrl-C / SIGTERM end it.

    MultiWorkerMirroredStrategy() blocks in TensorFlow's C++ until every worker has registered, holding the
    GIL, with no timeout that works (its coordination service's register timeout did not fire on TF 2.21):
    no Python thread, signal handler or exception can act meanwhile. faulthandler's watchdog is C: it ends
    the process (exit 1) at the timeout, writing its report into a pipe to a tiny process that prints our
    line instead. SIGINT / SIGTERM get their default action for the wait. Nothing is written before the
    cluster forms, so there is nothing to clean up.
    """
    message = (f"{cluster.describe()}: the other workers did not all join within {seconds} s "
               f"(training.distribute.startup_timeout_seconds); start the same command on every worker in "
               f"{', '.join(cluster.workers)}")
    try:
        terminal = sys.stderr.fileno()  # the real stderr (runtime.quiet_native_logs points fd 2 elsewhere)
    except (AttributeError, ValueError, OSError):
        terminal = None
    watcher = subprocess.Popen([sys.executable, "-c", _WATCHER, message], stdin=subprocess.PIPE, stderr=terminal)
    faulthandler.dump_traceback_later(seconds, exit=True, file=watcher.stdin)
    handlers = {number: signal.signal(number, signal.SIG_DFL) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
        for number, handler in handlers.items():
            signal.signal(number, handler)
        watcher.stdin.close()
        watcher.wait()


def _multi_worker(tf, settings):
    cluster = check_environment("multi_worker")
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=settings.timeout_seconds)
    try:
        with _while_workers_join(cluster, settings.startup_timeout_seconds):
            strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    except (tf.errors.OpError, RuntimeError) as exc:
        raise PipelineError(f"{cluster.describe()}: cannot start the cluster ({brief(exc)}); check that "
                            f"{cluster.workers[cluster.index]} is this machine and its port is free") from None
    gpus = len(tf.config.list_physical_devices("GPU"))
    devices = tuple(f"GPU:{i}" for i in range(gpus)) or ("CPU:0",)
    topology = Topology("multi_worker", strategy.num_replicas_in_sync, len(cluster.workers), devices, cluster.chief)
    return strategy, topology
