"""The adversarial catalogue of the newer surfaces (issue 30): exports under signals and odd targets, worker
addresses and TF_CONFIG, config bases, `--json` outputs of damaged or diverged runs, TensorBoard on resume.

Every case is a real `mnist` process. It must exit with its code; a failure prints exactly one line on stderr,
`error: ...` naming the problem (never `unexpected`, never a traceback); a success prints strict JSON where
asked (no NaN or Infinity); nothing is left behind (no temporary, no lock file, no process), and the folder it
was pointed at and the reference run folder stay byte-identical.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import MLP, ROOT, snapshot, start_mnist
from conftest import run_mnist as mnist

TINY = ["--set", "data.subset=200", "--set", "training.batch_size=32", "--device", "cpu"]

# Sets every weight of a run's model.keras to NaN: what a diverged run, or an edited file, leaves.
NAN_WEIGHTS = """
import sys
import numpy as np
import keras
import mnist_pipeline.models  # registers the model classes
path = sys.argv[1]
model = keras.models.load_model(path, compile=False)
model.set_weights([np.full_like(w, np.nan) for w in model.get_weights()])
model.save(path)
"""


@pytest.fixture(scope="module")
def runs(catalogue_runs, tmp_path_factory):
    """(data dir, a completed MLP run, a run killed after epoch 1 of 3, a completed run with NaN weights)."""
    base = tmp_path_factory.mktemp("hardening")
    data, completed, resumable = catalogue_runs
    diverged = shutil.copytree(completed, base / "diverged")
    made = subprocess.run([sys.executable, "-c", NAN_WEIGHTS, str(diverged / "model.keras")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    return data, completed, resumable, diverged


def strict_json(text: str):
    """json.loads that refuses NaN, Infinity and -Infinity, as strict parsers (JavaScript, jq, Go) do."""
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")
    return json.loads(text, parse_constant=refuse)


def leftovers(folder: Path) -> list[Path]:
    """Temporaries and lock files an interrupted or failed command must not leave."""
    if not folder.is_dir():
        return []
    return [p for p in folder.rglob("*") if ".tmp" in p.name or p.name.endswith(".export-lock")]


def processes_mentioning(text: str) -> list[str]:
    """Live processes whose command line names `text` (a case's temp dir): none may outlive its command."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                found.append(f"{entry.name}: {cmdline[:200]}")
    return found


# ---- builders: each takes (tmp, data, completed, resumable, diverged), returns (args, folder kept as is, env) ----

def copy(which: str, change=None, name: str = "run"):
    def make(tmp, sources):
        folder = shutil.copytree(sources[which], tmp / name)
        if change:
            change(folder)
        return folder
    return make


def export(change=None, *extra, which="completed"):
    """`mnist export` on a copy of a run, changed by `change(copy, tmp)`."""
    def make(tmp, data, completed, resumable, diverged):
        folder = copy(which)(tmp, {"completed": completed, "diverged": diverged})
        if change:
            change(folder, tmp)
        return ["export", folder, *[e(tmp) if callable(e) else e for e in extra]], folder, None
    return make


HELD_LOCKS: list[tuple[int, Path]] = []  # (file descriptor, path) of locks a case holds while its command runs


def hold_export_lock(folder: Path, tmp: Path) -> None:
    """Another export of this run writing its tflite file right now: it holds the target's lock."""
    (folder / "export").mkdir()
    path = folder / "export" / ".model.tflite.export-lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    HELD_LOCKS.append((fd, path))


def workers(value: str, *extra):
    def make(tmp, data, *_):
        return ["train", "--config", MLP, "--data-dir", data, "--output-dir", tmp / "out", "--workers", value,
                "--worker-index", "0", *TINY, *extra], None, None
    return make


def tf_config(text: str):
    def make(tmp, data, *_):
        return ["train", "--config", MLP, "--data-dir", data, "--output-dir", tmp / "out", *TINY], None, \
            {"TF_CONFIG": text}
    return make


def resume_with_workers(tmp, data, completed, resumable, diverged):
    folder = shutil.copytree(resumable, tmp / "run")
    return ["train", "--resume", folder, "--data-dir", data, "--workers", "localhost:2900,localhost:2901",
            "--worker-index", "0"], folder, None


def config_files(files: dict[str, str], top: str, command: str = "validate"):
    """`mnist config COMMAND top` in a folder of `files` (name -> text; text starting '->' makes a symlink)."""
    def make(tmp, *_):
        for name, text in files.items():
            if text.startswith("->"):
                (tmp / name).symlink_to(text[2:].strip())
            else:
                (tmp / name).write_text(text)
        return ["config", command, tmp / top], None, None
    return make


def edit_metrics(**raw):
    """Replace metrics.json values with raw JSON text (NaN, Infinity: what Python's json writes)."""
    def change(folder, tmp=None):
        data = json.loads((folder / "metrics.json").read_text())
        text = json.dumps({**data, **{k: f"@{k}@" for k in raw}})
        for key, value in raw.items():
            text = text.replace(f'"@{key}@"', value)
        (folder / "metrics.json").write_text(text)
    return change


def on_run(command: str, which: str, change=None, *extra, json_flag=True):
    def make(tmp, data, completed, resumable, diverged):
        sources = {"completed": completed, "diverged": diverged}
        folder = copy(which)(tmp, sources)
        if change:
            change(folder)
        args = [command, folder]
        if command in ("evaluate", "ensemble"):
            args += ["--data-dir", data]
        if command == "ensemble":
            args.insert(1, copy("completed", name="other")(tmp, sources))
        if command == "predict":
            np.save(tmp / "digit.npy", np.zeros((28, 28), np.uint8) + np.eye(28, dtype=np.uint8) * 255)
            args.append(tmp / "digit.npy")
        return [*args, *extra, *(["--json"] if json_flag else [])], folder, None
    return make


def compare_json(change):
    def make(tmp, data, completed, resumable, diverged):
        folder = shutil.copytree(completed, tmp / "runs" / "changed")
        good = shutil.copytree(completed, tmp / "runs" / "good")
        change(folder)
        return ["compare", folder, good, "--output-dir", tmp / "cmp", "--json"], folder, None
    return make


def has_null_with_reason(*keys):
    """A check of the JSON: `keys` are null, and `null_reasons` says why (compare: in the changed run's row)."""
    def check(value):
        node = next(r for r in value["runs"] if r["run"] == "changed") if "runs" in value else value
        for key in keys:
            assert node[key] is None, node
            assert key in node["null_reasons"], node
    return check


CATALOGUE = [
    # -- exports: odd targets (refused before anything loads or is written) --
    ("export-default-parent-is-a-file", export(lambda f, t: (f / "export").write_text("mine"), "--format", "tflite"),
     2, ["export is a file, not a folder"], None),
    ("export-output-under-a-file", export(lambda f, t: (t / "afile").write_text("mine"), "--format", "tflite",
                                          "--output", lambda t: t / "afile" / "m.tflite"),
     2, ["afile is a file, not a folder", "another --output"], None),
    ("export-output-savedmodel-under-a-file", export(lambda f, t: (t / "afile").write_text("x"), "--format",
                                                     "savedmodel", "--output", lambda t: t / "afile" / "sm"),
     2, ["is a file, not a folder"], None),
    ("export-output-in-proc", export(None, "--format", "tflite", "--output", "/proc/m.tflite"), 1,
     ["/proc/m.tflite", "cannot write into /proc"], None),
    ("export-output-in-sys", export(None, "--format", "savedmodel", "--output", "/sys/mnist-savedmodel"), 1,
     ["cannot write into /sys"], None),
    ("export-output-exists", export(lambda f, t: (t / "m.tflite").write_text("x"), "--format", "tflite",
                                    "--output", lambda t: t / "m.tflite"), 2, ["already exists"], None),
    ("export-concurrent", export(hold_export_lock, "--format", "tflite"), 2,
     ["another export of this run is writing", "model.tflite"], None),
    ("export-nan-weights", export(None, "--format", "tflite", which="diverged"), 1,
     ["model.keras", "NaN or infinite"], None),
    # -- worker addresses (refused before TensorFlow or any folder) --
    ("workers-port-too-high", workers("localhost:70000,localhost:2901"), 2, ["'localhost:70000'", "1 to 65535"],
     None),
    ("workers-port-65536", workers("a:2900,b:65536"), 2, ["1 to 65535"], None),
    ("workers-port-zero", workers("a:0,b:2900"), 2, ["1 to 65535"], None),
    ("workers-port-not-digits", workers("a:29e3,b:2900"), 2, ["1 to 65535"], None),
    ("workers-port-signed", workers("a:+2900,b:2901"), 2, ["1 to 65535"], None),
    ("workers-port-missing", workers("a:,b:2900"), 2, ["1 to 65535"], None),
    ("workers-host-missing", workers(":2900,b:2901"), 2, ["is not host:port"], None),
    ("workers-same-port-other-spelling", workers("localhost:2900,localhost:02900"), 2,
     ["lists an address twice", "'localhost:02900'"], None),
    ("workers-same-host-other-case", workers("Node1:2900,node1:2900"), 2, ["lists an address twice"], None),
    ("workers-ipv6-unbracketed", workers("::1:2900,::1:2901"), 2, ["in brackets", "[::1]:2900"], None),
    ("workers-empty-entry", workers("a:2900,,b:2901"), 2, ["an empty entry"], None),
    ("workers-only-commas", workers(",,"), 2, ["an empty entry"], None),
    ("tf-config-deeply-nested", tf_config("[" * 50_000), 2, ["TF_CONFIG is not a cluster description"], None),
    ("tf-config-nested-in-cluster", tf_config('{"cluster": {"worker": ' + "[" * 30_000 + "]" * 30_000 + "}}"), 2,
     ["TF_CONFIG is not a cluster description"], None),
    ("tf-config-huge", tf_config(json.dumps({"cluster": {"worker": ["a:1"]}, "pad": "x" * 100_000})), 2,
     ["TF_CONFIG is 100,0", "64 KiB at most"], None),
    ("tf-config-bad-port", tf_config(json.dumps({"cluster": {"worker": ["a:99999", "b:2"]},
                                                 "task": {"type": "worker", "index": 0}})), 2,
     ["TF_CONFIG", "1 to 65535"], None),
    ("tf-config-duplicate", tf_config(json.dumps({"cluster": {"chief": ["a:2900"], "worker": ["A:02900"]},
                                                  "task": {"type": "chief", "index": 0}})), 2,
     ["TF_CONFIG lists an address twice"], None),
    ("resume-single-machine-run-with-workers", resume_with_workers, 2,
     ["--workers", "drop --workers"], None),
    # -- config bases --
    ("base-nul-byte", config_files({"c.yaml": 'base: "mlp\\0.yaml"\n'}, "c.yaml"), 2, ["NUL character"], None),
    ("base-symlink-loop", config_files({"l1": "-> l2", "l2": "-> l1", "c.yaml": "base: l1\n"}, "c.yaml"), 2,
     ["base 'l1' cannot be followed", "symlink loop"], None),
    ("base-symlink-to-itself", config_files({"self.yaml": "-> self.yaml", "c.yaml": "base: self.yaml\n"}, "c.yaml"),
     2, ["cannot be followed"], None),
    ("base-same-default-model-keeps-params",
     config_files({"base.yaml": "model:\n  params:\n    units: 48\n    dropout_rate: 0.3\n",
                   "c.yaml": "base: base.yaml\nmodel:\n  name: mlp\n"}, "c.yaml", "show"), 0,
     ["dropout_rate: 0.3", "units: 48"], None),
    ("base-other-model-drops-params",
     config_files({"base.yaml": "model:\n  params:\n    units: 48\n",
                   "c.yaml": "base: base.yaml\nmodel:\n  name: cnn\n"}, "c.yaml", "show"), 0, ["name: cnn"], None),
    # -- --json of damaged or diverged runs: strict JSON, or one error line --
    ("evaluate-json-nan-recorded-loss", on_run("evaluate", "completed", edit_metrics(test_loss="NaN")), 0,
     ['"recorded_loss": null'], has_null_with_reason("recorded_loss")),
    ("evaluate-json-infinite-recorded-loss", on_run("evaluate", "completed", edit_metrics(test_loss="Infinity")), 0,
     ['"recorded_loss": null'], has_null_with_reason("recorded_loss")),
    ("evaluate-json-nan-weights", on_run("evaluate", "diverged"), 1, ["model.keras", "NaN or infinite"], None),
    ("evaluate-nan-weights", on_run("evaluate", "diverged", json_flag=False), 1, ["model.keras"], None),
    ("predict-json-nan-weights", on_run("predict", "diverged"), 1, ["model.keras", "NaN or infinite"], None),
    ("predict-nan-weights", on_run("predict", "diverged", json_flag=False), 1, ["model.keras"], None),
    ("ensemble-json-nan-weights", on_run("ensemble", "diverged"), 1, ["model.keras", "NaN or infinite"], None),
    ("compare-json-nan-test-loss", compare_json(edit_metrics(test_loss="NaN")), 0, ['"test_loss": null'],
     has_null_with_reason("test_loss")),
    ("compare-json-infinite-train-seconds", compare_json(edit_metrics(train_seconds="Infinity")), 0,
     ['"train_seconds": null'], has_null_with_reason("train_seconds")),
    ("predict-json-good-run", on_run("predict", "completed"), 0, ['"prediction"'], None),
]


@pytest.mark.slow
@pytest.mark.parametrize("make, code, words, check", [c[1:] for c in CATALOGUE], ids=[c[0] for c in CATALOGUE])
def test_hardening_catalogue(make, code, words, check, runs, tmp_path):
    data, completed, resumable, diverged = runs
    reference = snapshot(completed)
    try:
        args, target, env = make(tmp_path, data, completed, resumable, diverged)
        before = snapshot(target) if target and target.is_dir() and not HELD_LOCKS else None
        result = mnist(*args, env=env)
    finally:
        while HELD_LOCKS:  # the other export finishes: its lock file goes with it
            fd, path = HELD_LOCKS.pop()
            path.unlink()
            os.close(fd)
    lines = result.stderr.splitlines()
    assert result.returncode == code, result.stderr
    assert "unexpected" not in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    if code:
        assert len(lines) == 1, result.stderr  # one line, nothing else
        assert lines[0].startswith("error: "), result.stderr
        assert len(lines[0]) < 700, lines[0]
        for word in words:
            assert word in lines[0], lines[0]
    else:
        assert not any(line.startswith("error") for line in lines), result.stderr
        for word in words:
            assert word in result.stdout, result.stdout
    if "--json" in args and code == 0:
        value = strict_json(result.stdout)
        if check:
            check(value)
    if before is not None:
        assert snapshot(target) == before  # refused or failed: the folder it was pointed at is as it was
    assert not leftovers(tmp_path), leftovers(tmp_path)
    assert not processes_mentioning(str(tmp_path))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("status.json"))  # no half run
    assert snapshot(completed) == reference


