"""The per-run report, parsed back: its numbers must be the run's numbers."""

import base64
import csv
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from mnist_pipeline.cli import cli
from mnist_pipeline.reports.metrics import confusion_matrix, most_confident_mistakes, per_class_table

FIGURES = ["curves.png", "confusion_matrix.png", "misclassified.png", "saliency.png", "reliability.png", "samples.png",
           "weights.png"]


def markdown_table(text: str, heading: str) -> list[list[str]]:
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


@pytest.mark.parametrize("name", ["mlp", "smoke"])
def test_report_holds_the_runs_numbers(trained_runs, name):
    run_dir = trained_runs[name]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    md = (run_dir / "report.md").read_text()

    summary = dict(markdown_table(md, "Result"))
    assert summary["test accuracy"] == f"{metrics['test_accuracy']:.4f}"
    assert summary["test loss"] == f"{metrics['test_loss']:.4f}"
    assert summary["best validation accuracy"] == f"{metrics['best_val_accuracy']:.4f}"
    calibration = metrics["calibration"]
    assert summary["unsure below"].startswith(f"{min(calibration['unsure_below'], 1.0):.3f} confidence after "
                                              f"the temperature: ")  # the level predict flags by default
    assert summary["unsure below"].endswith(f"({min(metrics['unsure_below'], 1.0):.3f} with --no-temperature)")
    assert summary["calibration error (ECE)"] == (f"{calibration['test_before']['ece']:.2%}, "
                                                  f"{calibration['test_after']['ece']:.2%} after temperature "
                                                  f"{calibration['temperature']:.2f}")
    assert summary["status"] == "completed"
    # What a person looks at first comes first; the details after.
    headings = re.findall(r"^## (.+)$", md, flags=re.MULTILINE)
    why = ["Why it erred"] if metrics["test_accuracy"] < 1 else []  # saliency maps of mistakes, where it made any
    assert headings[:7 + len(why)] == ["Result", "Learning curves", "Confusion matrix", "Most confident mistakes",
                                       *why, "Per-class test metrics", "Calibration", "Reliability diagram"]
    scores = {row[0]: row[1:] for row in markdown_table(md, "Calibration")}
    assert scores["accuracy"] == [f"{metrics['test_accuracy']:.4f}"] * 2  # a temperature changes no answer
    assert scores["NLL"] == [f"{calibration['test_before']['nll']:.4f}", f"{calibration['test_after']['nll']:.4f}"]
    assert calibration["val_nll_after"] <= calibration["val_nll_before"]  # what the temperature was fitted for
    assert headings.index("Configuration") > headings.index("Per-class test metrics")
    config = dict(markdown_table(md, "Configuration"))  # values as YAML writes them
    assert config["data.data_dir"].startswith("/")
    assert config["data.augmentation.horizontal_flip"] == "false"
    assert config["data.subset"] == "null"
    assert "None" not in config.values()
    assert "False" not in config.values()

    with open(run_dir / "history.csv") as f:
        history = list(csv.DictReader(f))
    table = markdown_table(md, "Training history")
    assert len(table) == len(history) == metrics["epochs"]
    for row, csv_row in zip(table, history, strict=True):
        assert float(row[3]) == pytest.approx(float(csv_row["val_loss"]), abs=5e-5)
        assert row[0].rstrip(" *") == csv_row["epoch"]
    assert table[metrics["best_epoch"] - 1][0].endswith("*")

    per_class = markdown_table(md, "Per-class test metrics")
    assert [row[0] for row in per_class] == [str(d) for d in range(10)]
    assert sum(int(row[4]) for row in per_class) == metrics["split_sizes"]["test"]
    layers = markdown_table(md, "Model")
    assert sum(int(row[3].replace(",", "")) for row in layers) == metrics["parameters"]
    assert layers[-1][2] == "(batch, 10)"


def test_metrics_json_per_class_and_confusion_agree(trained_runs):
    metrics = json.loads((trained_runs["mlp"] / "metrics.json").read_text())
    confusion = np.array(metrics["confusion_matrix"])
    test_size = metrics["split_sizes"]["test"]
    assert confusion.shape == (10, 10)
    assert confusion.sum() == test_size
    assert sum(row["support"] for row in metrics["per_class"]) == test_size
    assert np.trace(confusion) / test_size == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    for row, counts in zip(metrics["per_class"], confusion, strict=True):
        assert row["support"] == counts.sum()
    assert metrics["test_accuracy"] > 0.8  # printed digits are easy; chance is 0.1


