"""Small helpers the command modules share: showing values and tables."""

from __future__ import annotations


def show(value) -> str:
    return "null" if value is None else str(list(value) if isinstance(value, tuple) else value)


def table(columns: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(columns, *rows, strict=True)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in (columns, *rows)]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])
