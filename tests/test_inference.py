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
from mnist_pipeline.inference import ensemble, evaluate_run, predict_files


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


def test_evaluate_command(trained_runs):
    result = invoke("evaluate", trained_runs["mlp"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1].endswith("(identical)")
    as_json = invoke("evaluate", trained_runs["mlp"], "--split", "val", "--json")
    assert as_json.exit_code == 0, as_json.output
    parsed = json.loads(as_json.output)  # nothing but the JSON object
    metrics = json.loads((trained_runs["mlp"] / "metrics.json").read_text())
    assert parsed["split"] == "val" and parsed["examples"] == metrics["split_sizes"]["val"]
    assert parsed["accuracy"] == parsed["recorded_accuracy"] == metrics["best_val_accuracy"]  # numbers, exact


def test_ensemble_command_as_json(trained_runs):
    result = invoke("ensemble", trained_runs["mlp"], trained_runs["smoke"], "--json")
    assert result.exit_code == 0, result.output
    parsed = json.loads(result.output)
    assert [m["model"] for m in parsed["members"]] == ["mlp", "cnn"]
    assert all(isinstance(m["test_accuracy"], float) for m in parsed["members"])
    assert 0.1 < parsed["ensemble_accuracy"] <= 1.0 and parsed["examples"] == 200


def test_evaluate_on_other_data(trained_runs, idx_dir):
    result = evaluate_run(trained_runs["mlp"], "test", data_dir=str(idx_dir))
    assert result["data_source"] == f"idx:{idx_dir.resolve()}" and result["accuracy"] < 0.5  # blobs, not digits


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
        assert len(p.top) == 3 and p.top[0][2] >= p.top[1][2] >= p.top[2][2]
        assert sum(q for _, _, q in p.top) <= 1.0 + 1e-6


def test_predict_npy_and_bad_files_through_the_cli(trained_runs, tmp_path):
    images, labels = make_rendered_digits(20, seed=99)
    np.save(tmp_path / "batch.npy", images)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG broken")
    result = invoke("predict", trained_runs["mlp"], tmp_path / "broken.png", tmp_path / "batch.npy",
                    tmp_path / "missing.png", "--json")
    assert result.exit_code == 1
    lines = result.output.splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 2 and "broken.png: not a readable image" in errors[0] and "missing.png" in errors[1]
    payload = json.loads(result.output[result.output.index("["): result.output.rindex("]") + 1])
    assert [p["file"] for p in payload] == [str(tmp_path / "broken.png"),
                                           *(f"{tmp_path / 'batch.npy'}[{i}]" for i in range(20)),
                                           str(tmp_path / "missing.png")]
    predicted = [p["prediction"] for p in payload[1:-1]]
    assert all(type(c) is int and p["name"] == str(c) for c, p in zip(predicted, payload[1:-1], strict=True))
    assert all(type(t["class"]) is int and type(t["probability"]) is float for p in payload[1:-1] for t in p["top"])
    assert np.mean(np.array(predicted) == labels) >= 0.8
    assert "error" in payload[0] and payload[0]["prediction"] is None


def test_ensemble_averages_members(trained_runs):
    result = ensemble([str(trained_runs["mlp"]), str(trained_runs["smoke"])])
    members = {m["model"]: m for m in result["members"]}
    for name, model in (("mlp", "mlp"), ("smoke", "cnn")):
        metrics = json.loads((trained_runs[name] / "metrics.json").read_text())
        assert members[model]["test_accuracy"] == metrics["test_accuracy"]
    assert result["examples"] == 200
    assert result["ensemble_accuracy"] >= min(m["test_accuracy"] for m in result["members"]) - 0.02
    output = invoke("ensemble", trained_runs["mlp"], trained_runs["smoke"]).output
    assert "ensemble (mean softmax)" in output and f"{result['ensemble_accuracy']:.4f}" in output


def test_ensemble_refuses_members_with_other_normalization(trained_runs, tmp_path):
    other = shutil.copytree(trained_runs["smoke"], tmp_path / "other")
    (other / "normalization.json").write_text('{"method": "standardize", "mean": 0.1, "std": 0.3}')
    result = invoke("ensemble", trained_runs["mlp"], other)
    assert result.exit_code == 2
    assert "normalization standardize (mean 0.1000, std 0.3000) differs" in result.output


def test_commands_refuse_runs_that_did_not_finish(trained_runs, tmp_path):
    failed = shutil.copytree(trained_runs["mlp"], tmp_path / "failed")
    (failed / "status.json").write_text('{"status": "failed"}')
    for command in (["evaluate", failed], ["predict", failed, "x.png"], ["ensemble", failed, trained_runs["mlp"]]):
        result = invoke(*command)
        assert result.exit_code == 1 and "the run is failed" in result.output, result.output


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
    assert loaded["same_classes"] and loaded["difference"] < 1e-5, loaded
