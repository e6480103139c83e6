"""Bad inputs, kills, signals, divergence and concurrent starts: no lost work, no overwritten results."""

import gzip
import json
import multiprocessing
import os
import re
import shutil
import signal
import time
from pathlib import Path

import keras
import pytest
from click.testing import CliRunner

from conftest import MLP as MLP_PATH
from conftest import ROOT, history_without_seconds, snapshot
from conftest import start_mnist as mnist
from mnist_pipeline.cli import cli
from mnist_pipeline.data.idx import write_idx
from mnist_pipeline.reports.run_folder import create_run_dir
from mnist_pipeline.schedules import EarlyStopping, LearningRateSchedule

MLP = str(MLP_PATH)  # a str, as typed on a command line
SMOKE = str(ROOT / "configs/smoke.yaml")
TINY = ["--set", "data.subset=300", "--set", "training.batch_size=32", "--device", "cpu"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def earlier(idx_dir, tmp_path_factory):
    """An output dir holding one completed run that no later mistake may touch."""
    out = tmp_path_factory.mktemp("out")
    result = invoke("train", "--config", MLP, "--data-dir", idx_dir, "--output-dir", out, "--epochs", "1", *TINY)
    assert result.exit_code == 0, result.output
    return out, Path(result.output.strip().splitlines()[-1].removeprefix("run folder: "))


# ---- the catalogue: (id, how to build the arguments, exit code, words the one-line message must hold) ----

def yaml_file(text):
    def make(tmp, data):
        (tmp / "c.yaml").write_text(text)
        return ["train", "--config", tmp / "c.yaml", "--data-dir", data]
    return make


def flags(*args):
    return lambda tmp, data: ["train", "--config", MLP, "--data-dir", data, *args]


def bad_data(name, array=None, raw=None):
    def make(tmp, data):
        copy = shutil.copytree(data, tmp / "data")
        if raw is not None:
            (copy / name).write_bytes(raw)
        else:
            write_idx(copy / name, array)
        return ["train", "--config", MLP, "--data-dir", copy]
    return make


def np_array(shape, value=0):
    import numpy as np
    return np.full(shape, value, np.uint8)


CATALOGUE = [
    ("unknown-key", flags("--set", "training.epoch=3"), 2, ["unknown key 'training.epoch'", "did you mean 'epochs'"]),
    ("negative-epochs", flags("--set", "training.epochs=-1"), 2, ["training.epochs = -1", "must be at least"]),
    ("epochs-text", flags("--set", "training.epochs=ten"), 2, ["training.epochs = 'ten'", "integer"]),
    ("zero-batch", flags("--set", "training.batch_size=0"), 2, ["training.batch_size = 0"]),
    ("lr-text", flags("--set", "training.learning_rate=fast"), 2, ["learning_rate = 'fast'", "number"]),
    ("split-outside", flags("--set", "data.validation_split=1.5"), 2, ["data.validation_split = 1.5", "less than 1"]),
    ("unknown-model", flags("--set", "model.name=resnet"), 2, ["model.name = 'resnet'", "known models"]),
    ("zero-units", flags("--set", "model.params.units=0"), 2, ["model.params.units = 0"]),
    ("dropout-one", flags("--set", "model.params.dropout_rate=1"), 2, ["model.params.dropout_rate", "less than 1"]),
    ("unknown-param", flags("--set", "model.params.widht=3"), 2, ["unknown key 'model.params.widht'"]),
    ("bad-dataset", flags("--set", "data.dataset=cifar10"), 2,
     ["data.dataset", "expected one of mnist, fashion_mnist"]),
    ("bad-schedule", flags("--set", "training.schedule.name=linear"), 2,
     ["training.schedule.name", "expected one of", "cosine"]),
    ("bad-patience", flags("--set", "training.early_stopping.patience=0"), 2, ["early_stopping.patience = 0"]),
    ("name-escapes", flags("--set", "output.name=../escape"), 2, ["output.name = '../escape'", "path separators"]),
    ("name-absolute", flags("--set", "output.name=/tmp/x"), 2, ["output.name = '/tmp/x'", "path separators"]),
    ("python-tag", yaml_file("training: !!python/object/apply:os.system ['true']\n"), 2, ["YAML tag not allowed"]),
    ("yaml-syntax", yaml_file("training: [1, 2\n"), 2, ["invalid YAML", "line"]),
    ("not-a-mapping", yaml_file("- 1\n- 2\n"), 2, ["must be a mapping"]),
    ("missing-config", lambda tmp, data: ["train", "--config", tmp / "none.yaml"], 2, ["none.yaml", "not found"]),
    ("set-syntax", flags("--set", "training.epochs"), 2, ["--set expects section.key=value"]),
    ("bad-device-flag", flags("--device", "tpu"), 2, ["Invalid value for '--device'", "train --help"]),
    ("bad-seed-flag", flags("--seed", "abc"), 2, ["Invalid value for '--seed'"]),
    ("unknown-option", flags("--epoch", "3"), 2, ["No such option '--epoch'", "Did you mean", "'--epochs'"]),
    ("subset-too-big", flags("--set", "data.subset=100000"), 2, ["data.subset = 100000 is larger"]),
    ("missing-data-dir", lambda tmp, data: ["train", "--config", MLP, "--data-dir", tmp / "nowhere"], 2,
     ["does not exist", "--data-dir"]),
    ("empty-data-dir", lambda tmp, data: ["train", "--config", MLP, "--data-dir", tmp], 1, ["no IDX files or .npz"]),
    ("bad-magic", bad_data("train-labels-idx1-ubyte.gz", np_array((600, 28, 28))), 1,
     ["train-labels-idx1-ubyte.gz", "bad magic number 2051"]),
    ("truncated", bad_data("t10k-images-idx3-ubyte.gz", raw=gzip.compress(
        bytes([0, 0, 8, 3, 0, 0, 0, 200, 0, 0, 0, 28, 0, 0, 0, 28]) + bytes(100))), 1,
     ["t10k-images-idx3-ubyte.gz", "truncated"]),
    ("corrupt-gzip", bad_data("train-images-idx3-ubyte.gz", raw=b"\x1f\x8b\x08 broken"), 1,
     ["train-images-idx3-ubyte.gz", "cannot read the file"]),
    ("count-mismatch", bad_data("train-labels-idx1-ubyte.gz", np_array((599,))), 1, ["599 labels for 600 images"]),
    ("label-range", bad_data("t10k-labels-idx1-ubyte.gz", np_array((200,), 11)), 1, ["label 11 out of range 0..9"]),
    ("image-size", bad_data("t10k-images-idx3-ubyte.gz", np_array((200, 32, 32))), 1, ["(200, 32, 32)", "28, 28"]),
    ("output-is-a-file", lambda tmp, data: (tmp / "f").write_text("x") and
     ["train", "--config", MLP, "--data-dir", data, "--output-dir", tmp / "f"], 1, ["cannot create the run folder"]),
    ("no-gpu", flags("--device", "gpu"), 1, ["TensorFlow sees no GPU", "--device cpu"]),
    ("mixed-on-cpu", flags("--set", "training.mixed_precision=true", "--device", "cpu"), 2,
     ["training.mixed_precision = true needs a GPU"]),
    ("resume-not-a-run", lambda tmp, data: ["train", "--resume", tmp], 2, ["not a run folder"]),
    ("evaluate-missing", lambda tmp, data: ["evaluate", tmp / "nope"], 2, ["no such run folder"]),
    ("validate-bad-file", lambda tmp, data: (tmp / "v.yaml").write_text("model: {name: vgg}\n") and
     ["config", "validate", tmp / "v.yaml"], 2, ["model.name = 'vgg'"]),
]


@pytest.mark.parametrize("make_args, code, words", [c[1:] for c in CATALOGUE], ids=[c[0] for c in CATALOGUE])
def test_bad_input_catalogue(make_args, code, words, earlier, idx_dir, tmp_path):
    out, run_dir = earlier
    before = snapshot(run_dir)
    args = [str(a) for a in make_args(tmp_path, idx_dir)]
    if "--output-dir" not in args and args[0] == "train" and "--resume" not in args:
        args += ["--output-dir", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == code, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.output
    assert "Traceback" not in result.output, result.output
    for word in words:
        assert word in errors[0], errors[0]
    assert snapshot(run_dir) == before
    assert sorted(p.name for p in (out / "runs").iterdir()) == [run_dir.name]  # no new (half) run folder


def test_catalogue_is_large_enough():
    assert len(CATALOGUE) >= 25


def test_resume_refuses_completed_runs_and_extra_options(earlier):
    _, run_dir = earlier
    before = snapshot(run_dir)
    done = invoke("train", "--resume", run_dir)
    assert done.exit_code == 2
    assert "already completed" in done.output
    mixed = invoke("train", "--resume", run_dir, "--config", MLP)
    assert mixed.exit_code == 2
    assert "--resume goes on with the run's saved config; drop --config" in mixed.output
    assert snapshot(run_dir) == before


def test_diverging_loss_stops_at_once_and_marks_the_run_failed(idx_dir, tmp_path):
    result = invoke("train", "--config", MLP, "--data-dir", idx_dir, "--output-dir", tmp_path, *TINY,
                    "--set", "model.params.activation=linear", "--set", "training.optimizer=sgd",
                    "--set", "training.learning_rate=10")
    assert result.exit_code == 1, result.output
    message = result.output.strip().splitlines()[-1]
    assert re.match(r"error: the training loss became (nan|inf) at epoch \d+, step \d+; lower", message), message
    (run_dir,) = (tmp_path / "runs").iterdir()
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "failed"
    assert status["error"].startswith("the training loss became")  # words, not a class
    assert not (run_dir / "metrics.json").exists()
    assert (run_dir / "config.yaml").exists()


def test_unsafe_model_file_is_refused(earlier, tmp_path):
    _, run_dir = earlier
    copy = shutil.copytree(run_dir, tmp_path / "run")
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Lambda(lambda x: x * 2),
                              keras.layers.Flatten(), keras.layers.Dense(10)])
    model.save(copy / "model.keras")
    result = invoke("evaluate", copy)
    assert result.exit_code == 1
    assert "refused to load" in result.output
    assert "Lambda" in result.output


