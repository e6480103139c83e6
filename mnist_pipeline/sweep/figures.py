"""The sweep report's figures, drawn here with matplotlib (Agg) from the study's completed trials. Optuna's own
figures label axes with the full config keys, which run together and get cut to the same text when keys share
a prefix (data.augmentation.rotation, data.augmentation.translation); these use `short_labels`, one panel or axis
per parameter, and a colour bar in its own axis."""

from __future__ import annotations

import io
import json
import math
import warnings

from mnist_pipeline.config.space import Choice, IntRange
from mnist_pipeline.reports import run_folder
from mnist_pipeline.sweep.labels import short_labels, show_value
from mnist_pipeline.sweep.setup import Sweep

FIGURES = {  # file -> (heading, caption)
    "optimization_history.png": ("Optimization history", "Each completed trial's objective, and the best so far."),
    "param_importances.png": ("Parameter importances", "How much of the objective's variation each parameter "
                                                       "explains (Optuna's fANOVA estimate over completed trials)."),
    "parallel_coordinate.png": ("Parallel coordinates", "One line per completed trial through its values, "
                                                        "coloured by its objective; each axis spans the space."),
    "slice.png": ("Slices", "The objective against each parameter, one panel each; colour: the trial's number."),
}


def draw_figures(sweep: Sweep, study) -> dict[str, tuple[str, str]]:
    """Draw what the completed trials allow; file -> (heading, caption) of each figure drawn."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    trials = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE" and t.value is not None]
    if not trials:
        return {}
    axes = _Axes(sweep)
    drawn = {}
    for file, draw in (("optimization_history.png", _history), ("param_importances.png", _importances),
                       ("parallel_coordinate.png", _parallel), ("slice.png", _slices)):
        figure = draw(plt, sweep, study, trials, axes)
        if figure is None:
            continue
        buffer = io.BytesIO()
        try:
            figure.savefig(buffer, format="png", dpi=100)
        finally:
            plt.close(figure)
        run_folder.write_bytes(sweep.folder / file, buffer.getvalue())  # a full disk leaves the previous figure whole
        drawn[file] = FIGURES[file]
    return drawn


class _Axes:
    """Per parameter: its short label, and where a value sits on an axis that spans the space: choices at
    evenly spaced positions, ranges linear or (log: true) logarithmic."""

    def __init__(self, sweep: Sweep):
        self.space = sweep.space.params
        self.labels = short_labels(self.space)

    def choices(self, key: str) -> list[str] | None:
        d = self.space[key]
        return [_stored_text(v) for v in d.choices] if isinstance(d, Choice) else None

    def log(self, key: str) -> bool:
        return not isinstance(self.space[key], Choice) and self.space[key].log

    def position(self, key: str, value) -> float:
        """The value's position on its parameter's axis, 0 to 1."""
        choices = self.choices(key)
        if choices is not None:
            return choices.index(_stored_text(value)) / max(len(choices) - 1, 1)
        low, high = self.space[key].low, self.space[key].high
        if self.log(key):
            return (math.log(value) - math.log(low)) / (math.log(high) - math.log(low))
        return (value - low) / (high - low)

    def ticks(self, key: str) -> tuple[list[float], list[str]]:
        """Positions (0 to 1) and labels of an axis's ticks: every choice, or a few round values of a range."""
        choices = self.choices(key)
        if choices is not None:
            return [i / max(len(choices) - 1, 1) for i in range(len(choices))], choices
        low, high = self.space[key].low, self.space[key].high
        values = (log_ticks(low, high) if self.log(key)
                  else linear_ticks(low, high, integer=isinstance(self.space[key], IntRange)))
        return [self.position(key, v) for v in values], numbers_text(values)


def log_ticks(low: float, high: float, most: int = 6) -> list[float]:
    """Round values (1, 2 and 5 times powers of 10, fewer over many decades) between low and high: a log axis
    labelled only where its labels have room, never matplotlib's minor 'a x 10^b' that run into each other."""
    decades = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
    for multiples in ((1, 2, 5), (1, 3), (1,)):
        values = [m * 10.0 ** e for e in decades for m in multiples if low <= m * 10.0 ** e * (1 + 1e-9)
                  and m * 10.0 ** e <= high * (1 + 1e-9)]
        if len(values) <= most:
            break
    values = values[::math.ceil(len(values) / most)]  # many decades: every other (third...) one
    return values if len(values) >= 2 else [low, high]


def linear_ticks(low: float, high: float, integer: bool = False) -> list[float]:
    """Up to 6 round values between low and high (as matplotlib would pick them for the axis)."""
    from matplotlib.ticker import MaxNLocator

    values = [float(v) for v in MaxNLocator(5, integer=integer).tick_values(low, high)
              if low - 1e-12 <= v <= high + 1e-12]
    return values if len(values) >= 2 else [low, high]


def numbers_text(values: list[float]) -> list[str]:
    """Tick labels in one notation per axis: `1e-4, 1e-3, 1e-2` when some are that small, else `0.05, 0.1`."""
    if any(0 < abs(v) < 1e-3 for v in values):
        return [_power_of_ten(v) for v in values]
    return [f"{v:.3g}" for v in values]


def _power_of_ten(value: float) -> str:
    """`3e-4`, `1e-2`, `1`: matplotlib's 3x10^-4 in the room of a short label."""
    mantissa, exponent = f"{value:.0e}".split("e")
    return "0" if value == 0 else mantissa if int(exponent) == 0 else f"{mantissa}e{int(exponent)}"


