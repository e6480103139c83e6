"""tf.distribute on this CPU-only machine: MirroredStrategy over 2 logical CPU devices, and
MultiWorkerMirroredStrategy over 2 worker processes on localhost (TF_CONFIG, free ports)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, history_without_seconds, run_mnist, snapshot, start_mnist, write_idx_dir
from mnist_pipeline import distribute
from mnist_pipeline.config import load_config
from mnist_pipeline.errors import ConfigError

pytestmark = pytest.mark.slow  # tf.distribute runs: two replicas, two worker processes

SMOKE = ROOT / "configs/smoke.yaml"
TINY = ["--set", "data.subset=null", "--set", "training.batch_size=32", "--device", "cpu"]
MIRRORED = ["--set", "training.distribute.strategy=mirrored", "--set", "training.distribute.devices=[CPU:0,CPU:1]"]


# ---- config and TF_CONFIG: refused before TensorFlow loads ----

@pytest.mark.parametrize("overrides, words", [
    (["training.distribute.devices=[CPU:0,CPU:1]"], "applies to strategy mirrored only"),
    (["training.distribute.strategy=mirrored", "training.distribute.devices=[CPU:0,CPU:0]"], "names a device twice"),
    (["training.distribute.strategy=mirrored", "training.distribute.devices=[CPU:0,GPU:0]"], "mixes CPU and GPU"),
    (["training.distribute.strategy=mirrored", "training.distribute.devices=[TPU:0]"], "training.distribute.devices"),
    (["training.distribute.strategy=mirrored", "training.distribute.devices=[CPU:0,CPU:1,CPU:2]",
      "training.batch_size=128"], "does not split evenly over 3 devices"),
    (["training.distribute.strategy=mirrored", "training.distribute.devices=[GPU:0,GPU:1]", "training.device=cpu"],
     "device is cpu but distribute.devices names GPUs"),
    (["training.distribute.strategy=ring"], "training.distribute.strategy"),
    (["training.distribute.timeout_seconds=0"], "timeout_seconds"),
])
def test_impossible_distribute_settings_are_refused_by_name(overrides, words):
    with pytest.raises(ConfigError, match=words.replace("[", r"\[")):
        load_config(None, overrides)


def tf_config(workers, index, kind="worker", chief=None):
    cluster = {"worker": workers} | ({"chief": chief} if chief else {})
    return json.dumps({"cluster": cluster, "task": {"type": kind, "index": index}})


def test_tf_config_gives_each_process_its_place_and_the_chief(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", tf_config(["a:1", "b:2"], 1))
    assert distribute.cluster_from_env() == distribute.Cluster(("a:1", "b:2"), 1)
    assert not distribute.cluster_from_env().chief
    assert distribute.cluster_from_env().describe() == "worker 1 of 2"
    monkeypatch.setenv("TF_CONFIG", tf_config(["b:2", "c:3"], 0, chief=["a:1"]))  # an explicit chief comes first
    assert distribute.cluster_from_env() == distribute.Cluster(("a:1", "b:2", "c:3"), 1, has_chief=True)
    monkeypatch.setenv("TF_CONFIG", tf_config(["b:2"], 0, kind="chief", chief=["a:1"]))
    assert distribute.cluster_from_env().chief
    monkeypatch.delenv("TF_CONFIG")
    assert distribute.cluster_from_env() is None


@pytest.mark.parametrize("text, words", [
    ("{not json", "not a cluster description"),
    (json.dumps({"cluster": {"worker": ["a:1"]}}), "not a cluster description"),
    (json.dumps({"cluster": {"worker": ["a:1"], "ps": ["b:2"]}, "task": {"type": "worker", "index": 0}}),
     "names ps tasks"),
    (tf_config(["a:1", "b:2"], 2), "is not in the cluster"),
    (tf_config(["a:1", "b:2"], True), "is not in the cluster"),
    (tf_config(["a:1", "a:1"], 0), "lists an address twice"),
    (tf_config(["no port"], 0), "host:port"),
    (tf_config(["a:1"], 0, kind="evaluator"), "is not in the cluster"),
])
def test_a_malformed_tf_config_is_one_line(monkeypatch, text, words):
    monkeypatch.setenv("TF_CONFIG", text)
    with pytest.raises(ConfigError, match=words):
        distribute.cluster_from_env()


def test_workers_flags_build_tf_config_and_refuse_a_second_source(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "")  # empty counts as unset; monkeypatch removes what set_workers writes
    distribute.set_workers("node1:2222, node2:2222", 1)
    assert distribute.cluster_from_env() == distribute.Cluster(("node1:2222", "node2:2222"), 1)
    with pytest.raises(ConfigError, match="TF_CONFIG is already set"):
        distribute.set_workers("node1:2222", 0)
    monkeypatch.setenv("TF_CONFIG", "")
    with pytest.raises(ConfigError, match="host:port"):
        distribute.set_workers("node1", 0)
    with pytest.raises(ConfigError, match="0 to 1"):
        distribute.set_workers("a:1,b:2", 2)


def test_tf_config_and_the_strategy_must_agree(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "")
    with pytest.raises(ConfigError, match="multi_worker needs the list of workers"):
        distribute.check_environment("multi_worker")
    monkeypatch.setenv("TF_CONFIG", tf_config(["a:1", "b:2"], 0))
    with pytest.raises(ConfigError, match="TF_CONFIG is set, but training.distribute.strategy is none"):
        distribute.check_environment("none")
    assert distribute.check_environment("multi_worker").chief


def test_resuming_on_another_topology_is_refused():
    two = distribute.Topology("mirrored", 2, 1, ("CPU:0", "CPU:1"))
    two.check_same(two.to_dict(), "run")  # the same: fine
    with pytest.raises(ConfigError, match="trained with strategy mirrored, 2 replica.* has strategy none, 1"):
        distribute.Topology("none", 1).check_same(two.to_dict(), "run")
    with pytest.raises(ConfigError, match="trained with strategy none, 1 replica"):  # a checkpoint from before
        two.check_same(None, "run")


# ---- MirroredStrategy over 2 logical CPU devices ----

@pytest.mark.parametrize("model, optimizer, examples, epochs", [
    ("cnn", "sgd", 96, 1), ("cnn", "adam", 96, 1),  # 3 steps: conv, synchronized batch norm, L2, label smoothing
    ("deep_mlp", "sgd", 256, 2), ("deep_mlp", "adam", 256, 2),  # 16 steps, 2 validations
    ("deep_mlp", "adam+ema", 256, 2),  # weight decay, and validation on the averaged weights
])
def test_two_replicas_train_like_one_device(model, optimizer, examples, epochs):
    result = subprocess.run([sys.executable, str(ROOT / "tests/mirrored_steps.py"), model, optimizer, str(examples),
                             str(epochs)], capture_output=True, text=True, cwd=ROOT, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(ROOT / "tests")})
    assert result.returncode == 0, result.stderr[-3000:]
    differences = json.loads(result.stdout.splitlines()[-1])
    assert differences["replicas"] == 2
    assert differences["weights_moved"] > 0.05  # training really moved the weights...
    # ...and both ways moved them alike: float32 sums in another order, nothing more (1 ulp of 1 is 1.2e-7)
    assert differences["weights"] < 1e-5, differences
    assert differences["history"] < 1e-5, differences
    assert differences["test_loss"] < 1e-5, differences
    assert differences["test_accuracy"] == 0, differences
    assert differences["probabilities"] < 1e-5, differences
    assert differences["test_rows"] == [90, 90]  # every test example once: the padding of the last batch dropped


def test_each_replica_drops_its_own_units():
    result = subprocess.run([sys.executable, str(ROOT / "tests/mirrored_steps.py"), "dropout"], capture_output=True,
                            text=True, cwd=ROOT, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT / "tests")})
    assert result.returncode == 0, result.stderr[-3000:]
    dropout = json.loads(result.stdout.splitlines()[-1])
    assert dropout["layer"] == "ReplicaDropout"
    assert dropout["masks_differ"]  # Keras's own Dropout would give both replicas the same mask
    assert dropout["kept"] == pytest.approx(0.5, abs=0.05)  # rate 0.5 of 2 x 64 x 64 units
    assert dropout["states_equal"]  # the random state moved on alike: one value to checkpoint


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_idx_dir(tmp_path_factory.mktemp("distribute") / "data", n_train=600, n_test=200)


def only_run(output: Path) -> Path:
    (run,) = (output / "runs").iterdir()
    return run


@pytest.mark.slow
def test_a_mirrored_run_through_the_cli_writes_a_complete_run_folder(data, tmp_path):
    # XLA and in-step batches asked for: both are switched off under the strategy, and said so. Dropout layers
    # with a mask per replica, and batch norm synchronized, must load as plain Keras layers on one device.
    result = run_mnist("train", "--config", SMOKE, "--data-dir", data, "--output-dir", tmp_path, "--epochs", "2",
                       *TINY, *MIRRORED, "--set", "training.jit_compile=true", "--set",
                       "training.steps_per_execution=4", "--set", "model.params.batch_norm=true")
    assert result.returncode == 0, result.stderr
    assert "mirrored, 2 replicas (CPU:0, CPU:1)" in result.stdout
    assert "XLA: off under a tf.distribute strategy" in result.stdout
    run = only_run(tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["replicas"] == 2
    assert metrics["distribute"]["devices"] == ["CPU:0", "CPU:1"]
    assert metrics["batches"] == "tf.data, per replica"
    assert metrics["jit_compile"] is False
    assert metrics["traces"] == {"train_group": 1, "validate": 1, "test": 1}
    assert metrics["test_accuracy"] > 0.5  # 10 classes: chance is 0.1
    assert json.loads((run / "status.json").read_text())["status"] == "completed"
    for name in ("model.keras", "report.html", "history.csv", "report_data.npz", "curves.png"):
        assert (run / name).is_file(), name
    # The saved model runs on one device and gives the recorded test accuracy.
    evaluated = run_mnist("evaluate", run, "--data-dir", data)
    assert evaluated.returncode == 0, evaluated.stderr
    assert f"{metrics['test_accuracy']:.4f}" in evaluated.stdout


@pytest.mark.slow
def test_a_mirrored_run_killed_after_an_epoch_resumes_to_the_uninterrupted_run(data, tmp_path):
    args = ["train", "--config", SMOKE, "--data-dir", data, "--epochs", "3", *TINY, *MIRRORED]
    whole = run_mnist(*args, "--output-dir", tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr
    killed = run_mnist(*args, "--output-dir", tmp_path / "killed", fault="kill-after-epoch=1")
    assert killed.returncode == -signal.SIGKILL
    resumed = run_mnist("train", "--resume", only_run(tmp_path / "killed"), "--data-dir", data)
    assert resumed.returncode == 0, resumed.stderr
    expected, got = only_run(tmp_path / "whole"), only_run(tmp_path / "killed")
    assert history_without_seconds(got) == history_without_seconds(expected)
    metrics = [json.loads((run / "metrics.json").read_text()) for run in (expected, got)]
    assert metrics[0]["weights_sha256"] == metrics[1]["weights_sha256"]
    assert metrics[1]["resumed"]
    assert metrics[1]["replicas"] == 2


# ---- MultiWorkerMirroredStrategy: two worker processes on localhost ----

def free_ports(count: int) -> list[str]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [f"localhost:{s.getsockname()[1]}" for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_workers(tmp: Path, data: Path, *args, epochs: int = 2, count: int = 2, resume: Path | None = None,
                  timeout: int = 30) -> list[subprocess.Popen]:
    """`count` workers on free localhost ports, each with its own output dir and temporary dir."""
    workers = ",".join(free_ports(count))
    processes = []
    for index in range(count):
        (tmp / f"tmp{index}").mkdir(exist_ok=True)
        if resume:
            command = ["train", "--resume", resume, "--data-dir", data]
        else:
            command = ["train", "--config", SMOKE, "--data-dir", data, "--output-dir", tmp / f"out{index}",
                       "--epochs", str(epochs), *TINY, "--set", f"training.distribute.timeout_seconds={timeout}",
                       "--set", "training.distribute.startup_timeout_seconds=60", *args]
        processes.append(start_mnist(*command, "--workers", workers, "--worker-index", index,
                                     env={"TMPDIR": str(tmp / f"tmp{index}")}))
    return processes


def finish(processes, timeout=300) -> list[subprocess.CompletedProcess]:
    done = []
    for p in processes:
        stdout, stderr = p.communicate(timeout=timeout)
        done.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return done


@pytest.fixture(scope="module")
def two_workers(data, tmp_path_factory):
    """A completed 3-epoch run of two workers: (chief's run folder, the two finished processes, tmp)."""
    tmp = tmp_path_factory.mktemp("workers")
    chief, worker = finish(start_workers(tmp, data, epochs=3))
    assert chief.returncode == 0, chief.stderr + worker.stderr
    assert worker.returncode == 0, chief.stderr + worker.stderr
    return only_run(tmp / "out0"), (chief, worker), tmp


@pytest.mark.slow
def test_two_workers_train_to_identical_weights_and_only_the_chief_writes(two_workers):
    run, (chief, worker), tmp = two_workers
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["replicas"] == 2
    assert metrics["distribute"]["workers"] == 2
    assert metrics["distribute"]["strategy"] == "multi_worker"
    assert f"weights sha256 {metrics['weights_sha256'][:16]}" in worker.stdout  # identical final weights
    assert "worker 1 of 2 done; the chief" in worker.stdout
    assert not (tmp / "out1").exists()  # the other worker wrote no run folder...
    assert not any((tmp / "tmp0").iterdir())  # ...and left no scratch files
    assert not any((tmp / "tmp1").iterdir())
    assert json.loads((run / "status.json").read_text())["status"] == "completed"
    assert metrics["test_accuracy"] > 0.5


@pytest.mark.slow
def test_a_killed_worker_stops_the_other_with_one_line_and_the_run_resumes_on_the_same_topology(data, two_workers,
                                                                                                  tmp_path):
    processes = start_workers(tmp_path, data, epochs=3)
    history = tmp_path / "out0"
    deadline = time.monotonic() + 120
    while not list(history.glob("runs/*/history.csv")):  # the chief has finished epoch 1
        assert time.monotonic() < deadline, processes[0].communicate()
        assert processes[0].poll() is None, processes[0].communicate()
        time.sleep(0.1)
    processes[1].kill()
    killed_at = time.monotonic()
    chief = finish(processes[:1], timeout=120)[0]
    finish(processes[1:])
    assert time.monotonic() - killed_at < 60  # far below the 30 s timeout plus TensorFlow's health check
    assert chief.returncode == 1
    lines = chief.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: worker 0 of 2 (chief): lost contact with another worker")
    run = only_run(history)
    assert "--resume" in lines[0]
    assert str(run) in lines[0]
    assert json.loads((run / "status.json").read_text())["status"] == "failed"

    # One worker cannot resume a run of two: refused before anything changes.
    before = snapshot(run)
    (alone,) = finish(start_workers(tmp_path, data, count=1, resume=run))
    assert alone.returncode == 2, alone.stderr
    assert "trained with strategy multi_worker, 2 replicas on 2 workers" in alone.stderr
    assert snapshot(run) == before

    resumed = finish(start_workers(tmp_path, data, resume=run))
    assert [r.returncode for r in resumed] == [0, 0], resumed[0].stderr + resumed[1].stderr
    reference, _, _ = two_workers  # the same config and data, uninterrupted
    assert history_without_seconds(run) == history_without_seconds(reference)


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGSTOP, signal.SIGTERM])  # frozen (only a timeout can tell); Ctrl-C'd
def test_a_frozen_or_stopped_worker_stops_the_chief_with_one_line(stop, data, tmp_path):
    processes = start_workers(tmp_path, data, epochs=50, timeout=10)
    deadline = time.monotonic() + 120
    while not list((tmp_path / "out0").glob("runs/*/history.csv")):
        assert time.monotonic() < deadline, processes[0].communicate()
        assert processes[0].poll() is None, processes[0].communicate()
        time.sleep(0.1)
    processes[1].send_signal(stop)
    try:
        stopped_at = time.monotonic()
        chief = finish(processes[:1], timeout=120)[0]
        waited = time.monotonic() - stopped_at
    finally:
        processes[1].send_signal(signal.SIGCONT)
        if stop == signal.SIGSTOP:
            processes[1].kill()
        worker = finish(processes[1:])[0]
    assert chief.returncode == 1, (waited, chief.stderr)
    assert waited < 60, (waited, chief.stderr)
    lines = chief.stderr.splitlines()
    assert len(lines) == 1, chief.stderr
    assert lines[0].startswith("error: worker 0 of 2 (chief): "), chief.stderr
    assert "--resume" in lines[0]
    if stop == signal.SIGTERM:  # the stopped worker says so in one line too
        assert worker.returncode in (143, 1), worker.stderr
        # Its own stop is not an error (143); losing the chief first is (1).
        start = "SIGTERM: " if worker.returncode == 143 else "error: "
        assert len(worker.stderr.splitlines()) == 1, worker.stderr
        assert worker.stderr.startswith(start), worker.stderr


@pytest.mark.slow
def test_a_worker_whose_peers_never_come_gives_up_after_the_startup_timeout(data, tmp_path):
    workers = ",".join(free_ports(2))
    started = time.monotonic()
    result = run_mnist("train", "--config", SMOKE, "--data-dir", data, "--output-dir", tmp_path, *TINY,
                       "--set", "training.distribute.startup_timeout_seconds=3", "--workers", workers,
                       "--worker-index", "0", timeout=120)
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines() == [result.stderr.strip()]  # one line
    assert "the other workers did not all join within 3 s" in result.stderr
    assert time.monotonic() - started < 60
    assert not (tmp_path / "runs").exists()


def test_a_malformed_tf_config_in_the_environment_is_one_line_before_tensorflow(data, tmp_path):
    result = run_mnist("train", "--config", SMOKE, "--data-dir", data, "--output-dir", tmp_path,
                       env={"TF_CONFIG": '{"cluster": {"worker": ["a:1"]}, "task": '})
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [result.stderr.strip()], result.stderr
    assert "TF_CONFIG is not a cluster description" in result.stderr
    assert not (tmp_path / "runs").exists()