# ---- real processes: kill, signal, concurrency ----

def wait_for(predicate, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def new_run(out: Path, known=()):
    runs = [p for p in (out / "runs").glob("*")] if (out / "runs").exists() else []
    fresh = [p for p in runs if p not in known]
    return fresh[0] if fresh else None


@pytest.mark.slow
def test_sigterm_stops_after_the_step_marks_interrupted_and_can_resume(idx_dir, tmp_path):
    process = mnist("train", "--config", SMOKE, "--data-dir", idx_dir, "--output-dir", tmp_path, *TINY,
                    "--epochs", "200")
    wait_for(lambda: (r := new_run(tmp_path)) and any((r / "checkpoints").glob("epoch-*")))
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    last = stderr.strip().splitlines()[-1]
    assert re.match(r"SIGTERM: stopped (during|after) epoch \d+", last)
    assert "mnist train --resume" in last
    run_dir = new_run(tmp_path)
    assert json.loads((run_dir / "status.json").read_text())["status"] == "interrupted"
    assert (run_dir / "report.md").exists()
    assert "This run was **interrupted**" in (run_dir / "report.md").read_text()
    epochs_done = len(history_without_seconds(run_dir)) - 1
    assert 1 <= epochs_done < 200


@pytest.mark.slow
def test_two_runs_started_together_get_their_own_folders(idx_dir, tmp_path):
    args = ["train", "--config", MLP, "--data-dir", idx_dir, "--output-dir", tmp_path, *TINY, "--epochs", "1"]
    first, second = mnist(*args), mnist(*args)
    assert first.wait(timeout=120) == 0
    assert second.wait(timeout=120) == 0
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 2
    assert all(json.loads((r / "status.json").read_text())["status"] == "completed" for r in runs)


def _create(args):
    out, now = args
    from datetime import datetime
    return create_run_dir(out, "same", now=datetime.fromisoformat(now)).name


@pytest.mark.slow
def test_run_folder_creation_is_exclusive_across_processes(tmp_path):
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        names = pool.map(_create, [(str(tmp_path), "2026-11-23T12:00:00+00:00")] * 12)
    assert len(set(names)) == 12


# ---- policies ----

def test_schedules():
    step = LearningRateSchedule("step", 0.1, 30, step_size=10, factor=0.5)
    assert [step.rate(e) for e in (0, 9, 10, 25)] == [0.1, 0.1, 0.05, 0.025]
    assert step.rate(9.99) == 0.1  # held through the epoch, whatever comes next
    cosine = LearningRateSchedule("cosine", 0.1, 10, min_learning_rate=0.001)
    assert cosine.rate(0) == pytest.approx(0.1)
    assert cosine.rate(10) == pytest.approx(0.001)
    assert cosine.rate(5) == pytest.approx(0.0505)
    warm = LearningRateSchedule("cosine", 0.1, 10, warmup_epochs=2)
    assert [warm.rate(p) for p in (0, 1, 2, 6, 10)] == pytest.approx([0.0, 0.05, 0.1, 0.05, 0.0])
    warm_step = LearningRateSchedule("step", 0.1, 10, step_size=5, factor=0.5, warmup_epochs=1)
    assert [warm_step.rate(p) for p in (0, 0.5, 1, 4.9, 5, 5.9)] == pytest.approx([0, 0.05, 0.1, 0.1, 0.05, 0.05])
    plateau = LearningRateSchedule("reduce_on_plateau", 0.1, 10, factor=0.5, patience=2)
    for loss in (1.0, 0.9, 0.95, 0.96):
        plateau.observe(loss)
    assert plateau.rate(4) == pytest.approx(0.05)
    copy = LearningRateSchedule("reduce_on_plateau", 0.1, 10, factor=0.5, patience=2)
    copy.load_state(json.loads(json.dumps(plateau.state())))
    assert copy.rate(5) == plateau.rate(5)
    assert copy.wait == plateau.wait


def test_early_stopping_rules():
    loss = EarlyStopping("val_loss", patience=2, min_delta=0.01)
    assert [loss.should_stop(v) for v in (1.0, 0.995, 0.9, 0.899, 0.898)] == [False, False, False, False, True]
    accuracy = EarlyStopping("val_accuracy", patience=1)
    assert [accuracy.should_stop(v) for v in (0.5, 0.6, 0.6)] == [False, False, True]


def test_early_stopping_ends_a_run_before_its_epochs(idx_dir, tmp_path):
    result = invoke("train", "--config", MLP, "--data-dir", idx_dir, "--output-dir", tmp_path, *TINY,
                    "--epochs", "40", "--set", "training.early_stopping.enabled=true",
                    "--set", "training.early_stopping.patience=1", "--set", "training.early_stopping.min_delta=0.5")
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["stopped_early"] is True
    assert metrics["epochs"] < 40
    assert "early stopping: val_loss did not improve for 1 epoch\n" in result.output



def test_first_signal_asks_to_stop_a_second_stops_at_once():
    from mnist_pipeline.runtime import StopSignals

    previous = signal.getsignal(signal.SIGTERM)
    with StopSignals() as signals:
        assert not signals.requested()
        os.kill(os.getpid(), signal.SIGTERM)
        assert signals.requested()
        assert signals.exit_code == 143
        assert signals.name == "SIGTERM"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) is previous  # handlers restored after training


def test_a_long_path_in_a_message_keeps_its_file_name():
    from mnist_pipeline.errors import clip, quote

    path = "/tmp/" + "deep-folder/" * 20 + "none.yaml"
    shown = quote(path)
    assert shown.endswith("none.yaml' (256 characters)")
    assert shown.startswith("'/tmp/deep-folder/")
    assert clip("short") == "short"
