"""`mnist export`: each format is loaded by its own runtime in a fresh process that never imports mnist_pipeline,
fed raw pixels, and must give the probabilities the run's test recorded (what `mnist evaluate` recomputes)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import recorded
from conftest import run_mnist as mnist
from mnist_pipeline.data.idx import read_idx
from mnist_pipeline.evaluation import class_probabilities
from mnist_pipeline.inference import load_run

pytestmark = pytest.mark.slow  # each export format converted and run in its own runtime

FORMATS = {"savedmodel": "savedmodel", "tflite": "model.tflite", "onnx": "model.onnx"}
TOLERANCE = 1e-5  # float32 graphs of the same operations; measured up to 1.3e-6 (docs/benchmarks.md)

# Each client reads raw pixels from images.npy and writes probabilities.npy for the whole batch, for the first
# three images alone (any batch size) and for those three as 0-1 floats, reads the file's metadata, and proves it
# ran without our package. Input and output are asked for by name: `pixels` -> `probabilities`.
CLIENTS = {
    "savedmodel": """
        import tensorflow as tf
        model = tf.saved_model.load(path)
        serving = model.signatures["serving_default"]  # what TF Serving calls
        whole = serving(pixels=tf.constant(images))["probabilities"].numpy()
        first = model.serve(images[:3])["probabilities"].numpy()
        unit = serving(pixels=tf.constant(images[:3] / 255))["probabilities"].numpy()
        metadata = model.signatures["metadata"]()["mnist_pipeline"].numpy().decode()
    """,
    "tflite": """
        from ai_edge_litert import schema_py_generated as schema
        from ai_edge_litert.interpreter import Interpreter
        runner = Interpreter(model_path=path).get_signature_runner()
        whole, first, unit = (runner(pixels=batch)["probabilities"]
                              for batch in (images, images[:3], images[:3] / 255))
        flat = schema.Model.GetRootAs(open(path, "rb").read())
        (index,) = [i for i in range(flat.MetadataLength()) if flat.Metadata(i).Name() == b"mnist_pipeline"]
        metadata = flat.Buffers(flat.Metadata(index).Buffer()).DataAsNumpy().tobytes().decode()
    """,
    "onnx": """
        import onnxruntime
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        assert [(i.name, i.shape) for i in session.get_inputs()] == [("pixels", ["batch", 28, 28])]
        whole, first, unit = (session.run(["probabilities"], {"pixels": batch})[0]
                              for batch in (images, images[:3], images[:3] / 255))
        metadata = session.get_modelmeta().custom_metadata_map["mnist_pipeline"]
    """,
}


def run_client(fmt: str, path: Path, images: np.ndarray, tmp_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(whole, first three) probabilities; also checks the 0-1 input and the metadata every format carries."""
    np.save(tmp_path / "images.npy", images.astype(np.float32))  # raw pixel values 0-255
    script = "\n".join([
        "import json, sys", "import numpy as np", f"path = {str(path)!r}",
        f"images = np.load({str(tmp_path / 'images.npy')!r})",
        textwrap.dedent(CLIENTS[fmt]),
        f"np.savez({str(tmp_path / 'out.npz')!r}, whole=whole, first=first, unit=unit)",
        f"open({str(tmp_path / 'metadata.json')!r}, 'w').write(metadata)",
        "assert not any(m.startswith('mnist_pipeline') for m in sys.modules), 'imported mnist_pipeline'",
    ])
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = np.load(tmp_path / "out.npz")
    assert np.abs(out["unit"] - out["first"]).max() < 1e-4  # 0-1 floats are scaled, not read as near-black
    metadata = json.loads((tmp_path / "metadata.json").read_text())
    assert metadata["input"] == "pixels"
    assert metadata["output"] == "probabilities"
    assert metadata["input_shape"] == ["batch", 28, 28]
    assert "0-255" in metadata["input_range"]
    assert len(metadata["class_names"]) == 10
    assert metadata["dataset"] in ("mnist", "fashion_mnist")
    return out["whole"], out["first"]


def test_without_temperature_the_export_gives_the_raw_probabilities_and_says_so(trained_runs, rendered_dir,
                                                                                 tmp_path):
    run_dir = trained_runs["mlp"]
    temperature = json.loads((run_dir / "metrics.json").read_text())["calibration"]["temperature"]
    assert abs(temperature - 1) > 0.01  # else this test could not tell the two apart
    images = read_idx(rendered_dir / "t10k-images-idx3-ubyte.gz", 3)
    for flag, calibrated in (("--temperature", True), ("--no-temperature", False)):
        target = tmp_path / f"{flag}.onnx"
        done = mnist("export", run_dir, "--format", "onnx", "--output", target, flag)
        assert done.returncode == 0, done.stderr
        whole, _ = run_client("onnx", target, images, tmp_path)
        assert np.abs(whole - recorded(run_dir, calibrated)).max() < TOLERANCE
        import onnxruntime

        metadata = json.loads(onnxruntime.InferenceSession(str(target)).get_modelmeta().custom_metadata_map[
            "mnist_pipeline"])
        assert metadata["temperature"] == (temperature if calibrated else 1.0)


