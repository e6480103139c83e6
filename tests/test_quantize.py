"""`mnist export --quantize int8`: each int8 file runs in its own runtime in a fresh process, answers as the float
export does on most images, carries what it was measured at, and is refused past its accuracy budget."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import numpy as np
import pytest
from serving import served

from conftest import run_mnist
from mnist_pipeline.data.idx import read_idx
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.quantize import Quantization, check_budget

pytestmark = pytest.mark.slow  # converters, calibration and runtimes

RUNTIMES = {
    "tflite": """
        from ai_edge_litert import schema_py_generated as schema
        from ai_edge_litert.interpreter import Interpreter
        def answers(path):
            runner = Interpreter(model_path=path).get_signature_runner()
            batches = [images[i:i + 100] for i in range(0, len(images), 100)]
            return np.concatenate([runner(pixels=batch)["probabilities"] for batch in batches])
        def metadata(path):
            flat = schema.Model.GetRootAs(open(path, "rb").read())
            (index,) = [i for i in range(flat.MetadataLength()) if flat.Metadata(i).Name() == b"mnist_pipeline"]
            return flat.Buffers(flat.Metadata(index).Buffer()).DataAsNumpy().tobytes().decode()
    """,
    "onnx": """
        import onnxruntime
        def answers(path):
            return onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"]).run(
                ["probabilities"], {"pixels": images})[0]
        def metadata(path):
            return onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"]).get_modelmeta(
                ).custom_metadata_map["mnist_pipeline"]
    """,
}


@pytest.fixture(scope="module")
def exported(trained_runs):
    """The small CNN's float and int8 exports in both formats: (run folder, what `mnist export` printed)."""
    run_dir = trained_runs["smoke"]
    # The float files, unless a server test of this worker exported one already (export never replaces one).
    missing = [arg for fmt in ("tflite", "onnx") if not (run_dir / f"export/model.{fmt}").exists()
               for arg in ("--format", fmt)]
    if missing:
        floats = run_mnist("export", run_dir, *missing)
        assert floats.returncode == 0, floats.stderr
    # Allowed past the default budget: a model this small may lose more, and its loss is what is checked here.
    int8 = run_mnist("export", run_dir, "--format", "tflite", "--format", "onnx", "--quantize", "int8",
                     "--allow-accuracy-drop")
    assert int8.returncode == 0, int8.stderr
    return run_dir, int8


def in_runtime(fmt: str, paths: list[Path], images: np.ndarray, tmp_path: Path) -> tuple[list, list]:
    """(probabilities, metadata) of each file, from its runtime in a process that never imports mnist_pipeline."""
    np.save(tmp_path / "images.npy", images.astype(np.float32))
    script = "\n".join([
        "import json, sys", "import numpy as np", f"images = np.load({str(tmp_path / 'images.npy')!r})",
        textwrap.dedent(RUNTIMES[fmt]),
        f"paths = {[str(p) for p in paths]!r}",
        f"np.save({str(tmp_path / 'out.npy')!r}, np.stack([answers(p) for p in paths]))",
        f"json.dump([json.loads(metadata(p)) for p in paths], open({str(tmp_path / 'meta.json')!r}, 'w'))",
        "assert not any(m.startswith('mnist_pipeline') for m in sys.modules)",
    ])
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return list(np.load(tmp_path / "out.npy")), json.loads((tmp_path / "meta.json").read_text())


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_the_int8_file_answers_like_the_float_one_and_records_its_scores(fmt, exported, rendered_dir, tmp_path):
    run_dir, printed = exported
    images = read_idx(rendered_dir / "t10k-images-idx3-ubyte.gz", 3)
    labels = read_idx(rendered_dir / "t10k-labels-idx1-ubyte.gz", 1)
    int8_path, float_path = run_dir / f"export/model.int8.{fmt}", run_dir / f"export/model.{fmt}"
    (int8, floats), (meta, float_meta) = in_runtime(fmt, [int8_path, float_path], images, tmp_path)
    recorded = meta["quantization"]
    assert "quantization" not in float_meta
    assert recorded["calibration_split"] == "train" and recorded["test_images"] == len(labels)
    # What the file says it scored is what its runtime scores on the run's test split.
    assert recorded["test_accuracy"] == pytest.approx(np.mean(int8.argmax(axis=1) == labels))
    assert recorded["float_test_accuracy"] == pytest.approx(np.mean(floats.argmax(axis=1) == labels))
    assert np.mean(int8.argmax(axis=1) == floats.argmax(axis=1)) >= 0.9  # the same answers, nearly always
    assert np.abs(int8.sum(axis=1) - 1).max() < 0.02  # still probabilities
    # Sizes of the models without their metadata (which holds them): the file is that and a little text.
    assert recorded["size_bytes"] < int8_path.stat().st_size < recorded["size_bytes"] + 4096
    assert recorded["size_bytes"] < recorded["float_size_bytes"] / 2
    assert "0-1" in meta["input_range"] and "only 0-255" in meta["input_range"]
    line = next(line for line in printed.stdout.splitlines() if line.startswith(f"{fmt} int8: test accuracy"))
    assert f"{recorded['test_accuracy']:.4f} (float {recorded['float_test_accuracy']:.4f}" in line
    assert printed.stdout.splitlines().count(f"{fmt} int8: {int8_path}") == 1


