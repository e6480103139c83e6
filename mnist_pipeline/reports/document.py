"""`report.md` and a self-contained `report.html` for a run folder, with its figures, from the files in it.

Needs no TensorFlow and no data: everything comes from config.yaml, metrics.json, history.csv,
model_summary.json and report_data.npz. Parts whose files are missing (a failed run) are left out and said so;
a damaged file stops the report, named, before anything is drawn or overwritten.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mnist_pipeline.config import CLASS_NAMES, load_config
from mnist_pipeline.reports import plots, run_files
from mnist_pipeline.reports import run_folder as rf


@dataclass
class Section:
    heading: str
    text: str = ""
    columns: list[str] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)
    image: str | None = None  # file name inside the run folder


def write_report(run_dir: Path, status: str | None = None) -> list[Path]:
    """Draw the figures and write report.md and report.html of a run folder; return the files written.

    `status` overrides status.json's (the trainer writes the report before it marks the run completed).
    """
    run_dir = rf.run_folder(run_dir)
    config = load_config(run_dir / rf.CONFIG).model_dump(mode="json")
    status = status or run_files.read_status(run_dir)["status"]
    metrics = run_files.read_metrics(run_dir) if (run_dir / rf.METRICS).exists() else {}
    history = run_files.read_history(run_dir) if (run_dir / rf.HISTORY).exists() else []
    layers = run_files.read_model_summary(run_dir) if (run_dir / rf.MODEL_SUMMARY).exists() else []
    names = CLASS_NAMES[config["data"]["dataset"]]
    data = run_files.read_report_data(run_dir, len(names)) if (run_dir / rf.REPORT_DATA).exists() else None

    figures = _draw_figures(run_dir, history, metrics, data, names, model=config.get("model", {}).get("name", "?"))
    sections = _sections(run_dir.name, config, metrics, status, history, layers, figures)
    written = [run_dir / name for name in figures]
    rf.write_text(run_dir / rf.REPORT_MD, render_markdown(f"Run {run_dir.name}", sections))
    rf.write_text(run_dir / rf.REPORT_HTML, render_html(f"Run {run_dir.name}", sections, run_dir))
    return [*written, run_dir / rf.REPORT_MD, run_dir / rf.REPORT_HTML]


def _draw_figures(run_dir: Path, history, metrics, data, names, model: str) -> dict[str, tuple[str, str]]:
    """File name -> (heading, caption) of each figure drawn."""
    figures: dict[str, tuple[str, str]] = {}
    title = f"{run_dir.name} ({model})"
    if history:
        plots.plot_curves(history, metrics.get("best_epoch", 0), run_dir / rf.CURVES, title)
        figures[rf.CURVES] = ("Learning curves", "Loss and accuracy per epoch, train vs validation; the dashed "
                                                 "line marks the kept epoch.")
    if "confusion_matrix" in metrics:
        plots.plot_confusion(np.array(metrics["confusion_matrix"]), names, run_dir / rf.CONFUSION,
                             f"Test confusion matrix: {title}")
        figures[rf.CONFUSION] = ("Confusion matrix", "Test set: counts, and each row as a fraction of its true class.")
    if data is None:
        return figures
    probabilities, labels = data["test_probabilities"], data["test_labels"]
    mistakes = data["mistake_indices"]
    plots.plot_image_grid(
        data["mistake_images"],
        [f"true {names[labels[i]]}\npred {names[probabilities[i].argmax()]} {probabilities[i].max():.2f}"
         for i in mistakes],
        run_dir / rf.MISCLASSIFIED, f"Most confident test mistakes ({len(mistakes)} shown)", columns=5)
    figures[rf.MISCLASSIFIED] = ("Most confident mistakes", "The test images the model got wrong with the highest "
                                                            "confidence: true class, predicted class, probability.")
    augmented = bool(data["samples_augmented"])
    plots.plot_image_grid(data["sample_images"], [names[y] for y in data["sample_labels"]], run_dir / rf.SAMPLES,
                          "Training images as fed to the model" + (" (augmented)" if augmented else ""), columns=4)
    figures[rf.SAMPLES] = ("Training samples", "Randomly drawn (seeded) training images after normalization"
                           + (" and augmentation" if augmented else "") + ", shown back in image scale.")
    kernel = data["first_layer_kernel"]
    plots.plot_weights(kernel, run_dir / rf.WEIGHTS, "First-layer weights" + (
        " as 28x28 templates, one per hidden unit" if kernel.ndim == 2 else ": convolution filters"))
    figures[rf.WEIGHTS] = ("First-layer weights", "On a diverging colour scale centred on 0 (red positive, blue "
                                                  "negative).")
    return figures


def _sections(name, config, metrics, status, history, layers, figures) -> list[Section]:
    sections = [Section("Summary", rows=_summary_rows(config, metrics, status), columns=["", "value"])]
    if status != "completed":
        sections[0].text = (f"This run is **{status}**: parts that need the finished run (test metrics, "
                            f"per-class table, figures from test predictions) are missing.")
    sections.append(Section("Configuration", columns=["setting", "value"], rows=[
        [key, _show(value)] for key, value in _flatten(config) if not key.startswith("output.")]))
    if layers:
        total = sum(layer["parameters"] for layer in layers)
        sections.append(Section("Model", text=f"{total:,} parameters.", columns=["layer", "type", "output shape",
                                                                               "parameters"],
                                rows=[[row["name"], row["type"], _shape(row["output_shape"]), f"{row['parameters']:,}"]
                                      for row in layers]))
    if history:
        best = metrics.get("best_epoch")
        sections.append(Section("Training history", text="The kept (best validation loss) epoch is marked *.",
                                columns=["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning rate",
                                         "seconds"],
                                rows=[[f"{row['epoch']}{' *' if row['epoch'] == best else ''}", f"{row['loss']:.4f}",
                                       f"{row['accuracy']:.4f}", f"{row['val_loss']:.4f}",
                                       f"{row['val_accuracy']:.4f}", f"{row['learning_rate']:.2e}",
                                       f"{row['seconds']:.1f}"] for row in history]))
    if "per_class" in metrics:
        rows = [[r["class"], f"{r['precision']:.4f}", f"{r['recall']:.4f}", f"{r['f1']:.4f}", str(r["support"])]
                for r in metrics["per_class"]]
        sections.append(Section("Per-class test metrics", columns=["class", "precision", "recall", "F1", "support"],
                                rows=rows))
    sections.extend(Section(heading, text=caption, image=file) for file, (heading, caption) in figures.items())
    return sections


def _summary_rows(config, metrics, status) -> list[list[str]]:
    rows = [["status", status], ["model", config.get("model", {}).get("name", "?")],
            ["dataset", config.get("data", {}).get("dataset", "?")]]
    if "test_accuracy" in metrics:
        rows += [["test accuracy", f"{metrics['test_accuracy']:.4f}"], ["test loss", f"{metrics['test_loss']:.4f}"]]
    elif metrics.get("tested") is False:
        rows += [["test", "not evaluated: a sweep trial, chosen on validation only"]]
    if "best_epoch" in metrics:
        rows += [["best epoch", f"{metrics['best_epoch']} of {metrics['epochs']}"],
                 ["best validation accuracy", f"{metrics['best_val_accuracy']:.4f}"],
                 ["parameters", f"{metrics['parameters']:,}"],
                 ["training time", f"{metrics['train_seconds']:.1f} s (wall {metrics['wall_seconds']:.1f} s)"],
                 ["device", metrics["device"]], ["seed", str(metrics["seed"])],
                 ["data", metrics["data_source"]],
                 ["split sizes", ", ".join(f"{k} {v:,}" for k, v in metrics["split_sizes"].items())],
                 ["versions", ", ".join(f"{k} {v}" for k, v in metrics["versions"].items())]]
    return rows


def _flatten(tree: dict, prefix: str = ""):
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _show(value: Any) -> str:
    return "none" if value is None else str(value)


def _shape(shape: list) -> str:
    return "(" + ", ".join("batch" if d is None else str(d) for d in shape) + ")"


def render_markdown(title: str, sections: list[Section]) -> str:
    lines = [f"# {title}", ""]
    for section in sections:
        lines += [f"## {section.heading}", ""]
        if section.text:
            lines += [section.text, ""]
        if section.rows:
            columns = section.columns if any(section.columns) else ["", ""]
            lines.append("| " + " | ".join(columns) + " |")
            lines.append("|" + "|".join(" --- " for _ in columns) + "|")
            lines += ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in section.rows]
            lines.append("")
        if section.image:
            lines += [f"![{section.heading}]({section.image})", ""]
    return "\n".join(lines)


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .5em 0; font-size: .92em; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: left; }
th { background: #f4f4f4; } tr:nth-child(even) td { background: #fafafa; }
td:not(:first-child) { font-variant-numeric: tabular-nums; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
"""


