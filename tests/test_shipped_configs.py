"""The configs that ship with mnist-pipeline: found by name from any folder, listed, and packaged."""

import fnmatch
import json
import re

from click.testing import CliRunner

from conftest import ROOT
from mnist_pipeline.cli import cli
from mnist_pipeline.config import load_config
from mnist_pipeline.config.shipped import SHIPPED, listing
from mnist_pipeline.config.space import load_space


def show(*args):
    result = CliRunner().invoke(cli, ["config", "show", *args])
    return result.exit_code, result.output


def test_a_shipped_config_is_found_by_name_from_any_folder(tmp_path, monkeypatch):
    expected = show(str(ROOT / "configs/cnn.yaml"))
    monkeypatch.chdir(tmp_path)
    assert show("cnn") == show("cnn.yaml") == show("configs/cnn.yaml") == expected
    assert expected[0] == 0
    assert "name: cnn" in expected[1]
    assert load_config("study/perceptron") == load_config(SHIPPED / "study/perceptron.yaml")
    assert load_config("study/fitting/overfit") == load_config(SHIPPED / "study/fitting/overfit.yaml")
    assert load_space("smoke") == load_space(SHIPPED / "sweeps/smoke.yaml") == load_space("sweeps/smoke")


def test_a_file_of_the_same_name_here_wins_over_the_shipped_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cnn").write_text("training:\n  epochs: 7\n")
    assert load_config("cnn").training.epochs == 7
    (tmp_path / "mlp.yaml").write_text("training:\n  epochs: 8\n")
    assert load_config("mlp").training.epochs == 8 == load_config("mlp.yaml").training.epochs
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "perceptron.yaml").write_text("training:\n  epochs: 9\n")
    assert load_config("study/perceptron").training.epochs == 9


def test_a_mistyped_shipped_name_gets_the_close_ones():
    from mnist_pipeline.config.shipped import closest

    assert closest("cnnn") == ["cnn", "cnn_fashion"][:len(closest("cnnn"))]
    assert "cnn" in closest("cnnn")
    assert closest("perceptron") == ["study/perceptron"]
    assert closest("cnn.yml") == ["cnn"]
    assert closest("mpl")[:1] == ["mlp"]
    assert closest("sweeps/mpl", space=True)[:1] == ["mlp"]


def test_an_unknown_name_lists_the_shipped_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, output = show("nothing-like-it")
    assert code == 2
    assert output.count("\n") == 1
    assert "config file 'nothing-like-it' not found; pass a YAML file, or the name of one that ships" in output
    assert "cnn, cnn_fashion" in output
    assert "`mnist config list`" in output
    code, output = show("perceptron")
    assert code == 2
    assert "config file 'perceptron' not found; did you mean study/perceptron (shipped" in output
    for escape in ("../mnist_pipeline/config/schema", "/etc/passwd.yaml"):
        code, output = show(escape)
        assert code == 2
        assert "not found" in output


def test_every_shipped_config_is_valid_described_and_packaged():
    # (tomllib is Python 3.11+; the package supports 3.10) the one line that lists the package's data files
    line = re.search(r"^mnist_pipeline = (\[.*\])$", (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    patterns = {"mnist_pipeline": json.loads(line)}
    files = sorted(SHIPPED.rglob("*.yaml"))
    assert len(files) >= 20
    for path in files:  # what a wheel carries: pip installs the configs with the code
        relative = path.relative_to(SHIPPED.parent).as_posix()
        assert any(fnmatch.fnmatch(relative, p) and relative.count("/") == p.count("/")
                   for p in patterns["mnist_pipeline"]), relative
    runs, spaces = listing(), listing(space=True)
    assert len(runs) + len(spaces) == len(files)
    assert all(len(summary) >= 40 for _, summary in runs + spaces)  # each says what it is, not "Lesson 6."
    for name, _ in runs:
        load_config(name)
    for name, _ in spaces:
        load_space(name)


def test_config_list_names_every_shipped_config_with_what_it_is():
    result = CliRunner().invoke(cli, ["config", "list"], env={"COLUMNS": "100"})
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[-1] == str(SHIPPED)
    assert all(len(line) <= 100 for line in lines[:-1])  # all but the path fit
    spaces_start = lines.index("sweep spaces (mnist sweep --space NAME):")
    for entries, section in ((listing(), lines[:spaces_start]), (listing(space=True), lines[spaces_start:])):
        for name, summary in entries:
            entry = next(line for line in section if line.split()[:1] == [name])  # each name on a line of its own
            assert summary.split()[0] in entry


def test_config_validate_reports_every_problem_each_with_its_fix(tmp_path):
    bad = tmp_path / "two.yaml"
    bad.write_text("data:\n  augmentation:\n    rotation: 15\n    translaton: 0.1\ntraining:\n  lr: 0.1\n"
                   "model:\n  params:\n    units: -3\n")
    result = CliRunner().invoke(cli, ["config", "validate", str(bad), str(ROOT / "configs/cnn.yaml")])
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 4, result.output
    assert "rotation = 15: must be at most 0.5 (max random rotation, fraction of a full turn" in errors[0]
    assert "for 15 degrees write 0.0417" in errors[0]
    assert "'data.augmentation.translaton'; did you mean 'translation'?" in errors[1]
    assert "'training.lr'; did you mean 'learning_rate'?" in errors[2]
    assert "model.params.units = -3: must be at least 1" in errors[3]
    assert f"ok: {ROOT / 'configs/cnn.yaml'}" in result.output
    # Elsewhere the same problems make one line: the first, then the rest by name.
    train = CliRunner().invoke(cli, ["train", "--config", str(bad)])
    assert train.exit_code == 2
    assert train.output.count("\n") == 1
    assert ("(and 3 more problems: data.augmentation.translaton, training.lr, model.params.units; `mnist config "
            "validate` shows each with its fix)") in train.output
    assert len(train.output) < 400


def test_a_file_of_many_mistakes_names_the_first_ten(tmp_path):
    bad = tmp_path / "many.yaml"
    bad.write_text("training:\n" + "".join(f"  typo{i}: 1\n" for i in range(14)))
    result = CliRunner().invoke(cli, ["config", "validate", str(bad)])
    assert result.exit_code == 2
    assert result.output.count("error:") == 10
    assert "training.typo9 and 4 more; `mnist config" in CliRunner().invoke(cli, ["config", "show", str(bad)]).output


def test_a_key_written_twice_is_refused_not_silently_the_last(tmp_path):
    twice = tmp_path / "dup.yaml"
    twice.write_text("training:\n  epochs: 3\n  batch_size: 32\n  epochs: 4\n")
    result = CliRunner().invoke(cli, ["config", "validate", str(twice)])
    assert result.exit_code == 2
    assert result.output.strip() == (f"error: {twice}: key 'epochs' is written twice in one section (lines 2 and 4); "
                                     f"keep one")
