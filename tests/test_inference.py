"""evaluate, predict and ensemble on completed runs (trained once per session on printed digits)."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import make_rendered_digits, render_digit
from mnist_pipeline.cli import cli
from mnist_pipeline.inference import predict_files
from mnist_pipeline.reevaluation import ensemble, evaluate_run


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.mark.parametrize("name", ["mlp", "smoke"])
def test_evaluate_reproduces_metrics_json_exactly(trained_runs, name):
    metrics = json.loads((trained_runs[name] / "metrics.json").read_text())
    test = evaluate_run(trained_runs[name], "test")
    assert (test["loss"], test["accuracy"]) == (metrics["test_loss"], metrics["test_accuracy"])
    val = evaluate_run(trained_runs[name], "val")
    assert (val["loss"], val["accuracy"]) == (metrics["best_val_loss"], metrics["best_val_accuracy"])
    assert val["examples"] == metrics["split_sizes"]["val"]


@pytest.mark.slow
def test_a_bfloat16_run_reloads_in_bfloat16_and_reproduces_its_numbers_while_exports_compute_in_float32(
        rendered_dir, tmp_path, monkeypatch):
    import keras

    from mnist_pipeline.config import load_config
    from mnist_pipeline.inference import load_run
    from mnist_pipeline.pipeline import run

    cfg = load_config(None, ["model.name=cnn", "model.params.filters=[8, 16]", "model.params.dense_units=16",
                             "training.precision=mixed_bfloat16", "training.epochs=2", "training.batch_size=32"],
                      {"data.data_dir": str(rendered_dir), "output.dir": str(tmp_path), "training.device": "cpu"})
    run_dir = run(cfg).run_dir
    keras.mixed_precision.set_global_policy("float32")  # a fresh process's policy
    metrics = json.loads((run_dir / "metrics.json").read_text())
    test = evaluate_run(run_dir, "test")
    assert metrics["precision"] == "mixed_bfloat16"
    assert (test["loss"], test["accuracy"]) == (metrics["test_loss"], metrics["test_accuracy"])
    exported = load_run(run_dir, precision="float32").model
    assert all(layer.compute_dtype == "float32" for layer in exported.stack)
    result = invoke("export", run_dir, "--format", "savedmodel")
    assert result.exit_code == 0, result.output
    assert "note: this run trained in mixed_bfloat16 and the export computes in float32" in result.output
    # Under a oneDNN cap that aborts bfloat16 convolutions, the run is used in float32, not called damaged.
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    capped = evaluate_run(run_dir, "test")
    assert abs(capped["accuracy"] - test["accuracy"]) <= 0.01
    assert load_run(run_dir).model.stack[0].compute_dtype == "float32"
    keras.mixed_precision.set_global_policy("float32")


def test_evaluate_tolerates_float32_summation_order_and_says_what_differs():
    from mnist_pipeline.reevaluation import agreement

    base = {"examples": 800, "loss": 0.0806, "accuracy": 0.975, "recorded_loss": 0.0806,
            "recorded_accuracy": 0.975, "data_source": "idx:/d", "recorded_data_source": "idx:/d"}
    float32_order = {**base, "loss": float(np.float32(0.0806) + np.float32(2 ** -27))}  # one ulp-ish off
    assert float32_order["loss"] != base["recorded_loss"]
    assert agreement(float32_order)[0] is True
    one_example = {**base, "accuracy": 0.975 - 1 / 800}
    same, text = agreement(one_example)
    assert same is False
    assert text.startswith("different: 1 example classified differently; other weights")
    other_data = {**base, "loss": 0.09, "data_source": "idx:/elsewhere"}
    same, text = agreement(other_data)
    assert same is False
    assert "loss 0.09 vs 0.0806" in text
    assert "recorded on idx:/d, now idx:/elsewhere" in text
    assert agreement({**base, "recorded_loss": None, "recorded_accuracy": None})[0] is None


def test_evaluate_command(trained_runs):
    result = invoke("evaluate", trained_runs["mlp"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1].endswith("(the same: loss within 1e-05 relative, the same examples right)")
    as_json = invoke("evaluate", trained_runs["mlp"], "--split", "val", "--json")
    assert as_json.exit_code == 0, as_json.output
    parsed = json.loads(as_json.output)  # nothing but the JSON object
    metrics = json.loads((trained_runs["mlp"] / "metrics.json").read_text())
    assert parsed["split"] == "val"
    assert parsed["examples"] == metrics["split_sizes"]["val"]
    assert parsed["accuracy"] == parsed["recorded_accuracy"] == metrics["best_val_accuracy"]  # numbers, exact


def test_ensemble_command_as_json(trained_runs):
    result = invoke("ensemble", trained_runs["mlp"], trained_runs["smoke"], "--json")
    assert result.exit_code == 0, result.output
    parsed = json.loads(result.output)
    assert [m["model"] for m in parsed["members"]] == ["mlp", "cnn"]
    assert all(isinstance(m["test_accuracy"], float) for m in parsed["members"])
    assert 0.1 < parsed["ensemble_accuracy"] <= 1.0
    assert parsed["examples"] == 200


def test_evaluate_on_other_data(trained_runs, idx_dir):
    result = evaluate_run(trained_runs["mlp"], "test", data_dir=str(idx_dir))
    assert result["data_source"] == f"idx:{idx_dir.resolve()}"
    assert result["accuracy"] < 0.5  # blobs, not digits


def test_predict_printed_digit_pictures_of_any_size(trained_runs, tmp_path):
    rng = np.random.default_rng(11)
    files = []
    for digit in range(10):
        ink = render_digit(digit, rng, canvas=160, size=int(rng.integers(70, 110)))
        path = tmp_path / f"{digit}.png"
        Image.fromarray(ink.astype(np.uint8)).convert("RGB").save(path)  # dark on white, colour PNG
        files.append(str(path))
    predictions = predict_files(trained_runs["mlp"], files)
    correct = sum(p.top[0][:2] == (digit, str(digit)) for digit, p in enumerate(predictions))
    assert correct >= 8, [(p.source, p.top[0]) for p in predictions]
    for p in predictions:
        assert len(p.top) == 3
        assert p.top[0][2] >= p.top[1][2] >= p.top[2][2]
        assert sum(q for _, _, q in p.top) <= 1.0 + 1e-6


def test_predict_light_ink_on_grey_and_save_the_image_the_model_saw(trained_runs, tmp_path):
    stroke = (255 - render_digit(3, np.random.default_rng(5), canvas=140, size=100)) / 255.0
    Image.fromarray((128 + 100 * stroke).astype(np.uint8)).save(tmp_path / "grey.png")  # light ink, mid-grey paper
    result = invoke("predict", trained_runs["mlp"], tmp_path / "grey.png", "--save-input", tmp_path / "seen")
    assert result.exit_code == 0, result.output
    seen = tmp_path / "seen" / "grey.png.seen.png"
    assert result.output.startswith(f"{tmp_path / 'grey.png'}: 3  (top 3: 3 ")
    assert f"; seen as {seen})" in result.output
    image = np.asarray(Image.open(seen))
    assert image.shape == (28, 28)
    assert image.dtype == np.uint8
    assert image.max() == 255
    assert image[0].max() == 0
    again = json.loads(invoke("predict", trained_runs["mlp"], seen, "--json").output)
    first = json.loads(invoke("predict", trained_runs["mlp"], tmp_path / "grey.png", "--json").output)
    assert [t["class"] for t in again[0]["top"]] == [t["class"] for t in first[0]["top"]]  # the same input
    assert [t["probability"] for t in again[0]["top"]] == pytest.approx([t["probability"] for t in first[0]["top"]])


def test_predict_npy_and_bad_files_through_the_cli(trained_runs, tmp_path):
    images, labels = make_rendered_digits(20, seed=99)
    np.save(tmp_path / "batch.npy", images)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG broken")
    result = invoke("predict", trained_runs["mlp"], tmp_path / "broken.png", tmp_path / "batch.npy",
                    tmp_path / "missing.png", "--json")
    assert result.exit_code == 1
    lines = result.output.splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 2
    assert "broken.png: not a readable image" in errors[0]
    assert "missing.png" in errors[1]
    payload = json.loads(result.output[result.output.index("["): result.output.rindex("]") + 1])
    assert [p["file"] for p in payload] == [str(tmp_path / "broken.png"),
                                           *(f"{tmp_path / 'batch.npy'}[{i}]" for i in range(20)),
                                           str(tmp_path / "missing.png")]
    predicted = [p["prediction"] for p in payload[1:-1]]
    assert all(type(c) is int and p["name"] == str(c) for c, p in zip(predicted, payload[1:-1], strict=True))
    assert all(type(t["class"]) is int and type(t["probability"]) is float for p in payload[1:-1] for t in p["top"])
    assert np.mean(np.array(predicted) == labels) >= 0.8
    assert "error" in payload[0]
    assert payload[0]["prediction"] is None


def test_ensemble_averages_members(trained_runs):
    result = ensemble([str(trained_runs["mlp"]), str(trained_runs["smoke"])])
    members = {m["model"]: m for m in result["members"]}
    for name, model in (("mlp", "mlp"), ("smoke", "cnn")):
        metrics = json.loads((trained_runs[name] / "metrics.json").read_text())
        assert members[model]["test_accuracy"] == metrics["test_accuracy"]
    assert result["examples"] == 200
    assert result["ensemble_accuracy"] >= min(m["test_accuracy"] for m in result["members"]) - 0.02
    output = invoke("ensemble", trained_runs["mlp"], trained_runs["smoke"]).output
    assert "ensemble (mean softmax)" in output
    assert f"{result['ensemble_accuracy']:.4f}" in output


def test_ensemble_prepares_each_member_its_own_way_and_skips_unfinished_ones(trained_runs, tmp_path):
    """A member trained on standardized inputs scores as it did alone; an interrupted run is skipped, named."""
    standardized = shutil.copytree(trained_runs["mlp"], tmp_path / "runs" / "20990101T000000Z-standardized")
    (standardized / "normalization.json").write_text('{"method": "standardize", "mean": 0.1, "std": 0.3}')
    alone = evaluate_run(standardized, "test")  # what this member scores with its own normalization
    stopped = shutil.copytree(trained_runs["smoke"], tmp_path / "runs" / "20990102T000000Z-stopped")
    (stopped / "status.json").write_text('{"status": "interrupted", "error": "Interrupted: SIGINT"}')
    result = invoke("ensemble", trained_runs["smoke"], standardized, stopped, "--json")
    assert result.exit_code == 0, result.output
    assert result.stderr == f"skipped: {stopped.name}: the run was interrupted, so it has no final model\n"
    payload = json.loads(result.stdout)
    members = {m["run"]: m for m in payload["members"]}
    assert set(members) == {trained_runs["smoke"].name, standardized.name}
    assert members[standardized.name]["test_accuracy"] == alone["accuracy"]
    assert members[standardized.name]["normalization"].startswith("standardize")
    assert payload["skipped"] == [{"run": stopped.name, "reason": "the run was interrupted, so it has no final model"}]
    too_few = invoke("ensemble", trained_runs["smoke"], stopped)
    assert too_few.exit_code == 2
    assert "at least two completed runs, got 1" in too_few.output
    assert f"{stopped.name} skipped: the run was interrupted" in too_few.output


def test_commands_refuse_runs_that_did_not_finish(trained_runs, tmp_path):
    failed = shutil.copytree(trained_runs["mlp"], tmp_path / "failed")
    (failed / "status.json").write_text('{"status": "failed"}')
    for command in (["evaluate", failed], ["predict", failed, "x.png"]):
        result = invoke(*command)
        assert result.exit_code == 1, result.output
        assert "the run failed, so it has no final model" in result.output, result.output
    alone = invoke("ensemble", failed, trained_runs["mlp"])  # skipped, which leaves one member: too few
    assert alone.exit_code == 2
    assert "failed skipped: the run failed" in alone.output


PLAIN_KERAS = """
import json, sys
import numpy as np
import keras
import mnist_pipeline.models  # the one import the README asks for: registers CNN, MLP, DeepMLP
run = sys.argv[1]
model = keras.models.load_model(f"{run}/model.keras")  # safe_mode stays on
recorded = np.load(f"{run}/report_data.npz")
normalization = json.load(open(f"{run}/normalization.json"))
images = (np.load(sys.argv[2]).astype("float32") / 255 - normalization["mean"]) / normalization["std"]
probabilities = keras.ops.convert_to_numpy(keras.ops.softmax(model(images[..., None], training=False)))
loaded = {name for name in sys.modules if name.startswith("mnist_pipeline")}
print(json.dumps({"difference": float(np.abs(probabilities - recorded["test_probabilities"]).max()),
                  "same_classes": bool((probabilities.argmax(1) == recorded["test_probabilities"].argmax(1)).all()),
                  "pipeline_loaded": "mnist_pipeline.pipeline" in loaded or "mnist_pipeline.inference" in loaded}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mlp", "smoke"])
def test_model_keras_loads_in_plain_keras_after_one_import(trained_runs, rendered_dir, tmp_path, name):
    from mnist_pipeline.data.sources import load_raw

    run = trained_runs[name]  # neither uses test-time flips, which are not part of the model
    np.save(tmp_path / "test.npy", load_raw("mnist", str(rendered_dir)).x_test)
    result = subprocess.run([sys.executable, "-c", PLAIN_KERAS, str(run), str(tmp_path / "test.npy")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = json.loads(result.stdout.splitlines()[-1])
    assert not loaded["pipeline_loaded"]  # nothing but the model classes
    assert loaded["same_classes"], loaded
    assert loaded["difference"] < 1e-5, loaded
