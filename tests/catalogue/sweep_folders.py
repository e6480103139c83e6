"""Damaged sweep folders, other sweeps under a taken name, and sweeps whose every trial fails: each on a copy
of the finished tiny sweep (or beside it), refused naming the damaged file, the folder left as it is."""

from __future__ import annotations

import json
import shutil

from catalogue.sweeps import SWEEP_TINY, SweepCase, write_space
from conftest import MLP, write_idx_dir


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
                 "--output-dir", tmp / "out", *SWEEP_TINY], data, env)
    return make




CASES = [
    # -- damaged sweep folders: named, with what to do, and left as they are
    SweepCase("journal-cut-report", damaged(cut_last_line), 1, ["study.journal: line", "cut short"]),
    SweepCase("journal-cut-rerun", damaged(cut_last_line, report=False), 1, ["study.journal: line", "cut short"]),
    SweepCase("journal-garbage-report", damaged(garbage_line), 1, ["is not one of Optuna's journal operations"]),
    SweepCase("journal-garbage-rerun", damaged(garbage_line, report=False), 1,
              ["not one of Optuna's journal operations"]),
    SweepCase("journal-bad-operation", damaged(fake_op), 1, ["study.journal", "do not replay"]),
    SweepCase("journal-missing-report", damaged(remove("study.journal")), 1, ["study.journal: missing"]),
    SweepCase("journal-missing-rerun", damaged(remove("study.journal"), report=False), 1, ["study.journal: missing"]),
    SweepCase("journal-empty-report", damaged(write("study.journal", b"")), 1, ["holds no study 'made'"]),
    SweepCase("sweep-json-garbage-report", damaged(write("sweep.json", b"{not json")), 1,
              ["sweep.json: not valid JSON"]),
    SweepCase("sweep-json-garbage-rerun", damaged(write("sweep.json", b"\xff\xfe"), report=False), 1,
     ["sweep.json: not valid JSON"]),
    SweepCase("sweep-json-array", damaged(write("sweep.json", [1, 2])), 1, ["sweep.json: damaged"]),
    SweepCase("sweep-json-bad-space", damaged(sweep_json(lambda d: d["describe"]["space"].update(sampler="nope"))), 1,
     ["sweep.json: not what `mnist sweep` writes"]),
    SweepCase("sweep-json-no-trials", damaged(sweep_json(lambda d: d.pop("trials"))), 1, ["sweep.json: damaged"]),
    SweepCase("sweep-json-huge", damaged(write("sweep.json", b" " * (5 * 2**20))), 1, ["larger than 4 MiB"]),
    SweepCase("best-json-garbage", damaged(write("best.json", b"{cut")), 1, ["best.json: not valid JSON",
                                                                     "delete it to measure"]),
    SweepCase("best-json-array", damaged(write("best.json", [])), 1, ["best.json: expected a JSON object"]),
    SweepCase("best-json-no-accuracy", damaged(best_json(lambda d: d.update(test_accuracy="high"))), 1,
     ["no test_accuracy"]),
    # -- another sweep under a name whose trials ran: refused, and the folder (and the other storage) untouched
    SweepCase("rerun-other-storage", rerun("--storage", "sqlite:///{tmp}/other.db"), 2,
     ["was started with the journal file in its folder", "now --storage sqlite:///"]),
    SweepCase("rerun-other-base", rerun("--set", "training.epochs=2"), 2,
              ["another base config (training.epochs was 1"]),
    SweepCase("rerun-other-seeds", rerun("--seeds", "0,1"), 2, ["no --seeds (now --seeds 0,1)"]),
    # -- a sweep whose every trial failed
    SweepCase("all-trials-fail-bad-data", all_fail(), 1, ["all 2 trials failed", "train-images-idx3-ubyte.gz"]),
    SweepCase("all-trials-fail-tf-config", all_fail(env={"TF_CONFIG": json.dumps(
        {"cluster": {"worker": ["localhost:1", "localhost:2"]}, "task": {"type": "worker", "index": 0}})}), 1,
     ["all 2 trials failed", "TF_CONFIG"]),
]
