"""Per-epoch checkpoints of a training run, written atomically, enough to continue it exactly.

A checkpoint is a folder `checkpoints/epoch-NNNN/` holding every variable of the model (trainable, batch
norm's moving statistics, the dropout layers' random-generator states) and of the optimizer (`training.*`, a
tf.train.Checkpoint), the best weights so far (`best_weights.npz`) and the loop's state (`state.json`:
history, best score, schedule and early-stopping state, and the SHA-256 of every other file, so damage is
caught and named before anything is loaded). It is written under a temporary name and renamed when
complete; only the newest is kept (it holds the best weights too), so a kill at any moment leaves one whole
checkpoint, and a full disk leaves the previous one.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from mnist_pipeline.bounded_reads import MiB, load_npz, sha256_file
from mnist_pipeline.errors import DataError, OutputError, RunFolderError, brief, clip
from mnist_pipeline.reports import run_folder
from mnist_pipeline.reports.run_reader import damaged, field, read_json

STATE = "state.json"
BEST_WEIGHTS = "best_weights.npz"
VARIABLES = "training"  # prefix of tf.train.Checkpoint's training.index and training.data-*


def tracked_variables(model, optimizer) -> dict[str, list]:
    """Every variable a resumed run needs, by owner.

    Listed explicitly: tf.train.Checkpoint(model=model) does not see layers that a Keras 3 model keeps in a
    Python list (`model.stack`), and so silently skipped batch norm's moving statistics. `model.variables`
    is all of the model's state: weights, non-trainable statistics and every SeedGenerator (Dropout).
    """
    return {"model": list(model.variables), "optimizer": list(optimizer.variables)}


class Checkpointer:
    """Saves to and restores from `run_dir`/checkpoints. A worker of a tf.distribute cluster that is not the
    chief (`writes_folder` false) restores from the chief's folder (`run_dir`, None on a fresh run), and
    saves its share of each checkpoint into a temporary folder that it removes at once: a strategy may need
    every worker to take part in a save, but only the chief's copy is kept."""

    def __init__(self, run_dir: Path | None, model, optimizer, schedule=None, early_stopping=None,
                 topology: dict | None = None, writes_folder: bool = True, precision: str | None = None):
        import tensorflow as tf  # here, not at the top: `read_checkpoint` checks a resume before TF loads

        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.folder = self.run_dir / run_folder.CHECKPOINTS if run_dir is not None else None
        self.schedule = schedule
        self.early_stopping = early_stopping
        self.topology = topology
        self.precision = precision  # the Keras policy trained under: a resumed run keeps it on any machine
        self.writes_folder = writes_folder
        self.checkpoint = tf.train.Checkpoint(**tracked_variables(model, optimizer))

    def save(self, state) -> Path | None:
        import tensorflow as tf

        if not self.writes_folder:
            scratch = None
            try:
                scratch = tempfile.mkdtemp(prefix="mnist-worker-checkpoint-")
                self.checkpoint.write(os.path.join(scratch, VARIABLES))
            except (OSError, tf.errors.OpError) as exc:
                raise OutputError(f"cannot write this worker's share of the checkpoint to {tempfile.gettempdir()} "
                                  f"({_cause(exc)}); free some space there or point TMPDIR elsewhere") from None
            finally:
                if scratch:
                    shutil.rmtree(scratch, ignore_errors=True)
            return None
        final = self.folder / f"epoch-{state.next_epoch:04d}"
        tmp = self.folder / f".epoch-{state.next_epoch:04d}.{os.getpid()}{run_folder.TEMPORARY_SUFFIX}"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            self.checkpoint.write(str(tmp / VARIABLES))
            buffer = io.BytesIO()
            np.savez(buffer, *(state.best_weights or []))
            (tmp / BEST_WEIGHTS).write_bytes(buffer.getvalue())
            files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir())}
            (tmp / STATE).write_text(json.dumps({**self._state_dict(state), "files": files}))
            shutil.rmtree(final, ignore_errors=True)  # only when re-saving an epoch after a resume
            os.replace(tmp, final)
        except (OSError, tf.errors.OpError) as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise OutputError(f"{final}: cannot write the checkpoint ({_cause(exc)}); free some space or fix "
                              f"the permissions") from None
        for old in self.folder.glob("epoch-*"):
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
        return final

    def _state_dict(self, state) -> dict:
        return {"next_epoch": state.next_epoch, "history": [r.to_dict() for r in state.history],
                "best_val_loss": state.best_val_loss, "best_epoch": state.best_epoch,
                "stopped_early": state.stopped_early,
                "schedule": self.schedule.state() if self.schedule else None,
                "early_stopping": self.early_stopping.state() if self.early_stopping else None,
                "topology": self.topology, "precision": self.precision}

    def restore(self):
        """Load the newest checkpoint into the model, optimizer, random layers and policies and return the
        loop's `trainer.FitState`; a damaged file is named before anything is changed."""
        import tensorflow as tf

        from mnist_pipeline.trainer import EpochRecord, FitState

        path = run_folder.latest_checkpoint(self.run_dir)
        if path is None:
            raise RunFolderError(f"{self.folder}: no checkpoint: the run stopped before its first epoch ended; "
                                 f"start it again with `mnist train --config {self.run_dir / run_folder.CONFIG}`")
        data, best = read_checkpoint(path)
        try:
            self.checkpoint.read(str(path / VARIABLES)).assert_existing_objects_matched()
        except (tf.errors.OpError, AssertionError, ValueError) as exc:
            raise damaged(path / f"{VARIABLES}.index", f"its variables do not fit this model ({brief(exc)})") from None
        if self.schedule and data["schedule"]:
            self.schedule.load_state(data["schedule"])
        if self.early_stopping and data["early_stopping"]:
            self.early_stopping.load_state(data["early_stopping"])
        return FitState(next_epoch=data["next_epoch"], history=[EpochRecord(**r) for r in data["history"]],
                        best_val_loss=data["best_val_loss"], best_epoch=data["best_epoch"], best_weights=best,
                        stopped_early=data["stopped_early"])


