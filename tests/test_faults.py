"""Faults at awkward moments, in real processes: SIGKILL in the middle of a checkpoint, a disk that fills up
while a checkpoint, the model or the report is written, signals twice, a stop before the first checkpoint.
Each leaves a folder that says what happened, one error line, and a run that `--resume` finishes exactly."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from conftest import MLP, write_idx_dir
from conftest import history_without_seconds as history
from conftest import run_mnist as mnist
from mnist_pipeline.reports.run_folder import RunLock

pytestmark = pytest.mark.slow  # training processes killed, signalled or filling a disk at exact moments

ARGS = ["--config", MLP, "--device", "cpu", "--epochs", "3", "--set", "data.subset=200",
        "--set", "training.batch_size=32"]


def status(run_dir):
    return json.loads((run_dir / "status.json").read_text())


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_idx_dir(tmp_path_factory.mktemp("data"), n_train=300, n_test=100)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """The uninterrupted run every interrupted one must end up equal to."""
    out = tmp_path_factory.mktemp("reference")
    result = mnist("train", *ARGS, "--data-dir", data, "--output-dir", out)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr  # no log line, even on success
    (run_dir,) = (out / "runs").iterdir()
    return run_dir


def assert_resumes_to(run_dir, reference):
    result = mnist("train", "--resume", run_dir)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr
    assert history(run_dir) == history(reference)
    a, b = (json.loads((r / "metrics.json").read_text()) for r in (reference, run_dir))
    assert (a["test_loss"], a["test_accuracy"]) == (b["test_loss"], b["test_accuracy"])
    assert status(run_dir)["status"] == "completed"
    assert not list(run_dir.rglob(".*.tmp*"))


def test_sigkill_inside_a_checkpoint_write_leaves_the_previous_one_and_resume_cleans_up(data, reference, tmp_path):
    result = mnist("train", *ARGS, "--data-dir", data, "--output-dir", tmp_path, fault="kill-in-checkpoint=2")
    assert result.returncode == -9
    (run_dir,) = (tmp_path / "runs").iterdir()
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert len(names) == 2
    assert names[0].startswith(".epoch-0002.")
    assert names[1] == "epoch-0001"
    assert_resumes_to(run_dir, reference)  # from epoch 1, with the half-written epoch 2 removed first


@contextlib.contextmanager
def small_disk(tmp_path: Path, megabytes: int = 64):
    """A real filesystem of its own (tmpfs) that a test can fill up; needs root, as this project's CI has."""
    mount = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({made.stderr.strip()})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.parametrize("fault, where", [
    ("fill-after-epoch=1", "checkpoints/epoch-0002: cannot write the checkpoint (No space left on device)"),
    ("fill-before-model", "model.keras: cannot save the model (No space left on device)"),
    ("fill-before-report", "cannot write (No space left on device)"),
])
def test_a_full_disk_is_one_line_and_the_run_resumes_once_there_is_space(fault, where, data, reference, tmp_path):
    with small_disk(tmp_path) as disk:
        filler = disk / "filler"
        result = mnist("train", *ARGS, "--data-dir", data, "--output-dir", disk / "out",
                       fault=f"{fault}:{filler}" if "epoch" in fault else f"{fault}={filler}")
        # TensorBoard's events may meet the full disk first: its one warning line (training went on) may
        # come before the error, which is one line, the last.
        lines = [line for line in result.stderr.splitlines() if not line.startswith("warning: TensorBoard")]
        assert result.returncode == 1, result.stderr
        assert len(lines) == 1, result.stderr
        assert result.stderr.endswith(lines[0] + "\n"), result.stderr
        assert where in lines[0], lines[0]
        assert "mnist train --resume" in lines[0], lines[0]
        (run_dir,) = (disk / "out/runs").iterdir()
        # Never "completed" without its report: "failed", or, when even status.json found no space, "running"
        # with no process behind it (compare shows it as stale).
        assert status(run_dir)["status"] in ("failed", "running")
        assert not list(run_dir.rglob(".*.tmp*"))  # no temporary file or checkpoint folder left behind
        assert (run_dir / "checkpoints").is_dir()
        assert len(list((run_dir / "checkpoints").iterdir())) == 1
        filler.unlink()
        assert_resumes_to(run_dir, reference)


def test_a_stop_before_the_first_checkpoint_does_not_offer_resume(data, tmp_path):
    result = mnist("train", *ARGS, "--data-dir", data, "--output-dir", tmp_path, fault="term-in-first-epoch")
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert result.returncode == 143, result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "nothing to resume" in result.stderr
    assert f"mnist train --config {run_dir}/config.yaml" in result.stderr
    assert "--resume" not in result.stderr
    assert status(run_dir)["status"] == "interrupted"
    refused = mnist("train", "--resume", run_dir)
    assert refused.returncode == 2
    assert "no checkpoint" in refused.stderr


@pytest.mark.parametrize("signals, epoch, code, words", [
    (1, 1, 143, "SIGTERM: stopped after epoch 1"),
    (2, 1, 143, "SIGTERM again: stopped at once"),
    (1, 3, 143, "SIGTERM: stopped after the last epoch, before the test"),  # not ignored: the run is not done
])
def test_sigterm_once_or_twice_exits_143_with_one_line(signals, epoch, code, words, data, reference, tmp_path):
    fault = f"{'term2' if signals == 2 else 'term'}-after-epoch={epoch}"
    result = mnist("train", *ARGS, "--data-dir", data, "--output-dir", tmp_path, fault=fault)
    lines = result.stderr.splitlines()
    assert result.returncode == code, result.stderr
    assert len(lines) == 1, result.stderr
    assert words in lines[0], lines[0]
    assert "mnist train --resume" in lines[0], lines[0]
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert status(run_dir)["status"] == "interrupted"
    assert_resumes_to(run_dir, reference)


def test_a_stale_running_run_is_shown_as_such_and_resumes(data, reference, tmp_path):
    killed = mnist("train", *ARGS, "--data-dir", data, "--output-dir", tmp_path, fault="kill-after-epoch=1")
    assert killed.returncode == -9
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert status(run_dir)["status"] == "running"
    shown = mnist("compare", "--all", "--output-dir", tmp_path)
    assert shown.returncode == 0
    assert "stale: was running, process gone (resumable)" in shown.stdout
    lock = RunLock(run_dir)
    assert lock.acquire()  # while a process holds it, the same run is shown as running
    try:
        assert " running " in mnist("compare", run_dir, "--output-dir", tmp_path).stdout
    finally:
        lock.release()
    assert_resumes_to(run_dir, reference)


def test_compare_lists_a_damaged_run_as_unreadable_and_goes_on(reference, tmp_path):
    damaged = shutil.copytree(reference, tmp_path / "runs" / "damaged")
    (damaged / "metrics.json").write_text("{broken")
    result = mnist("compare", reference, damaged, "--output-dir", tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[2:4]}
    assert "unreadable: metrics.json" in rows["damaged"]
    assert "completed" in rows[reference.name]
