"""`mnist compare` and `mnist diagnose gradients`."""

import json
import shlex
import shutil
from pathlib import Path

from click.testing import CliRunner

from mnist_pipeline.cli import cli

ROOT = Path(__file__).parent.parent


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_compare_ranks_runs_and_lists_a_failed_one(trained_runs, tmp_path):
    failed = shutil.copytree(trained_runs["mlp"], tmp_path / "runs" / "20990101T000000Z-broken")
    for name in ("metrics.json", "model.keras"):
        (failed / name).unlink()
    (failed / "status.json").write_text('{"status": "failed", "error": "FloatingPointError: nan"}')
    result = invoke("compare", trained_runs["smoke"], failed, trained_runs["mlp"], "--output-dir", tmp_path)
    assert result.exit_code == 0, result.output
    accuracy = {name: json.loads((trained_runs[name] / "metrics.json").read_text())["test_accuracy"]
                for name in ("mlp", "smoke")}
    order = sorted(accuracy, key=accuracy.get, reverse=True)
    rows = result.output.splitlines()[2:5]
    assert [row.split()[0] for row in rows] == [trained_runs[order[0]].name, trained_runs[order[1]].name,
                                                failed.name]
    assert rows[2].split()[1] == "failed" and rows[2].split()[-1] == "-"
    assert f"{accuracy[order[0]]:.4f}" in rows[0]
    assert result.output.splitlines()[-2].startswith(f"best: {trained_runs[order[0]].name}")
    (out_dir,) = (tmp_path / "comparisons").iterdir()
    md = (out_dir / "comparison.md").read_text()
    assert md.index(trained_runs[order[0]].name) < md.index(trained_runs[order[1]].name) < md.index(failed.name)
    assert (out_dir / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    assert result.output.splitlines()[-1] == f"comparison: {out_dir / 'comparison.md'}"


def test_compare_json_has_the_ranked_runs_with_numbers_as_numbers(trained_runs, tmp_path):
    failed = shutil.copytree(trained_runs["mlp"], tmp_path / "runs" / "20990101T000000Z-broken")
    (failed / "metrics.json").unlink()
    (failed / "status.json").write_text('{"status": "failed", "error": "FloatingPointError: nan"}')
    result = invoke("compare", failed, trained_runs["smoke"], trained_runs["mlp"], "--output-dir", tmp_path, "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    recorded = {path.name: json.loads((path / "metrics.json").read_text()) for path in trained_runs.values()}
    completed = sorted(recorded, key=lambda name: -recorded[name]["test_accuracy"])
    assert [r["run"] for r in payload["runs"]] == [*completed, failed.name]
    for row in payload["runs"][:2]:
        metrics = recorded[row["run"]]
        assert row["status"] == "completed" and row["test_accuracy"] == metrics["test_accuracy"]
        assert type(row["parameters"]) is int and row["parameters"] == metrics["parameters"]
        assert row["test_loss"] == metrics["test_loss"] and row["epochs"] == metrics["epochs"]
    assert payload["runs"][2]["status"] == "failed" and payload["runs"][2]["test_accuracy"] is None
    assert payload["best"] == completed[0]
    assert Path(payload["comparison"]).is_file()


def test_compare_all_finds_every_run_and_errors_without_any(trained_runs, tmp_path):
    for path in trained_runs.values():
        shutil.copytree(path, tmp_path / "runs" / path.name)
    (tmp_path / "runs" / "20990101T000000Z-running").mkdir()
    (tmp_path / "runs" / "20990101T000000Z-running" / "status.json").write_text('{"status": "running"}')
    result = invoke("compare", "--all", "--output-dir", tmp_path)
    assert result.exit_code == 0 and "running" in result.output and len(result.output.splitlines()) == 7
    empty = invoke("compare", "--all", "--output-dir", tmp_path / "empty")
    assert empty.exit_code == 2 and "no runs to compare" in empty.output
    missing = invoke("compare", tmp_path / "nope")
    assert missing.exit_code == 2 and "no such run folder" in missing.output


def test_diagnose_gradients_help_example_shows_vanishing_gradients_with_sigmoid(idx_dir, tmp_path):
    """The example in `--help`, as printed, on tiny data: it must show what the help says it shows."""
    text = invoke("diagnose", "gradients", "--help").output
    example = text[text.index("Example: mnist ") + len("Example: mnist "):].split("\n\n")[0]
    args = shlex.split(example.replace("\\\n", " "))
    assert args[:2] == ["diagnose", "gradients"] and "model.params.batch_norm=false" in args
    recipe = " ".join(ROOT.joinpath("Makefile").read_text().split("\ndiagnose:")[1].split("\n\n")[0].split())
    assert " ".join(args) in recipe.replace("\\ ", "")  # the help shows what `make diagnose` runs
    args = [str(ROOT / a) if a.startswith("configs/") else a for a in args]
    result = invoke(*args, "--set", "training.batch_size=32", "--steps", "5", "--data-dir", idx_dir,
                    "--output-dir", tmp_path)
    assert result.exit_code == 0, result.output
    (out_dir,) = (tmp_path / "diagnostics").iterdir()
    report = json.loads((out_dir / "gradients.json").read_text())
    sigmoid = report["configurations"]["activation=sigmoid"]
    relu = report["configurations"]["activation=relu"]
    assert report["steps"] == 5 and len(sigmoid["norms"]) == 5 and len(sigmoid["layers"]) == 7
    # Sigmoid: each layer scales the backward signal by at most 1/4, so the first layer's gradient is far
    # smaller than the last's; ReLU keeps them within an order of magnitude.
    assert sigmoid["mean"][-1] / sigmoid["mean"][0] > 100
    assert 0.1 < relu["mean"][-1] / relu["mean"][0] < 10
    assert (out_dir / "gradients.png").read_bytes()[:4] == b"\x89PNG"
    assert "activation=sigmoid" in result.output and result.output.splitlines()[-1].endswith("gradients.png")


def test_diagnose_bad_compare_option():
    result = invoke("diagnose", "gradients", "--compare", "model.params.activation")
    assert result.exit_code == 2 and "--compare expects KEY=V1,V2" in result.output
