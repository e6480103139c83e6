import json

import pytest

from mnist_pipeline.config import load_config
from mnist_pipeline.pipeline import Events, run


def config(idx_dir, out, *extra):
    return load_config(None, ["training.epochs=3", "training.batch_size=32", "data.subset=200",
                              "training.device=cpu", *extra], {"data.data_dir": str(idx_dir), "output.dir": str(out)})


def test_a_run_stopped_at_once_is_marked_interrupted_and_keeps_its_history(idx_dir, tmp_path):
    def stop_after_first_epoch(record, epochs):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(config(idx_dir, tmp_path), Events(epoch=stop_after_first_epoch))
    (run_dir,) = (tmp_path / "runs").iterdir()
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "interrupted" and status["error"].startswith("KeyboardInterrupt")
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "model.keras").exists()
    assert (run_dir / "history.csv").read_text().count("\n") == 2  # header + epoch 1
    assert (run_dir / "config.yaml").exists()


def test_events_report_data_model_steps_and_epochs(idx_dir, tmp_path):
    logs, steps, epochs = [], [], []
    result = run(config(idx_dir, tmp_path), Events(log=logs.append, step=lambda s, n: steps.append(n),
                                                   epoch=lambda r, n: epochs.append((r.epoch, n))))
    assert logs[0].startswith("data: mnist from idx:") and "train 200, val 60, test 200" in logs[0]
    assert logs[1].startswith("model: mlp, 101,770 parameters")
    assert set(steps) == {200 // 32} and len(steps) == 3 * (200 // 32)
    assert epochs == [(1, 3), (2, 3), (3, 3)]
    assert result.metrics["test_accuracy"] > 0.3


@pytest.mark.parametrize("extra", [
    [],  # plain batches made in the step, single steps
    ["data.augmentation.translation=0.1", "training.steps_per_execution=4"],  # tf.data, groups
    ["data.augmentation.translation=0.1", "training.steps_per_execution=4", "training.jit_compile=true"],
    # 6 steps an epoch: groups of 4 and 2, all in one XLA trace
])
def test_every_compiled_function_is_traced_once_per_run(idx_dir, tmp_path, extra):
    traces = run(config(idx_dir, tmp_path, *extra)).metrics["traces"]
    assert traces == {"train_group": 1, "validate": 1, "test": 1}
