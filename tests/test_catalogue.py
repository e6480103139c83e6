"""The adversarial catalogue: bad files, damaged run folders, hostile inputs and refused requests, each run as a
real `mnist` process. Every case must exit with its code and print exactly one line on stderr, `error: ...`
naming the problem (no TensorFlow log line, no traceback), leave the folder it was pointed at as it was, and
leave a reference run folder byte-identical.

Each case builds its arguments in its own temp dir from two session runs: a completed one and one killed
after its first epoch (resumable). Add cases here when a new kind of bad input turns up.
"""

from __future__ import annotations

import gzip
import io
import json
import shutil
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import CNN, MLP, ROOT, snapshot, write_idx_dir
from conftest import run_mnist as mnist
from mnist_pipeline.data.idx import write_idx
from mnist_pipeline.reports.run_folder import RunLock

TINY = ["--set", "data.subset=200", "--set", "training.batch_size=32", "--device", "cpu"]


@pytest.fixture(scope="module")
def runs(catalogue_runs):
    """(data dir, a completed MLP run, a run killed after epoch 1 of 3) made by real processes."""
    return catalogue_runs


# ---- builders: each takes (tmp, data, completed, resumable) and returns (args, folder that must not change) ----

def train_yaml(text: str | bytes):
    def make(tmp, data, completed, resumable):
        path = tmp / "c.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return ["train", "--config", path, "--data-dir", data, "--output-dir", tmp / "out"], None
    return make


def train(*args, config=MLP):
    def make(tmp, data, completed, resumable):
        return ["train", "--config", config, "--data-dir", data, "--output-dir", tmp / "out", *args], None
    return make


def bad_data(change):
    """Train on a copy of the data with one file replaced by what `change(folder)` writes."""
    def make(tmp, data, completed, resumable):
        copy = shutil.copytree(data, tmp / "data")
        change(copy)
        return ["train", "--config", MLP, "--data-dir", copy, "--output-dir", tmp / "out", *TINY], copy
    return make


def gz(path: Path, payload: bytes) -> None:
    path.write_bytes(gzip.compress(payload))


def idx_header(magic: int, *dims: int) -> bytes:
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims)


def gz_bomb_trailing(folder: Path) -> None:
    """A valid header and data, then 2 GB of zeros: inflating it all would take gigabytes."""
    labels = np.arange(300, dtype=np.uint8) % 10
    with gzip.open(folder / "train-labels-idx1-ubyte.gz", "wb", compresslevel=1) as f:
        f.write(idx_header(2049, 300) + labels.tobytes())
        block = bytes(1 << 20)
        for _ in range(64):  # 64 MiB here; the reader stops one byte past the promise either way
            f.write(block)


def npz(folder: Path, **arrays) -> Path:
    for p in folder.glob("*"):
        p.unlink()
    np.savez(folder / "mnist.npz", **arrays)
    return folder / "mnist.npz"


def good_arrays():
    rng = np.random.default_rng(0)
    return dict(x_train=rng.integers(0, 255, (300, 28, 28), dtype=np.uint8), y_train=np.arange(300) % 10,
                x_test=rng.integers(0, 255, (100, 28, 28), dtype=np.uint8), y_test=np.arange(100) % 10)


def npz_truncated(folder):
    path = npz(folder, **good_arrays())
    path.write_bytes(path.read_bytes()[:5000])


def npz_bad_crc(folder):
    path = npz(folder, **good_arrays())
    raw = bytearray(path.read_bytes())
    raw[2000] ^= 0xFF  # inside x_train's stored bytes
    path.write_bytes(bytes(raw))


def npz_bomb(folder):
    for p in folder.glob("*"):
        p.unlink()
    with zipfile.ZipFile(folder / "mnist.npz", "w", zipfile.ZIP_DEFLATED) as archive:
        for key in ("x_train", "y_train", "x_test", "y_test"):
            with archive.open(f"{key}.npy", "w", force_zip64=True) as member:
                header = io.BytesIO()
                np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False,
                                                              "shape": (8_000_000, 28, 28)})
                member.write(header.getvalue())
                block = bytes(1 << 20)
                for _ in range(8 if key == "x_train" else 0):
                    member.write(block)