def render_html(title: str, sections: list[Section], image_dir: Path) -> str:
    """One file with the images inlined as data URIs, so it opens offline and can be mailed around."""
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>",
             f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><style>{_CSS}</style>",
             f"</head><body><h1>{html.escape(title)}</h1>"]
    for section in sections:
        parts.append(f"<h2>{html.escape(section.heading)}</h2>")
        if section.text:
            parts.append(f"<p>{_inline(section.text)}</p>")
        if section.rows:
            head = "".join(f"<th>{html.escape(c)}</th>" for c in section.columns) if any(section.columns) else ""
            body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                           for row in section.rows)
            thead = f"<thead><tr>{head}</tr></thead>" if head else ""
            parts.append(f"<table>{thead}<tbody>{body}</tbody></table>")
        if section.image:
            encoded = base64.b64encode((image_dir / section.image).read_bytes()).decode("ascii")
            parts.append(f"<img alt=\"{html.escape(section.heading)}\" src=\"data:image/png;base64,{encoded}\">")
    parts.append("</body></html>")
    return "\n".join(parts)


def _inline(text: str) -> str:
    escaped = html.escape(text)
    while escaped.count("**") >= 2:  # the one markdown emphasis the texts use
        escaped = escaped.replace("**", "<strong>", 1).replace("**", "</strong>", 1)
    return escaped