def scores(int8: float, floats: float, budget: float) -> Quantization:
    return Quantization("int8", 500, "train", 2000, int8, floats, 100, 400, budget)


def test_the_budget_in_points():
    assert check_budget(scores(0.990, 0.992, 1.0), allow_drop=False) is None
    assert check_budget(scores(0.991, 0.992, 0.1), allow_drop=False) is None  # 0.1 points exactly, not 0.1000...09
    assert check_budget(scores(0.995, 0.992, 0.0), allow_drop=False) is None  # a gain is no loss
    with pytest.raises(PipelineError) as refused:
        check_budget(scores(0.970, 0.992, 1.0), allow_drop=False)
    assert str(refused.value).startswith("the int8 export loses 2.20 points of test accuracy (0.9920 -> 0.9700), "
                                         "more than the 1 allowed; nothing was written")
    assert "--max-accuracy-drop" in str(refused.value) and "--allow-accuracy-drop" in str(refused.value)
    assert check_budget(scores(0.970, 0.992, 1.0), allow_drop=True).startswith("warning: the int8 export loses 2.20")


def test_past_its_budget_nothing_is_written(exported, tmp_path):
    run_dir, _ = exported
    script = ("import onnxruntime, sys; print(onnxruntime.InferenceSession(sys.argv[1]).get_modelmeta()"
              ".custom_metadata_map['mnist_pipeline'])")
    meta = json.loads(subprocess.run([sys.executable, "-c", script, str(run_dir / "export/model.int8.onnx")],
                                     capture_output=True, text=True, check=True).stdout)["quantization"]
    lost = round(100 * (meta["float_test_accuracy"] - meta["test_accuracy"]), 6)
    budget = max(lost - 0.5, 0) if lost > 0 else None  # calibration is seeded: the same file, the same loss
    target = tmp_path / "strict.onnx"
    done = run_mnist("export", run_dir, "--format", "onnx", "--quantize", "int8", "--output", target,
                     "--max-accuracy-drop", budget if budget is not None else 0)
    if budget is None:  # it lost nothing: even a budget of 0 keeps it
        assert done.returncode == 0, done.stderr
        assert target.is_file()
        return
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: the int8 export loses {lost:.2f} points")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing, not even a temporary


def test_refusals_are_one_line_and_keep_what_was_there(exported, tmp_path):
    run_dir, _ = exported
    before = (run_dir / "export/model.int8.onnx").read_bytes()
    cases = [
        (["--format", "savedmodel", "--quantize", "int8"], 2, "--quantize int8 is for --format tflite or onnx"),
        (["--format", "onnx", "--max-accuracy-drop", "2"], 2, "go with --quantize int8"),
        (["--format", "onnx", "--quantize", "int8", "--max-accuracy-drop", "-1"], 2, "from 0 to 100"),
        (["--format", "onnx", "--quantize", "int8"], 2, "model.int8.onnx already exists"),
        (["--format", "tflite", "--quantize", "int8", "--output", tmp_path / "m.tflite", "--data-dir",
          tmp_path / "nowhere"], 2, "nowhere"),
    ]
    for args, code, fragment in cases:
        done = run_mnist("export", run_dir, *args)
        assert done.returncode == code, done.stderr
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and fragment in errors[0], done.stderr
    assert (run_dir / "export/model.int8.onnx").read_bytes() == before
    assert not (tmp_path / "m.tflite").exists()


def test_the_server_serves_the_int8_export(exported, rendered_dir):
    run_dir, _ = exported
    images = read_idx(rendered_dir / "t10k-images-idx3-ubyte.gz", 3)[:50]
    with served(run_dir, "--model", run_dir / "export/model.int8.onnx") as (_, url):
        card = httpx.get(f"{url}/v1/model").json()
        int8 = httpx.post(f"{url}/v1/predict", json=images.tolist(), timeout=60).json()["results"]
    with served(run_dir) as (_, url):
        floats = httpx.post(f"{url}/v1/predict", json=images.tolist(), timeout=60).json()["results"]
    assert card["file"].endswith("model.int8.onnx") and card["quantization"]["scheme"].startswith("int8 static, QDQ")
    agree = np.mean([a["prediction"] == b["prediction"] for a, b in zip(int8, floats, strict=True)])
    assert agree >= 0.9
