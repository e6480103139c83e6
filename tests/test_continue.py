"""Going on from earlier runs: more epochs in a new folder, fine-tuning from a run's weights, folders made by
other versions, and the version that made a run."""

import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import MLP as MLP_PATH
from conftest import ROOT, history_without_seconds, snapshot
from mnist_pipeline import __version__
from mnist_pipeline.cli import cli

pytestmark = pytest.mark.slow  # runs trained, then trained further or fine-tuned

MLP = str(MLP_PATH)  # a str, as typed on a command line
# Tiny and constant-rate: a run continued from epoch 1 to 3 must then equal a 3-epoch run step for step.
TINY = ["--set", "data.subset=300", "--set", "training.batch_size=32", "--device", "cpu",
        "--set", "training.schedule.name=constant", "--set", "training.jit_compile=false"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def run_folder(result) -> Path:
    assert result.exit_code == 0, result.output
    return Path(result.output.strip().splitlines()[-1].removeprefix("run folder: "))


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(scope="module")
def one_epoch(idx_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    return out, run_folder(invoke("train", "--config", MLP, "--data-dir", idx_dir, "--output-dir", out,
                                  "--epochs", "1", *TINY))


def test_a_completed_run_trains_further_in_a_new_folder_exactly_as_a_longer_run(one_epoch, idx_dir, tmp_path):
    out, first = one_epoch
    before = snapshot(first)
    result = invoke("train", "--resume", first, "--epochs", "3")
    further = run_folder(result)
    assert further != first
    assert further.parent == first.parent
    assert f"training {first} further, up to epoch 3, in a new run folder {further}" in result.output
    assert snapshot(first) == before  # the earlier run is untouched
    longer = run_folder(invoke("train", "--config", MLP, "--data-dir", idx_dir, "--output-dir", tmp_path,
                               "--epochs", "3", *TINY))
    assert history_without_seconds(further) == history_without_seconds(longer)
    assert metrics(further)["weights_sha256"] == metrics(longer)["weights_sha256"]
    assert metrics(further)["continued_from"] == {"run": str(first.resolve()), "after_epoch": 1}
    assert "epochs: 3" in (further / "config.yaml").read_text()
    assert (f"continued from {first.resolve()} after epoch 1: the constant learning-rate schedule is laid out over "
            f"all 3 epochs (epoch 2 starts at 0.001, as in a run planned for 3)") in result.output
    report = (further / "report.md").read_text()
    assert f"| continued from | {first.resolve()}, after its epoch 1 (epoch 1 above is that run's) |" in report
    # And once more from the continued run: it is a run like any other.
    again = run_folder(invoke("train", "--resume", further, "--epochs", "4", "--quiet"))
    assert len(history_without_seconds(again)) == 1 + 4


def test_continuing_needs_more_epochs_than_the_run_has(one_epoch):
    _, first = one_epoch
    before, folders = snapshot(first), set(first.parent.iterdir())
    result = invoke("train", "--resume", first, "--epochs", "1")
    assert result.exit_code == 2
    assert "has trained 1 epoch already; to continue it ask for more (e.g. --epochs 6)" in result.output
    plain = invoke("train", "--resume", first)
    assert plain.exit_code == 2
    assert "--resume RUN" not in plain.output
    assert f"`mnist train --resume {first} --epochs N`" in plain.output
    mixed = invoke("train", "--resume", first, "--config", MLP, "--seed", "0")
    assert mixed.exit_code == 2
    assert "drop --config, --seed" in mixed.output
    assert snapshot(first) == before  # nothing new was made
    assert set(first.parent.iterdir()) == folders


def test_fine_tuning_starts_from_the_runs_weights_and_records_them(one_epoch, idx_dir, tmp_path):
    _, first = one_epoch
    # A rate too small to move the weights: the new run must test exactly as the run it started from.
    tuned = run_folder(invoke("train", "--config", MLP, "--data-dir", idx_dir, "--output-dir", tmp_path,
                              "--epochs", "1", *TINY, "--init-from", first, "--set", "training.optimizer=sgd",
                              "--set", "training.learning_rate=1e-12", "--set", "data.augmentation.rotation=0"))
    assert metrics(tuned)["test_accuracy"] == pytest.approx(metrics(first)["test_accuracy"], abs=1e-9)
    assert f"init_from: {first.resolve()}" in (tuned / "config.yaml").read_text()
    fingerprint = json.loads((tuned / "fingerprint.json").read_text())
    assert fingerprint["init_from"]["run"] == str(first.resolve())
    assert re.fullmatch(r"[0-9a-f]{64}", fingerprint["init_from"]["model_sha256"])
    assert metrics(tuned)["init_from"] == fingerprint["init_from"]


@pytest.mark.parametrize("config, change, words", [
    (ROOT / "configs/smoke.yaml", [], "that run's model is mlp and this config's is cnn"),
    (MLP, ["--set", "model.params.units=32"], "its weights do not fit this config's model (its layers have other "
                                              "shapes; model.params differ: units 256 -> 32)"),
])
def test_fine_tuning_from_another_model_is_refused(one_epoch, idx_dir, tmp_path, config, change, words):
    _, first = one_epoch
    result = invoke("train", "--config", config, "--data-dir", idx_dir, "--output-dir", tmp_path, "--epochs", "1",
                    *TINY, "--init-from", first, *change)
    assert result.exit_code == 2, result.output
    assert words in result.output, result.output
    assert result.output.splitlines()[-1].startswith("error:")
    assert not (tmp_path / "runs").exists()  # refused before any run folder was made


def test_fine_tuning_from_a_damaged_model_is_refused_before_the_data_is_read(one_epoch, tmp_path):
    _, first = one_epoch
    source = shutil.copytree(first, tmp_path / "source")
    (source / "model.keras").write_text("not a model")
    result = invoke("train", "--config", MLP, "--data-dir", tmp_path / "no-data-here", "--output-dir",
                    tmp_path / "out", "--init-from", source)
    assert result.exit_code == 1
    assert "model.keras: not a readable Keras model file" in result.output
    assert not (tmp_path / "out").exists()


def test_fine_tuning_across_normalizations_says_what_it_costs(one_epoch, idx_dir, tmp_path):
    _, first = one_epoch
    result = invoke("train", "--config", MLP, "--data-dir", idx_dir, "--output-dir", tmp_path, "--epochs", "1",
                    *TINY, "--init-from", first, "--set", "data.normalization=standardize")
    assert result.exit_code == 0, result.output
    assert ("model.init_from: those weights learned from inputs normalized by scale, and this run normalizes by "
            "standardize") in result.output


def test_fine_tuning_from_a_folder_that_is_not_a_completed_run_is_refused_before_anything(idx_dir, tmp_path):
    result = invoke("train", "--config", MLP, "--data-dir", idx_dir, "--output-dir", tmp_path / "out",
                    "--init-from", tmp_path)
    assert result.exit_code == 2
    assert result.output.strip() == (f"error: model.init_from {tmp_path}: not a run folder (no status.json and "
                                     f"config.yaml); name a completed run folder whose weights this run starts from")
    assert not (tmp_path / "out").exists()


def test_a_run_records_the_version_and_commit_that_made_it(one_epoch):
    _, first = one_epoch
    made = metrics(first)["made_by"]
    assert made["version"] == __version__ == metrics(first)["versions"]["mnist_pipeline"]
    assert re.fullmatch(r"[0-9a-f]{40}", made["commit"])  # the tests run from a clone
    assert json.loads((first / "fingerprint.json").read_text())["made_by"]["version"] == __version__


def stopped_copy(run_dir: Path, tmp_path: Path) -> Path:
    copy = shutil.copytree(run_dir, tmp_path / "runs" / run_dir.name)
    (copy / "status.json").write_text('{"status": "interrupted", "started": "2026-01-01T00:00:00+00:00"}')
    return copy


def test_a_folder_from_an_earlier_version_says_so_and_what_to_do(one_epoch, tmp_path):
    _, first = one_epoch
    old = stopped_copy(first, tmp_path)
    (old / "fingerprint.json").unlink()
    result = invoke("train", "--resume", old)
    assert result.exit_code == 1
    line = result.output.strip()
    assert "made by an earlier version of mnist-pipeline" in line
    assert "file not found" not in line
    assert f"mnist train --config {old / 'config.yaml'}" in line


def test_a_folder_from_a_later_version_asks_for_an_upgrade(one_epoch, tmp_path):
    _, first = one_epoch
    new = stopped_copy(first, tmp_path)
    fingerprint = json.loads((new / "fingerprint.json").read_text())
    fingerprint.update(format=99, made_by={"version": "9.0.0"})
    (new / "fingerprint.json").write_text(json.dumps(fingerprint))
    result = invoke("train", "--resume", new)
    assert result.exit_code == 1
    assert "made by mnist-pipeline 9.0.0" in result.output
    assert "upgrade mnist-pipeline" in result.output


def test_a_run_held_by_another_process_shows_as_running_and_its_report_is_left_alone(one_epoch, tmp_path):
    from mnist_pipeline.reports.run_folder import RunLock

    _, first = one_epoch
    stopped = stopped_copy(first, tmp_path)  # as a resume finds it in its first seconds: still "interrupted"
    lock = RunLock(stopped)
    assert lock.acquire()
    try:
        before = snapshot(stopped)
        refused = invoke("report", stopped)
        assert refused.exit_code == 2
        assert "another process is training this run right now" in refused.output
        assert snapshot(stopped) == before
        listed = invoke("compare", stopped, "--json")
        assert json.loads(listed.output)["runs"][0]["status"] == "running"
        busy = invoke("train", "--resume", stopped, "--epochs", "5")
        assert busy.exit_code == 2
        assert "is training this run right now" in busy.output
    finally:
        lock.release()
    assert json.loads(invoke("compare", stopped, "--json").output)["runs"][0]["status"] == "interrupted"
