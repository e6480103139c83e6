"""The sweep's adversarial catalogue: hostile space files, refused storages, damaged sweep folders, sweeps whose
every trial fails, and signals to `--workers`, each run as a real `mnist sweep` process. Every case must exit
with its code and print exactly one line on stderr (`error: ...`, naming the problem and the fix; never
"unexpected"), leave no half-made sweep behind, leave the folder it was pointed at byte-identical, and leave no
`mnist_pipeline` process running. Most cases fail before anything trains; those that train use 200 images.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import CNN, MLP, snapshot, start_mnist, write_idx_dir
from conftest import run_mnist as mnist

TINY = ["--set", "data.subset=200", "--set", "training.batch_size=32", "--set", "training.epochs=1",
        "--device", "cpu"]
RATE = {"training.learning_rate": {"low": 1e-3, "high": 1e-2, "log": True}}


def write_space(tmp: Path, params: dict | None = None, text: str | None = None, **extra) -> Path:
    path = tmp / "space.yaml"
    path.write_text(text if text is not None else
                    yaml.safe_dump({"sampler": "random", "trials": 2, "params": params or RATE, **extra}))
    return path


def workers_alive(marker: str) -> list[str]:
    """Command lines of live processes that mention `marker` (psutil is not installed: /proc)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and int(proc.name) != os.getpid():
                line = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                state = next((row for row in (proc / "status").read_text().splitlines() if row.startswith("State")), "")
                if "mnist_pipeline" in line and marker in line and "zombie" not in state:
                    found.append(line)
        except (OSError, ValueError):
            continue
    return found


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """(data dir, a finished 2-trial sweep folder, the command that made it) from one real, tiny sweep."""
    base = tmp_path_factory.mktemp("sweep-catalogue")
    data = write_idx_dir(base / "data", n_train=300, n_test=100)
    space = write_space(base)
    args = ["sweep", "--config", MLP, "--space", space, "--name", "made", "--data-dir", data, *TINY]
    done = mnist(*args, "--output-dir", base / "out")
    assert done.returncode == 0, done.stderr
    return data, base / "out/sweeps/made", args


# ---- builders: each takes (tmp, made) and returns (args, folder that must not change, env or None) ----

def space_case(params=None, *extra, text=None, config=MLP, env=None, **fields):
    def make(tmp, made):
        data = made[0]
        path = write_space(tmp, params, text, **fields)
        return (["sweep", "--config", config, "--space", path, "--data-dir", data, "--output-dir", tmp / "out",
                 *TINY, *extra], None, env)
    return make


def command(*extra):
    def make(tmp, made):
        return (["sweep", "--config", MLP, "--space", write_space(tmp), "--data-dir", made[0], "--output-dir",
                 tmp / "out", *TINY, *extra], None, None)
    return make


def damaged(change, report=True):
    """A copy of the finished sweep with `change(folder)` applied; then `sweep report` (or the same sweep run
    again): either must refuse, naming the damaged file, and leave the folder as it is."""
    def make(tmp, made):
        data, folder, args = made
        copy = shutil.copytree(folder, tmp / "out/sweeps/made")
        change(copy)
        if report:
            return ["sweep", "report", "made", "--output-dir", tmp / "out"], copy, None
        return [*args, "--output-dir", tmp / "out"], copy, None
    return make


def rerun(*extra):
    """The finished sweep's command again, with `extra` options that make it another sweep."""
    def make(tmp, made):
        data, folder, args = made
        copy = shutil.copytree(folder, tmp / "out/sweeps/made")
        return [*args, "--output-dir", tmp / "out", *(str(e).format(tmp=tmp) for e in extra)], copy, None
    return make


def cut_last_line(folder):
    journal = folder / "study.journal"
    journal.write_bytes(journal.read_bytes()[:-25])


def garbage_line(folder):
    with (folder / "study.journal").open("ab") as f:
        f.write(b"\x00\xffnot json\n")


def fake_op(folder):
    with (folder / "study.journal").open("ab") as f:
        f.write(b'{"op_code": 4, "worker_id": "x"}\n')  # CREATE_TRIAL without its fields


def write(name, payload):
    def change(folder):
        (folder / name).write_bytes(payload if isinstance(payload, bytes) else json.dumps(payload).encode())
    return change


def edit_json(name, edit):
    """A change that edits the JSON file `name` of the sweep folder in place."""
    def change(folder):
        data = json.loads((folder / name).read_text())
        edit(data)
        (folder / name).write_text(json.dumps(data))
    return change


