"""Small helpers the command modules share: checking a run folder argument, showing values and tables."""

from __future__ import annotations

from pathlib import Path

from mnist_pipeline.errors import ConfigError


def show(value) -> str:
    return "null" if value is None else str(list(value) if isinstance(value, tuple) else value)


def existing_dir(path: str) -> Path:
    if not Path(path).is_dir():
        raise ConfigError(f"{path}: no such run folder; runs are under <output dir>/runs/")
    return Path(path)


def table(columns: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(columns, *rows, strict=True)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in (columns, *rows)]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])