def _stored_text(value) -> str:
    """A choice as a label: list choices reach Optuna as JSON text, the space holds them as lists."""
    return value if isinstance(value, str) else json.dumps(value) if isinstance(value, list) else show_value(value)


def _history(plt, sweep: Sweep, study, trials, axes: _Axes):
    numbers, values = [t.number for t in trials], [t.value for t in trials]
    better = max if sweep.space.direction == "maximize" else min
    best = [better(values[:i + 1]) for i in range(len(values))]
    fig, ax = plt.subplots(figsize=(9, 4.5), constrained_layout=True)
    ax.scatter(numbers, values, label="completed trial", zorder=3)
    ax.step(numbers, best, where="post", color="C3", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(sweep.space.objective)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=9)
    return fig


def _importances(plt, sweep: Sweep, study, trials, axes: _Axes):
    import optuna

    if len(trials) < 2:
        return None  # one trial explains nothing (Optuna would split the importance evenly)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importances = optuna.importance.get_param_importances(study)
    except (ValueError, RuntimeError, ZeroDivisionError):
        return None  # e.g. a parameter that never varied
    keys = list(importances)[::-1]  # the most important on top
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.45 * len(keys)), constrained_layout=True)
    bars = ax.barh([axes.labels[k] for k in keys], [importances[k] for k in keys], color="C0")
    ax.bar_label(bars, labels=[f"{importances[k]:.2f}" for k in keys], padding=3, fontsize=9)
    ax.set_xlabel(f"importance for {sweep.space.objective} (sums to 1)")
    ax.set_xlim(0, max(importances.values()) * 1.15 or 1)
    ax.grid(axis="x", alpha=0.3)
    return fig


def _parallel(plt, sweep: Sweep, study, trials, axes: _Axes):
    keys = list(sweep.space.params)
    values = [t.value for t in trials]
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    cmap, norm = plt.get_cmap("viridis"), plt.Normalize(low, high)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.9 * (len(keys) + 1)), 4.8), constrained_layout=True)
    # Worst first, so the best lines are drawn on top (better is higher for accuracy, lower for loss).
    for t in sorted(trials, key=lambda t: t.value, reverse=sweep.space.direction == "minimize"):
        ys = [axes.position(k, t.params[k]) for k in keys] + [(t.value - low) / span]
        ax.plot(range(len(ys)), ys, color=cmap(norm(t.value)), alpha=0.8, linewidth=1.5)
    for i, key in enumerate([*keys, None]):
        ax.axvline(i, color="black", linewidth=0.8)
        positions, labels = axes.ticks(key) if key else _value_ticks(low, high, span)
        for y, text in zip(positions, labels, strict=True):
            ax.text(i - 0.03, y, text, ha="right", va="center", fontsize=8,
                    bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5, "alpha": 0.8})
    ax.set_xticks(range(len(keys) + 1), [axes.labels[k] for k in keys] + [sweep.space.objective])
    ax.set_xlim(-0.45, len(keys) + 0.05)
    ax.set_ylim(-0.05, 1.05)
    ax.set_yticks([])
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=sweep.space.objective, pad=0.02)
    return fig


def _value_ticks(low: float, high: float, span: float) -> tuple[list[float], list[str]]:
    if low == high:
        return [0.0], [f"{low:.4f}"]
    return [(v - low) / span for v in (low, (low + high) / 2, high)], [f"{v:.4f}" for v in (low, (low + high) / 2,
                                                                                            high)]


def _slices(plt, sweep: Sweep, study, trials, axes: _Axes):
    from matplotlib.ticker import MaxNLocator, NullFormatter

    keys = list(sweep.space.params)
    rows = math.ceil(len(keys) / 3)  # at most 3 panels a row, the rows as even as they go (4: 2 by 2)
    columns = math.ceil(len(keys) / rows)
    fig, grid = plt.subplots(rows, columns, figsize=(3.6 * columns + 1.2, 3.1 * rows), sharey=True,
                             constrained_layout=True, squeeze=False)
    numbers = [t.number for t in trials]
    for ax, key in zip(grid.flat, keys, strict=False):
        choices = axes.choices(key)
        xs = [choices.index(_stored_text(t.params[key])) if choices else t.params[key] for t in trials]
        scatter = ax.scatter(xs, [t.value for t in trials], c=numbers, cmap="viridis", edgecolors="black",
                             linewidths=0.4, vmin=min(numbers), vmax=max(numbers) if len(trials) > 1 else None)
        ax.set_xlabel(axes.labels[key])
        if choices:
            ax.set_xticks(range(len(choices)), choices)
            ax.set_xlim(-0.5, len(choices) - 0.5)
        else:
            d = sweep.space.params[key]
            if axes.log(key):
                ax.set_xscale("log")
                ticks = log_ticks(d.low, d.high, most=4)
                ax.set_xticks(ticks, numbers_text(ticks))
                ax.xaxis.set_minor_formatter(NullFormatter())
                ax.set_xlim(d.low / 1.15, d.high * 1.15)
            else:
                margin = (d.high - d.low) * 0.05
                ax.set_xlim(d.low - margin, d.high + margin)
                ax.xaxis.set_major_locator(MaxNLocator(4, integer=isinstance(d, IntRange)))
        ax.grid(alpha=0.3)
    for ax in grid[:, 0]:
        ax.set_ylabel(sweep.space.objective)
    for ax in list(grid.flat)[len(keys):]:
        ax.set_visible(False)
    bar = fig.colorbar(scatter, ax=grid, label="trial", shrink=0.9)  # its own axis, beside the panels
    bar.locator = MaxNLocator(integer=True)  # trial numbers: no 0.5
    bar.update_ticks()
    return fig
