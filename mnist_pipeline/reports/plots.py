"""Figures of a run, drawn with matplotlib's non-interactive Agg backend from plain numbers."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from mnist_pipeline.reports.run_folder import write_bytes
from mnist_pipeline.shapes import IMAGE_SIZE


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed, and no GUI toolkit import
    import matplotlib.pyplot as plt

    return plt


def save_figure(plt, fig, path: Path) -> None:
    """PNG through a temporary file: a full disk leaves the previous figure, not half of a new one."""
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=100)
    finally:
        plt.close(fig)
    write_bytes(path, buffer.getvalue())


def plot_curves(history: list[dict[str, float]], best_epoch: int, path: Path, title: str) -> None:
    """Loss and accuracy per epoch, train vs validation, and the learning rate, with the kept epoch marked."""
    plt = pyplot()
    epochs = [row["epoch"] for row in history]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4), constrained_layout=True, width_ratios=[1, 1, 0.75])
    for ax, key, label in ((axes[0], "loss", "loss (cross-entropy)"), (axes[1], "accuracy", "accuracy")):
        ax.plot(epochs, [row[key] for row in history], marker="o", label="train")
        ax.plot(epochs, [row[f"val_{key}"] for row in history], marker="o", label="validation")
        ax.set_ylabel(label)
        ax.set_title(label.split(" ")[0].capitalize())
    rates = [row["learning_rate"] for row in history]
    axes[2].plot(epochs, rates, marker="o", color="C2", label="learning rate")
    if min(rates) > 0 and max(rates) / min(rates) > 20:  # a decay over orders of magnitude
        axes[2].set_yscale("log")
    else:
        axes[2].ticklabel_format(axis="y", style="sci", scilimits=(-2, 3), useOffset=False)
    axes[2].set_ylabel("learning rate (at the epoch's first step)")
    axes[2].set_title("Learning rate")
    for ax in axes:
        if best_epoch:
            ax.axvline(best_epoch, color="grey", linestyle="--", linewidth=1, label=f"kept epoch ({best_epoch})")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(title)
    save_figure(plt, fig, path)


def _draw_panels(plt, images: np.ndarray, titles: list[str], columns: int, cell: float, fontsize: float,
                 side: float = 0.0, **imshow):
    """Equal-sized images as panels of one mosaic in one axes, each titled above; `cell` inches per panel side,
    `side` inches left free on the right (for a colour bar).

    One image and one axes, not an axes per panel: a grid of 64 subplots took seconds to draw, a step's
    worth of every run's report. The gaps are NaN, drawn as the colormap's background (white). Returns the
    figure, the axes and the drawn image (None when there is no panel).
    """
    count = len(images)
    rows = max(1, -(-count // columns))
    height, width = images.shape[1:3] if count else (IMAGE_SIZE, IMAGE_SIZE)
    gap = max(1, round(width / 10))
    per_inch = (columns * (width + gap) - gap) / (columns * cell)  # mosaic pixels per inch of figure
    lines = max((title.count("\n") + 1 for title in titles), default=1)
    band = round((lines * fontsize * 1.4 / 72 + 0.06) * per_inch) + 1  # room for each panel's title
    mosaic = np.full((rows * (band + height), columns * (width + gap) - gap), np.nan, dtype=np.float32)
    figure_height = mosaic.shape[0] / per_inch + 0.5  # 0.5 in above the panels for the figure's title
    figure_width = columns * cell + side
    fig = plt.figure(figsize=(figure_width, figure_height))
    ax = fig.add_axes((0.01, 0.01, 0.98 - side / figure_width, 1 - 0.5 / figure_height - 0.01))
    ax.axis("off")
    for i, (image, title) in enumerate(zip(images, titles, strict=False)):
        top, left = (i // columns) * (band + height) + band, (i % columns) * (width + gap)
        mosaic[top:top + height, left:left + width] = image
        ax.text(left + (width - 1) / 2, top - 0.7, title, ha="center", va="bottom", fontsize=fontsize)
    cmap = plt.get_cmap(imshow.pop("cmap")).with_extremes(bad="white")
    drawn = ax.imshow(mosaic, cmap=cmap, interpolation="nearest", **imshow) if count else None
    if not count:
        ax.text(0.5, 0.5, "none", ha="center", va="center", transform=ax.transAxes)
    return fig, ax, drawn


def percent_label(percent: float) -> str:
    """A percentage as a cell label that never rounds a mistake to 0: two significant digits below 10
    (1/207 -> "0.48"), whole percents above ("97")."""
    return f"{percent:.0f}" if percent >= 9.95 else f"{percent:.2g}"


def plot_confusion(confusion: np.ndarray, class_names: list[str], path: Path, title: str) -> None:
    """Counts and row-normalized (recall per true class, in %) side by side; empty cells are 0."""
    plt = pyplot()
    support = confusion.sum(axis=1, keepdims=True)
    normalized = np.divide(confusion, support, out=np.zeros(confusion.shape), where=support > 0)
    fig, axes = plt.subplots(1, 2, figsize=(15, 6.6), constrained_layout=True)
    for ax, values, label, fmt in ((axes[0], confusion, "counts", lambda v: f"{v:d}"),
                                   (axes[1], 100 * normalized, "% of the true class (row)", percent_label)):
        image = ax.imshow(values, cmap="Blues", vmin=0)
        fig.colorbar(image, ax=ax, shrink=0.8)
        ticks = range(len(class_names))
        ax.set_xticks(ticks, class_names, rotation=45 if max(map(len, class_names)) > 2 else 0, ha="right")
        ax.set_yticks(ticks, class_names)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(label)
        threshold = values.max() / 2 if values.max() else 1
        for (i, j), value in np.ndenumerate(values):
            if value:
                ax.text(j, i, fmt(value), ha="center", va="center", fontsize=8,
                        color="white" if value > threshold else "black")
    fig.suptitle(title)
    save_figure(plt, fig, path)


def plot_image_grid(images: np.ndarray, titles: list[str], path: Path, title: str, columns: int) -> None:
    """Images in [0, 1] (0 = background), shown dark on light like ink on paper."""
    plt = pyplot()
    fig, _, _ = _draw_panels(plt, np.asarray(images), titles, columns, cell=1.6, fontsize=9,
                             cmap="gray_r", vmin=0, vmax=1)
    fig.suptitle(title)
    save_figure(plt, fig, path)


def plot_weights(kernel: np.ndarray, path: Path, title: str, limit: int = 64,
                 titles: list[str] | None = None) -> list[str]:
    """First-layer templates: Dense kernel (784, units) as 28x28 images, or conv kernel (k, k, 1, filters);
    each panel titled by `titles` (e.g. the class names of a linear model's columns, five to a row), else by its
    number. Returns the panels' titles as drawn."""
    plt = pyplot()
    if kernel.ndim == 2:
        templates = kernel.T[:limit].reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
    else:
        templates = np.moveaxis(kernel[:, :, 0, :], -1, 0)[:limit]
    columns = max(1, min(5 if titles else 8, len(templates)))
    scale = float(np.abs(templates).max()) or 1.0  # one symmetric scale: colours compare across units
    drawn = [titles[i] if titles else f"{'unit' if kernel.ndim == 2 else 'filter'} {i}" for i in range(len(templates))]
    fig, ax, image = _draw_panels(plt, templates, drawn, columns, cell=1.3, fontsize=8, side=1.1,
                                  cmap="RdBu_r", vmin=-scale, vmax=scale)
    if image is not None:  # the colour bar in the space kept for it, beside the panels
        width = fig.get_figwidth()
        fig.colorbar(image, cax=fig.add_axes((1 - 0.85 / width, 0.2, 0.12 / width, 0.6)),
                     label="weight (red +, blue -)")
    fig.suptitle(title)
    save_figure(plt, fig, path)
    return drawn


def run_styles(count: int) -> list[dict]:
    """Line styles that stay distinct for many runs: 10 colours, then the same colours dashed, dotted and
    dash-dotted, each with its own marker (40 before a style repeats)."""
    colours = [f"C{i}" for i in range(10)]
    lines, markers = ["-", "--", ":", "-."], ["o", "s", "^", "D"]
    return [{"color": colours[i % 10], "linestyle": lines[i // 10 % 4], "marker": markers[i // 10 % 4]}
            for i in range(count)]


def plot_overlaid_curves(curves: dict[str, list[dict[str, float]]], path: Path, title: str) -> None:
    """Validation accuracy and loss of several runs on shared axes, one legend for both panels below them."""
    plt = pyplot()
    rows = -(-len(curves) // 2)  # the legend's rows, two runs a row
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5 + 0.22 * rows), constrained_layout=True)
    for (name, history), style in zip(curves.items(), run_styles(len(curves)), strict=True):
        epochs = [row["epoch"] for row in history]
        for ax, key in ((axes[0], "val_accuracy"), (axes[1], "val_loss")):
            ax.plot(epochs, [row[key] for row in history], markersize=3.5, linewidth=1.4, label=name, **style)
    for ax, label in ((axes[0], "validation accuracy"), (axes[1], "validation loss")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_title(label.capitalize())
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncols=2 if len(curves) > 1 else 1, fontsize=8,
               frameon=False)
    fig.suptitle(title)
    save_figure(plt, fig, path)


def plot_gradient_norms(norms: dict[str, list[float]], layer_names: dict[str, list[str]], path: Path,
                        title: str) -> None:
    """Mean gradient norm per layer (input side left), log scale, one line per configuration."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 5), constrained_layout=True)
    for label, values in norms.items():
        ax.plot(range(1, len(values) + 1), values, marker="o", label=label)
    longest = max(layer_names.values(), key=len)
    ax.set_xticks(range(1, len(longest) + 1), longest, rotation=30, ha="right", fontsize=8)
    # Log scale shows vanishing gradients; it needs a positive value (all-zero gradients: a zero-initialized net).
    positive = any(v > 0 for values in norms.values() for v in values)
    ax.set_yscale("log" if positive else "linear")
    ax.set_xlabel("layer (input side left, logits right)")
    ax.set_ylabel(f"gradient norm of the layer's kernel{' (log scale)' if positive else ''}")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    ax.set_title(title)
    save_figure(plt, fig, path)