def npz_declared_bomb(folder):
    """A zip directory that declares 4 GB for an array (what a real bomb's directory says)."""
    path = npz(folder, **good_arrays())
    raw = bytearray(path.read_bytes())
    entry = raw.index(b"PK\x01\x02")  # the first central directory entry: x_train
    raw[entry + 24: entry + 28] = struct.pack("<I", 0xF000_0000)  # its uncompressed size
    path.write_bytes(bytes(raw))


def npz_objects(folder):
    arrays = good_arrays()
    arrays["y_train"] = np.array([{"label": 1}] * 300, dtype=object)
    npz(folder, **arrays)


def run_copy(which: str, change=None, name="run"):
    """A copy of the completed or resumable run, changed by `change(copy)`."""
    def copy(tmp, completed, resumable):
        folder = shutil.copytree(completed if which == "completed" else resumable, tmp / name)
        if change:
            change(folder)
        return folder
    return copy


def on_run(command: str, which: str, change=None, *extra):
    def make(tmp, data, completed, resumable):
        folder = run_copy(which, change)(tmp, completed, resumable)
        args = ["train", "--resume", folder] if command == "resume" else [command, folder]
        if command in ("resume", "evaluate", "ensemble"):
            args += ["--data-dir", data]
        return [*args, *[e(tmp) if callable(e) else e for e in extra]], folder
    return make


def write(name: str, content: bytes | str):
    def change(folder):
        target = next(folder.rglob(name)) if "*" in name else folder / name
        target.write_bytes(content if isinstance(content, bytes) else content.encode())
    return change


def edit_json(name: str, **values):
    def change(folder):
        data = json.loads((folder / name).read_text())
        data.update(values)
        (folder / name).write_text(json.dumps(data))
    return change


def remove(name: str):
    def change(folder):
        target = next(folder.rglob(name)) if "*" in name else folder / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    return change


def truncate(name: str, keep: int = 40):
    def change(folder):
        target = next(folder.rglob(name))
        target.write_bytes(target.read_bytes()[:keep])
    return change


def flip_byte(name: str, at: int = -20):
    def change(folder):
        target = next(folder.rglob(name))
        raw = bytearray(target.read_bytes())
        raw[at] ^= 0xFF
        target.write_bytes(bytes(raw))
    return change


def resume_other_data(tmp, data, completed, resumable):
    folder = run_copy("resumable")(tmp, completed, resumable)
    other = write_idx_dir(tmp / "other", n_train=310, n_test=100)
    return ["train", "--resume", folder, "--data-dir", other], folder


