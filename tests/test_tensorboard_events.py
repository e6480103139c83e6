"""TensorBoard event files, read back with TensorBoard's own reader (and served by a real TensorBoard): they
hold what history.csv and metrics.json hold, under the names Keras's TensorBoard callback uses."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util

from mnist_pipeline.config import load_config
from mnist_pipeline.pipeline import Events, run
from mnist_pipeline.resume import open_resumable

SUBSET, BATCH = 200, 32  # 6 steps an epoch


def config(idx_dir, out, *extra):
    return load_config(None, ["training.epochs=3", f"training.batch_size={BATCH}", f"data.subset={SUBSET}",
                              "training.device=cpu", *extra], {"data.data_dir": str(idx_dir), "output.dir": str(out)})


def events(run_dir: Path, phase: str) -> dict[str, list[tuple[int, np.ndarray]]]:
    """{tag: [(step, value)]} of one phase's event files, as TensorBoard loads them."""
    reader = event_accumulator.EventAccumulator(str(run_dir / "tensorboard" / phase),
                                                size_guidance={event_accumulator.TENSORS: 0})
    reader.Reload()
    return {tag: [(e.step, tensor_util.make_ndarray(e.tensor_proto)) for e in reader.Tensors(tag)]
            for tag in reader.Tags()["tensors"]}


def scalars(tag_events) -> list[tuple[int, float]]:
    return [(step, float(value)) for step, value in tag_events]


