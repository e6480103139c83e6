"""Processes around the adversarial catalogue's run folders (tests/catalogue/, run by tests/test_catalogue.py):
a second resume of a running run, signals during an export, a resume whose TensorBoard folder is a file, and
worker addresses the catalogue's refusals must not catch. Each `mnist` is a real process."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from catalogue import leftovers, processes_mentioning

from conftest import ROOT, snapshot, start_mnist
from conftest import run_mnist as mnist
from mnist_pipeline.reports.run_folder import RunLock

pytestmark = pytest.mark.slow  # training and export processes signalled or locked mid-way


@pytest.fixture(scope="module")
def runs(catalogue_runs_with_nan):
    """(data dir, a completed MLP run, a run killed after epoch 1 of 3, a completed run with NaN weights)."""
    return catalogue_runs_with_nan


def test_a_second_resume_of_a_running_run_is_refused_before_tensorflow(runs, tmp_path):
    _, completed, resumable, _ = runs
    folder = shutil.copytree(resumable, tmp_path / "run")
    before = snapshot(folder)
    lock = RunLock(folder)
    assert lock.acquire()  # as a training process holds it
    probe = ("import sys; from click.testing import CliRunner; from mnist_pipeline.cli import cli; "
             f"r = CliRunner().invoke(cli, ['train', '--resume', {str(folder)!r}]); "
             "print(r.exit_code, 'tensorflow' in sys.modules); print(r.stderr, end='')")
    try:
        result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    finally:
        lock.release()
    status, message = result.stdout.split("\n", 1)
    assert status == "2 False", result.stdout + result.stderr  # refused, and TensorFlow never loaded
    assert message.startswith("error: --resume")
    assert "another process" in message
    assert len(message.splitlines()) == 1
    assert snapshot(folder) == before


def _wait_for(folder: Path, pattern: str, process, seconds: float = 120) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and process.poll() is None:
        if folder.is_dir() and any(pattern in p.name for p in folder.iterdir()):
            return True
        time.sleep(0.01)
    return False


@pytest.mark.slow
@pytest.mark.parametrize("fmt, sign, when", [("savedmodel", signal.SIGTERM, ".tmp"),
                                             ("savedmodel", signal.SIGINT, ".tmp"),
                                             ("tflite", signal.SIGTERM, ".export-lock"),
                                             ("tflite", signal.SIGINT, ".export-lock")],
                         ids=["savedmodel-sigterm", "savedmodel-sigint", "tflite-sigterm", "tflite-sigint"])
def test_a_signal_during_an_export_leaves_nothing(fmt, sign, when, runs, tmp_path):
    """Ctrl-C or SIGTERM while the converter writes: the temporary and the lock go, export/ (made for it) goes,
    one line, exit 128 + signal."""
    _, completed, *_ = runs
    folder = shutil.copytree(completed, tmp_path / "run")
    before = snapshot(folder)
    process = start_mnist("export", folder, "--format", fmt)
    try:
        assert _wait_for(folder / "export", when, process), process.communicate()[1]
        process.send_signal(sign)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    lines = stderr.splitlines()
    assert process.returncode == 128 + sign, stderr
    assert len(lines) == 1, stderr
    assert signal.Signals(sign).name in lines[0], stderr
    assert "nothing was written" in lines[0], stderr
    assert "unexpected" not in stderr
    assert stdout == ""
    assert snapshot(folder) == before
    assert not (folder / "export").exists()
    assert not leftovers(tmp_path)
    assert not processes_mentioning(str(tmp_path))


@pytest.mark.slow
def test_a_resumed_run_whose_tensorboard_folder_is_a_file_warns_once_and_completes(runs, tmp_path):
    """docs/guide/runs.md "TensorBoard": a write that fails stops the events with one `warning:` line; training
    goes on."""
    data, _, resumable, _ = runs
    folder = shutil.copytree(resumable, tmp_path / "run")
    shutil.rmtree(folder / "tensorboard", ignore_errors=True)
    (folder / "tensorboard").write_text("a file where the events folder should be")
    result = mnist("train", "--resume", folder, "--data-dir", data)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("warning: TensorBoard events stopped (")
    assert "is a file, not a folder" in lines[0]
    assert lines[0].endswith("training goes on without them")
    assert (folder / "tensorboard").read_text() == "a file where the events folder should be"
    assert json.loads((folder / "status.json").read_text())["status"] == "completed"
    assert not leftovers(folder)


def test_workers_accept_bracketed_ipv6_and_a_trailing_comma(monkeypatch):
    from mnist_pipeline import distribute

    monkeypatch.setenv("TF_CONFIG", "")  # restored (or removed) after the test, as set_workers changes it
    monkeypatch.setenv("MNIST_TF_CONFIG_FROM_WORKERS", "")
    distribute.set_workers("[::1]:2900,[::1]:2901,", 1)
    cluster = distribute.cluster_from_env()
    assert cluster.workers == ("[::1]:2900", "[::1]:2901")
    assert cluster.index == 1
