import json
import time

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
    assert status["status"] == "interrupted"  # in words, for the report
    assert status["error"] == "stopped by Ctrl-C"
    assert not (run_dir / "metrics.json").exists()
    assert not (run_dir / "model.keras").exists()
    assert (run_dir / "history.csv").read_text().count("\n") == 2  # header + epoch 1
    assert (run_dir / "config.yaml").exists()


def test_events_report_data_model_steps_and_epochs(idx_dir, tmp_path):
    logs, steps, epochs = [], [], []
    events = Events(log=logs.append, step=lambda p: steps.append((p.epoch, p.steps, p.running())),
                    epoch=lambda r, n: epochs.append((r.epoch, n, r.loss, r.accuracy)))
    before = time.time()
    result = run(config(idx_dir, tmp_path, "training.precision=float32"), events)
    assert before < result.metrics["first_step_at"] < time.time()
    assert logs[0].startswith("data: mnist, train 200, val 60, test 200, scale; from idx:")
    assert logs[1:3] == ["starting TensorFlow", "precision: float32 (as configured)"]
    assert logs[3].startswith("model: mlp, 101,770 parameters")
    assert logs[4] == "XLA: off (auto: 18 steps are too few to repay the compile)"
    assert logs[5] == "testing, then writing the model and the report"
    assert result.metrics["jit_compile"] is False
    assert "too few" in result.metrics["jit_compile_reason"]
    assert {(epoch, n) for epoch, n, _ in steps} == {(1, 6), (2, 6), (3, 6)}
    assert len(steps) == 3 * (200 // 32)
    assert steps[-1][2] == pytest.approx(epochs[-1][2:])  # the running means at the last step are the epoch's
    assert [e[:2] for e in epochs] == [(1, 3), (2, 3), (3, 3)]
    assert result.metrics["test_accuracy"] > 0.3


@pytest.mark.slow
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
    from mnist_pipeline.reports import run_reader

    result = run(config(idx_dir, tmp_path, "training.epochs=2"), test=False)
    metrics = run_reader.read_metrics(result.run_dir)  # the checked reader accepts it
    assert metrics["tested"] is False
    assert not any(key.startswith("test_") for key in metrics)
    assert "confusion_matrix" not in metrics
    assert "per_class" not in metrics
    assert metrics["best_val_accuracy"] > 0.3
    assert metrics["traces"]["test"] == 0  # the test step never ran
    assert json.loads((result.run_dir / "status.json").read_text())["status"] == "completed"
    assert not (result.run_dir / "report_data.npz").exists()
    assert not (result.run_dir / "tensorboard/test").exists()
    assert "not evaluated: a sweep trial" in (result.run_dir / "report.md").read_text()
    compared = CliRunner().invoke(cli, ["compare", str(result.run_dir), "--output-dir", str(tmp_path), "--json"])
    (row,) = json.loads(compared.output)["runs"]
    assert row["status"] == "completed"
    assert row["test_accuracy"] is None
    evaluated = CliRunner().invoke(cli, ["evaluate", str(result.run_dir), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.output)["recorded_accuracy"] is None


TINY_CNN = ["model.name=cnn", "model.params.filters=[4, 8]", "model.params.dense_units=16",
            "model.params.batch_norm=true", "data.augmentation.translation=0.1"]
ZEN3_FLAGS = "flags : fpu sse2 avx2"  # no native bfloat16
ZEN4_FLAGS = "flags : fpu sse2 avx2 avx512f avx512_bf16"


def fake_cpu(monkeypatch, flags: str) -> None:
    """The CPU flags are the one thing faked: everything else runs on this machine's real CPU."""
    from mnist_pipeline import hardware

    monkeypatch.setattr(hardware, "read_cpu", lambda cpuinfo=None, onednn_max_isa=None, onednn=True,
                        real=hardware.read_cpu: real(flags, onednn_max_isa, onednn))


@pytest.mark.parametrize("emulated", [True, False])
def test_bfloat16_where_it_would_be_emulated_is_warned_about_once_and_still_trains(idx_dir, tmp_path, monkeypatch,
                                                                                  emulated):
    fake_cpu(monkeypatch, ZEN3_FLAGS if emulated else ZEN4_FLAGS)
    logs, warnings = [], []
    result = run(config(idx_dir, tmp_path, "training.precision=mixed_bfloat16", "training.epochs=1"),
                 Events(log=logs.append, warn=warnings.append))
    assert len(warnings) == emulated
    if emulated:
        assert warnings[0].startswith("warning: this CPU has no avx512_bf16 or amx_bf16, so mixed_bfloat16 is "
                                      "emulated and runs several times slower than float32 here")
    assert "precision: mixed_bfloat16 (as configured)" in logs
    assert result.metrics["precision"] == "mixed_bfloat16"
    assert result.metrics["test_accuracy"] > 0.3


@pytest.mark.slow
@pytest.mark.parametrize("flags", [ZEN3_FLAGS, ZEN4_FLAGS])
def test_auto_precision_is_chosen_for_the_cpu_said_in_the_header_and_recorded(idx_dir, tmp_path, monkeypatch, flags):
    fake_cpu(monkeypatch, flags)
    logs, warnings = [], []
    result = run(config(idx_dir, tmp_path, "training.epochs=1", *TINY_CNN),
                 Events(log=logs.append, warn=warnings.append))
    native = "avx512_bf16" in flags
    policy = "mixed_bfloat16" if native else "float32"
    reason = "this CPU has avx512_bf16" if native else "this CPU has no avx512_bf16 or amx_bf16"
    assert f"precision: {policy} (auto: {reason})" in logs
    assert not warnings
    assert result.metrics["precision"] == policy
    assert result.metrics["precision_choice"]["requested"] == "auto"
    assert result.metrics["cpu"].endswith("cores; avx2, avx512f, avx512_bf16)" if native else "cores; avx2)")
    assert "precision: auto" in (result.run_dir / "config.yaml").read_text()  # the next machine chooses anew


@pytest.mark.slow
@pytest.mark.parametrize(("first", "then"), [(ZEN4_FLAGS, ZEN3_FLAGS), (ZEN3_FLAGS, ZEN4_FLAGS)],
                         ids=["bfloat16-resumed-on-avx2", "float32-resumed-on-avx512-bf16"])
def test_a_run_resumed_on_a_cpu_that_would_choose_otherwise_keeps_its_precision_bit_for_bit(
        idx_dir, tmp_path, monkeypatch, first, then):
    from mnist_pipeline.errors import Interrupted
    from mnist_pipeline.resume import open_resumable

    fake_cpu(monkeypatch, first)
    whole = run(config(idx_dir, tmp_path / "whole", *TINY_CNN))
    epochs_seen = []
    with pytest.raises(Interrupted):
        run(config(idx_dir, tmp_path / "cut", *TINY_CNN), Events(epoch=lambda r, n: epochs_seen.append(r.epoch),
                                                                  stop_requested=lambda: bool(epochs_seen)))
    (cut_dir,) = (tmp_path / "cut/runs").iterdir()
    fake_cpu(monkeypatch, then)  # another machine
    logs = []
    resumed = run(load_config(cut_dir / "config.yaml"), Events(log=logs.append), resume=open_resumable(cut_dir))
    kept = whole.metrics["precision"]
    assert kept == ("mixed_bfloat16" if "avx512_bf16" in first else "float32")
    assert f"precision: {kept} (kept from the checkpoint this run goes on from)" in logs
    assert resumed.metrics["precision"] == kept
    assert resumed.metrics["resumed"] is True
    assert resumed.metrics["weights_sha256"] == whole.metrics["weights_sha256"]
    assert resumed.metrics["test_loss"] == whole.metrics["test_loss"]


def test_a_onednn_cap_below_bfloat16_makes_auto_float32_and_refuses_explicit_bfloat16(idx_dir, tmp_path,
                                                                                      monkeypatch):
    """ONEDNN_MAX_CPU_ISA=AVX2 makes oneDNN abort bfloat16 convolutions (seen on a Zen 4 class CPU): `auto`
    picks float32 whatever the flags say, and an explicit mixed_bfloat16 is one config error, before any folder."""
    from mnist_pipeline.errors import ConfigError

    fake_cpu(monkeypatch, ZEN4_FLAGS)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    logs = []
    result = run(config(idx_dir, tmp_path / "auto", "training.epochs=1", *TINY_CNN), Events(log=logs.append))
    assert result.metrics["precision"] == "float32"
    assert "precision: float32 (auto: ONEDNN_MAX_CPU_ISA=AVX2 keeps oneDNN's bfloat16 kernels off)" in logs
    with pytest.raises(ConfigError, match=r"mixed_bfloat16 cannot train with ONEDNN_MAX_CPU_ISA=AVX2: oneDNN"):
        run(config(idx_dir, tmp_path / "forced", "training.precision=mixed_bfloat16", *TINY_CNN))
    assert not (tmp_path / "forced").exists()


def test_a_bfloat16_run_resumed_under_a_onednn_cap_is_refused_with_the_one_fix_that_works(idx_dir, tmp_path,
                                                                                         monkeypatch):
    from mnist_pipeline.errors import ConfigError, Interrupted
    from mnist_pipeline.resume import open_resumable

    fake_cpu(monkeypatch, ZEN4_FLAGS)
    epochs_seen = []
    with pytest.raises(Interrupted):
        run(config(idx_dir, tmp_path, *TINY_CNN), Events(epoch=lambda r, n: epochs_seen.append(r.epoch),
                                                         stop_requested=lambda: bool(epochs_seen)))
    (cut_dir,) = (tmp_path / "runs").iterdir()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    with pytest.raises(ConfigError, match=r"unset ONEDNN_MAX_CPU_ISA to resume this run \(a resumed run keeps"):
        run(load_config(cut_dir / "config.yaml"), resume=open_resumable(cut_dir))