def test_catalogue_is_large_enough():
    assert len(CATALOGUE) + 4 >= 30  # + the signal cases below


def _wait_for(folder: Path, pattern: str, process, seconds: float = 120) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and process.poll() is None:
        if folder.is_dir() and any(pattern in p.name for p in folder.iterdir()):
            return True
        time.sleep(0.01)
    return False


@pytest.mark.slow
@pytest.mark.parametrize("fmt, sign, when", [("savedmodel", signal.SIGTERM, ".tmp"),
                                             ("savedmodel", signal.SIGINT, ".tmp"),
                                             ("tflite", signal.SIGTERM, ".export-lock"),
                                             ("tflite", signal.SIGINT, ".export-lock")],
                         ids=["savedmodel-sigterm", "savedmodel-sigint", "tflite-sigterm", "tflite-sigint"])
def test_a_signal_during_an_export_leaves_nothing(fmt, sign, when, runs, tmp_path):
    """Ctrl-C or SIGTERM while the converter writes: the temporary and the lock go, export/ (made for it) goes,
    one line, exit 128 + signal."""
    _, completed, *_ = runs
    folder = shutil.copytree(completed, tmp_path / "run")
    before = snapshot(folder)
    process = start_mnist("export", folder, "--format", fmt)
    try:
        assert _wait_for(folder / "export", when, process), process.communicate()[1]
        process.send_signal(sign)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    lines = stderr.splitlines()
    assert process.returncode == 128 + sign, stderr
    assert len(lines) == 1, stderr
    assert signal.Signals(sign).name in lines[0], stderr
    assert "nothing was written" in lines[0], stderr
    assert "unexpected" not in stderr
    assert stdout == ""
    assert snapshot(folder) == before
    assert not (folder / "export").exists()
    assert not leftovers(tmp_path)
    assert not processes_mentioning(str(tmp_path))


@pytest.mark.slow
def test_a_resumed_run_whose_tensorboard_folder_is_a_file_warns_once_and_completes(runs, tmp_path):
    """docs/guide/runs.md "TensorBoard": a write that fails stops the events with one `warning:` line; training
    goes on."""
    data, _, resumable, _ = runs
    folder = shutil.copytree(resumable, tmp_path / "run")
    shutil.rmtree(folder / "tensorboard", ignore_errors=True)
    (folder / "tensorboard").write_text("a file where the events folder should be")
    result = mnist("train", "--resume", folder, "--data-dir", data)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("warning: TensorBoard events stopped (")
    assert "is a file, not a folder" in lines[0]
    assert lines[0].endswith("training goes on without them")
    assert (folder / "tensorboard").read_text() == "a file where the events folder should be"
    assert json.loads((folder / "status.json").read_text())["status"] == "completed"
    assert not leftovers(folder)


def test_workers_accept_bracketed_ipv6_and_a_trailing_comma(monkeypatch):
    from mnist_pipeline import distribute

    monkeypatch.setenv("TF_CONFIG", "")  # restored (or removed) after the test, as set_workers changes it
    monkeypatch.setenv("MNIST_TF_CONFIG_FROM_WORKERS", "")
    distribute.set_workers("[::1]:2900,[::1]:2901,", 1)
    cluster = distribute.cluster_from_env()
    assert cluster.workers == ("[::1]:2900", "[::1]:2901")
    assert cluster.index == 1
