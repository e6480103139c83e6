"""Small helpers the command modules share: a group class, the terminal's width, tables, strict JSON and the
temperature option."""

from __future__ import annotations

import json
import math
import shutil
import textwrap

import click

GAP = "  "  # between columns
# Narrowest text column worth reading beside the others: narrower, a paragraph becomes a tall thin strip, so
# it goes under its row across the whole width instead.
MIN_LAST = 40
MIN_WRAPPED = 24  # narrowest a wrapped middle column is squeezed to: most type texts still fit on one line
MAX_WRAPPED = 36  # widest it grows: one long type text should not push every row's next column far right
UNDER = "    "  # indent of the text column when it goes under its row


# predict, evaluate, ensemble and export divide a run's probabilities by its fitted temperature by default.
TEMPERATURE_OPTION = click.option(
    "--temperature/--no-temperature", default=True, show_default=True,
    help="Divide the run's scores by its temperature (fitted on validation, in metrics.json) so that confidences "
         "are calibrated; accuracy never changes. Runs made before calibration was measured have none.")


def temperature_note(run_dir, wanted: bool) -> str | None:
    """The stderr note for a run asked to be calibrated that has no temperature (trained before calibration
    was measured): its probabilities are the raw ones. None when there is nothing to say."""
    from pathlib import Path

    from mnist_pipeline.reports import run_folder, run_reader

    if not wanted:
        return None
    path = run_folder.run_folder(Path(run_dir))
    if run_reader.temperature(run_reader.read_metrics(path)) is not None:
        return None
    return (f"note: {path.name} has no fitted temperature (trained before calibration was measured): its "
            f"probabilities are the raw ones, as with --no-temperature")


NOT_FINITE = "not a finite number (NaN or infinite) in the run's files or results: the run diverged or a file changed"


def strict_json(value) -> str:
    """`value` as strict JSON (RFC 8259 has no NaN or Infinity; Python's json writes them by default): each
    non-finite number becomes null, and the object holding it says why under `null_reasons` (key -> reason)."""
    def clean(item):
        if isinstance(item, dict):
            out, reasons = {}, {}
            for key, v in item.items():
                if isinstance(v, float) and not math.isfinite(v):
                    out[key], reasons[key] = None, NOT_FINITE
                else:
                    out[key] = clean(v)
            if reasons:
                out["null_reasons"] = {**out.get("null_reasons", {}), **reasons}
            return out
        if isinstance(item, (list, tuple)):
            return [None if isinstance(v, float) and not math.isfinite(v) else clean(v) for v in item]
        return item

    return json.dumps(clean(value), indent=2, allow_nan=False)


class OrderedGroup(click.Group):
    """Lists its commands in the order they were added (the workflow's), not alphabetically."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


def terminal_width() -> int:
    """Columns of the terminal: $COLUMNS if set, else the terminal's own, else 80 (a pipe or a file)."""
    return shutil.get_terminal_size().columns


def table(columns: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(columns, *rows, strict=True)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in (columns, *rows)]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def wrap(text: str, width: int) -> list[str]:
    """`text` in lines of at most `width` characters, broken at spaces only (`learning-rate` and `--init-from`
    stay whole), and in a list of choices after a "|", never before it; [""] for no text."""
    glued = text.replace(" | ", "\xa0| ")  # textwrap never breaks at a no-break space
    lines = textwrap.wrap(glued, width=max(width, 1), break_on_hyphens=False)
    return [line.replace("\xa0", " ") for line in lines] or [""]


def wrapped_table(columns: list[str] | None, rows: list[list[str]], wrapped: set[int] = frozenset(),
                  width: int | None = None, indent: str = "") -> str:
    """A table that fits `width` (default: the terminal's): the last column wraps under itself, and so do the
    columns in `wrapped` (squeezed to make room for it); the others keep their whole width and never break (a
    key must stay copyable). Where the last column would still be narrower than MIN_LAST, it goes under each
    row instead, indented, across the whole width. `columns`: a header row, underlined; None for none."""
    width = width or terminal_width()
    grid = [list(map(str, row)) for row in ([columns] if columns else []) + rows]
    natural = [max(len(cell) for cell in column) for column in zip(*grid, strict=True)]
    last = len(natural) - 1
    capped = [min(w, MAX_WRAPPED) if i in wrapped else w for i, w in enumerate(natural[:last])]
    beside_others = len(indent) + sum(capped) + len(GAP) * last
    widths = _squeeze(capped, wrapped, MIN_LAST - (width - beside_others))
    room = width - len(indent) - sum(widths) - len(GAP) * last  # for the last column, beside the others
    beside = room >= MIN_LAST
    if not beside:  # the last column goes under each row; the others need only fit the width themselves
        widths = _squeeze(capped, wrapped, beside_others - len(GAP) - width)
    lines = []
    for n, row in enumerate(grid):
        cells = [wrap(cell, w) if i in wrapped else [cell]
                 for i, (cell, w) in enumerate(zip(row[:last], widths, strict=True))]
        if beside:
            cells.append(wrap(row[last], room))
        for k in range(max(map(len, cells))):
            parts = [(cell[k] if k < len(cell) else "").ljust(w)
                     for cell, w in zip(cells, [*widths, 0][:len(cells)], strict=True)]
            lines.append((indent + GAP.join(parts)).rstrip())
        if columns and n == 0:  # under the header: its rule (a lone "meaning" line under it would say nothing)
            lines.append(indent + GAP.join("-" * w for w in [*widths, *([min(natural[last], room)] * beside)]))
        elif not beside and row[last]:
            lines += [indent + UNDER + text for text in wrap(row[last], width - len(indent + UNDER))]
    return "\n".join(lines)


def _squeeze(widths: list[int], wrapped: set[int], excess: int) -> list[int]:
    """`widths` less `excess` columns in all, taken from the wrapped ones, widest first, none below MIN_WRAPPED."""
    widths = list(widths)
    for i in sorted((i for i in wrapped if i < len(widths)), key=lambda i: -widths[i]):
        take = min(max(excess, 0), widths[i] - MIN_WRAPPED)
        if take > 0:
            widths[i] -= take
            excess -= take
    return widths