@pytest.fixture(scope="module")
def flipped_run(rendered_dir, tmp_path_factory):
    """An MLP run with standardized inputs and test-time flips: both must be inside the export."""
    out = tmp_path_factory.mktemp("flipped")
    done = mnist("train", "--config", Path(__file__).parent.parent / "configs/mlp.yaml", "--data-dir", rendered_dir,
                 "--output-dir", out, "--epochs", "2", "--device", "cpu", "--set", "data.normalization=standardize",
                 "--set", "data.augmentation.test_time_flip=true", "--export", "onnx", "--export", "tflite")
    assert done.returncode == 0, done.stderr
    (run_dir,) = (out / "runs").iterdir()
    return run_dir, done.stdout


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_each_format_gives_the_recorded_probabilities_in_its_own_runtime(fmt, trained_runs, rendered_dir, tmp_path):
    run_dir = trained_runs["smoke"]  # a CNN with batch norm and dropout
    target = tmp_path / FORMATS[fmt]
    done = mnist("export", run_dir, "--format", fmt, "--output", target)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr
    assert done.stdout == f"{fmt}: {target}\n"
    images = read_idx(rendered_dir / "t10k-images-idx3-ubyte.gz", 3)
    labels = read_idx(rendered_dir / "t10k-labels-idx1-ubyte.gz", 1)
    whole, first = run_client(fmt, target, images, tmp_path)
    expected = recorded(run_dir)
    assert whole.shape == (len(images), 10)
    assert first.shape == (3, 10)
    assert np.abs(whole - expected).max() < TOLERANCE
    assert np.array_equal(whole.argmax(axis=1), expected.argmax(axis=1))
    assert np.abs(first - whole[:3]).max() < TOLERANCE
    accuracy = json.loads((run_dir / "metrics.json").read_text())["test_accuracy"]
    assert np.mean(whole.argmax(axis=1) == labels) == pytest.approx(accuracy)


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_normalization_and_test_time_flips_are_inside_the_export(fmt, flipped_run, rendered_dir, tmp_path):
    run_dir, stdout = flipped_run
    path = run_dir / "export" / FORMATS[fmt]  # written by `mnist train --export`, in the run folder
    assert f"{fmt}: {path}" in stdout
    assert path.is_file()
    images = read_idx(rendered_dir / "t10k-images-idx3-ubyte.gz", 3)
    whole, _ = run_client(fmt, path, images, tmp_path)
    assert np.abs(whole - recorded(run_dir)).max() < TOLERANCE
    # The same model without the flips, or without standardization, is far off: the check above would see it.
    run = load_run(run_dir)
    for x, flip in ((run.normalization.apply(images), False), (images[..., None] / np.float32(255), True)):
        assert np.abs(np.asarray(class_probabilities(run.model, x, flip)) - whole).max() > 100 * TOLERANCE


def test_a_second_export_to_the_same_place_is_refused_and_keeps_the_first(flipped_run):
    run_dir, _ = flipped_run
    path = run_dir / "export/model.onnx"
    before = path.read_bytes()
    done = mnist("export", run_dir, "--format", "onnx")
    assert done.returncode == 2
    assert done.stderr == f"error: {path} already exists; remove it or pass another --output\n"
    assert path.read_bytes() == before


def test_a_missing_converter_names_the_extra_before_training(rendered_dir, tmp_path):
    for args in (["export", tmp_path, "--format", "onnx"],
                 ["train", "--data-dir", rendered_dir, "--output-dir", tmp_path / "out", "--export", "onnx"]):
        done = mnist(*args, fault="without-module=tf2onnx")
        assert done.returncode == 2
        assert done.stderr == ("error: export to onnx needs tf2onnx, from the export extra: "
                               "pip install -e '.[export]'\n")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("fmt, name", [("tflite", "export-tflite"), ("onnx", "model.bin")])
def test_an_output_path_without_the_formats_suffix_is_taken(fmt, name, trained_runs, rendered_dir, tmp_path):
    done = mnist("export", trained_runs["smoke"], "--format", fmt, "--output", tmp_path / name)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no temporary file left beside it
    whole, _ = run_client(fmt, tmp_path / name, read_idx(rendered_dir / "t10k-images-idx3-ubyte.gz", 3), tmp_path)
    assert np.abs(whole - recorded(trained_runs["smoke"])).max() < TOLERANCE


def test_an_existing_folder_as_output_gets_the_file_inside_it(trained_runs, tmp_path):
    (tmp_path / "exports").mkdir()
    done = mnist("export", trained_runs["smoke"], "--format", "onnx", "--output", tmp_path / "exports")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"onnx: {tmp_path / 'exports' / 'model.onnx'}\n", done.stderr


def test_an_output_path_naming_another_format_is_refused(trained_runs, tmp_path):
    done = mnist("export", trained_runs["smoke"], "--format", "tflite", "--output", tmp_path / "model.onnx")
    assert done.returncode == 2
    assert not (tmp_path / "model.onnx").exists()
    assert done.stderr == (f"error: --output {tmp_path / 'model.onnx'}: its suffix names another format than "
                           f"tflite; end it with .tflite or pass --format onnx\n")


def test_a_missing_format_is_one_line_naming_the_choices(trained_runs):
    done = mnist("export", trained_runs["smoke"])
    assert done.returncode == 2
    assert done.stderr == ("error: Missing option '--format'. Choose from: savedmodel, tflite, onnx; "
                           "see `mnist export --help`\n")