SPACE = {"params": {"training.learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}}}


def sweep_with(space, *extra):
    """`mnist sweep` on the MLP config with this space (None: a space file that does not exist)."""
    def make(tmp, data, completed, resumable):
        path = tmp / "space.yaml"
        if space is not None:
            path.write_text(json.dumps(space))  # JSON is YAML
        return ["sweep", "--config", MLP, "--space", path, "--data-dir", data, "--output-dir", tmp / "out",
                "--name", "s", *extra], None
    return make


def existing_sweep(extra, damage=False):
    """A sweep folder made by the same command without `extra`, which has run a trial (a sweep that has run
    none takes a corrected command); the command with `extra` must be refused."""
    def make(tmp, data, completed, resumable):
        from mnist_pipeline.sweep import make_sweep
        from mnist_pipeline.sweep.setup import record_sweep

        (tmp / "space.yaml").write_text(json.dumps(SPACE))
        sweep = make_sweep(MLP, tmp / "space.yaml", 3, None, "s", None, True, (), str(data), None, tmp / "out")
        record_sweep(sweep)
        (sweep.folder / "runs" / "20990101T000000Z-trial-0000").mkdir(parents=True)
        if damage:
            (sweep.folder / "sweep.json").write_text("{not json")
        args = ["sweep", "--config", MLP, "--space", tmp / "space.yaml", "--trials", "3", "--data-dir", data,
                "--output-dir", tmp / "out", "--name", "s", *extra]
        return args, sweep.folder
    return make


def taken_file(tmp: Path) -> Path:
    """An --output that already holds something: an export must never replace it."""
    (tmp / "taken.onnx").write_bytes(b"an earlier export")
    return tmp / "taken.onnx"


def predict(*files):
    """`mnist predict` on the completed run with files written by `files` (name, bytes or a writer)."""
    def make(tmp, data, completed, resumable):
        paths = []
        for name, content in files:
            path = tmp / name
            if callable(content):
                content(path)
            elif content is not None:
                path.write_bytes(content)
            paths.append(path)
        return ["predict", completed, *paths], None
    return make


def png_bomb(path: Path) -> None:
    """A PNG whose header says 100,000 x 100,000 pixels: decoding it would need 10 GB."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    raw = bytearray(buffer.getvalue())
    raw[16:24] = struct.pack(">II", 100_000, 100_000)  # IHDR's width and height, then its CRC
    raw[29:33] = struct.pack(">I", zlib.crc32(bytes(raw[12:29])))
    path.write_bytes(bytes(raw))


def png_truncated(path: Path) -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(buffer, "PNG")
    path.write_bytes(buffer.getvalue()[:200])


def npy_bytes(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def npz_bytes() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, a=np.zeros((28, 28)))
    return buffer.getvalue()


def npy_lying_header() -> bytes:
    """An .npy whose header promises 50 GB."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                  "shape": (100_000_000, 28, 28)})
    return header.getvalue() + bytes(64)


def ensemble_with(change):
    def make(tmp, data, completed, resumable):
        good = run_copy("completed", name="good")(tmp, completed, resumable)
        bad = run_copy("completed", change, name="bad")(tmp, completed, resumable)
        return ["ensemble", good, bad, "--data-dir", data], bad
    return make


def report_on(change):
    return on_run("report", "completed", change)


def not_a_run(command: str):
    def make(tmp, data, completed, resumable):
        folder = tmp / "notes"
        folder.mkdir()
        (folder / "metrics.json").write_text('{"mine": true}')
        (folder / "report.html").write_text("<p>my own page</p>")
        args = ["train", "--resume", folder] if command == "resume" else [command, folder]
        return args, folder
    return make


BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(c + 1)}: &{chr(c + 1)} [{', '.join(['*' + chr(c)] * 10)}]\n" for c in range(ord("a"), ord("i"))
) + "training: {epochs: 1}\nmodel: {name: mlp, params: {units: *i}}\n"

