"""The run folder: `<output dir>/runs/<UTC timestamp>-<name>/`, its file names, atomic writes and its lock.

A folder is never reused: creation is exclusive, and a name taken in the same second gets a `-2`, `-3` suffix.
`status.json` says whether the run is running, completed or failed, so a half-written run never looks finished.
The process that trains a run holds a lock on its folder (`RunLock`), which the kernel drops when the process
dies: "running" with the lock free means the process is gone. Reading the files back is `run_reader`'s job.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import secrets
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mnist_pipeline.errors import ConfigError, OutputError

CONFIG = "config.yaml"
HISTORY = "history.csv"
METRICS = "metrics.json"
STATUS = "status.json"
FINGERPRINT = "fingerprint.json"  # hashes of the config and data the run started with: resume checks them
NORMALIZATION = "normalization.json"
MODEL = "model.keras"
CURVES = "curves.png"
CONFUSION = "confusion_matrix.png"
MISCLASSIFIED = "misclassified.png"
SAMPLES = "samples.png"
WEIGHTS = "weights.png"
MODEL_SUMMARY = "model_summary.json"
ROBUSTNESS = "robustness.json"  # accuracy and calibration under MNIST-C's corruptions (mnist evaluate --corruptions)
RELIABILITY = "reliability.png"
CORRUPTIONS = "corruptions.png"
SALIENCY = "saliency.png"
REPORT_DATA = "report_data.npz"  # test probabilities and the images the figures show: reports need no TF
CHECKPOINTS = "checkpoints"  # one folder per checkpoint: epoch-NNNN (see mnist_pipeline.checkpoints)
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds")
# Written under a temporary name, then renamed: `.<name>.<pid>.<hex>.tmp[.keras]` files, `.epoch-NNNN.<pid>.tmp`
# folders. A leading dot keeps them out of every glob that looks for results.
TEMPORARY_SUFFIX = ".tmp"


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def create_run_dir(output_dir: str | Path, name: str, now: datetime | None = None) -> Path:
    """Create and return a new, empty run folder; never returns one that already existed."""
    return create_unique_dir(Path(output_dir) / "runs", name, now)


def create_unique_dir(runs: Path, name: str, now: datetime | None = None, what: str = "run folder") -> Path:
    """A new folder `<runs>/<UTC timestamp>-<name>[-N]`, created exclusively; `what` it is words the errors."""
    stamp = (now or utc_now()).strftime("%Y%m%dT%H%M%SZ")
    try:
        runs.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, 1000):
            candidate = runs / (f"{stamp}-{name}" if attempt == 1 else f"{stamp}-{name}-{attempt}")
            try:
                candidate.mkdir()  # exclusive: fails if another run took the name first
                return candidate
            except FileExistsError:
                continue
    except OSError as exc:
        raise OutputError(f"{runs}: cannot create the {what} ({exc.strerror or exc}); "
                          f"choose a writable --output-dir") from None
    raise OutputError(f"{runs}: 999 folders named {stamp}-{name} already; wait a second and try again")


def temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{TEMPORARY_SUFFIX}")


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_bytes(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename, so readers see the old file or the new one, never half."""
    def write(tmp: Path) -> None:
        with open(tmp, "xb") as f:  # plain open: the umask's usual permissions
            f.write(data)

    write_atomically(path, write)


def write_atomically(path: Path, write, suffix: str = "", action: str = "write") -> None:
    """`write(tmp)` a temporary file beside `path` (its name ending in `suffix`), then rename it to `path`;
    on failure, remove it and raise one OutputError: `<path>: cannot <action> (<cause>)`."""
    tmp = temporary_name(path)
    tmp = tmp.with_name(tmp.name + suffix)
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot {action} ({exc.strerror or exc}); free some space or fix the "
                          f"permissions") from None


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_history(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_value(row[k]) for k in HISTORY_COLUMNS})
    write_text(run_dir / HISTORY, buffer.getvalue())


def write_status(run_dir: Path, status: str, *, started: str, error: str | None = None,
                 pid: int | None = None) -> None:
    """status: running (with the pid of the process) | completed | failed | interrupted (with the error)."""
    data = {"status": status, "started": started, "updated": utc_now().isoformat(timespec="seconds")}
    if pid is not None:
        data["pid"] = pid
    if error:
        data["error"] = error
    write_json(run_dir / STATUS, data)


def is_run_folder(path: Path) -> bool:
    """A folder `mnist train` made: it writes status.json and config.yaml first."""
    return (path / STATUS).is_file() and (path / CONFIG).is_file()


def run_folder(run_dir: str | Path) -> Path:
    """`run_dir` as a Path if it is a run folder; else a usage error saying where runs live."""
    path = Path(run_dir)
    if not path.is_dir():
        raise ConfigError(f"{path}: no such run folder; runs are under <output dir>/runs/")
    if not is_run_folder(path):
        raise ConfigError(f"{path}: not a run folder (no status.json and config.yaml); pass a folder under "
                          f"<output dir>/runs/")
    return path


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint folder of a run (temporary ones start with a dot), or None."""
    done = sorted((Path(run_dir) / CHECKPOINTS).glob("epoch-*"))
    return done[-1] if done else None


def next_step(run_dir: Path) -> str:
    """What to do with a stopped run: resume it from its last checkpoint, or start it again if it has none."""
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is not None:
        epoch = checkpoint.name.removeprefix("epoch-").lstrip("0") or "0"
        return f"it can go on from its checkpoint after epoch {epoch}: `mnist train --resume {run_dir}`"
    return (f"no epoch had finished, so there is nothing to resume; start again with "
            f"`mnist train --config {run_dir / CONFIG}`")


def remove_temporaries(run_dir: Path) -> list[Path]:
    """Delete what a killed writer left: temporary files and checkpoint folders. Call holding the run's lock."""
    pattern = f".*{TEMPORARY_SUFFIX}*"
    found = [*Path(run_dir).glob(pattern), *(Path(run_dir) / CHECKPOINTS).glob(pattern)]
    for path in found:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return found


class RunLock:
    """An exclusive lock on a run folder, held while one process trains it.

    flock on the folder itself: nothing is written, so a refused request leaves the folder as it was, and the
    kernel releases the lock when the process dies however it dies (no stale lock files after SIGKILL).
    """

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock if no other process holds it; False if one does."""
        fd = os.open(self.run_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the last descriptor drops the flock
            self.fd = None


def is_locked(run_dir: Path) -> bool:
    """Whether a live process holds the run's lock (is training it right now)."""
    lock = RunLock(run_dir)
    try:
        if not lock.acquire():
            return True
    except OSError:
        return False
    lock.release()
    return False


def _csv_value(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value
