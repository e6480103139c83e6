"""Commands on finished runs: report, predict, compare, export (evaluate and ensemble: cli/scoring.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from mnist_pipeline.cli.common import TEMPERATURE_OPTION, strict_json, table, temperature_note, terminal_width
from mnist_pipeline.errors import ConfigError


@click.command(short_help="Redraw a run's figures and report (no TensorFlow).")
@click.argument("run_dir", type=click.Path(file_okay=False))
def report(run_dir) -> None:
    """Redraw a run's figures and rewrite its report.md and self-contained report.html.

    Works on failed or unfinished runs too (with what they have). Needs no TensorFlow and no data.

    Example: mnist report outputs/runs/20261123T120000Z-cnn
    """
    from mnist_pipeline.reports import run_folder
    from mnist_pipeline.reports.document import write_report  # NumPy and matplotlib: only when drawing

    if run_folder.is_locked(Path(run_dir)):  # its trainer rewrites the report as it goes, and at the end
        raise ConfigError(f"{run_dir}: another process is training this run right now, and writes its report "
                          f"when it stops; run `mnist report` after that")
    files = write_report(Path(run_dir))  # refuses a folder that is not a run's before drawing anything
    for file in files:
        click.echo(f"wrote {file}")
    click.echo(f"report: {files[-1]}")


@click.command(short_help="Classify image files with a run's model.")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.argument("files", nargs=-1, required=True, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the predictions as JSON (all class probabilities).")
@click.option("--save-input", metavar="DIR", type=click.Path(file_okay=False),
              help="Also save each image as the model saw it (28x28 PNG, light on dark) into DIR.")
@TEMPERATURE_OPTION
def predict(run_dir, files, as_json, save_input, temperature) -> None:
    """Classify pictures with a run's model: image files (PNG, JPEG, ...; phone photos of any size), .npy
    arrays, or folders of them. Each picture is prepared as the run's dataset was made (MNIST: the digit
    in a 20x20 box, centred by mass; Fashion-MNIST: trimmed, longest edge 28, centred, negated), after the
    paper's uneven light is flattened.

    Prints the answer and the top-3 probabilities per image, divided by the run's temperature (fitted on validation:
    "97% sure" then means right about 97% of the time) unless --no-temperature. Warns when the picture is blank, and
    when the answer is unsure: below the confidence at which the run's validation answers were right less than 90%
    of the time. A bad file gets one error line and the others are still predicted; the exit code is then 1.

    Example: mnist predict outputs/runs/20261123T120000Z-cnn digit.jpg more.npy photos/
    """
    from mnist_pipeline.inference import predict_files, save_seen

    predictions = predict_files(run_dir, list(files), calibrated=temperature)
    note = temperature_note(run_dir, temperature)
    if note:
        click.echo(note, err=True)
    saved = save_seen(predictions, save_input) if save_input else [None] * len(predictions)
    if as_json:
        click.echo(strict_json([_prediction_json(p, seen) for p, seen in zip(predictions, saved, strict=True)]))
    for p, seen in zip(predictions, saved, strict=True):
        if p.error:
            click.echo(f"error: {p.error}", err=True)
            continue
        if p.warning:
            click.echo(f"warning: {p.warning}", err=True)
        if p.probabilities and not as_json:
            top = ", ".join(f"{name} {q:.3f}" for _, name, q in p.top)
            where = f"; seen as {seen}" if seen else ""
            click.echo(f"{p.source}: {p.top[0][1]}{'?' if p.uncertain else ''}  (top {len(p.top)}: {top}{where})")
    if any(p.error for p in predictions):
        sys.exit(1)


def _prediction_json(p, seen) -> dict:
    by_class = sorted(p.probabilities)
    return {"file": p.source, "prediction": p.top[0][0] if p.top else None, "name": p.top[0][1] if p.top else None,
            "confidence": p.top[0][2] if p.top else None, "uncertain": p.uncertain, "temperature": p.temperature,
            "probabilities": [q for _, _, q in by_class], "classes": [name for _, name, _ in by_class],
            "top": [{"class": c, "name": name, "probability": q} for c, name, q in p.top],
            **({"seen": str(seen)} if seen else {}), **({"error": p.error} if p.error else {}),
            **({"warning": p.warning} if p.warning else {})}


@click.command(short_help="Rank runs by validation accuracy, side by side.")
@click.argument("run_dirs", nargs=-1, type=click.Path())
@click.option("--all", "all_runs", is_flag=True, help="Compare every run under OUTPUT_DIR/runs (the default "
                                                        "when no RUN_DIR is given).")
@click.option("--output-dir", metavar="DIR",
              help="Where to find runs when no RUN_DIR is given (default: outputs), and where to write "
                   "comparisons/ (default: beside the runs, e.g. X/comparisons/ for runs in X/runs/).")
@click.option("--rank-by", type=click.Choice(["val", "corrupted", "ece"]), default="val", show_default=True,
              help="val: best validation accuracy; corrupted: mean accuracy under MNIST-C's corruptions (runs "
                   "scored by `mnist evaluate --corruptions`); ece: test calibration error, lowest first.")
@click.option("--json", "as_json", is_flag=True, help="Print the ranked runs as one JSON object.")
def compare(run_dirs, all_runs, output_dir, rank_by, as_json) -> None:
    """Rank runs by best validation accuracy, with test accuracy beside it and the config keys in which they
    differ as columns; write comparison.md and comparison.png (validation curves overlaid) beside the runs,
    in a new comparisons/<timestamp>-compare/ folder (with --output-dir DIR: under DIR instead).

    Without RUN_DIR, every run under OUTPUT_DIR/runs. Failed and unfinished runs are listed with their status.
    Ranking on validation, not test, keeps the test number an honest estimate of the chosen run; --rank-by
    corrupted or ece ranks on the test split's robustness or calibration instead, to look at trust. The terminal
    table fits the terminal's width: the config keys that best explain the ranking come first, and a line
    under it names what was left out (comparison.md and --json have every key).

    Example: mnist compare outputs/runs/*-cnn
    """
    from mnist_pipeline.reports.compare import (
        RANKINGS,
        comparison_home,
        corruption_notes,
        differing_keys,
        find_runs,
        new_comparison_dir,
        rank,
        summarize_run,
        write_comparison,
    )

    if all_runs and run_dirs:
        raise ConfigError("give RUN_DIR... or --all, not both (--all compares every run under OUTPUT_DIR/runs)")
    search = Path(output_dir or "outputs")
    paths = [_folder(d) for d in run_dirs] if run_dirs else find_runs(search)
    if not paths:
        raise ConfigError(f"no runs to compare: none under {search / 'runs'}; train one, or pass RUN_DIR... "
                          f"or --output-dir DIR")
    summaries = rank([summarize_run(p) for p in paths], rank_by)
    keys = differing_keys(summaries)
    # An explicit --output-dir wins; else beside the runs, wherever the command is run from.
    out_dir = new_comparison_dir(Path(output_dir) / "comparisons" if output_dir else comparison_home(paths))
    files = write_comparison(summaries, out_dir, rank_by)
    for note in corruption_notes(summaries, rank_by):  # on stderr: beside --json too
        click.echo(f"warning: {note}", err=True)
    best = rank(summaries)[0]
    ranked = best if best.best_val_accuracy is not None else None
    if as_json:
        click.echo(strict_json({"runs": [s.to_dict(keys) for s in summaries], "ranked_by": RANKINGS[rank_by][0],
                                "differing_keys": keys, "best": ranked.run_dir.name if ranked else None,
                                "comparison": str(files[0]), "files": [str(f) for f in files]}))
        return
    width = terminal_width()
    text, left_out = _compare_table(summaries, keys, width, RANKINGS[rank_by][2])
    click.echo(text)
    if left_out:
        click.echo(_left_out_line(left_out, width))
    if rank_by != "val":
        click.echo(f"ranked by {RANKINGS[rank_by][2]}, a test-split number: look at it to judge trust, but choose "
                   f"a model on validation, or the chosen model's test numbers turn optimistic")

    if ranked:
        test = f", test {ranked.test_accuracy:.4f}" if ranked.test_accuracy is not None else ""
        click.echo(f"best on validation: {ranked.run_dir.name} ({ranked.model}, val {ranked.best_val_accuracy:.4f}"
                   f"{test})")
    for file in files:
        click.echo(f"wrote {file}")


def _compare_table(summaries, keys: list[str], width: int,
                   ranked_column: str = "best val acc") -> tuple[str, list[str]]:
    """The ranked runs as a table at most `width` wide, and the names of the columns left out to fit (config
    keys first). Columns are taken while they fit: the essential ones (always, however narrow the terminal),
    the keys that explain some of the ranking (best first), the secondary numbers, then the keys that explain
    none of it."""
    from mnist_pipeline.config.docs import short_key_labels
    from mnist_pipeline.reports.compare import COLUMNS, keys_by_explanation

    base = [s.cells() for s in summaries]
    cells = {name: [row[i] for row in base] for i, name in enumerate(COLUMNS)}
    cells |= {key: [s.config.get(key, "-") for s in summaries] for key in keys}
    names = {**{c: c for c in COLUMNS}, **short_key_labels(keys, COLUMNS)}  # `subset` for data.subset
    ranked = keys_by_explanation(summaries, keys)
    # Accuracies on two datasets do not compare: which dataset comes first, whatever it explains. A number
    # that is the same in every row says nothing in a column.
    first = ["data.dataset"] if "data.dataset" in keys else []
    varied = [c for c in ("test ECE", "corrupt acc", "parameters", "epochs", "train s") if len(set(cells[c])) > 1]
    # A model's own parameter (batch_norm of a deep_mlp beside a cnn) differs because the model does: the
    # model column says that already.
    shared = [key for key, share in ranked if key not in first and all(key in s.config for s in summaries)]
    order = (first + [key for key, share in ranked if share > 0 and key in shared] + varied
             + [key for key, share in ranked if share <= 0 and key in shared]
             + [key for key, _ in ranked if key not in first and key not in shared])
    shown = list(dict.fromkeys(["run", "status", "model", "best val acc", "test acc", ranked_column]))
    used = sum(max(len(names[c]), *map(len, cells[c])) for c in shown) + 2 * (len(shown) - 1)
    for column in order:
        need = 2 + max(len(names[column]), *map(len, cells[column]))  # the gap before it, then its width
        if used + need <= width:
            shown.append(column)
            used += need
    columns = [c for c in COLUMNS if c in shown] + [key for key in order if key in shown and key not in COLUMNS]
    rows = [[cells[c][n] for c in columns] for n in range(len(summaries))]
    left_out = [key for key in order if key not in shown]  # a number that is the same in every row is not missed
    return table([names[c] for c in columns], rows), [names[c] for c in left_out]


def _left_out_line(left_out: list[str], width: int) -> str:
    """One line naming the columns left out, within `width` where it can be: every name, else as many as fit
    ("and 12 more"), the pointer to comparison.md kept where it fits too."""
    lines = [f"no room for: {', '.join(left_out)}"]
    lines += [f"no room for: {', '.join(left_out[:n])} and {len(left_out) - n} more"
              for n in range(len(left_out) - 1, 0, -1)]
    return next((line + end for line in lines for end in (" (all in comparison.md)", "")
                 if len(line + end) <= width), lines[-1])


def _folder(run_dir: str) -> Path:
    path = Path(run_dir)
    if not path.is_dir():  # a damaged run is still a folder: it is listed as unreadable, not refused
        problem = "is a file, not a run folder" if path.exists() else "no such run folder"
        raise ConfigError(f"{path}: {problem}; pass run folders, such as outputs/runs/<run>/")
    return path


@click.command(name="export", short_help="Export a run's model: SavedModel, LiteRT or ONNX.")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--format", "formats", type=click.Choice(["savedmodel", "tflite", "onnx"]), multiple=True,
              required=True, help="savedmodel (folder), tflite (LiteRT) or onnx; repeatable.")
@click.option("--output", type=click.Path(), metavar="PATH",
              help="Where to write (one --format only; default: <run>/export/savedmodel, model.tflite, model.onnx).")
@click.option("--quantize", type=click.Choice(["int8"]),
              help="int8: post-training integer quantization (tflite, onnx), calibrated on training images and "
                   "scored against the float export on the test split; written to model.int8.tflite / .onnx.")
@click.option("--max-accuracy-drop", type=float, default=1.0, show_default=True, metavar="POINTS",
              help="With --quantize: the test accuracy, in percentage points, the int8 model may lose against the "
                   "float one; past it nothing is written.")
@click.option("--allow-accuracy-drop", is_flag=True, help="With --quantize: write the int8 model even past "
                                                           "--max-accuracy-drop (with a warning).")
@click.option("--data-dir", metavar="DIR", help="With --quantize: the data to calibrate and score on (default: the "
                                                "run's data source).")
@TEMPERATURE_OPTION
def export(run_dir, formats, output, quantize, max_accuracy_drop, allow_accuracy_drop, data_dir,
           temperature) -> None:
    """Export a completed run's model for use without this package: raw 28x28 images (float32 pixel values
    0-255, any batch size) in, the 10 class probabilities out, the run's normalization, test-time flips and
    temperature (unless --no-temperature) inside. onnx needs the export extra: pip install -e '.[export]'.

    Example: mnist export outputs/runs/20261123T120000Z-cnn --format tflite --format onnx
    """
    from mnist_pipeline.export import check_format, export_run, precision_note
    from mnist_pipeline.quantize import Int8, check_options
    from mnist_pipeline.reports import run_folder, run_reader

    formats = list(dict.fromkeys(formats))
    if output and len(formats) > 1:
        raise ConfigError("--output names one file or folder; give one --format with it, or drop --output")
    if not quantize and (allow_accuracy_drop or data_dir or max_accuracy_drop != 1.0):
        raise ConfigError("--max-accuracy-drop, --allow-accuracy-drop and --data-dir go with --quantize int8")
    int8 = Int8(max_accuracy_drop, allow_accuracy_drop, data_dir) if quantize else None
    for fmt in formats:
        check_format(fmt)  # every converter present before the first export starts
        if int8 is not None:
            check_options(fmt, int8.max_drop)
    for fmt in formats:
        path = export_run(run_dir, fmt, output, calibrated=temperature, int8=int8,
                          say=lambda line: click.echo(line, err=line.startswith("warning:")))
        click.echo(f"{fmt}{' int8' if int8 else ''}: {path}")
    note = temperature_note(run_dir, temperature)
    if note:
        click.echo(note, err=True)
    note = precision_note(run_reader.read_metrics(run_folder.run_folder(run_dir)).get("precision"))
    if note:
        click.echo(note, err=True)
