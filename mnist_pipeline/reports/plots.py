"""Figures of a run, drawn with matplotlib's non-interactive Agg backend from plain numbers."""

from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed, and no GUI toolkit import
    import matplotlib.pyplot as plt

    return plt


def plot_curves(history: list[dict[str, float]], best_epoch: int, path: Path, title: str) -> None:
    """Loss and accuracy per epoch, train vs validation, with the best (kept) epoch marked."""
    plt = _pyplot()
    epochs = [row["epoch"] for row in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for ax, key, label in ((axes[0], "loss", "loss (cross-entropy)"), (axes[1], "accuracy", "accuracy")):
        ax.plot(epochs, [row[key] for row in history], marker="o", label="train")
        ax.plot(epochs, [row[f"val_{key}"] for row in history], marker="o", label="validation")
        if best_epoch:
            ax.axvline(best_epoch, color="grey", linestyle="--", linewidth=1, label=f"best epoch ({best_epoch})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_title(label.split(" ")[0].capitalize())
        ax.grid(alpha=0.3)
        ax.legend()
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(title)
    fig.savefig(path, dpi=100)
    plt.close(fig)
