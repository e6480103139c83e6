"""Per-epoch checkpoints of a training run, written atomically, enough to continue it exactly.

A checkpoint is a folder `checkpoints/epoch-NNNN/` holding the model and optimizer variables and the
random-generator states of the dropout layers (`training.*`, a tf.train.Checkpoint), the best weights so
far (`best_weights.npz`) and the loop's state (`state.json`: history, best score, schedule and
early-stopping state). It is written under a temporary name and renamed when complete, and only the newest
is kept (it holds the best weights too), so a kill at any moment leaves one whole checkpoint.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from mnist_pipeline.errors import OutputError, PipelineError
from mnist_pipeline.reports import run_folder as rf
from mnist_pipeline.trainer import EpochRecord, FitState


def seed_states(model) -> list:
    """The state variables of every SeedGenerator (Dropout layers) in `model`.

    Keras keeps them out of `model.weights`, but without them a resumed run draws different dropout masks.
    (Augmentation needs nothing saved: its random numbers are keyed by seed and batch number.)
    """
    return [v.state for layer in model._flatten_layers(include_self=True) for v in vars(layer).values()
            if isinstance(v, keras.random.SeedGenerator)]


class Checkpointer:
    def __init__(self, run_dir: Path, model, optimizer, schedule=None, early_stopping=None):
        self.run_dir = Path(run_dir)
        self.folder = self.run_dir / rf.CHECKPOINTS
        self.model = model
        self.schedule = schedule
        self.early_stopping = early_stopping
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer,
                                              seeds=seed_states(model))

    def save(self, state: FitState) -> Path:
        final = self.folder / f"epoch-{state.next_epoch:04d}"
        tmp = self.folder / f".epoch-{state.next_epoch:04d}.{os.getpid()}.tmp"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            self.checkpoint.write(str(tmp / "training"))
            buffer = io.BytesIO()
            np.savez(buffer, *(state.best_weights or []))
            (tmp / "best_weights.npz").write_bytes(buffer.getvalue())
            (tmp / "state.json").write_text(json.dumps(self._state_dict(state)))
            shutil.rmtree(final, ignore_errors=True)  # only when re-saving an epoch after a resume
            os.replace(tmp, final)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise OutputError(f"{self.folder}: cannot write the checkpoint ({exc.strerror or exc}); "
                              f"check free space and permissions") from None
        for old in self.folder.glob("epoch-*"):
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
        return final

    def _state_dict(self, state: FitState) -> dict:
        return {"next_epoch": state.next_epoch, "history": [r.to_dict() for r in state.history],
                "best_val_loss": state.best_val_loss, "best_epoch": state.best_epoch,
                "stopped_early": state.stopped_early,
                "schedule": self.schedule.state() if self.schedule else None,
                "early_stopping": self.early_stopping.state() if self.early_stopping else None}

    def restore(self) -> FitState:
        """Load the newest checkpoint into the model, optimizer, random layers and policies."""
        path = rf.latest_checkpoint(self.run_dir)
        if path is None:
            raise PipelineError(f"{self.folder}: no checkpoint; the run stopped before its first epoch ended, "
                                f"start it again instead of resuming")
        self.checkpoint.read(str(path / "training")).assert_existing_objects_matched()
        data = json.loads((path / "state.json").read_text())
        with np.load(path / "best_weights.npz") as npz:
            best = [npz[f"arr_{i}"] for i in range(len(npz.files))] or None
        if self.schedule and data["schedule"]:
            self.schedule.load_state(data["schedule"])
        if self.early_stopping and data["early_stopping"]:
            self.early_stopping.load_state(data["early_stopping"])
        return FitState(next_epoch=data["next_epoch"], history=[EpochRecord(**r) for r in data["history"]],
                        best_val_loss=data["best_val_loss"], best_epoch=data["best_epoch"], best_weights=best,
                        stopped_early=data["stopped_early"])