CATALOGUE = [
    # -- configs and flags (exit 2, no TensorFlow) --
    ("yaml-billion-laughs", train_yaml(BILLION_LAUGHS), 2, ["alias bomb"]),
    ("yaml-deep-nesting", train_yaml("training: " + "[" * 50_000 + "]" * 50_000 + "\n"), 2, ["nested more than"]),
    ("yaml-huge-file", train_yaml("# padding\n" * 40_000), 2, ["larger than 256 KiB"]),
    ("yaml-huge-integer", train_yaml("training: {epochs: " + "9" * 6000 + "}\n"), 2, ["cannot be read"]),
    ("yaml-long-value-quoted-short", train_yaml("output: {name: " + "x" * 100_000 + "}\n"), 2,
     ["output.name", "100,002 characters"]),
    ("yaml-long-unknown-key", train_yaml("training: {" + "k" * 1000 + ": 1}\n"), 2, ["unknown key", "characters"]),
    ("yaml-not-utf8", train_yaml(b"training:\n  epochs: \xff\xfe\n"), 2, ["UTF-8"]),
    ("config-base-missing", train_yaml("base: nope.yaml\n"), 2, ["base 'nope.yaml'", "does not exist"]),
    ("config-base-itself", train_yaml("base: c.yaml\n"), 2, ["leads back to c.yaml"]),
    ("config-base-device", train_yaml("base: /dev/zero\n"), 2, ["base '/dev/zero'", "not a regular file"]),
    ("config-base-folder", train_yaml("base: .\n"), 2, ["is a folder"]),
    ("config-base-not-a-config", train_yaml("base: /etc/hostname\n"), 2, ["must be a mapping"]),
    ("config-base-list", train_yaml("base: [a.yaml, b.yaml]\n"), 2, ["base must name another config file"]),
    ("yaml-python-tag", train_yaml("training: !!python/object/apply:os.system ['true']\n"), 2, ["tag not allowed"]),
    ("yaml-recursive-alias", train_yaml("model: &m {name: mlp, params: *m}\n"), 2, []),
    ("config-is-a-folder", lambda tmp, *_: (["train", "--config", tmp], None), 2, ["is a directory"]),
    ("config-is-a-device", lambda tmp, *_: (["train", "--config", "/dev/zero"], None), 2, ["not a YAML file"]),
    ("set-huge-value", train("--set", "training.epochs=" + "9" * 50_000), 2, ["characters"]),
    ("set-long-key", train("--set", "training." + "e" * 20_000 + "=1"), 2, ["unknown key"]),
    ("lr-inf", train("--set", "training.learning_rate=.inf"), 2, ["learning_rate", "finite"]),
    ("lr-nan", train("--set", "training.learning_rate=.nan"), 2, ["learning_rate", "finite"]),
    ("l2-inf", train("--set", "model.params.l2=1e999"), 2, ["model.params.l2", "finite"]),
    ("min-delta-inf", train("--set", "training.early_stopping.min_delta=.inf"), 2, ["min_delta"]),
    ("units-too-wide", train("--set", "model.params.units=10000000"), 2, ["model.params.units", "16384"]),
    ("deep-mlp-memory", train("--set", "model.name=deep_mlp", "--set", "model.params.units=[16384,16384,16384,16384]",
                              "--set", "training.batch_size=65536"), 2, ["GiB to train", "16 GiB allowed"]),
    ("cnn-memory", train("--set", "model.params.filters=[2048,2048]", "--set", "training.batch_size=8192", config=CNN),
     2, ["GiB to train"]),
    ("epochs-too-many", train("--epochs", "1000000"), 2, ["training.epochs"]),
    ("data-dir-long", train("--data-dir", "/nowhere/" + "d" * 3000), 2, ["characters", "does not exist"]),
    ("mixed-precision-on-cpu", train("--set", "training.mixed_precision=true", *TINY), 2, ["needs a GPU"]),
    ("float16-precision-on-cpu", train("--set", "training.precision=mixed_float16", *TINY), 2,
     ["training.precision = mixed_float16 needs a GPU", "training.precision: auto on a CPU"]),
    ("precision-contradiction", train("--set", "training.precision=mixed_bfloat16", "--set",
                                      "training.mixed_precision=true", *TINY), 2, ["contradicts"]),
    # -- tf.distribute settings and flags (refused before any folder exists) --
    ("distribute-devices-without-mirrored", train("--set", "training.distribute.devices=[CPU:0,CPU:1]"), 2,
     ["training.distribute", "mirrored only"]),
    ("distribute-uneven-batch", train("--set", "training.distribute.strategy=mirrored", "--set",
                                      "training.distribute.devices=[CPU:0,CPU:1,CPU:2]"), 2,
     ["does not split evenly over 3 devices"]),
    ("distribute-device-name", train("--set", "training.distribute.strategy=mirrored", "--set",
                                     "training.distribute.devices=[cpu0]"), 2, ["training.distribute.devices"]),
    ("distribute-mirrored-without-gpu", train("--set", "training.distribute.strategy=mirrored", *TINY), 1,
     ["sees no GPU", "CPU:0,CPU:1"]),
    ("distribute-multi-worker-alone", train("--set", "training.distribute.strategy=multi_worker"), 2,
     ["needs the list of workers", "--workers"]),
    ("workers-not-addresses", train("--workers", "node1;rm -rf /", "--worker-index", "0"), 2, ["host:port"]),
    ("workers-index-outside", train("--workers", "a:1,b:2", "--worker-index", "2"), 2, ["0 to 1"]),
    ("worker-index-alone", train("--worker-index", "1"), 2, ["needs --workers"]),
    # -- TensorBoard settings --
    ("tensorboard-negative-every", train("--set", "output.tensorboard.loss_every_steps=-1"), 2,
     ["output.tensorboard.loss_every_steps", "must be at least 0"]),
    ("tensorboard-unknown-key", train("--set", "output.tensorboard.histogram_freq=1"), 2,
     ["unknown key", "histograms_every_epochs"]),
    # -- data files (exit 1, refused before any folder exists) --
    ("idx-gz-header-bomb", bad_data(lambda d: gz(d / "train-images-idx3-ubyte.gz",
                                                 idx_header(2051, 50_000_000, 28, 28) + bytes(100))), 1,
     ["train-images-idx3-ubyte.gz", "MiB", "is it the right file"]),
    ("idx-gz-trailing-bomb", bad_data(gz_bomb_trailing), 1, ["train-labels-idx1-ubyte.gz", "after the data"]),
    ("idx-wrong-image-size", bad_data(lambda d: write_idx(d / "train-images-idx3-ubyte.gz",
                                                          np.zeros((300, 32, 32), np.uint8))), 1, ["(300, 32, 32)"]),
    ("idx-is-a-folder", bad_data(lambda d: ((d / "t10k-labels-idx1-ubyte.gz").unlink(),
                                            (d / "t10k-labels-idx1-ubyte.gz").mkdir())), 1, ["t10k-labels"]),
    ("idx-empty-file", bad_data(lambda d: (d / "train-labels-idx1-ubyte.gz").write_bytes(b"")), 1,
     ["train-labels-idx1-ubyte.gz"]),
    ("npz-truncated", bad_data(npz_truncated), 1, ["mnist.npz", "damaged or truncated"]),
    ("npz-bad-checksum", bad_data(npz_bad_crc), 1, ["mnist.npz"]),
    ("npz-bomb", bad_data(npz_bomb), 1, ["mnist.npz[x_train]", "promises 5,981 MiB"]),
    ("npz-declared-bomb", bad_data(npz_declared_bomb), 1, ["mnist.npz", "MiB uncompressed"]),
    ("npz-objects", bad_data(npz_objects), 1, ["mnist.npz[y_train]", "Python objects"]),
    ("npz-nan-images", bad_data(lambda d: npz(d, **{**good_arrays(), "x_test": np.full((100, 28, 28), np.nan)})), 1,
     ["x_test", "whole numbers"]),
    # -- resume (refusals exit 2 and change nothing; damaged files exit 1) --
    ("resume-not-a-run", not_a_run("resume"), 2, ["not a run folder"]),
    ("resume-completed", on_run("resume", "completed"), 2, ["already completed"]),
    ("resume-config-edited", on_run("resume", "resumable", lambda f: (f / "config.yaml").write_text(
        (f / "config.yaml").read_text().replace("epochs: 3", "epochs: 4"))), 2, ["config.yaml was changed"]),
    ("continue-config-edited", on_run("resume", "completed", lambda f: (f / "config.yaml").write_text(
        (f / "config.yaml").read_text().replace("batch_size: 32", "batch_size: 16")), "--epochs", "9"), 2,
     ["config.yaml was changed"]),
    ("continue-fewer-epochs", on_run("resume", "completed", None, "--epochs", "1"), 2, ["already; to continue it"]),
    ("resume-other-data", resume_other_data, 2, ["not the data the run started with"]),
    ("resume-no-checkpoint", on_run("resume", "resumable", remove("checkpoints")), 2,
     ["no checkpoint", "mnist train --config"]),
    ("resume-extra-flags", on_run("resume", "resumable", None, "--seed", "5"), 2, ["--resume goes on", "drop --seed"]),
    ("resume-checkpoint-truncated", on_run("resume", "resumable", truncate("training.data-*")), 1,
     ["training.data-00000-of-00001", "damaged"]),
    ("resume-checkpoint-bitflip", on_run("resume", "resumable", flip_byte("training.data-*")), 1,
     ["training.data-00000-of-00001"]),
    ("resume-state-garbage", on_run("resume", "resumable", write("epoch-*/state.json", "{nope")), 1,
     ["state.json", "not valid JSON"]),
    ("resume-state-missing", on_run("resume", "resumable", remove("epoch-*/state.json")), 1,
     ["state.json", "file not found"]),
    ("resume-best-weights-garbage", on_run("resume", "resumable", write("epoch-*/best_weights.npz", b"PK\x03\x04")),
     1, ["best_weights.npz"]),
    ("resume-fingerprint-missing", on_run("resume", "resumable", remove("fingerprint.json")), 1,
     ["fingerprint.json"]),
    ("resume-status-garbage", on_run("resume", "resumable", write("status.json", "\x00\x01")), 1, ["status.json"]),
    ("resume-status-unknown", on_run("resume", "resumable", edit_json("status.json", status="paused")), 1,
     ["status.json", "'status'"]),
    # -- evaluate --
    ("evaluate-not-a-run", not_a_run("evaluate"), 2, ["not a run folder"]),
    ("evaluate-unfinished", on_run("evaluate", "resumable"), 1, ["the run is running", "pick a completed run"]),
    ("evaluate-metrics-garbage", on_run("evaluate", "completed", write("metrics.json", "[1, 2")), 1,
     ["metrics.json", "not valid JSON"]),
    ("evaluate-metrics-wrong-type", on_run("evaluate", "completed", edit_json("metrics.json", test_accuracy="high")),
     1, ["metrics.json", "'test_accuracy'"]),
    ("evaluate-metrics-deep-json", on_run("evaluate", "completed", write("metrics.json", "[" * 200_000)), 1,
     ["metrics.json"]),
    ("evaluate-normalization-zero-std", on_run("evaluate", "completed",
                                               edit_json("normalization.json", std=0)), 1, ["normalization.json"]),
    ("evaluate-normalization-missing", on_run("evaluate", "completed", remove("normalization.json")), 1,
     ["normalization.json", "file not found"]),
    ("evaluate-model-truncated", on_run("evaluate", "completed", truncate("model.keras", 300)), 1,
     ["model.keras", "not a whole one): it was damaged or replaced"]),
    ("train-data-dir-empty", lambda tmp, *_: (["train", "--data-dir", "", "--output-dir", tmp / "out"], None), 2,
     ["data.data_dir = ''", "an empty folder name", "leave data_dir out"]),
    ("evaluate-data-dir-empty", on_run("evaluate", "completed", None, "--data-dir", ""), 2,
     ["--data-dir '' is empty", "leave the option out"]),
    ("evaluate-model-garbage", on_run("evaluate", "completed", write("model.keras", "not a model\n")), 1,
     ["model.keras", "not a readable Keras model file", "damaged or replaced"]),
    ("predict-model-garbage", lambda tmp, data, completed, resumable: (
        (shutil.copytree(completed, tmp / "run") / "model.keras").write_text("{}") and
        ["predict", tmp / "run", tmp / "run" / "samples.png"], tmp / "run"), 1, ["model.keras", "damaged or replaced"]),
    ("evaluate-model-missing", on_run("evaluate", "completed", remove("model.keras")), 1, ["model.keras", "missing"]),
    ("evaluate-config-garbage", on_run("evaluate", "completed", write("config.yaml", "model: [")), 2,
     ["config.yaml", "invalid YAML"]),
    ("evaluate-status-missing", on_run("evaluate", "completed", remove("status.json")), 2, ["not a run folder"]),
    # -- export --
    ("export-unfinished", on_run("export", "resumable", None, "--format", "onnx"), 1,
     ["the run is running", "pick a completed run"]),
    ("export-model-truncated", on_run("export", "completed", truncate("model.keras", 300), "--format", "tflite"), 1,
     ["model.keras"]),
    ("export-output-taken", on_run("export", "completed", None, "--format", "onnx", "--output", taken_file), 2,
     ["already exists", "another --output"]),
    ("export-output-folder-missing", on_run("export", "completed", None, "--format", "onnx", "--output",
                                            lambda tmp: tmp / "no" / "model.onnx"), 2, ["no such folder"]),
    ("export-output-two-formats", on_run("export", "completed", None, "--format", "onnx", "--format", "tflite",
                                         "--output", lambda tmp: tmp / "m"), 2, ["one --format"]),
    ("export-unknown-format", on_run("export", "completed", None, "--format", "pt"), 2, ["'pt' is not one of"]),
    ("export-not-a-run", lambda tmp, *_: (["export", tmp, "--format", "savedmodel"], tmp), 2, ["not a run folder"]),
    # -- sweep (refused before any trial, or any folder, is made) --
    ("sweep-without-space", lambda tmp, *_: (["sweep", "--config", MLP], None), 2, ["needs --space"]),
    ("sweep-space-missing", sweep_with(None), 2, ["space file", "not found"]),
    ("sweep-space-unknown-key", sweep_with({"params": {"model.params.unit": {"choices": [64]}}}), 2,
     ["unknown key 'model.params.unit'", "did you mean 'units'"]),
    ("sweep-space-refused-value", sweep_with({"params": {"training.batch_size": {"low": 0, "high": 64}}}), 2,
     ["training.batch_size=0", "must be at least 1"]),
    ("sweep-space-inverted-range", sweep_with({"params": {"training.epochs": {"low": 9, "high": 2}}}), 2,
     ["low (9) must be less than high (2)"]),
    ("sweep-space-is-a-list", sweep_with([1, 2]), 2, ["must be a mapping"]),
    ("sweep-seeds-not-numbers", sweep_with(SPACE, "--seeds", "a,b"), 2, ["--seeds expects integers"]),
    ("sweep-seeds-twice", sweep_with(SPACE, "--seeds", "1,1"), 2, ["different seeds"]),
    ("sweep-seed-swept-and-seeded", sweep_with({"params": {"training.seed": {"choices": [1, 2]}}}, "--seeds", "0,1"),
     2, ["params.training.seed is set by the sweep itself"]),
    ("sweep-name-path", sweep_with(SPACE, "--name", "../escape"), 2, ["--name", "letters, digits"]),
    ("sweep-other-config-same-name", existing_sweep(["--set", "training.epochs=7"]), 2,
     ["was started with another base", "another --name"]),
    ("sweep-file-damaged", existing_sweep([], damage=True), 1, ["sweep.json: not valid JSON", "another --name"]),
    ("sweep-storage-unknown-scheme", sweep_with(SPACE, "--storage", "nosuchdb://nowhere/x"), 1,
     ["--storage nosuchdb://nowhere/x", "cannot open the study"]),
    ("sweep-report-no-such-sweep", lambda tmp, *_: (["sweep", "report", "nope", "--output-dir", tmp], None), 2,
     ["does not exist"]),
    ("sweep-report-not-a-sweep", lambda tmp, *_: ((tmp / "sweeps" / "nope").mkdir(parents=True) or
                                                  ["sweep", "report", "nope", "--output-dir", tmp], None), 2,
     ["not a sweep folder"]),
    # -- predict: every file on its own; here each case has one bad file --
    ("predict-png-bomb", predict(("bomb.png", png_bomb)), 1, ["bomb.png", "megapixels"]),
    ("predict-png-truncated", predict(("cut.png", png_truncated)), 1, ["cut.png", "not a readable image"]),
    ("predict-npz-named-npy", predict(("pack.npy", npz_bytes())), 1, ["pack.npy", "an .npz archive named .npy"]),
    ("predict-npy-nan", predict(("nan.npy", npy_bytes(np.full((28, 28), np.nan)))), 1, ["nan.npy", "NaN"]),
    ("predict-npy-inf", predict(("inf.npy", npy_bytes(np.full((28, 28), np.inf)))), 1, ["inf.npy", "infinite"]),
    ("predict-npy-lying-header", predict(("big.npy", npy_lying_header())), 1, ["big.npy"]),
    ("predict-npy-objects", predict(("obj.npy", npy_bytes(np.array([None, 1], dtype=object)))), 1,
     ["obj.npy", "Python objects"]),
    ("predict-empty-folder", predict(("adir", lambda p: p.mkdir())), 1, ["adir", "no images in this folder"]),
    ("predict-missing", predict(("nothing.png", None)), 1, ["nothing.png", "file not found"]),
    ("predict-text-file", predict(("notes.txt", b"hello")), 1, ["notes.txt", "unsupported file type"]),
    ("predict-unfinished-run", on_run("predict", "resumable", None, lambda tmp: ROOT / "README.md"), 1,
     ["the run is running"]),
    # -- ensemble --
    ("ensemble-one-run", lambda tmp, data, completed, resumable: (["ensemble", completed], None), 2,
     ["at least two"]),
    ("ensemble-member-damaged", ensemble_with(write("normalization.json", "null")), 1,
     ["normalization.json", "expected a JSON object"]),
    ("ensemble-other-dataset", ensemble_with(lambda f: (f / "config.yaml").write_text(
        (f / "config.yaml").read_text().replace("dataset: mnist", "dataset: fashion_mnist"))), 2,
     ["differs"]),
    # -- report: refuses before it draws or overwrites anything --
    ("report-not-a-run", not_a_run("report"), 2, ["not a run folder"]),
    ("report-metrics-garbage", report_on(write("metrics.json", "{\"test_accuracy\": ")), 1, ["metrics.json"]),
    ("report-history-garbage", report_on(write("history.csv", "epoch,loss\n1,x\n")), 1, ["history.csv", "header"]),
    ("report-history-bad-row", report_on(lambda f: (f / "history.csv").write_text(
        (f / "history.csv").read_text() + "7,1,2\n")), 1, ["history.csv", "row"]),
    ("report-data-truncated", report_on(truncate("report_data.npz", 100)), 1, ["report_data.npz"]),
    ("report-data-wrong-shape", report_on(lambda f: np.savez(f / "report_data.npz", test_labels=np.zeros(3))), 1,
     ["report_data.npz", "missing the array"]),
    ("report-summary-garbage", report_on(write("model_summary.json", '{"layers": [1, 2]}')), 1,
     ["model_summary.json"]),
    ("report-confusion-garbage", report_on(edit_json("metrics.json", confusion_matrix=[[1, 2], [3]])), 1,
     ["confusion_matrix"]),
    # -- compare, config, diagnose --
    ("compare-missing-folder", lambda tmp, *_: (["compare", tmp / "nope"], None), 2, ["no such run folder"]),
    ("compare-all-and-folders", lambda tmp, *_: (["compare", "--all", tmp], None), 2, ["RUN_DIR... or --all"]),
    ("compare-nothing-there", lambda tmp, *_: (["compare", "--output-dir", tmp / "empty"], None), 2,
     ["no runs to compare: none under", "train one"]),
    ("set-key-of-a-section-at-top", lambda tmp, *_: (["train", "--set", "epochs=3"], None), 2,
     ["unknown key 'epochs'", "did you mean 'training.epochs'"]),
    ("set-list-of-integers-wrong", lambda tmp, *_: (["train", "--config", MLP, "--set", "model.name=cnn", "--set",
                                                     "model.params.filters=abc"], None), 2,
     ["model.params.filters = 'abc'", "expected a list of integers"]),
    ("config-validate-bomb", lambda tmp, *_: ((tmp / "b.yaml").write_text(BILLION_LAUGHS) and
                                              ["config", "validate", tmp / "b.yaml"], None), 2, ["alias bomb"]),
    ("config-show-set-bomb", lambda tmp, *_: (["config", "show", MLP, "--set", "model.params.units=" +
                                               "[" * 10_000 + "]" * 10_000], None), 2, ["nested more than"]),
    ("diagnose-bad-compare", lambda tmp, *_: (["diagnose", "gradients", "--config", MLP, "--compare", "oops"], None),
     2, ["--compare expects"]),
]


