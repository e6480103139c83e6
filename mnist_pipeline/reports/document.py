"""`report.md` and a self-contained `report.html` for a run folder, with its figures, from the files in it.

Needs no TensorFlow and no data: everything comes from config.yaml, metrics.json, history.csv,
model_summary.json and report_data.npz. Parts whose files are missing (a failed run) are left out and said so;
a damaged file stops the report, named, before anything is drawn or overwritten.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mnist_pipeline.config import CLASS_NAMES, flat_values, load_config, yaml_value
from mnist_pipeline.reports import plots, run_folder, run_reader, trust
from mnist_pipeline.reports.sections import Section, render_html, render_markdown
from mnist_pipeline.shapes import PIXELS


def write_report(run_dir: Path, status: str | None = None) -> list[Path]:
    """Draw the figures and write report.md and report.html of a run folder; return the files written.

    `status` overrides status.json's (the trainer writes the report before it marks the run completed).
    """
    run_dir = run_folder.run_folder(run_dir)
    config = load_config(run_dir / run_folder.CONFIG).model_dump(mode="json")
    recorded = run_reader.read_status(run_dir)
    status = status or recorded["status"]
    metrics = run_reader.read_metrics(run_dir) if (run_dir / run_folder.METRICS).exists() else {}
    history = run_reader.read_history(run_dir) if (run_dir / run_folder.HISTORY).exists() else []
    layers = run_reader.read_model_summary(run_dir) if (run_dir / run_folder.MODEL_SUMMARY).exists() else []
    names = CLASS_NAMES[config["data"]["dataset"]]
    data = run_reader.read_report_data(run_dir, len(names)) if (run_dir / run_folder.REPORT_DATA).exists() else None
    robustness = run_reader.read_robustness(run_dir)

    title = f"{run_dir.name} ({config.get('model', {}).get('name', '?')})"  # every figure's
    figures = _draw_figures(run_dir, history, metrics, data, names, config, title)
    figures.update(_draw_trust_figures(run_dir, metrics, data, robustness, names, title))
    notice = _notice(run_dir, status, recorded.get("error")) if status != "completed" else None
    sections = _sections(config, metrics, status, history, layers, figures, notice, robustness)
    written = [run_dir / name for name in figures]
    run_folder.write_text(run_dir / run_folder.REPORT_MD, render_markdown(f"Run {run_dir.name}", sections))
    run_folder.write_text(run_dir / run_folder.REPORT_HTML, render_html(f"Run {run_dir.name}", sections, run_dir))
    return [*written, run_dir / run_folder.REPORT_MD, run_dir / run_folder.REPORT_HTML]


def _draw_figures(run_dir: Path, history, metrics, data, names, config, title) -> dict[str, tuple[str, str]]:
    """File name -> (heading, caption) of each figure drawn."""
    figures: dict[str, tuple[str, str]] = {}
    if history:
        plots.plot_curves(history, metrics.get("best_epoch", 0), run_dir / run_folder.CURVES, title)
        figures[run_folder.CURVES] = ("Learning curves", _curves_caption(config))
    if "confusion_matrix" in metrics:
        plots.plot_confusion(np.array(metrics["confusion_matrix"]), names, run_dir / run_folder.CONFUSION,
                             f"Test confusion matrix: {title}")
        figures[run_folder.CONFUSION] = ("Confusion matrix", "Test set. Left: counts. Right: each row as a percentage "
                                                     "of its true class (two significant digits: a single mistake "
                                                     "never shows as 0). Empty cells are 0.")
    if data is None:
        return figures
    probabilities, labels = data["test_probabilities"], data["test_labels"]
    mistakes = data["mistake_indices"]
    plots.plot_image_grid(
        data["mistake_images"],
        [f"true {names[labels[i]]}\npred {names[probabilities[i].argmax()]} {probabilities[i].max():.2f}"
         for i in mistakes],
        run_dir / run_folder.MISCLASSIFIED, f"Most confident test mistakes ({len(mistakes)} shown)", columns=5)
    figures[run_folder.MISCLASSIFIED] = ("Most confident mistakes", "The test images the model got wrong with the "
                                                            "highest confidence: true class, predicted class, "
                                                            "probability.")
    augmented = bool(data["samples_augmented"])
    plots.plot_image_grid(data["sample_images"], [names[y] for y in data["sample_labels"]],
                          run_dir / run_folder.SAMPLES,
                          "Training images as fed to the model" + (" (augmented)" if augmented else ""), columns=4)
    figures[run_folder.SAMPLES] = ("Training samples", "Randomly drawn (seeded) training images after normalization"
                                   + (" and augmentation" if augmented else "") + ", shown back in image scale.")
    kernel = data["first_layer_kernel"]
    if config["model"]["name"] == "linear" and kernel.shape == (PIXELS, len(names)):  # the only layer: the logits'
        title, titles, heading = "Class templates: each class's weight on every pixel", names, "Class templates"
        caption = ("The linear model scores a class by multiplying the image, pixel by pixel, with that class's "
                   "template and adding up: ink on red pixels counts for the class, ink on blue pixels against it. "
                   "One colour scale, symmetric about 0, for all ten.")
    else:
        title = "First-layer weights" + (" as 28x28 templates, one per hidden unit" if kernel.ndim == 2
                                         else ": convolution filters")
        titles, heading = None, "First-layer weights"
        caption = "On a diverging colour scale centred on 0 (red positive, blue negative)."
    plots.plot_weights(kernel, run_dir / run_folder.WEIGHTS, title, titles=titles)
    figures[run_folder.WEIGHTS] = (heading, caption)
    return figures


def _draw_trust_figures(run_dir: Path, metrics, data, robustness, names, title) -> dict[str, tuple[str, str]]:
    drawn = {run_folder.RELIABILITY: trust.draw_reliability(run_dir, metrics, data, title),
             run_folder.SALIENCY: trust.draw_saliency(run_dir, data, names, title),
             run_folder.CORRUPTIONS: trust.draw_corruptions(run_dir, robustness, title)}
    return {name: figure for name, figure in drawn.items() if figure is not None}


def _curves_caption(config: dict) -> str:
    """Why train loss can sit above validation loss, naming what this run trained with."""
    params = config.get("model", {}).get("params", {})
    augmentation = config.get("data", {}).get("augmentation", {})
    smoothing = config.get("training", {}).get("label_smoothing", 0)
    causes = []
    dropout = [f"{k} {v}" for k, v in params.items() if "dropout" in k and v]
    if dropout:
        causes.append(f"dropout ({', '.join(dropout)}) is on while training and off when validating")
    warps = [k for k, v in augmentation.items() if k != "test_time_flip" and v]
    if warps:
        causes.append(f"training images are augmented ({', '.join(warps)}), validation images are not")
    if smoothing:
        causes.append(f"label smoothing {smoothing} trains toward softer targets, so training never drives the "
                      f"cross-entropy on its own images as low as it could")
    validated = ("a moving average of the weights" if config.get("training", {}).get("ema")
                 else "the epoch's final weights")
    causes.append(f"train numbers are means over the epoch while the weights still moved; validation uses "
                  f"{validated}")
    return ("Loss and accuracy per epoch, train vs validation, and the learning rate at each epoch's first step; "
            "the dashed line marks the kept epoch (lowest validation loss). Train loss can sit above validation "
            "loss here: " + "; ".join(causes) + ".")


def _notice(run_dir: Path, status: str, error: str | None) -> Section:
    """The first thing a stopped run's report says: what happened, the error, and what to do next."""
    if status == "pruned":
        text = "This run was **pruned**: the sweep stopped it early because it was behind the other trials."
    else:
        # Folders from before 0.1.0's last change wrote a stop as "Interrupted: ...": the status says it already.
        error = error.removeprefix("Interrupted: ") if error and status == "interrupted" else error
        text = f"This run {run_reader.status_phrase(status, bold=True)}" + (f": {error.rstrip('.')}." if error else ".")
        if status in ("interrupted", "failed", "running"):
            step = run_folder.next_step(run_dir)
            text += f" {step[:1].upper()}{step[1:]}."
    text += (" Parts that need the finished run (test metrics, per-class table, figures from test predictions) "
             "are missing.")
    return Section("Not completed", text=text, style="notice")