def test_html_is_self_contained_with_every_figure(trained_runs):
    run_dir = trained_runs["mlp"]
    page = (run_dir / "report.html").read_text()
    # Tiles of numbers, then the figures; config, model and history folded away below.
    assert page.index('class="tiles"') < page.index("<h2>Learning curves") < page.index("<h2>Confusion matrix")
    folded = re.findall(r"<details><summary>([^<]+)</summary>", page)
    assert {"Configuration", "Model", "Training history"} <= set(folded)
    assert page.index("<details>") > page.index("<h2>Per-class test metrics")
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == len(FIGURES)
    embedded = {base64.b64decode(data) for data in images}
    assert embedded == {(run_dir / name).read_bytes() for name in FIGURES}
    assert "src=\"http" not in page  # nothing fetched when opened offline
    assert "<link" not in page
    assert f"{json.loads((run_dir / 'metrics.json').read_text())['test_accuracy']:.4f}" in page


def test_report_command_redraws_without_tensorflow(trained_runs, tmp_path):
    copy = shutil.copytree(trained_runs["mlp"], tmp_path / "run")
    for name in [*FIGURES, "report.md", "report.html"]:
        (copy / name).unlink()
    probe = subprocess.run([sys.executable, "-c", "\n".join([
        "import sys",
        "from click.testing import CliRunner",
        "from mnist_pipeline.cli import cli",
        f"r = CliRunner().invoke(cli, ['report', {str(copy)!r}])",
        "print(r.exit_code, 'tensorflow' in sys.modules, r.output.strip().splitlines()[-1])"])],
        capture_output=True, text=True)
    assert probe.stdout.strip() == f"0 False report: {copy / 'report.html'}", probe.stdout + probe.stderr
    assert all((copy / name).stat().st_size > 1000 for name in [*FIGURES, "report.md", "report.html"])


def test_report_of_a_failed_run_shows_what_it_has(trained_runs, tmp_path):
    copy = shutil.copytree(trained_runs["mlp"], tmp_path / "failed")
    for name in ["metrics.json", "report_data.npz", "model.keras", *FIGURES]:
        (copy / name).unlink()
    (copy / "status.json").write_text('{"status": "interrupted", "error": "Interrupted: stopped during epoch 3"}')
    result = CliRunner().invoke(cli, ["report", str(copy)])
    assert result.exit_code == 0, result.output
    md = (copy / "report.md").read_text()
    # Said at the top, with the error and the command that finishes the run.
    notice = md.splitlines()[2]
    # (the "Interrupted: " of folders written before stops were recorded in their own words is not repeated)
    assert notice.startswith("> **Not completed.** This run was **interrupted**: stopped during epoch 3. It can go on")
    checkpoint = int(next((copy / "checkpoints").glob("epoch-*")).name.removeprefix("epoch-"))
    assert f"It can go on from its checkpoint after epoch {checkpoint}: `mnist train --resume {copy}`." in notice
    assert "## Training history" in md
    assert (copy / "curves.png").exists()
    assert not (copy / "confusion_matrix.png").exists()
    page = (copy / "report.html").read_text()
    assert page.index('<div class="notice" role="alert"') < page.index("<h2>")
    assert f"<code>mnist train --resume {copy}</code>" in page
    shutil.rmtree(copy / "checkpoints")  # nothing to resume: the notice says to start again
    assert CliRunner().invoke(cli, ["report", str(copy)]).exit_code == 0
    assert f"start again with `mnist train --config {copy / 'config.yaml'}`" in (copy / "report.md").read_text()


def test_report_of_a_missing_folder(tmp_path):
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "no such run folder" in result.output


def test_confusion_percentages_never_round_a_mistake_away():
    from mnist_pipeline.reports.plots import percent_label

    assert percent_label(100 / 207) == "0.48"
    assert percent_label(100 / 10_000) == "0.01"
    assert percent_label(100 * 201 / 207) == "97"
    assert percent_label(100.0) == "100"
    assert percent_label(5.26) == "5.3"
    assert all(float(percent_label(100 / n)) > 0 for n in range(1, 20_000, 7))


def test_curves_show_the_learning_rate_and_say_why_train_loss_can_be_higher(trained_runs):
    from PIL import Image

    md = (trained_runs["smoke"] / "report.md").read_text()  # smoke.yaml: dropout and augmentation
    caption = md.split("## Learning curves\n\n", 1)[1].splitlines()[0]
    assert "learning rate" in caption
    assert "Train loss can sit above validation loss" in caption
    assert "dropout (dropout_rate 0.1" in caption
    assert "training images are augmented (rotation" in caption
    mlp = (trained_runs["mlp"] / "report.md").read_text().split("## Learning curves\n\n", 1)[1].splitlines()[0]
    assert "dropout" not in mlp  # only what the run trained with
    width, height = Image.open(trained_runs["smoke"] / "curves.png").size
    assert width / height > 3  # three panels: loss, accuracy, learning rate


def test_curves_caption_says_which_weights_validation_used():
    from mnist_pipeline.reports.document import _curves_caption

    assert "validation uses the epoch's final weights" in _curves_caption({"training": {"ema": 0.0}})
    averaged = _curves_caption({"training": {"ema": 0.999}})
    assert "validation uses a moving average of the weights" in averaged
    assert "final weights" not in averaged