@pytest.mark.slow
@pytest.mark.parametrize("make, code, words", [c[1:] for c in CATALOGUE], ids=[c[0] for c in CATALOGUE])
def test_catalogue(make, code, words, runs, tmp_path):
    data, completed, resumable = runs
    reference = snapshot(completed)
    args, target = make(tmp_path, data, completed, resumable)
    before = snapshot(target) if target and target.is_dir() else None
    result = mnist(*args)
    lines = result.stderr.splitlines()
    assert result.returncode == code, result.stderr
    assert len(lines) == 1, result.stderr  # one line, nothing else
    assert lines[0].startswith("error: "), result.stderr
    assert len(lines[0]) < 700, lines[0]  # hostile values are quoted short
    for word in words:
        assert word in lines[0], lines[0]
    assert "Traceback" not in result.stdout
    if before is not None:
        assert snapshot(target) == before  # refused or failed: the folder it was pointed at is as it was
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("status.json"))  # no half run
    assert snapshot(completed) == reference


def test_catalogue_is_large_enough():
    assert len(CATALOGUE) >= 60


def test_a_second_resume_of_a_running_run_is_refused_before_tensorflow(runs, tmp_path):
    _, completed, resumable = runs
    folder = shutil.copytree(resumable, tmp_path / "run")
    before = snapshot(folder)
    lock = RunLock(folder)
    assert lock.acquire()  # as a training process holds it
    probe = ("import sys; from click.testing import CliRunner; from mnist_pipeline.cli import cli; "
             f"r = CliRunner().invoke(cli, ['train', '--resume', {str(folder)!r}]); "
             "print(r.exit_code, 'tensorflow' in sys.modules); print(r.stderr, end='')")
    try:
        result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    finally:
        lock.release()
    status, message = result.stdout.split("\n", 1)
    assert status == "2 False", result.stdout + result.stderr  # refused, and TensorFlow never loaded
    assert message.startswith("error: --resume")
    assert "another process" in message
    assert len(message.splitlines()) == 1
    assert snapshot(folder) == before
