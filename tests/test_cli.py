"""`mnist` through click's runner (in-process, TF loaded once) and, where imports matter, a real subprocess."""

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from conftest import ROOT, SHIPPED_CONFIGS, snapshot
from mnist_pipeline.cli import cli

RUN_FILES = {"config.yaml", "history.csv", "metrics.json", "model.keras", "curves.png", "status.json",
             "normalization.json"}
# Tiny and quick: 2 epochs on at most 300 generated examples, whatever the shipped config says.
FAST = ["--epochs", "2", "--set", "data.subset=300", "--set", "training.batch_size=32", "--device", "cpu"]


def invoke(*args):
    return CliRunner().invoke(cli, list(map(str, args)))


def train(config, idx_dir, out, *extra):
    result = invoke("train", "--config", config, "--data-dir", idx_dir, "--output-dir", out, *FAST, *extra)
    assert result.exit_code == 0, result.output + repr(result.exception)
    run_dir = Path(result.output.strip().splitlines()[-1].removeprefix("run folder: "))
    return result, run_dir


def python(*code_lines):
    return subprocess.run([sys.executable, "-c", "\n".join(code_lines)], capture_output=True, text=True, cwd=ROOT)


@pytest.mark.slow
@pytest.mark.parametrize("config", SHIPPED_CONFIGS, ids=lambda p: p.stem)
def test_train_each_shipped_config_writes_a_complete_run_folder(config, idx_dir, tmp_path):
    result, run_dir = train(config, idx_dir, tmp_path)
    assert run_dir.parent == tmp_path / "runs"
    assert run_dir.name.endswith(f"-{config.stem}")
    assert {p.name for p in run_dir.iterdir()} >= RUN_FILES

    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["training"]["epochs"] == 2
    assert saved["data"]["subset"] == 300
    assert saved["data"]["data_dir"] == str(idx_dir)
    assert saved["output"]["name"] == config.stem

    with open(run_dir / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert set(rows[0]) == {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds"}

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["best_epoch"] in (1, 2)
    assert metrics["epochs"] == 2
    assert metrics["best_val_loss"] == pytest.approx(float(rows[metrics["best_epoch"] - 1]["val_loss"]), rel=1e-4)
    assert metrics["test_loss"] >= 0
    assert 0 <= metrics["test_accuracy"] <= 1
    assert metrics["split_sizes"] == {"train": 300, "val": 60, "test": 200}
    assert sum(metrics["train_class_counts"]) == 300
    assert metrics["device"].startswith("cpu")
    assert metrics["seed"] == saved["training"]["seed"]
    assert metrics["data_source"] == f"idx:{idx_dir.resolve()}"
    assert metrics["parameters"] > 0
    assert metrics["wall_seconds"] > 0
    assert set(metrics["versions"]) == {"python", "tensorflow", "keras", "numpy", "mnist_pipeline"}
    assert json.loads((run_dir / "status.json").read_text())["status"] == "completed"
    assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    lines = result.output.strip().splitlines()
    assert any(line.split()[0] == "2/2" for line in lines)
    (result_line,) = [line for line in lines if line.startswith("test  loss")]
    assert f"acc {metrics['test_accuracy']:.4f}" in result_line


@pytest.mark.slow
def test_models_learn_the_generated_digits_well_above_chance(idx_dir, tmp_path):
    _, run_dir = train(ROOT / "configs/mlp.yaml", idx_dir, tmp_path, "--epochs", "5", "--set", "data.subset=500")
    assert json.loads((run_dir / "metrics.json").read_text())["test_accuracy"] > 0.8


@pytest.mark.slow
def test_same_seed_same_metrics_and_other_seed_differs(idx_dir, tmp_path):
    config = ROOT / "configs/smoke.yaml"  # CNN: dropout and augmentation are seeded too
    runs = [train(config, idx_dir, tmp_path, "--seed", seed)[1] for seed in (3, 3, 4)]
    metrics = [json.loads((r / "metrics.json").read_text()) for r in runs]
    history = [(r / "history.csv").read_text().splitlines() for r in runs]
    assert metrics[0]["test_loss"] == metrics[1]["test_loss"]
    assert [h.split(",")[:5] for h in history[0]] == [h.split(",")[:5] for h in history[1]]  # seconds differ
    assert metrics[0]["test_loss"] != metrics[2]["test_loss"]
    assert len({r.name for r in runs}) == 3  # same second, same name: still three folders


def test_npz_data_dir_through_the_cli(npz_dir, tmp_path):
    _, run_dir = train(ROOT / "configs/mlp.yaml", npz_dir, tmp_path)
    assert json.loads((run_dir / "metrics.json").read_text())["data_source"].startswith("npz:")


def test_mnist_data_dir_environment_variable(idx_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_DATA_DIR", str(idx_dir))
    result = invoke("train", "--config", ROOT / "configs/mlp.yaml", "--output-dir", tmp_path, *FAST)
    assert result.exit_code == 0, result.output
    assert f"from idx:{idx_dir.resolve()}" in result.output
    run_dir = Path(result.output.splitlines()[-1].removeprefix("run folder: "))
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["data"]["data_dir"] == str(idx_dir)  # pinned


@pytest.mark.slow
def test_a_saved_config_with_a_relative_data_dir_reruns_from_anywhere(idx_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(idx_dir.parent)
    _, run_dir = train(ROOT / "configs/mlp.yaml", idx_dir.name, tmp_path)  # typed relative
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["data"]["data_dir"] == str(idx_dir)
    monkeypatch.chdir(tmp_path)  # elsewhere: the relative path would not be found here
    again = invoke("train", "--config", run_dir / "config.yaml", "--output-dir", tmp_path)
    assert again.exit_code == 0, again.output
    rerun = Path(again.output.splitlines()[-1].removeprefix("run folder: "))
    first, second = (json.loads((r / "metrics.json").read_text()) for r in (run_dir, rerun))
    assert second["weights_sha256"] == first["weights_sha256"]  # the same run, reproduced


@pytest.mark.parametrize("args, code, words", [
    (["--set", "training.epochs=-1"], 2, ["training.epochs = -1", "must be at least 1"]),
    (["--set", "model.name=resnet"], 2, ["model.name = 'resnet'", "known models"]),
    (["--set", "training.epoch=3"], 2, ["unknown key 'training.epoch'", "did you mean 'epochs'"]),
    (["--set", "nonsense"], 2, ["--set expects section.key=value"]),
    (["--set", "model.name=cnn", "--set", "model.params={}", "--set", "training.jit_compile=true"], 2,
     ["training.jit_compile = true cannot train the cnn on a CPU", "no deterministic max-pooling gradient"]),
    (["--set", "data.subset=100000"], 2, ["data.subset = 100000 is larger than the 540 training examples"]),
    (["--set", "training.batch_size=1000", "--set", "data.subset=100"], 2, ["batch_size = 1000 is larger"]),
    (["--data-dir", "/nonexistent/mnist"], 2, ["data folder '/nonexistent/mnist' does not exist", "--data-dir"]),
    (["--device", "gpu"], 1, ["--device gpu: TensorFlow sees no GPU", "--device cpu"]),
])
def test_bad_input_is_one_line_with_exit_code_and_leaves_no_run(args, code, words, idx_dir, tmp_path):
    result = invoke("train", "--config", ROOT / "configs/mlp.yaml", "--data-dir", idx_dir,
                    "--output-dir", tmp_path, *args)
    assert result.exit_code == code, result.output
    error_lines = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1
    assert "Traceback" not in result.output
    for word in words:
        assert word in error_lines[0], error_lines[0]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_corrupt_data_file_exit_1_names_the_file(idx_dir, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for f in idx_dir.iterdir():
        (data / f.name).write_bytes(f.read_bytes())
    (data / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b garbage")
    result = invoke("train", "--config", ROOT / "configs/mlp.yaml", "--data-dir", data, "--output-dir", tmp_path)
    assert result.exit_code == 1
    assert result.output.startswith(f"error: {data / 'train-images-idx3-ubyte.gz'}: cannot read the file")


@pytest.mark.slow
def test_earlier_runs_are_never_touched(idx_dir, tmp_path):
    _, first = train(ROOT / "configs/mlp.yaml", idx_dir, tmp_path)
    before = snapshot(first)
    invoke("train", "--config", ROOT / "configs/mlp.yaml", "--output-dir", tmp_path, "--set", "training.epochs=0")
    _, second = train(ROOT / "configs/mlp.yaml", idx_dir, tmp_path)
    assert second != first
    assert snapshot(first) == before


def test_unwritable_output_dir(idx_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = invoke("train", "--config", ROOT / "configs/mlp.yaml", "--data-dir", idx_dir, "--output-dir", blocker)
    assert result.exit_code == 1
    assert "cannot create the run folder" in result.output


def test_models_command_lists_parameters_and_defaults():
    result = invoke("models")
    assert result.exit_code == 0
    assert "cnn:" in result.output
    assert "deep_mlp:" in result.output
    assert any(line.split()[:2] == ["filters", "[32,"] for line in result.output.splitlines())


def test_models_and_config_fields_json_give_the_schema_defaults():
    from mnist_pipeline.config import MODEL_PARAMS, RunConfig

    models = json.loads(invoke("models", "--json").output)
    assert list(models) == list(MODEL_PARAMS)
    for name, schema in MODEL_PARAMS.items():
        defaults = json.loads(schema().model_dump_json())
        assert {param: entry["default"] for param, entry in models[name]["params"].items()} == defaults
    assert models["cnn"]["params"]["filters"]["default"] == [32, 64]
    fields = json.loads(invoke("config", "fields", "--json").output)
    by_key = {f["key"]: f for f in fields}
    assert by_key["training.epochs"]["default"] == RunConfig().training.epochs
    assert by_key["training.epochs"]["type"].startswith("int")
    assert by_key["training.learning_rate"]["default"] == 1e-3
    assert by_key["output.tensorboard.enabled"]["default"] is True
    assert by_key["data.subset"]["default"] is None
    assert len(fields) == len(by_key)  # one entry per key


def all_commands(group=cli, prefix=()):
    yield list(prefix)
    for name, command in group.commands.items():
        yield from (all_commands(command, (*prefix, name)) if hasattr(command, "commands") else [[*prefix, name]])


@pytest.mark.parametrize("command", list(all_commands()), ids=" ".join)
def test_every_command_has_help_with_an_example(command):
    result = invoke(*command, "--help")
    assert result.exit_code == 0
    assert "Example: mnist" in result.output


@pytest.mark.parametrize("group", [[], ["config"], ["diagnose"]], ids=lambda g: " ".join(["mnist", *g]))
def test_a_bare_group_prints_its_help_with_whole_summaries(group):
    result = CliRunner().invoke(cli, group, prog_name="mnist")
    assert result.exit_code == 2  # click's exit code for a missing command
    assert result.stderr == ""
    assert result.stdout.startswith(f"Usage: {' '.join(['mnist', *group])} ")
    assert "error:" not in result.stdout
    listed = result.stdout.split("Commands:\n")[1].splitlines()
    command = cli if not group else cli.commands[group[0]]
    assert [line.split()[0] for line in listed] == list(command.commands)  # workflow order, every command
    for line in listed:
        assert not line.endswith("..."), line
        assert line.endswith("."), line
        assert len(line) <= 80, line


def test_help_models_and_config_errors_do_not_import_tensorflow(tmp_path):
    probe = python(
        "import sys",
        "from click.testing import CliRunner",
        "from mnist_pipeline.cli import cli",
        "codes = [CliRunner().invoke(cli, a).exit_code for a in",
        "         (['--help'], ['models'], ['train', '--set', 'training.epochs=-1'],",
        "          ['compare', '--all', '--output-dir', 'no-such-dir'], ['diagnose', 'gradients', '--set', 'x.y=1'],",
        "          ['serve', '--help'], ['serve', 'no-such-run', '--port', '0'])]",
        "print(codes, 'tensorflow' in sys.modules, 'keras' in sys.modules)",
    )
    assert probe.stdout.strip() == "[0, 0, 2, 2, 2, 0, 2] False False", probe.stdout + probe.stderr


def test_shell_completion_as_the_readme_says():
    exe = str(Path(sys.executable).parent / "mnist")
    script = subprocess.run([exe], env={**os.environ, "_MNIST_COMPLETE": "bash_source"}, capture_output=True,
                            text=True)
    assert script.returncode == 0
    assert "_mnist_completion()" in script.stdout
    readme = (ROOT / "README.md").read_text()
    assert 'eval "$(_MNIST_COMPLETE=bash_source mnist)"' in readme
    for words, expected in (("mnist tr", "plain,train"), ("mnist train --qu", "plain,--quiet"),
                            ("mnist config v", "plain,validate")):
        done = subprocess.run([exe], env={**os.environ, "_MNIST_COMPLETE": "bash_complete", "COMP_WORDS": words,
                                          "COMP_CWORD": str(len(words.split()) - 1)}, capture_output=True, text=True)
        assert done.stdout.split() == [expected], (words, done.stdout, done.stderr)


def test_console_script_and_python_dash_m():
    exe = Path(sys.executable).parent / "mnist"
    for command in ([str(exe), "--version"], [sys.executable, "-m", "mnist_pipeline", "--version"]):
        result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("mnist, version "), result.stderr


def run_in_terminal(args, columns=80, timeout=300, interrupt_at=None, code=0, interrupts=1):
    """`mnist ARGS` with its stdout and stderr on a pseudo-terminal of `columns` columns: what it draws there.
    With `interrupt_at`, SIGINT (Ctrl-C) is sent `interrupts` times, as fast as a user can, once that text has
    been drawn."""
    import fcntl
    import pty
    import signal
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {**os.environ, "COLUMNS": str(columns), "TERM": "xterm"}
    process = subprocess.Popen([sys.executable, "-m", "mnist_pipeline", *map(str, args)], stdin=subprocess.DEVNULL,
                               stdout=follower, stderr=follower, cwd=ROOT, env=env)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
        if interrupt_at and interrupt_at.encode() in b"".join(chunks):
            for _ in range(interrupts):
                process.send_signal(signal.SIGINT)
                time.sleep(0.05)
            interrupt_at = None
    os.close(leader)
    assert process.wait(timeout=timeout) == code, b"".join(chunks).decode()
    return b"".join(chunks).decode()


@pytest.mark.slow
def test_a_terminal_gets_a_live_bar_that_clears_and_lines_that_fit_80_columns(idx_dir, tmp_path):
    import re

    drawn = run_in_terminal(["train", "--config", ROOT / "configs/smoke.yaml", "--data-dir", idx_dir,
                             "--output-dir", tmp_path, *FAST])
    # The bar: epoch, steps, running loss and accuracy, rate, elapsed < remaining.
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", drawn)
    assert re.search(r"epoch 2/2 \S+ +\d+/\d+ loss \d\.\d{4} acc \d\.\d{4} [\d,]+ img/s \d+:\d\d < \d+:\d\d", plain)
    # What stays on screen: every bar erased before the next line is printed, and no line wider than 80.
    screen = [line.rsplit("\r", 1)[-1] for line in plain.replace("\r\n", "\n").split("\n") if line.strip()]
    kept = [line for line in screen if "img/s" not in line]
    assert [line.split()[0] for line in kept] == ["data:", "starting", "precision:", "model:", "XLA:", "epoch", "1/2",
                                                  "2/2", "testing,", "calibration:", "test", "run"], kept
    ours = [line for line in kept if str(tmp_path) not in line and str(idx_dir) not in line]  # not their paths
    assert len(ours) == 10, max(ours, key=len)
    assert all(len(line) <= 80 for line in ours), max(ours, key=len)
    assert "\x1b[2K" in drawn  # erased; cursor back
    assert drawn.count("\x1b[?25l") == drawn.count("\x1b[?25h")


@pytest.mark.slow
def test_ctrl_c_in_a_terminal_erases_the_bar_before_the_error_line(idx_dir, tmp_path):
    import re

    drawn = run_in_terminal(["train", "--config", ROOT / "configs/smoke.yaml", "--data-dir", idx_dir,
                             "--output-dir", tmp_path, *FAST, "--epochs", "50"], interrupt_at="epoch 2/50 ", code=130)
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", drawn).replace("\r\n", "\n")
    last = plain.strip().split("\n")[-1].rsplit("\r", 1)[-1]  # what the terminal shows on the last line
    assert last.startswith("SIGINT: stopped"), repr(last)  # on a line of its own, no bar before it
    assert "mnist train --resume" in last


@pytest.mark.slow
def test_ctrl_c_twice_erases_the_bar_and_says_the_run_can_go_on_without_calling_it_an_error(idx_dir, tmp_path):
    import re

    drawn = run_in_terminal(["train", "--config", ROOT / "configs/smoke.yaml", "--data-dir", idx_dir,
                             "--output-dir", tmp_path, *FAST, "--epochs", "50"], interrupt_at="epoch 3/50 ", code=130,
                            interrupts=2)
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", drawn).replace("\r\n", "\n")
    last = plain.strip().split("\n")[-1].rsplit("\r", 1)[-1]
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert last.startswith("SIGINT again: stopped at once; it can go on from its checkpoint after epoch "), repr(last)
    assert last.endswith(f"`mnist train --resume {run_dir}`")
    assert "error" not in plain.lower()
    assert "\x1b[2K" in drawn  # erased; cursor back
    assert drawn.count("\x1b[?25l") == drawn.count("\x1b[?25h")


@pytest.mark.slow
def test_without_a_terminal_only_the_epoch_table_and_quiet_prints_the_result_alone(idx_dir, tmp_path):
    result, run_dir = train(ROOT / "configs/mlp.yaml", idx_dir, tmp_path)
    lines = result.output.splitlines()
    assert [line.split()[0] for line in lines[:5]] == ["data:", "starting", "precision:", "model:", "XLA:"]
    lines = lines[3:]  # from the model line on, as before the precision and XLA lines
    assert lines[2].split() == ["epoch", "loss", "acc", "val_loss", "val_acc", "lr", "time"]
    with open(run_dir / "history.csv") as f:
        history = list(csv.DictReader(f))
    for line, row in zip(lines[3:5], history, strict=True):
        epoch, *values = line.split()[:5]
        assert epoch == f"{row['epoch']}/2"
        assert [float(v) for v in values] == pytest.approx(
            [float(row[k]) for k in ("loss", "accuracy", "val_loss", "val_accuracy")], abs=6e-5)
    assert "img/s" not in result.output
    assert "\r" not in result.output
    assert "\x1b" not in result.output
    quiet, _ = train(ROOT / "configs/mlp.yaml", idx_dir, tmp_path, "--quiet")
    assert [line.split()[0] for line in quiet.output.splitlines()] == ["test", "short", "run"], quiet.output


def test_the_epoch_line_fits_80_columns_at_its_widest():
    from mnist_pipeline.cli.progress import HEADER, epoch_line
    from mnist_pipeline.trainer import EpochRecord

    widest = epoch_line(EpochRecord(100, 12.3456, 1.0, 12.3456, 1.0, 1.5e-10, 9999.9), 100)
    assert len(widest) <= 80
    assert len(HEADER) <= 80
    assert [len(w) for w in widest.split()] == [7, 7, 6, 7, 6, 7, 7]
    assert widest.index("12.3456") + 7 == HEADER.index("loss") + 4  # values right-aligned under their names


def test_missing_tensorflow_says_how_to_install_it(idx_dir, tmp_path):
    probe = python(
        "import sys",
        "sys.modules['tensorflow'] = None  # makes `import tensorflow` fail as if it were not installed",
        "from click.testing import CliRunner",
        "from mnist_pipeline.cli import cli",
        f"r = CliRunner().invoke(cli, ['train', '--data-dir', {str(idx_dir)!r}, '--output-dir', {str(tmp_path)!r}])",
        "print(r.exit_code, r.stderr.strip())",
    )
    code, _, message = probe.stdout.strip().partition(" ")
    assert code == "1", probe.stdout + probe.stderr
    assert message.startswith("error: TensorFlow cannot be imported"), probe.stdout + probe.stderr
    assert "\n" not in message  # one line, and no run folder
    assert not list(tmp_path.iterdir())
    assert "pip install -e '.[cpu]'" in message


@pytest.mark.slow
def test_a_run_far_shorter_than_its_config_plans_says_so_in_the_result_line_and_the_report(idx_dir, tmp_path):
    # cnn.yaml as written, on these 600 training images: 15 epochs of the 540 left after validation. This run:
    # 1 epoch of 300 (3.7%, shown as 4%). Batch size plays no part: the budget is epochs x images.
    result = invoke("train", "--config", ROOT / "configs/cnn.yaml", "--data-dir", idx_dir, "--output-dir",
                    tmp_path / "short", "--epochs", "1", "--set", "data.subset=300", "--set",
                    "training.batch_size=32", "--device", "cpu")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    run_dir = Path(lines[-1].removeprefix("run folder: "))
    assert lines[-2] == "short run: 4% of the config's 15 epochs x 540 images; expect lower accuracy"
    assert lines[-3].startswith("test  loss")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["budget"] == {"epochs": 1, "images": 300, "planned_epochs": 15, "planned_images": 540}
    report = (run_dir / "report.md").read_text()
    assert "| short run | 4% of the config's 15 epochs x 540 images; expect lower accuracy than " in report
    assert f"| precision | {metrics['precision']} (auto: this CPU" in report  # the choice and its reason
    assert "| XLA | off (auto: no deterministic XLA max-pooling gradient) |" in report

    # A config run as written on the data at hand (as the README's documented runs are): no short run.
    written = tmp_path / "as_written.yaml"
    written.write_text("data: {subset: 300}\ntraining: {epochs: 2, batch_size: 32, device: cpu}\n")
    result = invoke("train", "--config", written, "--data-dir", idx_dir, "--output-dir", tmp_path / "as-written")
    assert result.exit_code == 0, result.output
    assert "short run" not in result.output


@pytest.mark.slow
def test_train_export_of_a_bfloat16_run_says_the_export_computes_in_float32(idx_dir, tmp_path):
    result = invoke("train", "--config", ROOT / "configs/smoke.yaml", "--data-dir", idx_dir, "--output-dir", tmp_path,
                    *FAST, "--set", "model.params.filters=[4, 8]", "--set", "training.precision=mixed_bfloat16",
                    "--export", "savedmodel")
    assert result.exit_code == 0, result.output
    assert "note: this run trained in mixed_bfloat16 and the export computes in float32" in result.output
    float32 = invoke("train", "--config", ROOT / "configs/smoke.yaml", "--data-dir", idx_dir, "--output-dir",
                     tmp_path, *FAST, "--set", "model.params.filters=[4, 8]", "--set", "training.precision=float32",
                     "--export", "savedmodel")
    assert float32.exit_code == 0
    assert "note: this run trained" not in float32.output