def history(run_dir: Path) -> list[dict[str, float]]:
    with open(run_dir / "history.csv") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def test_epoch_values_test_metrics_histograms_and_figures_match_the_run_folder(idx_dir, tmp_path):
    result = run(config(idx_dir, tmp_path, "model.name=cnn", "model.params.filters=[4]", "model.params.dense_units=8",
                        "output.tensorboard.loss_every_steps=4", "output.tensorboard.histograms_every_epochs=2"))
    run_dir, metrics, rows = result.run_dir, result.metrics, history(result.run_dir)
    train, validation, test = (events(run_dir, phase) for phase in ("train", "validation", "test"))
    epochs = [int(r["epoch"]) - 1 for r in rows]  # Keras's callback counts epochs from 0
    for phase_events, names in ((train, {"epoch_loss": "loss", "epoch_accuracy": "accuracy",
                                         "epoch_learning_rate": "learning_rate"}),
                                (validation, {"epoch_loss": "val_loss", "epoch_accuracy": "val_accuracy"})):
        for tag, column in names.items():
            written = scalars(phase_events[tag])
            assert [step for step, _ in written] == epochs, tag
            # history.csv keeps 6 significant digits; the events keep float32
            np.testing.assert_allclose([v for _, v in written], [r[column] for r in rows], rtol=5e-6, err_msg=tag)
    steps = 3 * (SUBSET // BATCH)
    assert [step for step, _ in scalars(train["batch_loss"])] == list(range(4, steps + 1, 4))
    assert all(np.isfinite(v) and v > 0 for _, v in scalars(train["batch_loss"]))
    best = metrics["best_epoch"] - 1
    assert scalars(test["epoch_loss"]) == [(best, pytest.approx(metrics["test_loss"], rel=1e-6))]
    assert scalars(test["epoch_accuracy"]) == [(best, pytest.approx(metrics["test_accuracy"], rel=1e-6))]
    histograms = sorted(tag for tag in train if tag.endswith("/histogram"))
    assert len(histograms) == 8  # kernel and bias of 2 convs (one block), the hidden Dense and the logits
    assert all([step for step, _ in train[tag]] == [0, 2] for tag in histograms)
    # The figures are the report's PNGs, pixel for pixel: (width, height, encoded image) as tf.summary.image
    for phase_events, tag, file in ((test, "confusion_matrix", "confusion_matrix.png"),
                                    (test, "most_confident_mistakes", "misclassified.png"),
                                    (train, "samples", "samples.png")):
        ((step, value),) = phase_events[tag]
        shown = np.asarray(Image.open(io.BytesIO(value[2])).convert("RGB"))
        assert step == best
        assert (int(value[0]), int(value[1])) == shown.shape[1::-1]
        assert np.array_equal(shown, np.asarray(Image.open(run_dir / file).convert("RGB")))


@pytest.mark.slow
def test_batch_loss_is_every_steps_loss_whatever_the_group_size(idx_dir, tmp_path):
    """Steps grouped 4 to a graph call write the same step numbers and losses as single steps, and an epoch's
    step losses average to its epoch loss (no penalty, no smoothing: the objective is the reported loss)."""
    written = {}
    for group in (1, 4):
        run_dir = run(config(idx_dir, tmp_path / str(group), "output.tensorboard.loss_every_steps=1",
                             f"training.steps_per_execution={group}")).run_dir
        written[group] = scalars(events(run_dir, "train")["batch_loss"])
    assert written[1] == written[4]
    steps = SUBSET // BATCH
    assert [step for step, _ in written[1]] == list(range(1, 3 * steps + 1))
    per_epoch = np.reshape([v for _, v in written[1]], (3, steps)).mean(axis=1)
    np.testing.assert_allclose(per_epoch, [r["loss"] for r in history(run_dir)], rtol=1e-5)


@pytest.mark.slow
def test_a_resumed_run_reads_back_as_one_uninterrupted_run(idx_dir, tmp_path):
    """Interrupted in epoch 2 and resumed: the board shows each epoch and each step once, with the values of
    the resumed run's history (the steps of the unfinished epoch are not written, as history.csv keeps no
    unfinished epoch: TensorBoard would draw both values of a step written twice)."""
    steps_seen = []

    def stop_in_epoch_two() -> bool:
        return len(steps_seen) == SUBSET // BATCH + 2

    cfg = config(idx_dir, tmp_path, "output.tensorboard.loss_every_steps=1")
    with pytest.raises(Exception, match="stopped during epoch 2"):
        run(cfg, Events(step=lambda p: steps_seen.append(p.step), stop_requested=stop_in_epoch_two))
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert [step for step, _ in scalars(events(run_dir, "train")["batch_loss"])] == list(range(1, SUBSET // BATCH + 1))
    # TensorBoard reads a folder's event files in name order, and a name starts with its writer's creation
    # second: a resumed process starts seconds after the first one did, which this one-process test must wait.
    time.sleep(1.1)
    resume = open_resumable(run_dir)
    run(load_config(run_dir / "config.yaml"), resume=resume)
    train, validation = events(run_dir, "train"), events(run_dir, "validation")
    rows = history(run_dir)
    np.testing.assert_allclose([v for _, v in scalars(train["epoch_loss"])], [r["loss"] for r in rows], rtol=5e-6)
    np.testing.assert_allclose([v for _, v in scalars(validation["epoch_loss"])], [r["val_loss"] for r in rows],
                               rtol=5e-6)
    assert [step for step, _ in scalars(train["batch_loss"])] == list(range(1, 3 * (SUBSET // BATCH) + 1))


def test_tensorboard_off_writes_no_event_files(idx_dir, tmp_path):
    run_dir = run(config(idx_dir, tmp_path, "output.tensorboard.enabled=false", "training.epochs=1")).run_dir
    assert not (run_dir / "tensorboard").exists()


def test_batch_loss_off_keeps_the_epoch_values(idx_dir, tmp_path):
    run_dir = run(config(idx_dir, tmp_path, "output.tensorboard.loss_every_steps=0", "training.epochs=1")).run_dir
    train = events(run_dir, "train")
    assert "batch_loss" not in train
    assert len(train["epoch_loss"]) == 1


@pytest.mark.slow
def test_a_real_tensorboard_serves_two_runs_side_by_side(idx_dir, tmp_path):
    """`make tensorboard`'s command on an output folder with two runs: the board lists both, and its scalars
    API answers each run's validation losses."""
    runs = [run(config(idx_dir, tmp_path, "training.epochs=2", f"training.seed={seed}")).run_dir for seed in (1, 2)]
    board = subprocess.Popen([str(Path(sys.executable).parent / "tensorboard"), "--logdir", str(tmp_path / "runs"),
                              "--host", "127.0.0.1", "--port", "0"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    try:
        url = None
        for line in board.stdout:  # "TensorBoard 2.x at http://127.0.0.1:PORT/ (Press CTRL+C to quit)"
            found = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
            if found:
                url = found.group(1)
                break
        assert url, "TensorBoard did not say where it serves"
        deadline, listed = time.monotonic() + 60, []
        while time.monotonic() < deadline:
            listed = json.load(urllib.request.urlopen(f"{url}/data/runs", timeout=10))
            if len(listed) == 6:
                break
            time.sleep(0.5)
        assert sorted(listed) == sorted(f"{r.name}/tensorboard/{phase}" for r in runs
                                        for phase in ("test", "train", "validation"))
        for run_dir in runs:
            query = urllib.parse.urlencode({"run": f"{run_dir.name}/tensorboard/validation", "tag": "epoch_loss"})
            served = json.load(urllib.request.urlopen(f"{url}/data/plugin/scalars/scalars?{query}", timeout=10))
            assert [step for _, step, _ in served] == [0, 1]
            np.testing.assert_allclose([v for _, _, v in served], [r["val_loss"] for r in history(run_dir)],
                                       rtol=5e-6)
    finally:
        board.terminate()
        board.wait(timeout=30)


def test_events_that_cannot_be_written_stop_with_one_line_and_never_fail_the_run(tmp_path):
    from mnist_pipeline.tensorboard_events import TensorBoardEvents
    from mnist_pipeline.trainer import EpochRecord

    (tmp_path / "tensorboard").write_text("a file where the events folder should be")
    lines = []
    board = TensorBoardEvents(tmp_path, loss_every_steps=1, histograms_every_epochs=0, log=lines.append)
    board.step_losses(1, [0.5, 0.4])
    record = EpochRecord(1, 0.4, 0.9, 0.3, 0.91, 1e-3, 1.0)
    board.epoch(record, model=None)  # the first write fails: one line, no exception
    board.epoch(record, model=None)
    board.test(0.3, 0.9, 1)
    board.close()
    assert len(lines) == 1
    assert lines[0].startswith("warning: TensorBoard events stopped (")
    assert lines[0].endswith("training goes on without them")
    assert board.pending == []
