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


def metric(run_dir, key):
    return json.loads((run_dir / "metrics.json").read_text())[key]


def test_compare_ranks_runs_on_validation_and_lists_a_failed_one(trained_runs, tmp_path):
    failed = shutil.copytree(trained_runs["mlp"], tmp_path / "runs" / "20990101T000000Z-broken")
    for name in ("metrics.json", "model.keras"):
        (failed / name).unlink()
    (failed / "status.json").write_text('{"status": "failed", "error": "FloatingPointError: nan"}')
    result = invoke("compare", trained_runs["smoke"], failed, trained_runs["mlp"], "--output-dir", tmp_path)
    assert result.exit_code == 0, result.output
    order = sorted(("mlp", "smoke"), key=lambda n: (-metric(trained_runs[n], "best_val_accuracy"),
                                                    trained_runs[n].name))  # ties by name
    header, _, *rows = result.output.splitlines()[:5]
    assert header.split()[:9] == ["run", "status", "model", "parameters", "epochs", "train", "s", "best", "val"]
    assert [row.split()[0] for row in rows] == [trained_runs[order[0]].name, trained_runs[order[1]].name,
                                                failed.name]
    assert rows[2].split()[1] == "failed" and rows[2].split()[7] == "-"  # no test accuracy
    best = trained_runs[order[0]]
    assert rows[0].split()[6:8] == [f"{metric(best, 'best_val_accuracy'):.4f}", f"{metric(best, 'test_accuracy'):.4f}"]
    assert result.output.splitlines()[-2] == (
        f"best on validation: {best.name} ({metric(best, 'model')}, val {metric(best, 'best_val_accuracy'):.4f}, "
        f"test {metric(best, 'test_accuracy'):.4f})")
    (out_dir,) = (tmp_path / "comparisons").iterdir()
    md = (out_dir / "comparison.md").read_text()
    assert md.index(trained_runs[order[0]].name) < md.index(trained_runs[order[1]].name) < md.index(failed.name)
    assert (out_dir / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    assert result.output.splitlines()[-1] == f"comparison: {out_dir / 'comparison.md'}"


def test_compare_without_arguments_ranks_every_run_by_validation_with_the_differing_keys(trained_runs, tmp_path):
    """Ranked on validation even when test says otherwise; the runs' config differences as columns."""
    mlp = shutil.copytree(trained_runs["mlp"], tmp_path / "runs" / trained_runs["mlp"].name)
    tuned = shutil.copytree(mlp, tmp_path / "runs" / "20990101T000000Z-mlp")
    config = (tuned / "config.yaml").read_text()
    (tuned / "config.yaml").write_text(config.replace("learning_rate: 0.001", "learning_rate: 0.003"))
    for run, val, test in ((tuned, 0.99, 0.5), (mlp, 0.9, 0.95)):  # the tuned run: best on val, worse on test
        metrics = json.loads((run / "metrics.json").read_text())
        metrics.update(best_val_accuracy=val, test_accuracy=test)
        (run / "metrics.json").write_text(json.dumps(metrics))
    result = invoke("compare", "--output-dir", tmp_path)
    assert result.exit_code == 0, result.output
    header, _, first, second = result.output.splitlines()[:4]
    assert header.split()[-1] == "learning_rate"  # the one key in which they differ
    assert first.split()[0] == tuned.name and first.split()[-3:] == ["0.9900", "0.5000", "0.003"]
    assert second.split()[0] == mlp.name and second.split()[-1] == "0.001"
    payload = json.loads(invoke("compare", "--output-dir", tmp_path, "--json").output)
    assert payload["ranked_by"] == "best_val_accuracy" and payload["best"] == tuned.name
    assert payload["differing_keys"] == ["training.learning_rate"]
    assert [r["config"] for r in payload["runs"]] == [{"training.learning_rate": "0.003"},
                                                      {"training.learning_rate": "0.001"}]


def test_comparison_names_runs_by_config_and_difference_and_styles_stay_distinct(trained_runs, tmp_path):
    from mnist_pipeline.reports.compare import labels, summarize_run
    from mnist_pipeline.reports.plots import run_styles

    runs = [shutil.copytree(trained_runs[n], tmp_path / n) for n in ("mlp", "smoke")]
    twin = shutil.copytree(runs[0], tmp_path / "20990101T000000Z-mlp")
    lr3 = shutil.copytree(runs[0], tmp_path / "20990102T000000Z-mlp")
    (lr3 / "config.yaml").write_text((lr3 / "config.yaml").read_text().replace("learning_rate: 0.001",
                                                                                 "learning_rate: 0.003"))
    names = labels([summarize_run(r) for r in (*runs, twin, lr3)])
    assert names[runs[1]] == "smoke" and names[lr3] == "mlp learning_rate=0.003"
    assert names[runs[0]] == f"mlp learning_rate=0.001 ({runs[0].name})"  # a twin: told apart by folder
    assert names[twin] == "mlp learning_rate=0.001 (20990101T000000Z)"
    styles = [tuple(sorted(style.items())) for style in run_styles(40)]
    assert len(set(styles)) == 40  # no two of 40 runs drawn alike (colours alone repeat after 10)


def test_compare_all_finds_every_run_and_errors_without_any(trained_runs, tmp_path):
    for path in trained_runs.values():
        shutil.copytree(path, tmp_path / "runs" / path.name)
    (tmp_path / "runs" / "20990101T000000Z-running").mkdir()
    (tmp_path / "runs" / "20990101T000000Z-running" / "status.json").write_text('{"status": "running"}')
    result = invoke("compare", "--all", "--output-dir", tmp_path)
    assert result.exit_code == 0 and "running" in result.output
    assert len([line for line in result.output.splitlines() if line.startswith("20")]) == 3
    empty = invoke("compare", "--all", "--output-dir", tmp_path / "empty")
    assert empty.exit_code == 2 and "no runs to compare: none under" in empty.output
    default = invoke("compare", "--output-dir", tmp_path)  # --all is the default
    assert default.exit_code == 0 and default.output.splitlines()[:-1] == result.output.splitlines()[:-1]
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
