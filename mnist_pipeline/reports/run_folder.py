"""The run folder: `<output dir>/runs/<UTC timestamp>-<name>/` and the files in it, each written atomically.

A folder is never reused: creation is exclusive, and a name taken in the same second gets a `-2`, `-3` suffix.
`status.json` says whether the run is running, completed or failed, so a half-written run never looks finished.
"""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mnist_pipeline.errors import ConfigError, OutputError

CONFIG = "config.yaml"
HISTORY = "history.csv"
METRICS = "metrics.json"
STATUS = "status.json"
NORMALIZATION = "normalization.json"
MODEL = "model.keras"
CURVES = "curves.png"
CONFUSION = "confusion_matrix.png"
MISCLASSIFIED = "misclassified.png"
SAMPLES = "samples.png"
WEIGHTS = "weights.png"
MODEL_SUMMARY = "model_summary.json"
REPORT_DATA = "report_data.npz"  # test probabilities and the images the figures show: reports need no TF
CHECKPOINTS = "checkpoints"  # one folder per checkpoint: epoch-NNNN (see mnist_pipeline.checkpoints)
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds")


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def create_run_dir(output_dir: str | Path, name: str, now: datetime | None = None) -> Path:
    """Create and return a new, empty run folder; never returns one that already existed."""
    return create_unique_dir(Path(output_dir) / "runs", name, now)


def create_unique_dir(runs: Path, name: str, now: datetime | None = None) -> Path:
    """A new folder `<runs>/<UTC timestamp>-<name>[-N]`, created exclusively."""
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
        raise OutputError(f"{runs}: cannot create the run folder ({exc.strerror or exc}); "
                          f"choose a writable --output-dir") from None
    raise OutputError(f"{runs}: 999 runs named {stamp}-{name}; wait a second or pick another output.name")


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_bytes(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename, so readers see the old file or the new one, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as f:  # plain open: the umask's usual permissions
            f.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write ({exc.strerror or exc}); check free space and permissions") from None


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_history(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_value(row[k]) for k in HISTORY_COLUMNS})
    write_text(run_dir / HISTORY, buffer.getvalue())


def existing_run_dir(run_dir: str | Path) -> Path:
    """`run_dir` as a Path if it is a folder; else a usage error saying where runs live."""
    path = Path(run_dir)
    if not path.is_dir():
        raise ConfigError(f"{path}: no such run folder; runs are under <output dir>/runs/")
    return path


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint folder of a run (temporary ones start with a dot), or None."""
    done = sorted((Path(run_dir) / CHECKPOINTS).glob("epoch-*"))
    return done[-1] if done else None


def read_history(run_dir: Path) -> list[dict[str, float]]:
    with open(run_dir / HISTORY, newline="", encoding="utf-8") as f:
        return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()} for row in csv.DictReader(f)]


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def write_status(run_dir: Path, status: str, *, started: str, error: str | None = None,
                 pid: int | None = None) -> None:
    """status: running (with the pid of the process) | completed | failed | interrupted (with the error)."""
    data = {"status": status, "started": started, "updated": utc_now().isoformat(timespec="seconds")}
    if pid is not None:
        data["pid"] = pid
    if error:
        data["error"] = error
    write_json(run_dir / STATUS, data)


def _csv_value(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value