def _sections(config, metrics, status, history, layers, figures, notice, robustness=None) -> list[Section]:
    """What a person looks at first (numbers, curves, confusion, mistakes and why, how far to trust it), then
    the details."""
    sections = [notice] if notice else []
    sections.append(Section("Result", rows=_headline_rows(config, metrics, status, robustness),
                            columns=["", "value"], style="headline"))
    first = [run_folder.CURVES, run_folder.CONFUSION, run_folder.MISCLASSIFIED, run_folder.SALIENCY]
    sections.extend(Section(figures[f][0], text=figures[f][1], image=f) for f in first if f in figures)
    if "per_class" in metrics:
        rows = [[r["class"], f"{r['precision']:.4f}", f"{r['recall']:.4f}", f"{r['f1']:.4f}", str(r["support"])]
                for r in metrics["per_class"]]
        sections.append(Section("Per-class test metrics", columns=["class", "precision", "recall", "F1", "support"],
                                rows=rows))
    for table, figure in ((trust.calibration_section(metrics), run_folder.RELIABILITY),
                          (trust.robustness_section(robustness), run_folder.CORRUPTIONS)):
        sections.extend([table] if table is not None else [])
        if figure in figures:
            sections.append(Section(figures[figure][0], text=figures[figure][1], image=figure))
            first.append(figure)
    sections.extend(Section(heading, text=caption, image=f, details=True) for f, (heading, caption)
                    in figures.items() if f not in first)
    sections.append(Section("Configuration", columns=["setting", "value"], details=True, rows=[
        [key, yaml_value(value)] for key, value in flat_values(config) if not key.startswith("output.")]))
    if layers:
        total = sum(layer["parameters"] for layer in layers)
        sections.append(Section("Model", text=f"{total:,} parameters.", details=True,
                                columns=["layer", "type", "output shape", "parameters"],
                                rows=[[row["name"], row["type"], _shape(row["output_shape"]), f"{row['parameters']:,}"]
                                      for row in layers]))
    if history:
        best = metrics.get("best_epoch")
        sections.append(Section("Training history", text="The kept (best validation loss) epoch is marked *.",
                                details=True,
                                columns=["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning rate",
                                         "seconds"],
                                rows=[[f"{row['epoch']}{' *' if row['epoch'] == best else ''}", f"{row['loss']:.4f}",
                                       f"{row['accuracy']:.4f}", f"{row['val_loss']:.4f}",
                                       f"{row['val_accuracy']:.4f}", f"{row['learning_rate']:.2e}",
                                       f"{row['seconds']:.1f}"] for row in history]))
    if "best_epoch" in metrics:
        sections.append(Section("Run", columns=["", "value"], rows=_run_rows(metrics), details=True))
    return sections


