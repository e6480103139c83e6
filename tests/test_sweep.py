"""`mnist sweep` end to end on generated digits, as real processes: trials are run folders chosen on validation,
the study (read back with Optuna itself) ranks them, the best config re-runs, workers share one study, and a
killed sweep continues where it stopped."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
import yaml

from conftest import ROOT, missing_system_tool, start_mnist
from conftest import run_mnist as mnist
from mnist_pipeline.config import load_config

pytestmark = pytest.mark.slow  # real sweeps: Optuna studies of several trainings, worker processes, a PostgreSQL server

TINY = ["--set", "data.subset=200", "--set", "training.batch_size=32", "--set", "training.epochs=2",
        "--set", "training.jit_compile=false", "--set", "training.steps_per_execution=1", "--device", "cpu"]


def space(tmp_path, **extra) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"sampler": "random", "trials": 4, "params": {
        "training.learning_rate": {"low": 1e-4, "high": 1e-2, "log": True},
        "model.params.units": {"choices": [16, 64]}}, **extra}))
    return path


def sweep_args(idx_dir, tmp_path, *extra):
    return ["sweep", "--config", ROOT / "configs/mlp.yaml", "--space", space(tmp_path), "--name", "tiny",
            "--data-dir", idx_dir, "--output-dir", tmp_path / "out", *TINY, *extra]


def study_of(folder: Path) -> optuna.Study:
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(folder / "study.journal")))
    return optuna.load_study(study_name=folder.name, storage=storage)


def test_a_tiny_sweep_ranks_its_trials_and_writes_a_best_config_to_rerun(idx_dir, tmp_path):
    # Relative --data-dir and --output-dir (the processes run in ROOT): best.yaml must still re-run from anywhere.
    relative = ["--data-dir", os.path.relpath(idx_dir, ROOT), "--output-dir", os.path.relpath(tmp_path / "out", ROOT)]
    args = [*sweep_args(idx_dir, tmp_path, "--no-prune"), *relative]  # the later options win
    done = mnist(*args)
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "out/sweeps/tiny"
    study = study_of(folder)
    trials = study.get_trials()
    assert len(trials) == 4
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    for trial in trials:  # each trial is a completed run folder, chosen on validation only
        (run,) = trial.user_attrs["runs"]
        metrics = json.loads((folder / "runs" / run / "metrics.json").read_text())
        assert metrics["tested"] is False
        assert "test_accuracy" not in metrics
        assert trial.value == metrics["best_val_accuracy"]
        cfg = load_config(folder / "runs" / run / "config.yaml")
        assert cfg.model.params["units"] == trial.params["model.params.units"]
        assert cfg.training.learning_rate == pytest.approx(trial.params["training.learning_rate"])
    best = max(trials, key=lambda t: t.value)
    lines = done.stdout.splitlines()
    assert lines[-2].startswith(f"best: trial {best.number} (val_accuracy {best.value:.4f}; test accuracy ")
    assert lines[-1] == f"report: {os.path.relpath(folder, ROOT)}/report.html"
    best_cfg = load_config(folder / "best.yaml")
    assert best_cfg.model.params["units"] == best.params["model.params.units"]
    # Absolute paths, as run folders keep them: the sweep's data, and its output dir.
    assert best_cfg.data.data_dir == str(idx_dir)
    assert best_cfg.output.dir == str(tmp_path / "out")
    recorded = json.loads((folder / "best.json").read_text())
    assert recorded["trial"] == best.number
    assert 0.1 < recorded["test_accuracy"] <= 1
    (best_run,) = best.user_attrs["runs"]
    evaluated = mnist("evaluate", folder / "runs" / best_run, "--data-dir", idx_dir, "--json")
    assert json.loads(evaluated.stdout)["accuracy"] == recorded["test_accuracy"]
    html = (folder / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 2
    assert f"Trial {best.number}:" in html
    # The same command again continues the finished study: no new trial, the test not measured again.
    before = (folder / "best.json").read_bytes()
    again = mnist(*args)
    assert again.returncode == 0, again.stderr
    assert len(study_of(folder).get_trials()) == 4
    assert (folder / "best.json").read_bytes() == before
    # `mnist sweep --output-dir D report NAME`: the group's --output-dir finds the sweep.
    report = mnist("sweep", "--output-dir", tmp_path / "out", "report", "tiny")
    assert report.returncode == 0, report.stderr
    assert report.stdout.splitlines()[-1] == f"report: {folder / 'report.html'}"
    # The best config trains as an ordinary run from another directory, into the sweep's output dir.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    rerun = subprocess.run([sys.executable, "-m", "mnist_pipeline", "train", "--config", str(folder / "best.yaml"),
                            "--epochs", "1", "--quiet"], cwd=elsewhere, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert len(list((tmp_path / "out/runs").glob("*-tiny-best/metrics.json"))) == 1
    assert not any(elsewhere.iterdir())


def test_a_sweep_grows_with_more_trials_and_shows_each_trial_and_epoch_as_it_trains(idx_dir, tmp_path):
    args = sweep_args(idx_dir, tmp_path, "--no-prune", "--set", "training.epochs=2")
    folder = tmp_path / "out/sweeps/tiny"
    first = mnist(*args, "--trials", "2")
    assert first.returncode == 0, first.stderr
    # Progress as plain log lines: a line as each trial starts (its place in the sweep, its values), one per
    # finished epoch, then its result.
    lines = first.stdout.splitlines()
    start = lines.index(next(line for line in lines if line.startswith("trial 1 (2 of 2): ")))
    assert re.fullmatch(r"trial 1 \(2 of 2\): units=(16|64), learning_rate=[0-9.e-]+", lines[start])
    assert re.fullmatch(r"trial 1  epoch 1/2  loss \d\.\d{4}  val_loss \d\.\d{4}  val_accuracy \d\.\d{4}  "
                        r"\d+\.\ds", lines[start + 1])
    assert lines[start + 2].startswith("trial 1  epoch 2/2  ")
    assert lines[start + 3].startswith("trial 1: val_accuracy ")
    assert json.loads((folder / "sweep.json").read_text())["trials"] == 2
    # More trials: the study goes on where it stopped (as Optuna's own optimize would).
    grown = mnist(*args, "--trials", "3")
    assert grown.returncode == 0, grown.stderr
    assert "sweep tiny: 3 trials in all, was 2" in grown.stdout
    trained = [line for line in grown.stdout.splitlines() if "  epoch " in line]
    assert "trial 2 (3 of 3): " in grown.stdout
    assert len(trained) == 2
    assert trained[0].startswith("trial 2  epoch 1/2")
    assert [t.state.name for t in study_of(folder).get_trials()] == ["COMPLETE"] * 3
    assert json.loads((folder / "sweep.json").read_text())["trials"] == 3
    report = mnist("sweep", "report", "tiny", "--output-dir", tmp_path / "out")
    assert report.returncode == 0, report.stderr
    assert "| trials | 3 of 3: 3 completed |" in (folder / "report.md").read_text()
    # Fewer: nothing more runs, nothing is lost.
    fewer = mnist(*args, "--trials", "2")
    assert fewer.returncode == 0, fewer.stderr
    assert "epoch" not in fewer.stdout
    assert len(study_of(folder).get_trials()) == 3
    assert "| trials | 3 (the sweep now asks for 2): 3 completed |" in (folder / "report.md").read_text()


def test_a_rerun_that_would_mix_two_sweeps_is_refused_in_words(tmp_path):
    from mnist_pipeline.errors import ConfigError
    from mnist_pipeline.sweep import make_sweep, record_sweep

    def start(space_path, prune=True, overrides=(), seeds=None, trials=4):
        sweep = make_sweep(ROOT / "configs/mlp.yaml", space_path, trials, None, "x", seeds, prune, overrides, None,
                           None, tmp_path / "out")
        record_sweep(sweep)  # as `mnist sweep` does once the storage has opened
        return sweep

    sweep = start(space(tmp_path))
    (sweep.folder / "runs/20261201T000000Z-trial-0000").mkdir(parents=True)  # a trial ran: it is started
    assert start(space(tmp_path), trials=9).trials == 9  # only the count changed: the same sweep
    other = tmp_path / "other"
    other.mkdir()
    changed = space(other, **{"params": {"training.learning_rate": {"low": 1e-3, "high": 1e-2, "log": True},
                                         "model.params.units": {"choices": [16, 64]}}})
    with pytest.raises(ConfigError) as refused:
        start(changed, prune=False)
    assert str(refused.value) == (
        f"sweep 'x' ({sweep.folder}) was started with another search space (training.learning_rate differs); "
        f"and with pruning on (now off); run it as it started (only --trials may change), or pick another --name")
    with pytest.raises(ConfigError) as refused:
        start(space(tmp_path), overrides=["training.epochs=7"], seeds="0,1")
    assert str(refused.value).startswith(
        f"sweep 'x' ({sweep.folder}) was started with another base config (training.epochs was 40, now 7); "
        f"and with no --seeds (now --seeds 0,1); ")
    # A sweep.json written before the count could change (the count in describe and in the space) continues.
    path = sweep.folder / "sweep.json"
    old = json.loads(path.read_text())
    described = old.pop("describe")
    old["describe"] = {**described, "trials": old.pop("trials"), "space": {**described["space"], "trials": 4}}
    path.write_text(json.dumps(old))
    assert start(space(tmp_path), trials=5).trials_before == 9


def test_sweep_report_tells_a_missing_sweep_from_a_folder_that_is_not_one(tmp_path):
    out = tmp_path / "out"
    nothing = mnist("sweep", "report", "nope", "--output-dir", out)
    assert nothing.returncode == 2
    assert nothing.stderr == (f"error: sweep 'nope' does not exist: no folder {out}/sweeps/nope; start one with "
                              f"`mnist sweep --space FILE --name nope` (or pass the --output-dir the sweep ran with)\n")
    (out / "sweeps/real").mkdir(parents=True)
    (out / "sweeps/real/sweep.json").write_text("{}")
    (out / "sweeps/plain").mkdir()
    missing = mnist("sweep", "--output-dir", out, "report", "nope")  # the group's --output-dir
    assert missing.returncode == 2
    assert missing.stderr.startswith("error: sweep 'nope' does not exist: ")
    assert "the sweeps there: real (or pass" in missing.stderr
    plain = mnist("sweep", "report", "plain", "--output-dir", out)
    assert plain.returncode == 2
    assert plain.stderr == (f"error: {out}/sweeps/plain is not a sweep folder (it has no sweep.json, which "
                            f"`mnist sweep` writes first); the sweeps there: real\n")


def test_short_labels_are_the_shortest_unique_trailing_parts_of_the_keys():
    from mnist_pipeline.sweep import short_labels

    keys = ["data.augmentation.rotation", "data.augmentation.translation", "training.learning_rate"]
    assert short_labels(keys) == dict(zip(keys, ["rotation", "translation", "learning_rate"], strict=True))
    clash = ["model.params.units", "model.head.units", "model.params.dropout_rate"]
    assert list(short_labels(clash).values()) == ["params.units", "head.units", "dropout_rate"]
    nested = ["x.c", "a.x.c"]  # one key is the tail of the other: the longer one needs its whole path
    assert list(short_labels(nested).values()) == ["x.c", "a.x.c"]
    for labels in (short_labels(keys), short_labels(clash), short_labels(nested)):
        assert len(set(labels.values())) == len(labels)


def test_log_axes_get_a_few_round_ticks_in_one_notation():
    from mnist_pipeline.sweep.figures import linear_ticks, log_ticks, numbers_text

    assert numbers_text(log_ticks(1e-4, 1e-2)) == ["1e-4", "3e-4", "1e-3", "3e-3", "1e-2"]
    assert numbers_text(log_ticks(3e-4, 3e-3)) == ["5e-4", "1e-3", "2e-3"]
    assert numbers_text(log_ticks(1e-8, 1.0)) == ["1e-8", "1e-6", "1e-4", "1e-2", "1"]  # many decades: fewer
    assert numbers_text(linear_ticks(0.0, 0.15)) == ["0", "0.03", "0.06", "0.09", "0.12", "0.15"]


def test_two_workers_share_one_study_and_no_trial_runs_twice(idx_dir, tmp_path):
    done = mnist(*sweep_args(idx_dir, tmp_path, "--workers", "2", "--trials", "5", "--no-prune"))
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "out/sweeps/tiny"
    trials = study_of(folder).get_trials()
    assert len(trials) == 5
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both processes ran trials
    runs = [run for t in trials for run in t.user_attrs["runs"]]
    assert len(set(runs)) == 5
    assert sorted(runs) == sorted(p.name for p in (folder / "runs").iterdir())


def test_seeds_repeat_each_trial_and_report_mean_and_spread(idx_dir, tmp_path):
    done = mnist(*sweep_args(idx_dir, tmp_path, "--seeds", "0,1", "--trials", "2", "--no-prune"))
    assert done.returncode == 0, done.stderr
    for trial in study_of(tmp_path / "out/sweeps/tiny").get_trials():
        values = trial.user_attrs["values"]
        assert len(trial.user_attrs["runs"]) == 2
        assert trial.value == pytest.approx(sum(values) / 2)
        assert trial.user_attrs["std"] == pytest.approx(abs(values[0] - values[1]) / 2 ** 0.5)
        seeds = [load_config(tmp_path / "out/sweeps/tiny/runs" / run / "config.yaml").training.seed
                 for run in trial.user_attrs["runs"]]
        assert seeds == [0, 1]


def test_a_killed_sweep_continues_and_accounts_for_the_killed_trial(idx_dir, tmp_path):
    args = sweep_args(idx_dir, tmp_path, "--trials", "3", "--no-prune", "--set", "training.epochs=3")
    folder = tmp_path / "out/sweeps/tiny"
    process = start_mnist(*args)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # kill it inside trial 1, after its first epoch
        histories = list((folder / "runs").glob("*-trial-0001/history.csv")) if (folder / "runs").exists() else []
        if histories and histories[0].read_text().count("\n") >= 2:
            break
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    resumed = mnist(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert "re-queued trial 1: its process had died" in resumed.stdout
    trials = study_of(folder).get_trials()
    states = [t.state.name for t in trials]
    assert states == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]  # 1 killed; 2 re-runs its values; then 3
    assert trials[2].user_attrs["replaces"] == 1
    assert trials[2].params == trials[1].params
    assert "best: trial" in resumed.stdout
    # The killed trial stays in the report, with its state, its run folder and what became of it.
    (killed_run,) = (folder / "runs").glob("*-trial-0001")
    report = (folder / "report.md").read_text()
    assert "| trials | 3 of 3: 3 completed; 1 interrupted and re-run |" in report
    assert "| 1 | interrupted | - | - |" in report
    assert f"| {killed_run.name} | its process died; its values re-run as trial 2 |" in report
    assert "| the values of interrupted trial 1 again |" in report
    assert "    1  interrupted" in resumed.stdout


def test_a_stopped_sweep_says_how_to_continue_and_requeues_its_trial(idx_dir, tmp_path):
    args = sweep_args(idx_dir, tmp_path, "--trials", "2", "--no-prune", "--set", "training.epochs=3")
    folder = tmp_path / "out/sweeps/tiny"
    process = start_mnist(*args)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not list(folder.glob("runs/*-trial-0000/history.csv")):
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143
    assert stderr == ("SIGTERM: the sweep stopped during a trial, which is re-queued; run the same command "
                      "again to continue\n")
    (stopped,) = study_of(folder).get_trials(states=(optuna.trial.TrialState.FAIL,))
    (run,) = folder.glob(f"runs/*-trial-{stopped.number:04d}")  # the stopped trial's run folder says so
    assert json.loads((run / "status.json").read_text())["status"] == "interrupted"
    again = mnist(*args)
    assert again.returncode == 0, again.stderr
    completed = study_of(folder).get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(completed) == 2
    assert completed[0].user_attrs["replaces"] == stopped.number
    # Its folder is in the report, beside the trial that ran its values again.
    assert (f"| {run.name} | stopped by Ctrl-C or SIGTERM; its values re-run as trial {completed[0].number} |"
            in (folder / "report.md").read_text())


def _postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


@pytest.fixture(scope="module")
def postgres_url():
    """A throwaway PostgreSQL server on a Unix socket in a temp dir, started and stopped here."""
    import pwd
    import shutil
    import subprocess

    bin_dir = _postgres_bin()
    if bin_dir is None:
        missing_system_tool("PostgreSQL is not installed here (Debian: apt-get install postgresql; "
                            ".ci/run installs it)")
    # Not under pytest's temp dirs: those are private to root, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="mnist-pg-"))
    data, sockets = root / "data", root / "sockets"
    sockets.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root: as the postgres user that the package creates
        user = pwd.getpwnam("postgres")
        for path in (root, sockets):
            os.chown(path, user.pw_uid, user.pw_gid)
        as_user = [shutil.which("runuser") or "/usr/sbin/runuser", "-u", "postgres", "--"]
    subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"],
                   check=True, capture_output=True)
    subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-l", str(root / "server.log"),
                    "-o", f"-k {sockets} -c listen_addresses=''", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg2://postgres@/postgres?host={sockets}"
    finally:
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def test_two_processes_share_a_postgresql_study(idx_dir, tmp_path, postgres_url):
    """Two machines in miniature: the same command, the same --storage URL and --name, started together; the
    study gets exactly its 4 trials, each run once, and both commands finish."""
    args = sweep_args(idx_dir, tmp_path, "--no-prune", "--storage", postgres_url)
    processes = [start_mnist(*args) for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], [err for _, err in outputs]
    study = optuna.load_study(study_name="tiny", storage=postgres_url)
    ran = [t for t in study.get_trials() if "skipped" not in t.user_attrs]
    assert len(ran) == 4
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in ran)
    runs = [run for t in ran for run in t.user_attrs["runs"]]
    assert len(set(runs)) == 4
    assert {t.user_attrs["worker"] for t in ran} <= {f"{os.uname().nodename}:{p.pid}" for p in processes}


def test_a_grid_sweep_tries_every_combination_once(idx_dir, tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({"sampler": "grid", "params": {
        "model.params.units": {"choices": [16, 32]}, "model.params.activation": {"choices": ["relu", "tanh"]}}}))
    done = mnist("sweep", "--config", ROOT / "configs/mlp.yaml", "--space", path, "--name", "grid", "--data-dir",
                 idx_dir, "--output-dir", tmp_path / "out", *TINY, "--set", "training.epochs=1")
    assert done.returncode == 0, done.stderr
    trials = study_of(tmp_path / "out/sweeps/grid").get_trials()
    tried = sorted((t.params["model.params.units"], t.params["model.params.activation"]) for t in trials)
    assert tried == [(16, "relu"), (16, "tanh"), (32, "relu"), (32, "tanh")]  # the trial count: the grid's size


def test_a_failing_trial_is_recorded_and_the_sweep_goes_on(idx_dir, tmp_path):
    """Values that pass one by one but not together (a warm-up as long as the training) fail their trial only."""
    path = tmp_path / "clash.yaml"
    path.write_text(yaml.safe_dump({"sampler": "random", "trials": 6, "params": {
        "training.epochs": {"choices": [1, 2]}, "training.schedule.warmup_epochs": {"choices": [0, 1]}}}))
    done = mnist("sweep", "--config", ROOT / "configs/mlp.yaml", "--space", path, "--name", "clash", "--data-dir",
                 idx_dir, "--output-dir", tmp_path / "out", *TINY, "--no-prune")  # the trial's epochs win
    assert done.returncode == 0, done.stderr
    trials = study_of(tmp_path / "out/sweeps/clash").get_trials()
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(trials) == 6
    assert failed
    assert len(failed) < 6
    for trial in failed:
        assert trial.params == {"training.epochs": 1, "training.schedule.warmup_epochs": 1}
        assert "warmup_epochs (1) must be less than epochs (1)" in trial.user_attrs["outcome"]
        assert f"trial {trial.number}: failed: " in done.stdout
    report = mnist("sweep", "report", "clash", "--output-dir", tmp_path / "out")
    assert report.returncode == 0
    assert report.stdout.splitlines()[-1].startswith("report: ")
    assert report.stdout.count(" failed ") == len(failed)
    report_md = (tmp_path / "out/sweeps/clash/report.md").read_text()
    for trial in failed:  # in the trials table too: refused before a run folder existed, so none
        assert f"| {trial.number} | failed | - | - |" in report_md
        assert f"| - | {trial.user_attrs['outcome']} |" in report_md


def test_list_choices_reach_the_trials_and_the_best_config_as_lists(idx_dir, tmp_path):
    path = tmp_path / "widths.yaml"
    widths = {"choices": [[16], [32, 16]]}
    path.write_text(yaml.safe_dump({"sampler": "grid", "params": {"model.params.units": widths}}))
    done = mnist("sweep", "--config", ROOT / "configs/deep_mlp.yaml", "--space", path, "--name", "widths",
                 "--data-dir", idx_dir, "--output-dir", tmp_path / "out", *TINY, "--set", "training.epochs=1")
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "out/sweeps/widths"
    widths = []
    for trial in study_of(folder).get_trials():
        (run,) = trial.user_attrs["runs"]
        widths.append(load_config(folder / "runs" / run / "config.yaml").model.params["units"])
        assert json.loads(trial.params["model.params.units"]) == widths[-1]  # Optuna keeps a list as JSON text
    assert sorted(widths) == [[16], [32, 16]]
    assert load_config(folder / "best.yaml").model.params["units"] in widths