def test_classification_numbers():
    labels = np.array([0, 0, 1, 1, 2, 2])
    predicted = np.array([0, 1, 1, 1, 0, 2])
    confusion = confusion_matrix(labels, predicted, 3)
    np.testing.assert_array_equal(confusion, [[1, 1, 0], [0, 2, 0], [1, 0, 1]])
    rows = per_class_table(confusion, ["a", "b", "c"])
    assert rows[1] == {"class": "b", "precision": pytest.approx(2 / 3), "recall": 1.0,
                       "f1": pytest.approx(0.8), "support": 2}
    assert per_class_table(np.zeros((2, 2), int), ["x", "y"])[0]["precision"] == 0.0  # no NaN
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.7, 0.3]])
    np.testing.assert_array_equal(most_confident_mistakes(np.array([1, 1, 0, 0]), probabilities, 5), [0, 2])


def drawn_figure(monkeypatch, draw):
    """The matplotlib figure a plot function saves, kept open to look at its parts."""
    from mnist_pipeline.reports import plots

    kept = []
    monkeypatch.setattr(plots, "save_figure", lambda plt, fig, path: kept.append(fig))
    draw()
    return kept[0]


def test_curves_figure_has_loss_accuracy_and_learning_rate_panels(monkeypatch, tmp_path):
    from mnist_pipeline.reports.plots import plot_curves

    history = [{"epoch": e, "loss": 1 / e, "accuracy": 1 - 1 / (e + 1), "val_loss": 0.8 / e,
                "val_accuracy": 1 - 0.8 / (e + 1), "learning_rate": 1e-3 * 0.5 ** e, "seconds": 1.0}
               for e in range(1, 9)]
    fig = drawn_figure(monkeypatch, lambda: plot_curves(history, 6, tmp_path / "c.png", "run"))
    loss, accuracy, rate = fig.axes
    assert [ax.get_title() for ax in fig.axes] == ["Loss", "Accuracy", "Learning rate"]
    assert list(rate.lines[0].get_ydata()) == [row["learning_rate"] for row in history]
    assert rate.get_yscale() == "log"  # a 128x decay
    assert all(any(line.get_label() == "kept epoch (6)" for line in ax.lines) for ax in fig.axes)


def test_comparison_figure_has_one_shared_legend_and_distinct_lines(monkeypatch, tmp_path):
    from mnist_pipeline.reports.plots import plot_overlaid_curves

    history = [{"epoch": e, "val_loss": 1 / e, "val_accuracy": 1 - 1 / (e + 1)} for e in (1, 2, 3)]
    curves = {f"mlp learning_rate={i}": history for i in range(14)}
    fig = drawn_figure(monkeypatch, lambda: plot_overlaid_curves(curves, tmp_path / "c.png", "14 runs"))
    assert len(fig.legends) == 1  # one legend for both
    assert all(ax.get_legend() is None for ax in fig.axes)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == list(curves)
    styles = {(line.get_color(), line.get_linestyle(), line.get_marker()) for line in fig.axes[0].lines}
    assert len(styles) == 14  # colours repeat after 10; their dashes and markers do not


def test_image_panels_are_one_mosaic_with_each_image_where_its_title_is(tmp_path):
    from PIL import Image

    from mnist_pipeline.reports import plots

    images = np.zeros((7, 28, 28), np.float32)
    images[3] = 1.0  # one solid panel among blank ones: ink only where panel 3 is drawn
    plots.plot_image_grid(images, [f"p{i}" for i in range(7)], tmp_path / "grid.png", "grid", columns=4)
    pixels = np.asarray(Image.open(tmp_path / "grid.png").convert("L"), np.float32)
    dark = pixels < 40
    rows, cols = pixels.shape
    solid_cols = np.flatnonzero(dark.sum(axis=0) > 0.2 * rows)  # runs of ink taller than any title's text
    solid_rows = np.flatnonzero(dark.sum(axis=1) > 0.1 * cols)
    assert solid_cols.size > 0.15 * cols  # one of four columns, filled
    assert solid_cols.min() > 0.7 * cols  # the fourth of four columns...
    assert solid_rows.max() < 0.6 * rows  # ...in the first of two rows

    kernel = np.random.default_rng(0).normal(size=(784, 10)).astype(np.float32)
    titles = plots.plot_weights(kernel, tmp_path / "weights.png", "templates", titles=list("abcdefghij"))
    assert titles == list("abcdefghij")
    assert plots.plot_weights(kernel, tmp_path / "units.png", "units")[-1] == "unit 9"
    plots.plot_image_grid(np.zeros((0, 28, 28)), [], tmp_path / "none.png", "nothing", columns=5)
    empty = np.asarray(Image.open(tmp_path / "none.png").convert("L")) < 40
    assert empty.any()  # the figure's title and the word "none"...
    assert empty.mean() < 0.01  # ...and no panel
