"""Comparing finished runs from their folders: a table, comparison.md and overlaid validation curves.

Reads only files (no TensorFlow). Failed or unfinished runs are listed with their status, not dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mnist_pipeline.errors import RunFolderError
from mnist_pipeline.reports import plots, run_files
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
    history: list[dict[str, float]] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict:
        """The row for `mnist compare --json`: numbers as numbers, null where the run has none."""
        return {"run": self.run_dir.name, "path": str(self.run_dir), "status": self.status, "model": self.model,
                "parameters": self.parameters, "epochs": self.epochs, "train_seconds": self.train_seconds,
                "best_val_accuracy": self.best_val_accuracy, "test_accuracy": self.test_accuracy,
                "test_loss": self.test_loss}

    def cells(self) -> list[str]:
        def show(value, fmt):
            return "-" if value is None else format(value, fmt)
        return [self.run_dir.name, self.status, self.model, show(self.parameters, ","), show(self.epochs, "d"),
                show(self.train_seconds, ".1f"), show(self.best_val_accuracy, ".4f"), show(self.test_accuracy, ".4f"),
                show(self.test_loss, ".4f")]


def summarize_run(run_dir: Path) -> RunSummary:
    """A run's row; a damaged run is listed as unreadable (naming the file), never dropped or fatal."""
    try:
        status = run_files.read_status(run_dir)["status"]
        if status == "running" and not rf.is_locked(run_dir):
            status = "stale: was running, process gone (resumable)"
        metrics = run_files.read_metrics(run_dir) if (run_dir / rf.METRICS).exists() else {}
        history = run_files.read_history(run_dir) if (run_dir / rf.HISTORY).exists() else []
    except RunFolderError as exc:
        return RunSummary(run_dir, f"unreadable: {exc.path.name if exc.path else 'damaged'}")
    if status == "completed" and not metrics:
        status = "completed, metrics missing"
    if not metrics:
        return RunSummary(run_dir, status, epochs=len(history) if history else None, history=history)
    return RunSummary(run_dir, status, metrics["model"], metrics["parameters"], metrics["epochs"],
                      metrics["train_seconds"], metrics["best_val_accuracy"], metrics.get("test_accuracy"),
                      metrics.get("test_loss"), history)  # no test numbers: a sweep trial


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
    curves = {s.run_dir.name: s.history for s in ranked if s.history}
    if curves:
        plots.plot_overlaid_curves(curves, out_dir / "comparison.png", f"{len(curves)} runs compared")
        sections.append(Section("Validation curves", image="comparison.png"))
    rf.write_text(out_dir / "comparison.md", render_markdown("Run comparison", sections))
    return [out_dir / "comparison.md"] + ([out_dir / "comparison.png"] if curves else [])


def find_runs(output_dir: Path) -> list[Path]:
    runs = Path(output_dir) / "runs"
    return sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []
