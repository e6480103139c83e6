"""Shared fixtures: tiny, learnable, generated MNIST-shaped data written as IDX and npz in temp dirs."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mnist_pipeline import runtime
from mnist_pipeline.calibration import apply_temperature
from mnist_pipeline.data.idx import write_idx

runtime.prepare_environment()  # before any test imports TensorFlow: the kernels and settings users get
os.environ.pop("MNIST_DATA_DIR", None)  # tests choose their data explicitly


ROOT = Path(__file__).parent.parent
# The shipped configs that several modules train with, and every one of configs/*.yaml.
MLP = ROOT / "configs/mlp.yaml"
CNN = ROOT / "configs/cnn.yaml"
SHIPPED_CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
# Every run config that ships: configs/*.yaml and the study's (configs/sweeps/ holds search spaces, not runs).
RUN_CONFIGS = sorted([*(ROOT / "configs").glob("*.yaml"), *(ROOT / "configs").glob("study/**/*.yaml")])


def start_mnist(*args, fault: str | None = None, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`mnist ARGS` as a real process (stdout and stderr piped, as text); with `fault`, through tests/faults.py,
    which injects that fault at its exact moment; `env`: variables set on top of this process's."""
    launcher = [str(ROOT / "tests/faults.py"), fault, "--"] if fault else ["-m", "mnist_pipeline"]
    return subprocess.Popen([sys.executable, *launcher, *map(str, args)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})


def run_mnist(*args, fault: str | None = None, timeout: float = 300,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    process = start_mnist(*args, fault=fault, env=env)
    stdout, stderr = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def missing_system_tool(message: str):
    """A test that needs a system package (PostgreSQL, Chromium) this machine lacks: skipped on a developer's
    machine, a failure under CI (.ci/run installs them and sets MNIST_CI=1), so CI can never pass without it."""
    if os.environ.get("MNIST_CI") == "1":
        pytest.fail(f"{message} (required under CI)")
    pytest.skip(message)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its bytes: equal snapshots mean nothing was touched."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def history_without_seconds(run_dir: Path) -> list[str]:
    """history.csv's lines without the epoch's seconds: what a resumed run must reproduce exactly."""
    return [line.rsplit(",", 1)[0] for line in (run_dir / "history.csv").read_text().splitlines()]


def make_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` 28x28 uint8 images in 10 balanced classes: each class a fixed blob pattern, randomly shifted
    by up to 2 px, with noise. Learnable in an epoch or two, but not trivially (shifts and noise)."""
    rng = np.random.default_rng(seed)
    templates = np.zeros((10, 28, 28), dtype=np.float32)
    pattern_rng = np.random.default_rng(1234)  # the same classes for every split and seed
    for c in range(10):
        for _ in range(4):
            r, col = pattern_rng.integers(4, 20, size=2)
            templates[c, r:r + 5, col:col + 5] = 1.0
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    images = np.empty((n, 28, 28), dtype=np.uint8)
    for i, c in enumerate(labels):
        shifted = np.roll(templates[c], tuple(rng.integers(-2, 3, size=2)), axis=(0, 1))
        noisy = 200 * shifted + rng.normal(0, 25, size=(28, 28))
        images[i] = np.clip(noisy, 0, 255).astype(np.uint8)
    return images, labels.astype(np.uint8)


def write_idx_dir(folder, n_train: int = 600, n_test: int = 200, gz: bool = True):
    folder.mkdir(parents=True, exist_ok=True)
    x_train, y_train = make_digits(n_train, seed=1)
    x_test, y_test = make_digits(n_test, seed=2)
    ext = ".gz" if gz else ""
    write_idx(folder / f"train-images-idx3-ubyte{ext}", x_train)
    write_idx(folder / f"train-labels-idx1-ubyte{ext}", y_train)
    write_idx(folder / f"t10k-images-idx3-ubyte{ext}", x_test)
    write_idx(folder / f"t10k-labels-idx1-ubyte{ext}", y_test)
    return folder


@pytest.fixture(scope="session")
def idx_dir(tmp_path_factory):
    """A data dir with the four gzipped IDX files: 600 train, 200 test."""
    return write_idx_dir(tmp_path_factory.mktemp("idx"))


@pytest.fixture(scope="session")
def npz_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("npz")
    x_train, y_train = make_digits(600, seed=1)
    x_test, y_test = make_digits(200, seed=2)
    np.savez(folder / "mnist.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return folder


def render_digit(digit: int, rng: np.random.Generator, canvas: int = 64, size: int | None = None) -> np.ndarray:
    """A printed digit, dark on white, at a random size, offset and slant: (canvas, canvas) float32 0-255."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=int(size or rng.integers(28, 44)))
    image = Image.new("L", (canvas, canvas), 255)
    offset = tuple(int(v) for v in rng.integers(4, canvas // 3, size=2))
    ImageDraw.Draw(image).text(offset, str(digit), font=font, fill=int(rng.integers(0, 60)))
    image = image.rotate(float(rng.uniform(-12, 12)), fillcolor=255)
    return np.asarray(image, dtype=np.float32)


def make_rendered_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` MNIST-style (28, 28) uint8 images of printed digits, prepared as `mnist predict` prepares files."""
    from mnist_pipeline.data.recipes import mnist_style

    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 10).astype(np.uint8)
    return np.stack([mnist_style(render_digit(int(d), rng)) for d in labels]), labels


@pytest.fixture(scope="session")
def rendered_dir(tmp_path_factory):
    """IDX files of printed digits (800 train, 200 test): a model trained on them reads real digit shapes."""
    folder = tmp_path_factory.mktemp("rendered")
    for prefix, n, seed in (("train", 800, 3), ("t10k", 200, 4)):
        images, labels = make_rendered_digits(n, seed)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return folder


def built_once(tmp_path_factory, name: str, build) -> dict[str, Path]:
    """What `build(folder)` makes ({key: path inside folder}), built once per test session: under pytest-xdist
    the first worker to ask builds it in a folder the workers share while the others wait on a lock. Each
    worker then works on its own copy, so no test ever sees another worker's reads, locks or exports."""
    own = tmp_path_factory.getbasetemp()
    shared = own.parent if os.environ.get("PYTEST_XDIST_WORKER") else own
    built = shared / f"built-{name}"
    with open(shared / f"built-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, even if the build fails
        manifest = built / "built.json"
        if not manifest.exists():
            shutil.rmtree(built, ignore_errors=True)  # what a failed build left
            made = build(built)
            manifest.write_text(json.dumps({key: str(path.relative_to(built)) for key, path in made.items()}))
        paths = json.loads(manifest.read_text())
    if shared == own:
        return {key: built / path for key, path in paths.items()}
    copy = own / f"copy-{name}"
    shutil.copytree(built, copy, symlinks=True)
    return {key: copy / path for key, path in paths.items()}


def _train_runs(folder: Path, data_dir: Path) -> dict[str, Path]:
    from mnist_pipeline.config import load_config
    from mnist_pipeline.pipeline import run

    runs = {}
    for name, epochs in (("mlp", 8), ("smoke", 6)):
        # float32 on every CPU class: `auto` would pick bfloat16 for the CNN on some machines only.
        cfg = load_config(ROOT / f"configs/{name}.yaml", ["data.subset=null", "training.batch_size=32",
                                                          "training.precision=float32"],
                          {"training.epochs": epochs, "data.data_dir": str(data_dir), "output.dir": str(folder),
                           "training.device": "cpu"})
        runs[name] = run(cfg).run_dir
    return runs


@pytest.fixture(scope="session")
def trained_runs(rendered_dir, tmp_path_factory):
    """Two completed runs on the printed digits, sharing data and normalization: an MLP and a small CNN."""
    return built_once(tmp_path_factory, "trained-runs", lambda folder: _train_runs(folder, rendered_dir))


@pytest.fixture(scope="session")
def catalogue_runs(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(data dir, a completed MLP run, an MLP run SIGKILLed after epoch 1 of 3), made once by real processes on
    tiny data: what the adversarial catalogues damage copies of."""
    made = built_once(tmp_path_factory, "catalogue-runs", lambda folder: dict(zip(
        ("data", "completed", "resumable"), completed_and_killed_runs(folder), strict=True)))
    return made["data"], made["completed"], made["resumable"]


def completed_and_killed_runs(base: Path) -> tuple[Path, Path, Path]:
    """(data dir, a completed MLP run, an MLP run SIGKILLed after epoch 1 of 3) in `base`, made by real
    processes on tiny data."""
    tiny = ["--set", "data.subset=200", "--set", "training.batch_size=32", "--device", "cpu"]
    data = write_idx_dir(base / "data", n_train=300, n_test=100)
    done = run_mnist("train", "--config", MLP, "--data-dir", data, "--output-dir", base / "done", "--epochs", "2",
                     *tiny)
    assert done.returncode == 0, done.stderr
    killed = run_mnist("train", "--config", MLP, "--data-dir", data, "--output-dir", base / "killed", "--epochs",
                       "3", *tiny, fault="kill-after-epoch=1")
    assert killed.returncode == -9, killed.stderr
    (completed,) = (base / "done/runs").iterdir()
    (resumable,) = (base / "killed/runs").iterdir()
    return data, completed, resumable


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


@pytest.fixture(scope="session")
def catalogue_runs_with_nan(catalogue_runs, tmp_path_factory) -> tuple[Path, Path, Path, Path]:
    """`catalogue_runs` and a copy of its completed run whose weights are all NaN (a diverged run): what the
    adversarial catalogue (tests/catalogue/) damages copies of."""
    base = tmp_path_factory.mktemp("hardening")
    data, completed, resumable = catalogue_runs
    diverged = shutil.copytree(completed, base / "diverged")
    made = subprocess.run([sys.executable, "-c", NAN_WEIGHTS, str(diverged / "model.keras")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    return data, completed, resumable, diverged


@pytest.fixture(scope="session")
def catalogue_sweep(tmp_path_factory) -> tuple[Path, Path, list]:
    """(data dir, a finished 2-trial sweep folder, the command that made it) from one real, tiny sweep."""
    from catalogue.sweeps import SWEEP_TINY, write_space

    base = tmp_path_factory.mktemp("sweep-catalogue")
    data = write_idx_dir(base / "data", n_train=300, n_test=100)
    space = write_space(base)
    args = ["sweep", "--config", MLP, "--space", space, "--name", "made", "--data-dir", data, *SWEEP_TINY]
    done = run_mnist(*args, "--output-dir", base / "out")
    assert done.returncode == 0, done.stderr
    return data, base / "out/sweeps/made", args


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        missing_system_tool("Chromium is not installed here (Debian: apt-get install chromium; .ci/run installs it)")
    return found


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium, headless, driven through Playwright (the dev extra: a missing one fails, never skips)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # --no-sandbox: Chromium's sandbox refuses to start as root (CI containers run as root).
        launched = playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        yield launched
        launched.close()


def recorded(run_dir: Path, calibrated: bool = True) -> np.ndarray:
    """The test probabilities the run recorded, in test-split order, divided by its temperature as its exports
    divide them (unless `calibrated` is off: `--no-temperature`)."""
    probabilities = np.load(run_dir / "report_data.npz")["test_probabilities"]
    temperature = json.loads((run_dir / "metrics.json").read_text())["calibration"]["temperature"]
    return apply_temperature(probabilities, temperature) if calibrated else probabilities
