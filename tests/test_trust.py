"""The trust report end to end on real trained runs: calibration applied by predict, evaluate and ensemble;
`mnist evaluate --corruptions`, its report section and `mnist compare --rank-by`."""

import json
import re
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from mnist_pipeline.calibration import apply_temperature, scores
from mnist_pipeline.cli import cli
from mnist_pipeline.corruptions import CORRUPTIONS


def invoke(*args, **env):
    return CliRunner().invoke(cli, [str(a) for a in args], env={"COLUMNS": "200", **env})


def metrics_of(run_dir) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def test_metrics_json_records_a_temperature_fitted_on_validation_that_changes_no_answer(trained_runs):
    for run_dir in trained_runs.values():
        metrics = metrics_of(run_dir)
        calibration = metrics["calibration"]
        assert calibration["fitted_on"] == "validation"
        assert calibration["bins"] == 15
        assert 0.05 <= calibration["temperature"] <= 20
        assert calibration["val_nll_after"] <= calibration["val_nll_before"] + 1e-12
        assert calibration["test_before"]["accuracy"] == calibration["test_after"]["accuracy"]
        assert calibration["test_before"]["accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-6)
        data = np.load(run_dir / "report_data.npz")
        before = scores(data["test_probabilities"], data["test_labels"])
        assert before.ece == pytest.approx(calibration["test_before"]["ece"], abs=1e-6)


def test_evaluate_applies_the_temperature_unless_told_not_to_and_accuracy_stays(trained_runs):
    run_dir = trained_runs["mlp"]
    calibration = metrics_of(run_dir)["calibration"]
    on = json.loads(invoke("evaluate", run_dir, "--json").stdout)
    off = json.loads(invoke("evaluate", run_dir, "--json", "--no-temperature").stdout)
    assert on["accuracy"] == off["accuracy"]
    assert on["calibration"]["accuracy"] == off["calibration"]["accuracy"] == pytest.approx(on["accuracy"], abs=1e-6)
    assert on["matches"] is True  # the recorded loss is still reproduced exactly
    assert on["calibration"]["temperature"] == calibration["temperature"]
    assert off["calibration"]["temperature"] == 1.0
    assert on["calibration"]["nll"] == pytest.approx(calibration["test_after"]["nll"], rel=1e-4)
    assert off["calibration"]["nll"] == pytest.approx(calibration["test_before"]["nll"], rel=1e-4)
    text = invoke("evaluate", run_dir).stdout
    assert f"calibration (after temperature {calibration['temperature']:.3f}): ECE " in text


def test_predict_divides_by_the_temperature_and_keeps_the_answer(trained_runs, tmp_path):
    run_dir = trained_runs["mlp"]
    temperature = metrics_of(run_dir)["calibration"]["temperature"]
    images = np.load(run_dir / "report_data.npz")["mistake_images"][:3]
    np.save(tmp_path / "digits.npy", (images * 255).round().astype(np.uint8))
    on = json.loads(invoke("predict", run_dir, tmp_path / "digits.npy", "--json").stdout)
    off = json.loads(invoke("predict", run_dir, tmp_path / "digits.npy", "--json", "--no-temperature").stdout)
    for calibrated, raw in zip(on, off, strict=True):
        assert calibrated["prediction"] == raw["prediction"]
        expected = apply_temperature(np.array([raw["probabilities"]], np.float32), temperature)[0]
        np.testing.assert_allclose(calibrated["probabilities"], expected, rtol=1e-4, atol=1e-6)


def test_ensemble_averages_calibrated_members(trained_runs):
    runs = [trained_runs["mlp"], trained_runs["smoke"]]
    on = json.loads(invoke("ensemble", *runs, "--json").stdout)
    off = json.loads(invoke("ensemble", *runs, "--json", "--no-temperature").stdout)
    assert on["calibrated"] is True
    assert off["calibrated"] is False
    assert [m["temperature"] for m in on["members"]] == [metrics_of(r)["calibration"]["temperature"] for r in runs]
    assert all(m["temperature"] == 1.0 for m in off["members"])
    for member, run_dir in zip(on["members"], runs, strict=True):
        assert member["test_ece"] == pytest.approx(metrics_of(run_dir)["calibration"]["test_after"]["ece"], abs=1e-5)


@pytest.fixture(scope="module")
def scored_run(trained_runs, tmp_path_factory):
    """A copy of the CNN run scored by `mnist evaluate --corruptions`, with what it printed."""
    run_dir = shutil.copytree(trained_runs["smoke"], tmp_path_factory.mktemp("scored") / trained_runs["smoke"].name)
    result = invoke("evaluate", run_dir, "--corruptions")
    assert result.exit_code == 0, result.output
    return run_dir, result.stdout


def test_evaluate_corruptions_scores_every_corruption_and_writes_robustness_json(scored_run):
    run_dir, printed = scored_run
    robustness = json.loads((run_dir / "robustness.json").read_text())
    assert [row["name"] for row in robustness["corruptions"]] == list(CORRUPTIONS)
    assert len(robustness["corruptions"]) >= 10
    assert robustness["clean"]["accuracy"] == pytest.approx(metrics_of(run_dir)["test_accuracy"], abs=1e-6)
    assert robustness["mean_accuracy"] == pytest.approx(np.mean([r["accuracy"] for r in robustness["corruptions"]]))
    assert all(0 <= r["accuracy"] <= 1 and 0 <= r["ece"] <= 1 for r in robustness["corruptions"])
    assert robustness["mean_accuracy"] < robustness["clean"]["accuracy"]  # canny edges and stripes hurt any model
    assert robustness["seed"] == 0
    for name in ("clean", *CORRUPTIONS):
        assert np.asarray(robustness["example_images"][name]).shape == (28, 28)
    for row in robustness["corruptions"]:
        assert re.search(rf"^  {row['name']} +acc {row['accuracy']:.4f}  ECE ", printed, flags=re.MULTILINE)
    assert f"mean of {len(CORRUPTIONS)}: acc {robustness['mean_accuracy']:.4f}" in printed


def test_the_same_seed_scores_the_same_images_and_another_seed_others(scored_run, tmp_path):
    run_dir, _ = scored_run
    again = shutil.copytree(run_dir, tmp_path / run_dir.name)
    assert invoke("evaluate", again, "--corruptions").exit_code == 0
    first = json.loads((run_dir / "robustness.json").read_text())
    second = json.loads((again / "robustness.json").read_text())
    assert first["corruptions"] == second["corruptions"]
    assert not list(again.glob("robustness-*.json"))  # scored the same way: the same numbers, replaced
    other = json.loads(invoke("evaluate", again, "--corruptions", "--corruption-seed", "7", "--json").stdout)
    assert other["robustness"]["seed"] == 7
    assert json.loads((again / "robustness.json").read_text())["example_images"] != first["example_images"]
    (kept,) = again.glob("robustness-*.json")  # the seed-0 scoring, kept beside it rather than overwritten
    assert json.loads(kept.read_text())["corruptions"] == first["corruptions"]


def test_the_report_shows_robustness_once_scored(scored_run):
    run_dir, _ = scored_run
    assert invoke("report", run_dir).exit_code == 0
    md = (run_dir / "report.md").read_text()
    robustness = json.loads((run_dir / "robustness.json").read_text())
    section = md.split("## Robustness under corruptions\n", 1)[1].split("\n## ", 1)[0]
    rows = [line.strip("|").split("|") for line in section.splitlines() if line.startswith("|")][2:]
    assert [row[0].strip() for row in rows] == ["clean", *CORRUPTIONS, f"mean of {len(CORRUPTIONS)}"]
    assert rows[-1][2].strip() == f"{robustness['mean_accuracy']:.4f}"
    assert (run_dir / "corruptions.png").stat().st_size > 10_000
    assert "![Corruptions](corruptions.png)" in md
    assert f"| corrupted accuracy | {robustness['mean_accuracy']:.4f}: the mean over" in md


def test_a_damaged_robustness_json_is_named_not_a_traceback(scored_run, tmp_path):
    run_dir = shutil.copytree(scored_run[0], tmp_path / "damaged")
    robustness = json.loads((run_dir / "robustness.json").read_text())
    robustness["corruptions"][0]["accuracy"] = "high"
    (run_dir / "robustness.json").write_text(json.dumps(robustness))
    result = invoke("report", run_dir)
    assert result.exit_code == 1, result.output
    assert "robustness.json" in result.output
    assert f"score the run again (`mnist evaluate {run_dir} --corruptions`)" in result.output  # not "train again"
    assert "Traceback" not in result.output
    # compare keeps the run's row, without the corrupted accuracy it cannot read
    row = json.loads(invoke("compare", run_dir, scored_run[0], "--json", "--output-dir", tmp_path).stdout)["runs"]
    damaged = next(r for r in row if r["run"] == "damaged")
    assert damaged["status"] == "completed"
    assert damaged["test_accuracy"] is not None
    assert damaged["corrupted_accuracy"] is None
    # scoring again mends it (scored the same way, its numbers are the deterministic ones again)
    assert invoke("evaluate", run_dir, "--corruptions").exit_code == 0
    assert invoke("report", run_dir).exit_code == 0
    mended = json.loads((run_dir / "robustness.json").read_text())["corruptions"]
    assert mended == json.loads((scored_run[0] / "robustness.json").read_text())["corruptions"]


def test_compare_warns_when_corrupted_accuracies_do_not_compare(scored_run, tmp_path):
    seven = shutil.copytree(scored_run[0], tmp_path / "runs" / "20990101T000000Z-seven")
    robustness = json.loads((seven / "robustness.json").read_text())
    (seven / "robustness.json").write_text(json.dumps({**robustness, "seed": 7}))
    unscored = shutil.copytree(scored_run[0], tmp_path / "runs" / "20990102T000000Z-unscored")
    (unscored / "robustness.json").unlink()
    result = invoke("compare", scored_run[0], seven, unscored, "--rank-by", "corrupted", "--json",
                    "--output-dir", tmp_path)
    assert result.exit_code == 0, result.output
    assert "warning: the runs' corruptions were scored with another corruption seed each (0, 7)" in result.stderr
    assert "warning: 1 of 3 runs were never scored under corruptions, and rank last" in result.stderr
    runs = json.loads(result.stdout)["runs"]
    assert runs[-1]["run"] == unscored.name
    assert {r["corruptions_scored_with"]["seed"] for r in runs[:2]} == {0, 7}


def test_a_run_without_a_temperature_is_named_and_its_answers_are_the_raw_ones(trained_runs, tmp_path):
    old = shutil.copytree(trained_runs["mlp"], tmp_path / "old")
    metrics = metrics_of(old)
    del metrics["calibration"]  # as a run made before calibration was measured
    (old / "metrics.json").write_text(json.dumps(metrics))
    images = np.load(old / "report_data.npz")["mistake_images"][:1]
    np.save(tmp_path / "digit.npy", (images * 255).round().astype(np.uint8))
    result = invoke("predict", old, tmp_path / "digit.npy", "--json")
    assert result.exit_code == 0, result.output
    assert f"note: {old.name} has no fitted temperature" in result.stderr
    (answer,) = json.loads(result.stdout)
    assert answer["temperature"] == 1.0
    raw = json.loads(invoke("predict", trained_runs["mlp"], tmp_path / "digit.npy", "--json",
                            "--no-temperature").stdout)[0]
    assert answer["probabilities"] == raw["probabilities"]
    assert "calibration (no temperature (this run has none" in invoke("evaluate", old).stdout


def test_compare_ranks_by_corrupted_accuracy_and_by_calibration_error(scored_run, trained_runs, tmp_path):
    scored = shutil.copytree(scored_run[0], tmp_path / "runs" / scored_run[0].name)
    better = shutil.copytree(scored, tmp_path / "runs" / "20990101T000000Z-better")
    robustness = json.loads((better / "robustness.json").read_text())
    robustness["mean_accuracy"] = min(1.0, robustness["mean_accuracy"] + 0.05)
    (better / "robustness.json").write_text(json.dumps(robustness))
    metrics = metrics_of(better)
    metrics["best_val_accuracy"] = metrics["best_val_accuracy"] - 0.05  # worse on validation
    metrics["calibration"]["test_after"]["ece"] = metrics["calibration"]["test_after"]["ece"] + 0.02
    (better / "metrics.json").write_text(json.dumps(metrics))
    runs = (scored, better)
    by_val = json.loads(invoke("compare", *runs, "--json", "--output-dir", tmp_path).stdout)
    by_corrupted = json.loads(invoke("compare", *runs, "--json", "--rank-by", "corrupted",
                                     "--output-dir", tmp_path).stdout)
    by_ece = json.loads(invoke("compare", *runs, "--json", "--rank-by", "ece", "--output-dir", tmp_path).stdout)
    assert [r["run"] for r in by_val["runs"]] == [scored.name, better.name]
    assert [r["run"] for r in by_corrupted["runs"]] == [better.name, scored.name]
    assert [r["run"] for r in by_ece["runs"]] == [scored.name, better.name]  # lowest error first
    assert by_corrupted["ranked_by"] == "corrupted_accuracy"
    assert by_corrupted["runs"][0]["corrupted_accuracy"] == robustness["mean_accuracy"]
    text = invoke("compare", *runs, "--rank-by", "corrupted", "--output-dir", tmp_path).stdout
    header = text.splitlines()[0]
    assert "corrupt acc" in header
    assert "ranked by corrupt acc, a test-split number" in text