def read_checkpoint(path: Path) -> tuple[dict, list[np.ndarray] | None]:
    """state.json and the best weights of checkpoint folder `path`, every file checked against its hash.
    NumPy and JSON only: `mnist train --resume` calls it before TensorFlow loads."""
    state_path = path / STATE
    data = read_json(state_path)
    files = field(data, state_path, "files", dict)
    if VARIABLES + ".index" not in files or BEST_WEIGHTS not in files:
        raise damaged(state_path, "its list of checkpoint files is incomplete")
    for name, digest in files.items():
        file = path / name
        if "/" in name or not file.is_file():
            raise damaged(file, "missing from the checkpoint")
        if sha256_file(file) != digest:
            raise damaged(file, "does not match the checkpoint's record of it (damaged after it was written)")
    next_epoch = field(data, state_path, "next_epoch", int, lambda n: n >= 1)
    history = field(data, state_path, "history", list, lambda h: len(h) == next_epoch)
    field(data, state_path, "best_epoch", int, lambda n: 1 <= n <= next_epoch)
    field(data, state_path, "best_val_loss", float)
    field(data, state_path, "stopped_early", bool)
    if not all(isinstance(r, dict) and set(r) == set(run_folder.HISTORY_COLUMNS) for r in history):
        raise damaged(state_path, "its history rows are not epoch records")
    try:
        arrays = load_npz(path / BEST_WEIGHTS, 4096 * MiB)
    except DataError as exc:
        raise damaged(path / BEST_WEIGHTS, str(exc).removeprefix(f"{path / BEST_WEIGHTS}: ")) from None
    best = [arrays[f"arr_{i}"] for i in range(len(arrays))] or None
    return data, best


def _cause(exc: BaseException) -> str:
    """What the operating system said: an OSError's strerror, or the end of TensorFlow's message
    ("{{function_node ...}} /path/...; No space left on device [Op:SaveV2]")."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).split(" [Op:")[0]
    return clip(text.rsplit("; ", 1)[-1].strip(), 120)
