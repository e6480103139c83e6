"""Comparing finished runs from their folders: a table, comparison.md and overlaid validation curves.

Reads only files (no TensorFlow). Failed or unfinished runs are listed with their status, not dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mnist_pipeline.reports import plots
from mnist_pipeline.reports import run_folder as rf
from mnist_pipeline.reports.document import Section, render_markdown

COLUMNS = ["run", "status", "model", "parameters", "epochs", "train s", "best val acc", "test acc", "test loss"]


@dataclass(frozen=True)
class RunSummary:
    run_dir: Path
    status: str  # completed | failed | running | interrupted | unreadable ...
    model: str = "?"
    parameters: int | None = None
    epochs: int | None = None
    train_seconds: float | None = None
    best_val_accuracy: float | None = None
    test_accuracy: float | None = None
    test_loss: float | None = None

    def cells(self) -> list[str]:
        def show(value, fmt):
            return "-" if value is None else format(value, fmt)
        return [self.run_dir.name, self.status, self.model, show(self.parameters, ","), show(self.epochs, "d"),
                show(self.train_seconds, ".1f"), show(self.best_val_accuracy, ".4f"), show(self.test_accuracy, ".4f"),
                show(self.test_loss, ".4f")]


def summarize_run(run_dir: Path) -> RunSummary:
    try:
        status = rf.read_json(run_dir / rf.STATUS).get("status", "unknown") if (run_dir / rf.STATUS).exists() \
            else "no status"
        metrics = rf.read_json(run_dir / rf.METRICS) if (run_dir / rf.METRICS).exists() else {}
    except (OSError, ValueError) as exc:
        return RunSummary(run_dir, f"unreadable ({type(exc).__name__})")
    if status == "completed" and not metrics:
        status = "completed, metrics missing"
    if not metrics:
        epochs = len(rf.read_history(run_dir)) if (run_dir / rf.HISTORY).exists() else None
        return RunSummary(run_dir, status, epochs=epochs)
    return RunSummary(run_dir, status, metrics.get("model", "?"), metrics.get("parameters"), metrics.get("epochs"),
                      metrics.get("train_seconds"), metrics.get("best_val_accuracy"), metrics.get("test_accuracy"),
                      metrics.get("test_loss"))


def rank(summaries: list[RunSummary]) -> list[RunSummary]:
    """Completed runs by test accuracy (best first), then the rest by name."""
    return sorted(summaries, key=lambda s: (s.test_accuracy is None, -(s.test_accuracy or 0), s.run_dir.name))


def write_comparison(summaries: list[RunSummary], out_dir: Path) -> list[Path]:
    """comparison.md (the table) and comparison.png (validation curves of every run with a history)."""
    ranked = rank(summaries)
    winner = ranked[0] if ranked and ranked[0].test_accuracy is not None else None
    text = (f"Best test accuracy: **{winner.run_dir.name}** ({winner.model}, {winner.test_accuracy:.4f})."
            if winner else "No completed run to rank.")
    sections = [Section("Runs", text=text, columns=COLUMNS, rows=[s.cells() for s in ranked])]
    curves = {s.run_dir.name: rf.read_history(s.run_dir) for s in ranked if (s.run_dir / rf.HISTORY).exists()}
    if curves:
        plots.plot_overlaid_curves(curves, out_dir / "comparison.png", f"{len(curves)} runs compared")
        sections.append(Section("Validation curves", image="comparison.png"))
    rf.write_text(out_dir / "comparison.md", render_markdown("Run comparison", sections))
    return [out_dir / "comparison.md"] + ([out_dir / "comparison.png"] if curves else [])


def find_runs(output_dir: Path) -> list[Path]:
    runs = Path(output_dir) / "runs"
    return sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []
