"""Refused sweeps: hostile space files, keys a sweep must not vary, values this machine refuses, bad storages,
seeds and names. The `sweep-*` cases need only the catalogue's runs; the others the finished tiny sweep."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import yaml

from catalogue import Case
from conftest import CNN, MLP

SweepCase = functools.partial(Case, needs="sweep")  # a case on the finished tiny sweep: make(tmp, made)

# ---- builders of the cases on the catalogue's runs: make(tmp, data, completed, resumable, diverged) ----

SPACE = {"params": {"training.learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}}}


def sweep_with(space, *extra):
    """`mnist sweep` on the MLP config with this space (None: a space file that does not exist)."""
    def make(tmp, data, completed, resumable, diverged):
        path = tmp / "space.yaml"
        if space is not None:
            path.write_text(json.dumps(space))  # JSON is YAML
        return ["sweep", "--config", MLP, "--space", path, "--data-dir", data, "--output-dir", tmp / "out",
                "--name", "s", *extra], None
    return make


def existing_sweep(extra, damage=False):
    """A sweep folder made by the same command without `extra`, which has run a trial (a sweep that has run
    none takes a corrected command); the command with `extra` must be refused."""
    def make(tmp, data, completed, resumable, diverged):
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


# ---- builders of the cases on the finished sweep: make(tmp, made), made = (data, sweep folder, its command) ----

SWEEP_TINY = ["--set", "data.subset=200", "--set", "training.batch_size=32", "--set", "training.epochs=1",
              "--device", "cpu"]
RATE = {"training.learning_rate": {"low": 1e-3, "high": 1e-2, "log": True}}


def write_space(tmp: Path, params: dict | None = None, text: str | None = None, **extra) -> Path:
    path = tmp / "space.yaml"
    path.write_text(text if text is not None else
                    yaml.safe_dump({"sampler": "random", "trials": 2, "params": params or RATE, **extra}))
    return path


def space_case(params=None, *extra, text=None, config=MLP, env=None, **fields):
    def make(tmp, made):
        data = made[0]
        path = write_space(tmp, params, text, **fields)
        return (["sweep", "--config", config, "--space", path, "--data-dir", data, "--output-dir", tmp / "out",
                 *SWEEP_TINY, *extra], None, env)
    return make


def command(*extra):
    def make(tmp, made):
        return (["sweep", "--config", MLP, "--space", write_space(tmp), "--data-dir", made[0], "--output-dir",
                 tmp / "out", *SWEEP_TINY, *extra], None, None)
    return make


def storage(url_of, *extra):
    def make(tmp, made):
        return command("--storage", url_of(tmp), "--name", "s", *extra)(tmp, made)[:2] + (None,)
    return make


def not_a_database(tmp):
    (tmp / "db.sqlite").write_bytes(b"this is not a database\n" * 100)
    return f"sqlite:///{tmp / 'db.sqlite'}"


GRID = {"sampler": "grid"}


CASES = [
    # -- sweep (refused before any trial, or any folder, is made) --
    Case("sweep-without-space", lambda tmp, *_: (["sweep", "--config", MLP], None), 2, ["needs --space"]),
    Case("sweep-space-missing", sweep_with(None), 2, ["space file", "not found"]),
    Case("sweep-space-unknown-key", sweep_with({"params": {"model.params.unit": {"choices": [64]}}}), 2,
     ["unknown key 'model.params.unit'", "did you mean 'units'"]),
    Case("sweep-space-refused-value", sweep_with({"params": {"training.batch_size": {"low": 0, "high": 64}}}), 2,
     ["training.batch_size=0", "must be at least 1"]),
    Case("sweep-space-inverted-range", sweep_with({"params": {"training.epochs": {"low": 9, "high": 2}}}), 2,
     ["low (9) must be less than high (2)"]),
    Case("sweep-space-is-a-list", sweep_with([1, 2]), 2, ["must be a mapping"]),
    Case("sweep-seeds-not-numbers", sweep_with(SPACE, "--seeds", "a,b"), 2, ["--seeds expects integers"]),
    Case("sweep-seeds-twice", sweep_with(SPACE, "--seeds", "1,1"), 2, ["different seeds"]),
    Case("sweep-seed-swept-and-seeded", sweep_with({"params": {"training.seed": {"choices": [1, 2]}}}, "--seeds",
                                                    "0,1"),
     2, ["params.training.seed is set by the sweep itself"]),
    Case("sweep-name-path", sweep_with(SPACE, "--name", "../escape"), 2, ["--name", "letters, digits"]),
    Case("sweep-other-config-same-name", existing_sweep(["--set", "training.epochs=7"]), 2,
     ["was started with another base", "another --name"]),
    Case("sweep-file-damaged", existing_sweep([], damage=True), 1, ["sweep.json: not valid JSON", "another --name"]),
    Case("sweep-storage-unknown-scheme", sweep_with(SPACE, "--storage", "nosuchdb://nowhere/x"), 1,
     ["--storage nosuchdb://nowhere/x", "cannot open the study"]),
    Case("sweep-report-no-such-sweep", lambda tmp, *_: (["sweep", "report", "nope", "--output-dir", tmp], None), 2,
     ["does not exist"]),
    Case("sweep-report-not-a-sweep", lambda tmp, *_: ((tmp / "sweeps" / "nope").mkdir(parents=True) or
                                                  ["sweep", "report", "nope", "--output-dir", tmp], None), 2,
     ["not a sweep folder"]),
    # -- space files that would cost unbounded memory: refused from their arithmetic, before anything is built
    SweepCase("grid-int-range-1e12", space_case({"training.epochs": {"low": 1, "high": 10**12}}, **GRID), 2,
     ["the grid has 1,000,000,000,000 combinations, more than 10,000"]),
    SweepCase("grid-float-step-1e-9", space_case({"training.learning_rate": {"low": 1e-3, "high": 1e-2, "step": 1e-9}},
                                        **GRID), 2, ["9,000,001 combinations"]),
    SweepCase("grid-float-step-tiny", space_case({"training.learning_rate": {"low": 1e-3, "high": 1.0, "step": 1e-300}},
                                        **GRID), 2, ["combinations, more than 10,000"]),
    SweepCase("grid-product", space_case({f"data.augmentation.{k}": {"low": 0.0, "high": 0.3, "step": 0.01}
                                 for k in ("rotation", "translation", "zoom")}, **GRID), 2,
     ["29,791 combinations, more than 10,000"]),
    SweepCase("grid-64-huge-ranges", space_case({f"model.params.x{i}": {"low": 0, "high": 10**12} for i in range(64)},
                                       **GRID), 2, ["about 10^768 combinations"]),
    SweepCase("grid-log-range", space_case({"training.learning_rate": {"low": 1e-3, "high": 1e-2, "log": True}},
                                                **GRID), 2,
     ["a grid needs a choices list"]),
    SweepCase("grid-float-no-step", space_case({"training.learning_rate": {"low": 1e-3, "high": 1e-2}}, **GRID), 2,
     ["a grid needs a choices list"]),
    SweepCase("space-alias-bomb", space_case(text="a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(8))), 2,
     ["space"]),
    # -- keys a sweep must not vary
    SweepCase("space-output-dir", space_case({"output.dir": {"choices": ["/tmp/a", "/tmp/b"]}}), 2,
     ["params.output.dir cannot be swept"]),
    SweepCase("space-output-name", space_case({"output.name": {"choices": ["a", "b"]}}), 2, ["params.output.name"]),
    SweepCase("space-output-tensorboard", space_case({"output.tensorboard.enabled": {"choices": [True, False]}}), 2,
     ["params.output.tensorboard.enabled cannot be swept"]),
    SweepCase("space-data-dir", space_case({"data.data_dir": {"choices": ["/tmp", "/var"]}}), 2,
     ["params.data.data_dir cannot be swept", "same data"]),
    SweepCase("space-dataset", space_case({"data.dataset": {"choices": ["mnist", "fashion_mnist"]}}), 2,
     ["params.data.dataset cannot be swept"]),
    SweepCase("space-validation-split", space_case({"data.validation_split": {"low": 0.1, "high": 0.2}}), 2,
     ["params.data.validation_split cannot be swept"]),
    SweepCase("space-distribute", space_case({"training.distribute.strategy": {"choices": ["none", "mirrored"]}}), 2,
     ["params.training.distribute.strategy cannot be swept"]),
    SweepCase("space-seed-with-seeds", space_case({"training.seed": {"choices": [1, 2]}}, "--seeds", "0,1"), 2,
     ["set by the sweep itself"]),
    # -- values `mnist train` refuses on this machine, refused up front
    SweepCase("space-float16-on-cpu", space_case({"training.precision": {"choices": ["float32", "mixed_float16"]}}), 2,
     ["mixed_float16", "needs a GPU"]),
    SweepCase("space-mixed-precision-on-cpu", space_case({"training.mixed_precision": {"choices": [False, True]}}), 2,
     ["training.mixed_precision = true needs a GPU"]),
    SweepCase("space-bfloat16-capped-isa", space_case(
        {"training.precision": {"choices": ["float32", "mixed_bfloat16"]}},
                                             env={"ONEDNN_MAX_CPU_ISA": "AVX2"}), 2,
     ["ONEDNN_MAX_CPU_ISA=AVX2"]),
    SweepCase("space-xla-cnn-on-cpu", space_case({"training.jit_compile": {"choices": [False, True]}}, config=CNN), 2,
     ["jit_compile = true cannot train the cnn on a CPU"]),
    SweepCase("data-dir-missing", lambda tmp, made: command("--data-dir", tmp / "nowhere")(tmp, made), 2,
     ["data folder", "nowhere", "does not exist"]),
    SweepCase("data-dir-a-file", lambda tmp, made: (tmp / "f.txt").write_text("x") and command(
        "--data-dir", tmp / "f.txt")(
        tmp, made), 2, ["is a file, not a folder"]),
    SweepCase("data-dir-empty", command("--data-dir", " "), 2, ["an empty folder name"]),
    SweepCase("base-float16-on-cpu", command("--set", "training.precision=mixed_float16"), 2, ["needs a GPU"]),
    # -- the space file itself
    SweepCase("space-unknown-key", space_case({"training.learning_rat": {"choices": [0.1]}}), 2, ["learning_rat"]),
    SweepCase("space-not-yaml", space_case(text="params: [unclosed\n"), 2, ["space"]),
    SweepCase("space-low-above-high", space_case({"training.learning_rate": {"low": 0.1, "high": 0.01}}), 2,
     ["must be less than high"]),
    SweepCase("space-wrong-section", space_case(text="paramz: {}\n"), 2, ["did you mean 'params'"]),
    SweepCase("space-impossible-value", space_case({"training.learning_rate": {"choices": [0.1, -1.0]}}), 2,
     ["are refused"]),
    SweepCase("bad-seeds", command("--seeds", "0,x"), 2, ["--seeds expects integers"]),
    SweepCase("bad-name", command("--name", "../escape"), 2, ["--name"]),
    # -- storages
    SweepCase("storage-not-a-url", command("--storage", "just-words"), 2, ["not a database URL"]),
    SweepCase("storage-memory-workers", command("--storage", "sqlite:///:memory:", "--workers", "2"), 2,
     ["in-memory SQLite", "--workers 2"]),
    SweepCase("storage-sqlite-bare-workers", command("--storage", "sqlite://", "--workers", "2"), 2,
              ["in-memory SQLite"]),
    SweepCase("storage-not-a-database", storage(not_a_database), 1, ["cannot open the study there"]),
    SweepCase("storage-unreachable", storage(lambda tmp: "postgresql+psycopg2://u:secret@127.0.0.1:1/db"), 1,
     ["cannot open the study there", "u:***@"]),
    SweepCase("storage-missing-driver", storage(lambda tmp: "nosuchdb://host/db"), 1, ["cannot open the study there"]),
]
