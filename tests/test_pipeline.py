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
    events = Events(log=logs.append, step=lambda p: steps.append((p.epoch, p.steps, p.running())),
                    epoch=lambda r, n: epochs.append((r.epoch, n, r.loss, r.accuracy)))
    result = run(config(idx_dir, tmp_path), events)
    assert logs[0].startswith("data: mnist, train 200, val 60, test 200, scale; from idx:")
    assert logs[1].startswith("model: mlp, 101,770 parameters")
    assert {(epoch, n) for epoch, n, _ in steps} == {(1, 6), (2, 6), (3, 6)} and len(steps) == 3 * (200 // 32)
    assert steps[-1][2] == pytest.approx(epochs[-1][2:])  # the running means at the last step are the epoch's
    assert [e[:2] for e in epochs] == [(1, 3), (2, 3), (3, 3)]
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


def test_a_run_without_test_never_touches_the_test_split_and_is_complete(idx_dir, tmp_path):
    """A sweep's trial: chosen on validation only, so its test split is never evaluated, yet the folder is a
    completed run that reports, compares and evaluates (the test numbers come only when asked for)."""
    from click.testing import CliRunner

    from mnist_pipeline.cli import cli
    from mnist_pipeline.reports import run_files

    result = run(config(idx_dir, tmp_path, "training.epochs=2"), test=False)
    metrics = run_files.read_metrics(result.run_dir)  # the checked reader accepts it
    assert metrics["tested"] is False and not any(key.startswith("test_") for key in metrics)
    assert "confusion_matrix" not in metrics and "per_class" not in metrics
    assert metrics["best_val_accuracy"] > 0.3 and metrics["traces"]["test"] == 0  # the test step never ran
    assert json.loads((result.run_dir / "status.json").read_text())["status"] == "completed"
    assert not (result.run_dir / "report_data.npz").exists() and not (result.run_dir / "tensorboard/test").exists()
    assert "not evaluated: a sweep trial" in (result.run_dir / "report.md").read_text()
    compared = CliRunner().invoke(cli, ["compare", str(result.run_dir), "--output-dir", str(tmp_path), "--json"])
    (row,) = json.loads(compared.output)["runs"]
    assert row["status"] == "completed" and row["test_accuracy"] is None
    evaluated = CliRunner().invoke(cli, ["evaluate", str(result.run_dir), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.output)["recorded_accuracy"] is None


@pytest.mark.parametrize("emulated", [True, False])
def test_bfloat16_where_it_would_be_emulated_is_warned_about_once_and_still_trains(idx_dir, tmp_path, monkeypatch,
                                                                                  emulated):
    from mnist_pipeline import runtime

    # This machine has AVX-512 BF16: the CPU flags are the one thing faked here.
    flags = "flags : fpu sse2 avx2 avx512f" + ("" if emulated else " avx512_bf16")
    monkeypatch.setattr(runtime, "bfloat16_is_emulated",
                        lambda device, cpuinfo=None, real=runtime.bfloat16_is_emulated: real(device, flags))
    logs, warnings = [], []
    result = run(config(idx_dir, tmp_path, "training.precision=mixed_bfloat16", "training.epochs=1"),
                 Events(log=logs.append, warn=warnings.append))
    expected = ["warning: this CPU has no native bfloat16 arithmetic, so training.precision = mixed_bfloat16 runs "
                "slower than float32 here; set training.precision: float32"]
    assert warnings == (expected if emulated else [])
    assert result.metrics["precision"] == "mixed_bfloat16" and result.metrics["test_accuracy"] > 0.3