def sweep_json(edit):
    return edit_json("sweep.json", edit)


def best_json(edit):
    return edit_json("best.json", edit)


def remove(name):
    return lambda folder: (folder / name).unlink()


def garbage_data(tmp, made):
    """Data whose files have the right names (so the up-front check passes) but hold garbage: every trial
    fails on it."""
    folder = write_idx_dir(tmp / "bad", n_train=300, n_test=100)
    (folder / "train-images-idx3-ubyte.gz").write_bytes(b"garbage")
    return folder


def all_fail(env=None):
    def make(tmp, made):
        data = garbage_data(tmp, made) if env is None else made[0]
        return (["sweep", "--config", MLP, "--space", write_space(tmp), "--name", "bad", "--data-dir", data,
                 "--output-dir", tmp / "out", *TINY], data, env)
    return make


def storage(url_of, *extra):
    def make(tmp, made):
        return command("--storage", url_of(tmp), "--name", "s", *extra)(tmp, made)[:2] + (None,)
    return make


def not_a_database(tmp):
    (tmp / "db.sqlite").write_bytes(b"this is not a database\n" * 100)
    return f"sqlite:///{tmp / 'db.sqlite'}"


GRID = {"sampler": "grid"}
CATALOGUE = [
    # -- space files that would cost unbounded memory: refused from their arithmetic, before anything is built
    ("grid-int-range-1e12", space_case({"training.epochs": {"low": 1, "high": 10**12}}, **GRID), 2,
     ["the grid has 1,000,000,000,000 combinations, more than 10,000"]),
    ("grid-float-step-1e-9", space_case({"training.learning_rate": {"low": 1e-3, "high": 1e-2, "step": 1e-9}},
                                        **GRID), 2, ["9,000,001 combinations"]),
    ("grid-float-step-tiny", space_case({"training.learning_rate": {"low": 1e-3, "high": 1.0, "step": 1e-300}},
                                        **GRID), 2, ["combinations, more than 10,000"]),
    ("grid-product", space_case({f"data.augmentation.{k}": {"low": 0.0, "high": 0.3, "step": 0.01}
                                 for k in ("rotation", "translation", "zoom")}, **GRID), 2,
     ["29,791 combinations, more than 10,000"]),
    ("grid-64-huge-ranges", space_case({f"model.params.x{i}": {"low": 0, "high": 10**12} for i in range(64)},
                                       **GRID), 2, ["about 10^768 combinations"]),
    ("grid-log-range", space_case({"training.learning_rate": {"low": 1e-3, "high": 1e-2, "log": True}}, **GRID), 2,
     ["a grid needs a choices list"]),
    ("grid-float-no-step", space_case({"training.learning_rate": {"low": 1e-3, "high": 1e-2}}, **GRID), 2,
     ["a grid needs a choices list"]),
    ("space-alias-bomb", space_case(text="a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(8))), 2,
     ["space"]),
    # -- keys a sweep must not vary
    ("space-output-dir", space_case({"output.dir": {"choices": ["/tmp/a", "/tmp/b"]}}), 2,
     ["params.output.dir cannot be swept"]),
    ("space-output-name", space_case({"output.name": {"choices": ["a", "b"]}}), 2, ["params.output.name"]),
    ("space-output-tensorboard", space_case({"output.tensorboard.enabled": {"choices": [True, False]}}), 2,
     ["params.output.tensorboard.enabled cannot be swept"]),
    ("space-data-dir", space_case({"data.data_dir": {"choices": ["/tmp", "/var"]}}), 2,
     ["params.data.data_dir cannot be swept", "same data"]),
    ("space-dataset", space_case({"data.dataset": {"choices": ["mnist", "fashion_mnist"]}}), 2,
     ["params.data.dataset cannot be swept"]),
    ("space-validation-split", space_case({"data.validation_split": {"low": 0.1, "high": 0.2}}), 2,
     ["params.data.validation_split cannot be swept"]),
    ("space-distribute", space_case({"training.distribute.strategy": {"choices": ["none", "mirrored"]}}), 2,
     ["params.training.distribute.strategy cannot be swept"]),
    ("space-seed-with-seeds", space_case({"training.seed": {"choices": [1, 2]}}, "--seeds", "0,1"), 2,
     ["set by the sweep itself"]),
    # -- values `mnist train` refuses on this machine, refused up front
    ("space-float16-on-cpu", space_case({"training.precision": {"choices": ["float32", "mixed_float16"]}}), 2,
     ["mixed_float16", "needs a GPU"]),
    ("space-mixed-precision-on-cpu", space_case({"training.mixed_precision": {"choices": [False, True]}}), 2,
     ["training.mixed_precision = true needs a GPU"]),
    ("space-bfloat16-capped-isa", space_case({"training.precision": {"choices": ["float32", "mixed_bfloat16"]}},
                                             env={"ONEDNN_MAX_CPU_ISA": "AVX2"}), 2,
     ["ONEDNN_MAX_CPU_ISA=AVX2"]),
    ("space-xla-cnn-on-cpu", space_case({"training.jit_compile": {"choices": [False, True]}}, config=CNN), 2,
     ["jit_compile = true cannot train the cnn on a CPU"]),
    ("data-dir-missing", lambda tmp, made: command("--data-dir", tmp / "nowhere")(tmp, made), 2,
     ["data folder", "nowhere", "does not exist"]),
    ("data-dir-a-file", lambda tmp, made: (tmp / "f.txt").write_text("x") and command("--data-dir", tmp / "f.txt")(
        tmp, made), 2, ["is a file, not a folder"]),
    ("data-dir-empty", command("--data-dir", " "), 2, ["an empty folder name"]),
    ("base-float16-on-cpu", command("--set", "training.precision=mixed_float16"), 2, ["needs a GPU"]),
    # -- the space file itself
    ("space-unknown-key", space_case({"training.learning_rat": {"choices": [0.1]}}), 2, ["learning_rat"]),
    ("space-not-yaml", space_case(text="params: [unclosed\n"), 2, ["space"]),
    ("space-low-above-high", space_case({"training.learning_rate": {"low": 0.1, "high": 0.01}}), 2,
     ["must be less than high"]),
    ("space-wrong-section", space_case(text="paramz: {}\n"), 2, ["did you mean 'params'"]),
    ("space-impossible-value", space_case({"training.learning_rate": {"choices": [0.1, -1.0]}}), 2,
     ["are refused"]),
    ("bad-seeds", command("--seeds", "0,x"), 2, ["--seeds expects integers"]),
    ("bad-name", command("--name", "../escape"), 2, ["--name"]),
    # -- storages
    ("storage-not-a-url", command("--storage", "just-words"), 2, ["not a database URL"]),
    ("storage-memory-workers", command("--storage", "sqlite:///:memory:", "--workers", "2"), 2,
     ["in-memory SQLite", "--workers 2"]),
    ("storage-sqlite-bare-workers", command("--storage", "sqlite://", "--workers", "2"), 2, ["in-memory SQLite"]),
    ("storage-not-a-database", storage(not_a_database), 1, ["cannot open the study there"]),
    ("storage-unreachable", storage(lambda tmp: "postgresql+psycopg2://u:secret@127.0.0.1:1/db"), 1,
     ["cannot open the study there", "u:***@"]),
    ("storage-missing-driver", storage(lambda tmp: "nosuchdb://host/db"), 1, ["cannot open the study there"]),
    # -- damaged sweep folders: named, with what to do, and left as they are
    ("journal-cut-report", damaged(cut_last_line), 1, ["study.journal: line", "cut short"]),
    ("journal-cut-rerun", damaged(cut_last_line, report=False), 1, ["study.journal: line", "cut short"]),
    ("journal-garbage-report", damaged(garbage_line), 1, ["is not one of Optuna's journal operations"]),
    ("journal-garbage-rerun", damaged(garbage_line, report=False), 1, ["not one of Optuna's journal operations"]),
    ("journal-bad-operation", damaged(fake_op), 1, ["study.journal", "do not replay"]),
    ("journal-missing-report", damaged(remove("study.journal")), 1, ["study.journal: missing"]),
    ("journal-missing-rerun", damaged(remove("study.journal"), report=False), 1, ["study.journal: missing"]),
    ("journal-empty-report", damaged(write("study.journal", b"")), 1, ["holds no study 'made'"]),
    ("sweep-json-garbage-report", damaged(write("sweep.json", b"{not json")), 1, ["sweep.json: not valid JSON"]),
    ("sweep-json-garbage-rerun", damaged(write("sweep.json", b"\xff\xfe"), report=False), 1,
     ["sweep.json: not valid JSON"]),
    ("sweep-json-array", damaged(write("sweep.json", [1, 2])), 1, ["sweep.json: damaged"]),
    ("sweep-json-bad-space", damaged(sweep_json(lambda d: d["describe"]["space"].update(sampler="nope"))), 1,
     ["sweep.json: not what `mnist sweep` writes"]),
    ("sweep-json-no-trials", damaged(sweep_json(lambda d: d.pop("trials"))), 1, ["sweep.json: damaged"]),
    ("sweep-json-huge", damaged(write("sweep.json", b" " * (5 * 2**20))), 1, ["larger than 4 MiB"]),
    ("best-json-garbage", damaged(write("best.json", b"{cut")), 1, ["best.json: not valid JSON",
                                                                     "delete it to measure"]),
    ("best-json-array", damaged(write("best.json", [])), 1, ["best.json: expected a JSON object"]),
    ("best-json-no-accuracy", damaged(best_json(lambda d: d.update(test_accuracy="high"))), 1,
     ["no test_accuracy"]),
    # -- another sweep under a name whose trials ran: refused, and the folder (and the other storage) untouched
    ("rerun-other-storage", rerun("--storage", "sqlite:///{tmp}/other.db"), 2,
     ["was started with the journal file in its folder", "now --storage sqlite:///"]),
    ("rerun-other-base", rerun("--set", "training.epochs=2"), 2, ["another base config (training.epochs was 1"]),
    ("rerun-other-seeds", rerun("--seeds", "0,1"), 2, ["no --seeds (now --seeds 0,1)"]),
    # -- a sweep whose every trial failed
    ("all-trials-fail-bad-data", all_fail(), 1, ["all 2 trials failed", "train-images-idx3-ubyte.gz"]),
    ("all-trials-fail-tf-config", all_fail(env={"TF_CONFIG": json.dumps(
        {"cluster": {"worker": ["localhost:1", "localhost:2"]}, "task": {"type": "worker", "index": 0}})}), 1,
     ["all 2 trials failed", "TF_CONFIG"]),
]


@pytest.mark.slow
@pytest.mark.parametrize("make, code, words", [c[1:] for c in CATALOGUE], ids=[c[0] for c in CATALOGUE])
def test_sweep_catalogue(make, code, words, made, tmp_path):
    reference = snapshot(made[1])
    args, target, env = make(tmp_path, made)
    before = snapshot(target) if target and target.is_dir() else None
    result = mnist(*args, env=env, timeout=240)
    lines = result.stderr.splitlines()
    assert result.returncode == code, result.stderr
    assert len(lines) == 1, result.stderr  # one line, nothing else
    assert lines[0].startswith("error: "), result.stderr
    assert "unexpected" not in lines[0], lines[0]
    assert len(lines[0]) < 700, lines[0]
    for word in words:
        assert word in lines[0], lines[0]
    assert "Traceback" not in result.stdout
    if before is not None:
        assert snapshot(target) == before  # refused or failed: the folder it was pointed at is as it was
    if target is None and "bad" not in args:  # refused before it started: no half-made sweep
        assert not (tmp_path / "out").exists(), sorted((tmp_path / "out").rglob("*"))
    assert not (tmp_path / "other.db").exists()
    assert not workers_alive(str(tmp_path))
    assert snapshot(made[1]) == reference


def test_sweep_catalogue_is_large_enough():
    assert len(CATALOGUE) >= 35


def test_a_failed_start_leaves_nothing_and_a_half_made_sweep_takes_its_correction(made, tmp_path):
    data, folder, args = made
    (tmp_path / "db.sqlite").write_bytes(b"not a database\n" * 100)
    failed = mnist(*args, "--output-dir", tmp_path / "out", "--storage", f"sqlite:///{tmp_path / 'db.sqlite'}")
    assert failed.returncode == 1, failed.stderr
    assert failed.stderr.startswith("error: --storage sqlite:///"), failed.stderr
    assert not (tmp_path / "out").exists()  # the corrected command has nothing in its way
    # A folder half made by an earlier version (sweep.json and base.yaml for a storage that never opened, no
    # trial): the corrected command takes it over instead of refusing it as another sweep.
    half = tmp_path / "out/sweeps/made"
    half.mkdir(parents=True)
    recorded = json.loads((folder / "sweep.json").read_text())
    (half / "sweep.json").write_text(json.dumps({**recorded, "storage": "postgresql://nowhere:1/db"}))
    shutil.copy(folder / "base.yaml", half / "base.yaml")
    done = mnist(*args, "--output-dir", tmp_path / "out", "--trials", "1")
    assert done.returncode == 0, done.stderr
    assert json.loads((half / "sweep.json").read_text())["storage"] is None
    assert len(list((half / "runs").iterdir())) == 1


def test_each_process_joining_a_study_samples_with_its_own_seed():
    import optuna

    from mnist_pipeline.sweep.optuna_study import claim_sampler_seed

    study = optuna.create_study()
    study.set_user_attr("sampler:otherhost:1:1", 7)  # a process of another machine: counted as running
    study.set_user_attr(f"sampler:{os.uname().nodename}:999999999:2", 7)  # a process of this one that is gone
    assert claim_sampler_seed(study, 7) == 8
    assert claim_sampler_seed(study, 7) == 9  # this process again, as a second joiner would
    alone = optuna.create_study()
    assert claim_sampler_seed(alone, 7) == 7  # a single process keeps the config's seed: reproducible


def test_two_joined_processes_never_try_the_same_values(made, tmp_path):
    data, folder, args = made
    space = write_space(tmp_path, {"training.learning_rate": {"low": 1e-3, "high": 1e-2, "log": True}}, trials=4)
    both = ["sweep", "--config", MLP, "--space", space, "--name", "two", "--data-dir", data, "--output-dir",
            tmp_path / "out", *TINY, "--no-prune"]
    first, second = start_mnist(*both), start_mnist(*both)
    for process in (first, second):
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
    import optuna
    from optuna.storages.journal import JournalFileBackend

    journal = JournalFileBackend(str(tmp_path / "out/sweeps/two/study.journal"))
    study = optuna.load_study(study_name="two", storage=optuna.storages.JournalStorage(journal))
    rates = [t.params["training.learning_rate"] for t in study.get_trials()]
    assert len(rates) == 4, rates
    assert len(set(rates)) == 4, rates


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_to_a_sweep_with_workers_stops_them_all_in_one_line(made, tmp_path, signum, code):
    data, folder, args = made
    command = ["sweep", "--config", MLP, "--space", write_space(tmp_path), "--name", "stop", "--data-dir", data,
               "--output-dir", tmp_path / "out", *TINY, "--set", "training.epochs=200", "--workers", "2"]
    parent = start_mnist(*command)
    deadline = time.monotonic() + 120
    for line in parent.stdout:  # once a trial is training
        if " epoch 1/" in line or time.monotonic() > deadline:
            break
    assert len(workers_alive(str(tmp_path))) == 3  # the parent and its two workers
    parent.send_signal(signum)
    out, err = parent.communicate(timeout=120)
    lines = err.splitlines()
    assert parent.returncode == code, err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{signal.Signals(signum).name}: the sweep stopped"), err
    assert "run the same command again" in lines[0]
    assert not workers_alive(str(tmp_path))
    assert not subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True).stdout


