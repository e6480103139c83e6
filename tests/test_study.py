"""configs/study/ and `make study`: every lesson trains through the CLI on tiny generated data, and each shows
what its comments say it shows."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import ROOT, make_digits, run_mnist

pytestmark = pytest.mark.slow  # every lesson trained by `make study`, and two 6-epoch trainings

STUDY = ROOT / "configs" / "study"
CONFIGS = sorted(STUDY.rglob("*.yaml"))


@pytest.fixture(scope="module")
def study(idx_dir, tmp_path_factory):
    """`make study` on 540 generated training images, 2 epochs a run: (make's output, {config: run folder})."""
    out = tmp_path_factory.mktemp("study")
    result = subprocess.run(
        ["make", "--no-print-directory", "study", f"DATA_DIR={idx_dir}", f"OUTPUT_DIR={out}", "EPOCHS=2",
         "ARGS=--set data.subset=300 --quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=900, env={**os.environ, "MAKEFLAGS": ""})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    runs = [Path(line) for line in (out / "study-runs.txt").read_text().split()]
    by_config = {}
    for run in runs:
        config = yaml.safe_load((run / "config.yaml").read_text())
        by_config.setdefault(config["output"]["name"], []).append((run, config))
    return result.stdout, by_config


def test_every_study_config_is_trained_by_make_study_and_completes(study):
    output, by_config = study
    names = {path.stem for path in CONFIGS}
    assert names - {"ensemble"} <= set(by_config)  # every lesson's config, by its run name
    assert {f"ensemble-seed{n}" for n in (1, 2, 3)} <= set(by_config)
    for name, runs in by_config.items():
        for run, config in runs:
            metrics = json.loads((run / "metrics.json").read_text())
            assert json.loads((run / "status.json").read_text())["status"] == "completed", name
            assert config["training"]["epochs"] == 2
            assert config["data"]["subset"] == 300
            assert 0.0 <= metrics["test_accuracy"] <= 1.0
            assert (run / "curves.png").stat().st_size > 0
    # Each lesson's own result is printed: the comparisons' tables, the ensemble's line, the gradients' table.
    assert output.count("comparison.md") >= 5
    assert "ensemble (mean softmax)" in output
    assert "last / first" in output


def test_the_augmentation_lesson_scores_both_cnns_under_corruptions_and_ranks_them_so(study):
    output, by_config = study
    scored = {}
    for name in ("plain", "augmented"):
        ((run, config),) = by_config[name]
        assert config["output"]["corruptions"] is True
        robustness = json.loads((run / "robustness.json").read_text())
        assert len(robustness["corruptions"]) >= 10
        scored[run.name] = robustness["mean_accuracy"]
        assert "## Robustness under corruptions" in (run / "report.md").read_text()
    augmented_config = by_config["augmented"][0][1]["data"]["augmentation"]
    assert augmented_config["rotation"] > 0
    assert by_config["plain"][0][1]["data"]["augmentation"]["rotation"] == 0
    assert "ranked by corrupt acc" in output
    table = output.split("ranked by corrupt acc")[0].rsplit("run ", 1)[1]  # the lesson's compare table
    assert all(name in table for name in scored)
    if len(set(scored.values())) == 2:  # on tiny data the two can tie; then either order is right
        assert sorted(scored, key=table.index) == sorted(scored, key=lambda name: -scored[name])


def test_the_lessons_learn_what_they_should_on_tiny_data(study):
    _, by_config = study

    def accuracy(name):
        return json.loads((by_config[name][0][0] / "metrics.json").read_text())["test_accuracy"]

    # Networks that learn in 2 epochs of 300 images, well above chance (0.10)...
    for name in ("perceptron", "quickstart", "softmax_regression", "overfit", "regularized", "l2"):
        assert accuracy(name) > 0.5, name
    # ...and one that must not: all-zero ReLU weights pass nothing on.
    assert accuracy("init_zeros") < 0.2


def test_seven_sigmoid_layers_stay_at_chance_under_plain_sgd_where_relu_learns(idx_dir, tmp_path):
    accuracies = {}
    for name in ("sigmoid", "relu"):  # ~100 plain SGD steps on all 540 training images
        result = run_mnist("train", "--config", STUDY / "vanishing" / f"{name}.yaml", "--data-dir", idx_dir,
                           "--output-dir", tmp_path, "--epochs", "6", "--quiet")
        assert result.returncode == 0, result.stderr
        run = Path(result.stdout.strip().splitlines()[-1].removeprefix("run folder: "))
        accuracies[name] = json.loads((run / "metrics.json").read_text())["test_accuracy"]
    assert accuracies["sigmoid"] < 0.2, accuracies
    assert accuracies["relu"] > 0.5, accuracies


def test_the_linear_models_weights_figure_is_ten_class_templates_on_a_symmetric_scale(study):
    from mnist_pipeline.reports import plots, run_reader

    ((run, config),) = study[1]["softmax_regression"]
    assert config["model"] == {"name": "linear", "params": {"l1": 0.0, "l2": 0.0, "kernel_initializer": "zeros"},
                               "init_from": None}
    data = run_reader.read_report_data(run, 10)
    kernel = data["first_layer_kernel"]
    assert kernel.shape == (784, 10)
    report = (run / "report.md").read_text()
    assert "## Class templates\n" in report  # the linear model's figure
    assert "## First-layer weights" not in report
    titles = plots.plot_weights(kernel, run.parent / "again.png", "templates", titles=[str(d) for d in range(10)])
    assert titles == [str(d) for d in range(10)]  # ten panels, each named by its class
    from PIL import Image

    width, height = Image.open(run / "weights.png").size
    assert width > 1.5 * height  # two rows of five
    # Each template is the class's: it responds more to its own class's mean image than any other template.
    x, y = make_digits(600, seed=1)
    means = np.stack([x[y == c].reshape(-1, 784).mean(0) / 255 for c in range(10)])
    responses = means @ kernel  # (class image, template)
    assert (responses.argmax(axis=1) == np.arange(10)).sum() >= 8


def test_the_vanishing_gradient_lesson_shows_it_from_the_runs_own_numbers(idx_dir, tmp_path):
    result = run_mnist("diagnose", "gradients", "--config", STUDY / "vanishing" / "sigmoid.yaml", "--steps", "5",
                       "--compare", "model.params.activation=sigmoid,relu", "--data-dir", idx_dir,
                       "--output-dir", tmp_path)
    assert result.returncode == 0, result.stderr
    (out_dir,) = (tmp_path / "diagnostics").iterdir()
    report = json.loads((out_dir / "gradients.json").read_text())["configurations"]
    sigmoid, relu = report["activation=sigmoid"], report["activation=relu"]
    assert len(sigmoid["layers"]) == 8  # the lesson's 7 sigmoid layers and the logits
    sigmoid_ratio = sigmoid["mean"][0] / sigmoid["mean"][-1]
    relu_ratio = relu["mean"][0] / relu["mean"][-1]
    # Each sigmoid layer passes back at most 1/4 of the signal: the first layer's gradient is orders of
    # magnitude below the last's. ReLU's stay within an order of magnitude of each other.
    assert sigmoid_ratio < 1e-2, sigmoid_ratio
    assert 0.1 < relu_ratio < 10, relu_ratio
    assert sigmoid_ratio < relu_ratio / 100