def _headline_rows(config, metrics, status, robustness=None) -> list[list[str]]:
    """The numbers a reader wants first; the rest of the run's facts are under "Run"."""
    rows = []
    if "test_accuracy" in metrics:
        rows += [["test accuracy", f"{metrics['test_accuracy']:.4f}"], ["test loss", f"{metrics['test_loss']:.4f}"]]
        calibration = metrics.get("calibration")
        if isinstance(calibration, dict):
            rows += [["calibration error (ECE)", f"{calibration['test_before']['ece']:.2%}, "
                      f"{calibration['test_after']['ece']:.2%} after temperature {calibration['temperature']:.2f}"]]
        if robustness is not None:
            rows += [["corrupted accuracy", f"{robustness['mean_accuracy']:.4f}: the mean over "
                      f"{len(robustness['corruptions'])} MNIST-C corruptions (clean "
                      f"{robustness['clean']['accuracy']:.4f})"]]
        if isinstance(calibration, dict):  # predict's level for the calibrated probabilities it gives
            raw = metrics.get("unsure_below")
            rows += [["unsure below", f"{min(calibration['unsure_below'], 1.0):.3f} confidence after the "
                      f"temperature: validation answers under it were right less than 90% of the time; `mnist "
                      f"predict` flags them" + (f" ({min(raw, 1.0):.3f} with --no-temperature)"
                                                if isinstance(raw, float) else "")]]
        elif isinstance(metrics.get("unsure_below"), float):  # runs before unsure levels have none
            rows += [["unsure below", f"{min(metrics['unsure_below'], 1.0):.3f} confidence: validation answers "
                      f"under it were right less than 90% of the time; `mnist predict` flags them"]]
    elif metrics.get("tested") is False:
        rows += [["test", "not evaluated: a sweep trial, chosen on validation only"]]
    if "best_epoch" in metrics:
        rows += [["best validation accuracy", f"{metrics['best_val_accuracy']:.4f}"],
                 ["best epoch", f"{metrics['best_epoch']} of {metrics['epochs']}"],
                 ["parameters", f"{metrics['parameters']:,}"],
                 ["training time", f"{metrics['train_seconds']:.1f} s"]]
    note = run_reader.short_run_note(metrics)
    if note:
        rows += [["short run", note.removeprefix("short run: ") + " than the config reaches as written: "
                  "fewer epochs or less data than it was tuned for"]]
    rows += [["model", config.get("model", {}).get("name", "?")],
             ["dataset", config.get("data", {}).get("dataset", "?")], ["status", status]]
    continued, tuned = metrics.get("continued_from"), metrics.get("init_from")
    if isinstance(continued, dict):  # a run's own epochs are only part of its story
        after = continued.get("after_epoch")
        theirs = "epoch 1 above is" if after == 1 else f"epochs 1-{after} above are"
        rows += [["continued from", f"{continued.get('run')}, after its epoch {after} ({theirs} that run's)"]]
    if isinstance(tuned, dict):
        rows += [["started from", f"the weights of {tuned.get('run')} (fine-tuning)"]]
    return rows


def _run_rows(metrics) -> list[list[str]]:
    choice = metrics.get("precision_choice")  # runs before `auto` have none
    speed = ([["precision", f"{choice.get('policy')} ({choice.get('reason')})"]] if isinstance(choice, dict) else [])
    if "jit_compile_reason" in metrics:
        speed.append(["XLA", f"{'on' if metrics.get('jit_compile') else 'off'} ({metrics['jit_compile_reason']})"])
    return [["wall time", f"{metrics['wall_seconds']:.1f} s (data, training, test, report)"],
            ["device", metrics["device"]], *([["CPU", metrics["cpu"]]] if isinstance(metrics.get("cpu"), str) else []),
            *speed, ["seed", str(metrics["seed"])], ["data", metrics["data_source"]],
            ["split sizes", ", ".join(f"{k} {v:,}" for k, v in metrics["split_sizes"].items())],
            ["versions", ", ".join(f"{k} {v}" for k, v in metrics["versions"].items())]]


def _shape(shape: list) -> str:
    return "(" + ", ".join("batch" if d is None else str(d) for d in shape) + ")"