def test_sweep_catalogue_covers_each_class():
    names = " ".join(case[0] for case in CATALOGUE)
    for word in ("grid-", "space-output", "float16", "storage-", "journal-", "sweep-json", "best-json", "rerun-",
                 "all-trials-fail"):
        assert word in names


def test_a_worker_that_dies_is_reported_by_the_parent_in_one_line(made, tmp_path):
    data, folder, args = made
    command = ["sweep", "--config", MLP, "--space", write_space(tmp_path), "--name", "died", "--data-dir", data,
               "--output-dir", tmp_path / "out", *TINY, "--set", "training.epochs=30", "--workers", "2",
               "--no-prune"]
    parent = start_mnist(*command)
    deadline = time.monotonic() + 120
    for line in parent.stdout:
        if " epoch 1/" in line or time.monotonic() > deadline:
            break
    (victim,) = [pid for pid in Path("/proc").iterdir() if pid.name.isdigit() and b"--worker-index\x000" in
                 _cmdline(pid) and str(tmp_path).encode() in _cmdline(pid)]
    os.kill(int(victim.name), signal.SIGKILL)
    out, err = parent.communicate(timeout=180)
    lines = err.splitlines()
    assert parent.returncode == 1, err
    assert len(lines) == 1, err
    assert lines[0].startswith("error: worker 0: killed by SIGKILL; run the same command"), err
    assert not workers_alive(str(tmp_path))


def _cmdline(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:
        return b""
