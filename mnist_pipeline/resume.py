"""Going on from a run folder: resume it exactly in place, continue it for more epochs in a new folder, or
start a new run from its weights (fine-tuning). The earlier run is never changed by the last two.

Everything here is checked before TensorFlow loads, except `load_initial_weights`, which needs Keras.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnist_pipeline.bounded_reads import sha256_file
from mnist_pipeline.config import RunConfig, load_config, to_yaml
from mnist_pipeline.errors import ConfigError, RunFolderError
from mnist_pipeline.reports import run_folder, run_reader
from mnist_pipeline.shapes import IMAGE_SHAPE

# What a run folder is made of. 1: fingerprint.json, per-epoch checkpoints with state.json (mnist-pipeline
# 0.1.0). A folder from before has no fingerprint.json; one from a later format says its number there.
RUN_FORMAT = 1


@dataclass
class Resumable:
    """A run folder checked for `--resume` and locked by this process (see `open_resumable`)."""

    run_dir: Path
    lock: run_folder.RunLock | None  # None on a worker that is not the chief: it reads the folder, the chief holds it
    started: str
    fingerprint: dict[str, Any]
    topology: dict[str, Any] | None  # what the last checkpoint was trained on (None: before tf.distribute)
    precision: str | None  # the Keras policy it trained under (None: a checkpoint from before `auto`)


def open_resumable(run_dir: str | Path, lock: bool = True) -> Resumable:
    """The run folder, locked by this process, if it can be resumed: stopped (interrupted, failed, or killed
    while running) with an intact checkpoint and its config unchanged. Otherwise a one-line refusal (exit 2,
    or 1 for a damaged file), with the folder left as it was. Without `lock` (a worker that is not the chief,
    which holds the lock), the same checks, reading only."""
    path = _run_folder(run_dir, "--resume", "pass a folder under <output dir>/runs/")
    run_lock = run_folder.RunLock(path) if lock else None
    if run_lock is not None and not run_lock.acquire():
        raise ConfigError(f"--resume {path}: {_trainer_of(path)} is training this run right now; wait for it to "
                          f"finish or stop it first")
    try:
        status = run_reader.read_status(path)
        if status["status"] == "completed":
            raise ConfigError(f"--resume {path}: the run is already completed; train it further with "
                              f"`mnist train --resume {path} --epochs N` (a new run folder), or start a new run")
        return _checked(path, run_lock, status.get("started", ""))
    except BaseException:
        if run_lock is not None:
            run_lock.release()
        raise


def _checked(path: Path, run_lock, started: str) -> Resumable:
    from mnist_pipeline.checkpoints import read_checkpoint

    fingerprint = _unchanged_fingerprint(path)
    checkpoint = run_folder.latest_checkpoint(path)
    if checkpoint is None:
        raise ConfigError(f"--resume {path}: no checkpoint: the run stopped before its first epoch ended; "
                          f"start it again with `mnist train --config {path / run_folder.CONFIG}`")
    state, _ = read_checkpoint(checkpoint)  # every file against its hash, before anything is loaded or written
    return Resumable(path, run_lock, started, fingerprint, state.get("topology"), state.get("precision"))


def _unchanged_fingerprint(path: Path) -> dict[str, Any]:
    """fingerprint.json, once config.yaml is checked against it: a checkpoint goes on only with its config."""
    fingerprint = read_fingerprint(path)
    recorded = run_reader.field(fingerprint, path / run_folder.FINGERPRINT, "config_sha256", str)
    run_reader.field(fingerprint, path / run_folder.FINGERPRINT, "data_sha256", str)
    if sha256_file(path / run_folder.CONFIG) != recorded:
        raise ConfigError(f"--resume {path}: {run_folder.CONFIG} was changed after the run started, and a run must "
                          f"go on with the config it started with; restore the file, or start a new run with "
                          f"`mnist train --config {path / run_folder.CONFIG}`")
    return fingerprint


def read_fingerprint(path: Path) -> dict[str, Any]:
    """fingerprint.json, with a folder of another format told apart from a damaged one."""
    file = path / run_folder.FINGERPRINT
    if not file.exists():
        raise RunFolderError(f"{path}: made by an earlier version of mnist-pipeline (before 0.1.0: it has no "
                             f"{run_folder.FINGERPRINT}), which this version cannot resume; its finished epochs are "
                             f"in {run_folder.HISTORY}; train it again with `mnist train --config "
                             f"{path / run_folder.CONFIG}`", file)
    fingerprint = run_reader.read_json(file)
    made = fingerprint.get("format", RUN_FORMAT)
    if isinstance(made, int) and made > RUN_FORMAT:
        version = (fingerprint.get("made_by") or {}).get("version", "a later version")
        raise RunFolderError(f"{path}: made by mnist-pipeline {version} (run folder format {made}), newer than "
                             f"this one; upgrade mnist-pipeline to resume or continue it", file)
    return fingerprint


def _run_folder(given: str | Path, option: str, fix: str) -> Path:
    """`given` as a Path if it is a run folder; else a usage error that tells a missing folder from another."""
    path = Path(given)
    if not path.is_dir() or not run_folder.is_run_folder(path):
        what = "no such folder" if not path.is_dir() else "not a run folder (no status.json and config.yaml)"
        raise ConfigError(f"{option} {path}: {what}; {fix}")
    return path


def _trainer_of(path: Path) -> str:
    try:
        pid = run_reader.read_status(path).get("pid")
    except RunFolderError:
        pid = None
    return f"another process (pid {pid})" if pid else "another process"


def check_same_data(resume: Resumable, data_fingerprint: str, source: str) -> None:
    if data_fingerprint != resume.fingerprint["data_sha256"]:
        was = resume.fingerprint.get("data_source", "?")
        raise ConfigError(f"--resume {resume.run_dir}: the data ({source}) is not the data the run started with "
                          f"({was}); resume with the same data (--data-dir), or start a new run")


def wants_new_folder(source: str | Path, epochs: int) -> bool:
    """Whether `--resume source --epochs N` trains the run further in a new folder: the run is completed, or N
    is not the number its config plans. False where the folder cannot be read: `open_resumable` then says
    why."""
    path = Path(source)
    try:
        if run_reader.read_status(path)["status"] == "completed":
            return True
        return load_config(path / run_folder.CONFIG).training.epochs != epochs
    except (ConfigError, RunFolderError, OSError):
        return False


def continue_run(source: str | Path, epochs: int) -> Resumable:
    """A new run folder, locked, that goes on from `source`'s last checkpoint up to `epochs` epochs in all:
    its config (the source's with training.epochs = `epochs`), fingerprint and a copy of that checkpoint.
    The schedule is laid out over the new total (a cosine decay over all `epochs`), early stopping's
    patience starts again, and `source` is left as it was."""
    from mnist_pipeline.checkpoints import STATE, read_checkpoint

    path = _run_folder(source, "--resume", "pass a folder under <output dir>/runs/")
    if run_folder.is_locked(path):
        raise ConfigError(f"--resume {path}: {_trainer_of(path)} is training this run right now; continue it "
                          f"once it has stopped")
    fingerprint = _unchanged_fingerprint(path)
    checkpoint = run_folder.latest_checkpoint(path)
    if checkpoint is None:
        raise ConfigError(f"--resume {path}: no checkpoint to continue from (the run stopped before its first "
                          f"epoch ended); start it again with `mnist train --config {path / run_folder.CONFIG} "
                          f"--epochs {epochs}`")
    state, _ = read_checkpoint(checkpoint)
    done = state["next_epoch"]
    if epochs <= done:
        raise ConfigError(f"--epochs {epochs}: {path} has trained {done} epoch{'s' if done != 1 else ''} already; "
                          f"to continue it ask for more (e.g. --epochs {done + 5})")
    cfg = load_config(path / run_folder.CONFIG)
    training = cfg.training.model_copy(update={"epochs": epochs})
    cfg = cfg.model_copy(update={"training": training})
    new_dir = run_folder.create_unique_dir(path.parent, cfg.run_name)
    lock = run_folder.RunLock(new_dir)
    lock.acquire()  # a new folder: nobody else can hold it
    started = run_folder.utc_now().isoformat(timespec="seconds")
    config_text = to_yaml(cfg)
    run_folder.write_text(new_dir / run_folder.CONFIG, config_text)
    run_folder.write_json(new_dir / run_folder.FINGERPRINT, {
        **fingerprint, "config_sha256": sha256_text(config_text), "format": RUN_FORMAT, "made_by": made_by(),
        "continued_from": {"run": str(path.resolve()), "after_epoch": done}})
    # Until training starts the folder reads as a run stopped after epoch `done`: resumable like any other.
    run_folder.write_status(new_dir, "interrupted", started=started,
                    error=f"continued from {path} after epoch {done}; training had not started yet")
    copied = new_dir / run_folder.CHECKPOINTS / checkpoint.name
    shutil.copytree(checkpoint, copied)
    # Asked for more epochs, so an early stop of the source is lifted, and its patience counts afresh.
    # state.json is outside the checkpoint's list of hashed files: rewriting it keeps the checkpoint whole.
    state["stopped_early"] = False
    if state.get("early_stopping"):
        state["early_stopping"]["wait"] = 0
    run_folder.write_text(copied / STATE, json.dumps(state))
    return Resumable(new_dir, lock, started, read_fingerprint(new_dir), state.get("topology"),
                          state.get("precision"))


def check_init_from(cfg: RunConfig) -> dict[str, Any] | None:
    """For a config with model.init_from (fine-tuning): that run's model file and its hash, checked before
    TensorFlow loads; None without it."""
    source = cfg.model.init_from
    if source is None:
        return None
    where = f"model.init_from {source}"
    path = _run_folder(source, "model.init_from", "name a completed run folder whose weights this run starts from")
    status = run_reader.read_status(path)["status"]
    if status != "completed":
        raise ConfigError(f"{where}: the run {run_reader.status_phrase(status)}, so it has no final model to start "
                          f"from; pick a completed run, or finish it first with `mnist train --resume {path}`")
    theirs = load_config(path / run_folder.CONFIG)
    if theirs.model.name != cfg.model.name:
        raise ConfigError(f"{where}: that run's model is {theirs.model.name} and this config's is "
                          f"{cfg.model.name}; fine-tune from a run of the same model")
    model_file = path / run_folder.MODEL
    if not model_file.is_file():
        raise run_reader.damaged(model_file, "missing")
    if not zipfile.is_zipfile(model_file):
        raise run_reader.damaged(model_file, "not a readable Keras model file (a .keras file is a zip archive, and "
                                            "this one is not a whole one): it was damaged or replaced")
    return {"run": str(path.resolve()), "model_sha256": sha256_file(model_file),
            "normalization": theirs.data.normalization, "params": theirs.model.params}


def initial_weights(cfg: RunConfig, source: dict[str, Any]) -> list:
    """The weights of the run `check_init_from` found (its model.keras: the best epoch's), checked against the
    model this config builds. Needs TensorFlow; call before the run folder is made, so a refusal leaves none."""
    import numpy as np

    from mnist_pipeline.inference import load_model_file
    from mnist_pipeline.models.registry import build_model

    weights = load_model_file(Path(source["run"]) / run_folder.MODEL).get_weights()
    model = build_model(cfg.model.name, **cfg.model.params)
    model(np.zeros((1, *IMAGE_SHAPE), np.float32), training=False)  # Keras 3 creates the weights on a first call
    if [w.shape for w in weights] != [tuple(w.shape) for w in model.get_weights()]:
        differ = [f"{key} {source['params'].get(key)} -> {value}" for key, value in cfg.model.params.items()
                  if source["params"].get(key) != value]
        raise ConfigError(f"model.init_from {source['run']}: its weights do not fit this config's model (its layers "
                          f"have other shapes; model.params differ: {'; '.join(differ) or 'none'}); fine-tune "
                          f"from a run with the same layer sizes")
    return weights


def made_by() -> dict[str, Any]:
    """This mnist-pipeline's version, and its git commit when it runs from a clone (None otherwise)."""
    from mnist_pipeline import __version__

    return {"version": __version__, **_git_commit(Path(__file__).resolve().parent.parent)}


def _git_commit(folder: Path) -> dict[str, Any]:
    """The commit of the clone holding `folder` and whether tracked files differ from it; nothing outside a
    clone or without git."""
    import subprocess

    if not (folder / ".git").exists():  # an installed package: its version says it all
        return {"commit": None}
    try:
        def git(*args: str) -> str:
            return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10,
                                  check=True, env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"}).stdout.strip()

        return {"commit": git("rev-parse", "HEAD"),
                "modified": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None}


def sha256_text(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()
