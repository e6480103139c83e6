"""Processes of `mnist sweep` around the sweep cases of the adversarial catalogue (tests/catalogue/sweeps.py
and sweep_folders.py, run by tests/test_catalogue.py): a failed start and its correction, processes joining one
study, signals to a sweep with `--workers`, a worker that dies. Each `mnist` is a real process; those that
train use 200 images."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from catalogue import workers_alive
from catalogue.sweeps import SWEEP_TINY as TINY
from catalogue.sweeps import write_space

from conftest import MLP, start_mnist
from conftest import run_mnist as mnist

pytestmark = pytest.mark.slow  # real sweep processes: signals, joined workers, a worker that dies


@pytest.fixture(scope="module")
def made(catalogue_sweep):
    """(data dir, a finished 2-trial sweep folder, the command that made it) from one real, tiny sweep."""
    return catalogue_sweep


def test_a_failed_start_leaves_nothing_and_a_half_made_sweep_takes_its_correction(made, tmp_path):
    data, folder, args = made
    (tmp_path / "db.sqlite").write_bytes(b"not a database\n" * 100)
    failed = mnist(*args, "--output-dir", tmp_path / "out", "--storage", f"sqlite:///{tmp_path / 'db.sqlite'}")
    assert failed.returncode == 1, failed.stderr
    assert failed.stderr.startswith("error: --storage sqlite:///"), failed.stderr
    assert not (tmp_path / "out").exists()  # the corrected command has nothing in its way
    # A folder half made by an earlier version (sweep.json and base.yaml for a storage that never opened, no
    # trial): the corrected command takes it over instead of refusing it as another sweep.
    half = tmp_path / "out/sweeps/made"
    half.mkdir(parents=True)
    recorded = json.loads((folder / "sweep.json").read_text())
    (half / "sweep.json").write_text(json.dumps({**recorded, "storage": "postgresql://nowhere:1/db"}))
    shutil.copy(folder / "base.yaml", half / "base.yaml")
    done = mnist(*args, "--output-dir", tmp_path / "out", "--trials", "1")
    assert done.returncode == 0, done.stderr
    assert json.loads((half / "sweep.json").read_text())["storage"] is None
    assert len(list((half / "runs").iterdir())) == 1


def test_each_process_joining_a_study_samples_with_its_own_seed():
    import optuna

    from mnist_pipeline.sweep.optuna_study import claim_sampler_seed

    study = optuna.create_study()
    study.set_user_attr("sampler:otherhost:1:1", 7)  # a process of another machine: counted as running
    study.set_user_attr(f"sampler:{os.uname().nodename}:999999999:2", 7)  # a process of this one that is gone
    assert claim_sampler_seed(study, 7) == 8
    assert claim_sampler_seed(study, 7) == 9  # this process again, as a second joiner would
    alone = optuna.create_study()
    assert claim_sampler_seed(alone, 7) == 7  # a single process keeps the config's seed: reproducible


def test_two_joined_processes_never_try_the_same_values(made, tmp_path):
    data, folder, args = made
    space = write_space(tmp_path, {"training.learning_rate": {"low": 1e-3, "high": 1e-2, "log": True}}, trials=4)
    both = ["sweep", "--config", MLP, "--space", space, "--name", "two", "--data-dir", data, "--output-dir",
            tmp_path / "out", *TINY, "--no-prune"]
    first, second = start_mnist(*both), start_mnist(*both)
    for process in (first, second):
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
    import optuna
    from optuna.storages.journal import JournalFileBackend

    journal = JournalFileBackend(str(tmp_path / "out/sweeps/two/study.journal"))
    study = optuna.load_study(study_name="two", storage=optuna.storages.JournalStorage(journal))
    rates = [t.params["training.learning_rate"] for t in study.get_trials()]
    assert len(rates) == 4, rates
    assert len(set(rates)) == 4, rates


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_to_a_sweep_with_workers_stops_them_all_in_one_line(made, tmp_path, signum, code):
    data, folder, args = made
    command = ["sweep", "--config", MLP, "--space", write_space(tmp_path), "--name", "stop", "--data-dir", data,
               "--output-dir", tmp_path / "out", *TINY, "--set", "training.epochs=200", "--workers", "2"]
    parent = start_mnist(*command)
    deadline = time.monotonic() + 120
    for line in parent.stdout:  # once a trial is training
        if " epoch 1/" in line or time.monotonic() > deadline:
            break
    assert len(workers_alive(str(tmp_path))) == 3  # the parent and its two workers
    parent.send_signal(signum)
    out, err = parent.communicate(timeout=120)
    lines = err.splitlines()
    assert parent.returncode == code, err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{signal.Signals(signum).name}: the sweep stopped"), err
    assert "run the same command again" in lines[0]
    assert not workers_alive(str(tmp_path))
    assert not subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True).stdout


def test_a_worker_that_dies_is_reported_by_the_parent_in_one_line(made, tmp_path):
    data, folder, args = made
    command = ["sweep", "--config", MLP, "--space", write_space(tmp_path), "--name", "died", "--data-dir", data,
               "--output-dir", tmp_path / "out", *TINY, "--set", "training.epochs=30", "--workers", "2",
               "--no-prune"]
    parent = start_mnist(*command)
    deadline = time.monotonic() + 120
    for line in parent.stdout:
        if " epoch 1/" in line or time.monotonic() > deadline:
            break
    (victim,) = [pid for pid in Path("/proc").iterdir() if pid.name.isdigit() and b"--worker-index\x000" in
                 _cmdline(pid) and str(tmp_path).encode() in _cmdline(pid)]
    os.kill(int(victim.name), signal.SIGKILL)
    out, err = parent.communicate(timeout=180)
    lines = err.splitlines()
    assert parent.returncode == 1, err
    assert len(lines) == 1, err
    assert lines[0].startswith("error: worker 0: killed by SIGKILL; run the same command"), err
    assert not workers_alive(str(tmp_path))


def _cmdline(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:
        return b""
