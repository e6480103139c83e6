"""`mnist compare` and `mnist diagnose gradients`."""

import json
import math
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import ROOT
from mnist_pipeline.cli import cli


def invoke(*args, columns=200):
    """`mnist ARGS` in a terminal `columns` wide (wide by default: the tests that read cells by position see
    every column)."""
    return CliRunner().invoke(cli, [str(a) for a in args], env={"COLUMNS": str(columns)})


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
    assert rows[2].split()[1] == "failed"
    assert rows[2].split()[7] == "-"  # no test accuracy
    best = trained_runs[order[0]]
    assert rows[0].split()[6:8] == [f"{metric(best, 'best_val_accuracy'):.4f}", f"{metric(best, 'test_accuracy'):.4f}"]
    assert result.output.splitlines()[-3] == (
        f"best on validation: {best.name} ({metric(best, 'model')}, val {metric(best, 'best_val_accuracy'):.4f}, "
        f"test {metric(best, 'test_accuracy'):.4f})")
    (out_dir,) = (tmp_path / "comparisons").iterdir()
    md = (out_dir / "comparison.md").read_text()
    assert md.index(trained_runs[order[0]].name) < md.index(trained_runs[order[1]].name) < md.index(failed.name)
    assert (out_dir / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    assert result.output.splitlines()[-2:] == [f"wrote {out_dir / 'comparison.md'}",
                                               f"wrote {out_dir / 'comparison.png'}"]


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
    assert first.split()[0] == tuned.name
    assert first.split()[-3:] == ["0.9900", "0.5000", "0.003"]
    assert second.split()[0] == mlp.name
    assert second.split()[-1] == "0.001"
    payload = json.loads(invoke("compare", "--output-dir", tmp_path, "--json").output)
    assert payload["ranked_by"] == "best_val_accuracy"
    assert payload["best"] == tuned.name
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
    assert names[runs[1]] == "smoke"
    assert names[lr3] == "mlp learning_rate=0.003"
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
    assert result.exit_code == 0
    assert "running" in result.output
    assert len([line for line in result.output.splitlines() if line.startswith("20")]) == 3
    empty = invoke("compare", "--all", "--output-dir", tmp_path / "empty")
    assert empty.exit_code == 2
    assert "no runs to compare: none under" in empty.output
    default = invoke("compare", "--output-dir", tmp_path)  # --all is the default
    assert default.exit_code == 0
    assert default.output.splitlines()[:-2] == result.output.splitlines()[:-2]
    assert len(list((tmp_path / "comparisons").iterdir())) == 2  # --all --output-dir: written there
    missing = invoke("compare", tmp_path / "nope")
    assert missing.exit_code == 2
    assert "nope: no such run folder; pass run folders" in missing.output
    (tmp_path / "file").write_text("")
    a_file = invoke("compare", tmp_path / "file")
    assert a_file.exit_code == 2
    assert "file: is a file, not a run folder" in a_file.output
    both = invoke("compare", "--all", tmp_path / "runs" / "20990101T000000Z-running")
    assert both.exit_code == 2
    assert "error: give RUN_DIR... or --all, not both" in both.output


def written(result) -> list[Path]:
    return [Path(line.removeprefix("wrote ")) for line in result.output.splitlines() if line.startswith("wrote ")]


def test_compare_writes_beside_the_runs_wherever_it_is_run_from(trained_runs, tmp_path, monkeypatch):
    """Issue 29: `mnist compare /data/exp/runs/a /data/exp/runs/b` from $HOME wrote ./outputs/comparisons/."""
    exp = tmp_path / "data" / "exp"
    runs = [shutil.copytree(path, exp / "runs" / path.name) for path in trained_runs.values()]
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.chdir(home)
    result = invoke("compare", *runs)
    assert result.exit_code == 0, result.output
    (out_dir,) = (exp / "comparisons").iterdir()  # <output dir>/runs/ -> <output dir>/comparisons/
    assert written(result) == [out_dir / "comparison.md", out_dir / "comparison.png"]
    assert all(file.is_file() for file in written(result))
    assert list(home.iterdir()) == []
    monkeypatch.chdir(exp)  # relative paths: the same place, printed in full
    relative = invoke("compare", *(Path("runs") / run.name for run in runs))
    assert written(relative)[0].parent.parent == exp / "comparisons"
    assert written(relative)[0].is_absolute()
    apart = [shutil.copytree(run, tmp_path / "data" / folder / run.name)
             for run, folder in zip(runs, "ab", strict=True)]
    result = invoke("compare", *apart)  # no shared runs/ folder: into the deepest folder holding them all
    assert result.exit_code == 0
    assert written(result)[0].parent.parent == tmp_path / "data" / "comparisons"
    chosen = invoke("compare", *runs, "--output-dir", home / "mine")  # given explicitly, it wins
    assert chosen.exit_code == 0
    assert written(chosen)[0].parent.parent == home / "mine" / "comparisons"
    monkeypatch.chdir(exp.parent)  # no RUN_DIR, no --output-dir: ./outputs/runs, written to ./outputs
    shutil.copytree(exp / "runs", exp.parent / "outputs" / "runs")
    default = invoke("compare")
    assert default.exit_code == 0
    assert written(default)[0].parent.parent == exp.parent / "outputs" / "comparisons"
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the folder would go")
    refused = invoke("compare", *runs, "--output-dir", blocked)
    assert refused.exit_code == 1
    assert refused.output.startswith(f"error: {blocked / 'comparisons'}: cannot write")
    assert "pass --output-dir DIR, a folder you can write to" in refused.output


def test_compare_of_real_runs_does_not_import_tensorflow(trained_runs, tmp_path):
    """The table, the choice of columns, comparison.md and .png come from files alone."""
    runs = [shutil.copytree(path, tmp_path / "runs" / path.name) for path in trained_runs.values()]
    probe = ("import sys\nfrom click.testing import CliRunner\nfrom mnist_pipeline.cli import cli\n"
             f"result = CliRunner().invoke(cli, ['compare', *{[str(r) for r in runs]!r}], env={{'COLUMNS': '80'}})\n"
             "print(result.exit_code, 'tensorflow' in sys.modules, 'keras' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert done.stdout.strip() == "0 False False", done.stdout + done.stderr
    assert len(list((tmp_path / "comparisons").iterdir())) == 1


def variant(source: Path, folder: Path, val: float, **values) -> Path:
    """A copy of a trained run whose config.yaml has `values` (`subset="100"`) and best_val_accuracy `val`."""
    run = shutil.copytree(source, folder)
    config = (run / "config.yaml").read_text()
    for key, value in values.items():
        line = next(line for line in config.splitlines() if line.strip().startswith(f"{key}: "))
        config = config.replace(line, f"{line.split(':')[0]}: {value}")
    (run / "config.yaml").write_text(config)
    metrics = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps({**metrics, "best_val_accuracy": val}))
    return run


def explaining_runs(trained_runs, folder: Path) -> list[Path]:
    """Four runs whose ranking data.subset explains; learning_rate and seed vary too, but explain nothing."""
    mlp = trained_runs["mlp"]
    return [variant(mlp, folder / f"2099010{n + 1}T000000Z-mlp", val, subset=subset, learning_rate=lr, seed=seed)
            for n, (val, subset, lr, seed) in enumerate([(0.95, "null", 0.001, 1), (0.96, "null", 0.003, 2),
                                                         (0.70, 100, 0.001, 3), (0.71, 100, 0.003, 4)])]


def test_keys_are_ranked_by_the_share_of_accuracy_variance_they_explain(trained_runs, tmp_path):
    from mnist_pipeline.reports.compare import differing_keys, explained_share, keys_by_explanation, summarize_run

    summaries = [summarize_run(run) for run in explaining_runs(trained_runs, tmp_path)]
    keys = differing_keys(summaries)
    assert sorted(keys) == ["data.subset", "training.learning_rate", "training.seed"]
    ranked = keys_by_explanation(summaries, keys)
    # subset: groups (0.95, 0.96) and (0.70, 0.71); within 0.0001 over 2 degrees of freedom, total 0.0626 over 3.
    assert ranked[0][0] == "data.subset"
    assert abs(ranked[0][1] - (1 - (0.0001 / 2) / (0.0626 / 3))) < 1e-9
    # learning_rate splits each subset group: worse than chance, so 0; seed has a value per run: nothing to tell.
    assert ranked[1:] == [("training.learning_rate", 0.0), ("training.seed", 0.0)]  # fewer values first
    assert explained_share(summaries[:1], "data.subset") == 0.0  # one run: nothing to explain


def test_compare_table_fits_the_terminal_with_the_key_that_explains_the_ranking(trained_runs, tmp_path):
    """Issue 29: a ~220-column table showed the first five differing keys and hid data.subset."""
    runs = explaining_runs(trained_runs, tmp_path / "runs")
    narrow = invoke("compare", *runs, columns=80)
    assert narrow.exit_code == 0, narrow.output
    lines = narrow.output.splitlines()
    header, rule, *rows = lines[:2 + len(runs)]
    assert all(len(line) <= 80 for line in lines[:3 + len(runs)]), narrow.output
    assert header.split()[:3] == ["run", "status", "model"]
    assert header.split()[8] == "subset"  # first key
    at = header.index("subset")
    assert [row[at:].split()[0] for row in rows] == ["null", "null", "100", "100"]  # ranked: subset explains it
    # Copies of one run: the same parameters, epochs and seconds in every row say nothing, and take no room.
    assert "parameters" not in header
    assert "train s" not in header
    note = lines[2 + len(runs)]
    assert note.startswith("no room for: ")
    assert "learning_rate" in note
    assert "(all in comparison.md)" in note
    wide = invoke("compare", *runs, columns=200)
    header = wide.output.splitlines()[0]
    assert header.split()[-3:] == ["subset", "learning_rate", "seed"]  # best explanation first
    assert not any(line.startswith("no room for") for line in wide.output.splitlines())
    payload = json.loads(invoke("compare", *runs, "--json", columns=80).output)  # JSON and files keep every key
    assert sorted(payload["differing_keys"]) == ["data.subset", "training.learning_rate", "training.seed"]
    assert set(payload["runs"][0]["config"]) == set(payload["differing_keys"])
    md = Path(payload["comparison"]).read_text()
    assert all(f"| {name} " in md for name in ("subset", "learning_rate", "seed", "parameters", "train s"))


@pytest.mark.slow
def test_diagnose_gradients_help_example_shows_vanishing_gradients_with_sigmoid(idx_dir, tmp_path):
    """The example in `--help`, as printed, on tiny data: it must show what the help says it shows."""
    text = invoke("diagnose", "gradients", "--help").output
    example = text[text.index("Example: mnist ") + len("Example: mnist "):].split("\n\n")[0]
    args = shlex.split(example.replace("\\\n", " "))
    assert args[:2] == ["diagnose", "gradients"]
    assert "model.params.batch_norm=false" in args
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
    assert report["steps"] == 5
    assert len(sigmoid["norms"]) == 5
    assert len(sigmoid["layers"]) == 7
    # Sigmoid: each layer scales the backward signal by at most 1/4, so the first layer's gradient is far
    # smaller than the last's; ReLU keeps them within an order of magnitude.
    assert sigmoid["mean"][-1] / sigmoid["mean"][0] > 100
    assert 0.1 < relu["mean"][-1] / relu["mean"][0] < 10
    assert (out_dir / "gradients.png").read_bytes()[:4] == b"\x89PNG"
    assert "activation=sigmoid" in result.output
    assert result.output.splitlines()[-1].endswith("gradients.png")


def test_diagnose_exploding_gradients_is_a_finding_not_a_crash(idx_dir, tmp_path):
    result = invoke("diagnose", "gradients", "--config", ROOT / "configs/mlp.yaml", "--steps", "30",
                    "--data-dir", idx_dir, "--output-dir", tmp_path, "--set", "training.optimizer=sgd",
                    "--set", "training.batch_size=32",
                    "--set", "model.params.activation=linear", "--compare", "training.learning_rate=1e-3,10")
    assert result.exit_code == 0, result.output
    (out_dir,) = (tmp_path / "diagnostics").iterdir()
    report = json.loads((out_dir / "gradients.json").read_text())  # strict JSON: no NaN in it
    exploded, calm = report["configurations"]["learning_rate=10"], report["configurations"]["learning_rate=1e-3"]
    assert calm["diverged_at_step"] is None
    assert len(calm["norms"]) == 30
    assert 2 <= exploded["diverged_at_step"] <= 30
    assert len(exploded["norms"]) == exploded["diverged_at_step"] - 1
    assert all(math.isfinite(v) for v in exploded["mean"])
    assert (f"note: learning_rate=10: the gradients became NaN or infinite at step {exploded['diverged_at_step']}"
            in result.output)
    assert (out_dir / "gradients.png").read_bytes()[:4] == b"\x89PNG"


def test_diagnose_bad_compare_option():
    result = invoke("diagnose", "gradients", "--compare", "model.params.activation")
    assert result.exit_code == 2
    assert "--compare expects KEY=V1,V2" in result.output


def test_runs_on_two_datasets_show_which_first_and_a_models_own_keys_last(trained_runs, tmp_path):
    mlp, cnn = trained_runs["mlp"], trained_runs["smoke"]
    runs = [variant(mlp, tmp_path / "runs/20990101T000000Z-mlp", 0.95, learning_rate=0.003),
            variant(mlp, tmp_path / "runs/20990102T000000Z-mlp", 0.90, learning_rate=0.001, dataset="fashion_mnist"),
            variant(cnn, tmp_path / "runs/20990103T000000Z-cnn", 0.97)]
    header = invoke("compare", *runs, columns=120).output.splitlines()[0].split()
    keys = header[8:]
    assert keys[0] == "dataset"  # accuracies on two datasets do not compare: said before anything else
    own = [k for k in keys if k in ("filters", "kernel_size", "units", "convs_per_block", "padding")]
    assert all(keys.index(k) > keys.index("learning_rate") for k in own if "learning_rate" in keys)


def test_a_key_whose_last_part_says_nothing_alone_keeps_its_section():
    from mnist_pipeline.config.docs import short_key_labels
    from mnist_pipeline.reports.compare import COLUMNS

    keys = ["training.schedule.name", "training.early_stopping.enabled", "training.learning_rate", "training.epochs"]
    assert short_key_labels(keys, COLUMNS) == {"training.schedule.name": "schedule.name",
                                "training.early_stopping.enabled": "early_stopping.enabled",
                                "training.learning_rate": "learning_rate", "training.epochs": "training.epochs"}
