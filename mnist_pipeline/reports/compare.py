"""Comparing finished runs from their folders: a table, comparison.md and overlaid validation curves.

Reads only files (no TensorFlow). Failed or unfinished runs are listed with their status, not dropped.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from mnist_pipeline.config.docs import short_key_labels
from mnist_pipeline.errors import ConfigError, OutputError, RunFolderError, plural
from mnist_pipeline.reports import plots, run_folder, run_reader
from mnist_pipeline.reports.sections import Section, render_markdown

COLUMNS = ["run", "status", "model", "parameters", "epochs", "train s", "best val acc", "test acc", "test ECE",
           "corrupt acc"]
# --rank-by: what runs can be ranked by -> (RunSummary attribute, higher is better, the table's column)
RANKINGS = {"val": ("best_val_accuracy", True, "best val acc"),
            "corrupted": ("corrupted_accuracy", True, "corrupt acc"), "ece": ("test_ece", False, "test ECE")}


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
    name: str = ""  # the config's output.name (the config file's stem), or "" when unreadable
    config: dict[str, str] = field(default_factory=dict, repr=False)  # dotted key -> value in YAML style
    not_finite: tuple[str, ...] = ()  # metrics.json keys whose value is NaN or infinite (shown as null / -)
    test_ece: float | None = None  # after the run's temperature (metrics.json's calibration), as predict answers
    corrupted_accuracy: float | None = None  # the mean over MNIST-C's corruptions (robustness.json)
    corrupted_ece: float | None = None
    scored_with: tuple | None = None  # robustness.json's (seed, data_source, calibrated): equal ones compare

    def to_dict(self, keys: list[str] = ()) -> dict:
        """The row for `mnist compare --json`: numbers as numbers, null where the run has none."""
        return {"run": self.run_dir.name, "path": str(self.run_dir), "name": self.name, "status": self.status,
                "model": self.model, "parameters": self.parameters, "epochs": self.epochs,
                "train_seconds": self.train_seconds, "best_val_accuracy": self.best_val_accuracy,
                "test_accuracy": self.test_accuracy, "test_loss": self.test_loss, "test_ece": self.test_ece,
                "corrupted_accuracy": self.corrupted_accuracy, "corrupted_ece": self.corrupted_ece,
                "corruptions_scored_with": dict(zip(("seed", "data_source", "calibrated"), self.scored_with,
                                                    strict=True)) if self.scored_with else None,
                "config": {key: self.config.get(key) for key in keys},
                **({"null_reasons": {key: f"{run_folder.METRICS} records it as NaN or infinite (the run diverged, "
                                          f"or the file was edited)" for key in self.not_finite}}
                   if self.not_finite else {})}

    def cells(self, keys: list[str] = ()) -> list[str]:
        def show(value, fmt):
            return "-" if value is None else format(value, fmt)
        return [self.run_dir.name, self.status, self.model, show(self.parameters, ","), show(self.epochs, "d"),
                show(self.train_seconds, ".1f"), show(self.best_val_accuracy, ".4f"), show(self.test_accuracy, ".4f"),
                show(self.test_ece, ".2%"), show(self.corrupted_accuracy, ".4f"),
                *(self.config.get(key, "-") for key in keys)]


def summarize_run(run_dir: Path) -> RunSummary:
    """A run's row; a damaged run is listed as unreadable (naming the file), never dropped or fatal."""
    try:
        status = run_reader.read_status(run_dir)["status"]
        locked = run_folder.is_locked(run_dir)
        if locked:  # a resume holds the lock seconds before it writes "running" (data, TensorFlow's start)
            status = "running"
        elif status == "running":
            status = "stale: was running, process gone (resumable)"
        metrics = run_reader.read_metrics(run_dir) if (run_dir / run_folder.METRICS).exists() else {}
        history = run_reader.read_history(run_dir) if (run_dir / run_folder.HISTORY).exists() else []
    except RunFolderError as exc:
        return RunSummary(run_dir, f"unreadable: {exc.path.name if exc.path else 'damaged'}")
    try:  # scored after training: a damaged one costs its own columns only, not the run's row
        robustness = run_reader.read_robustness(run_dir) or {}
    except RunFolderError:
        robustness = {}
    name, config = _config(run_dir)
    if status == "completed" and not metrics:
        status = "completed, metrics missing"
    if not metrics:
        return RunSummary(run_dir, status, config.get("model.name", "?"), epochs=len(history) if history else None,
                          history=history, name=name, config=config)
    numbers = ("train_seconds", "best_val_accuracy", "test_accuracy", "test_loss")  # no test ones: a sweep trial
    not_finite = tuple(key for key in numbers if _finite(metrics.get(key)) is None and metrics.get(key) is not None)
    calibration = metrics.get("calibration")
    return RunSummary(run_dir, status, metrics["model"], metrics["parameters"], metrics["epochs"],
                      *(_finite(metrics.get(key)) for key in numbers), history, name, config, not_finite,
                      test_ece=calibration["test_after"]["ece"] if isinstance(calibration, dict) else None,
                      corrupted_accuracy=robustness.get("mean_accuracy"), corrupted_ece=robustness.get("mean_ece"),
                      scored_with=tuple(robustness.get(k) for k in ("seed", "data_source", "calibrated"))
                      if robustness else None)


def _finite(value):
    """A recorded number, or None where it is NaN or infinite (a diverged or edited run): such a run has no
    result to rank by, and JSON has no NaN."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _config(run_dir: Path) -> tuple[str, dict[str, str]]:
    """(output.name, {dotted key: YAML-style value}) of a run's config.yaml; ("", {}) if it cannot be read."""
    from mnist_pipeline.config import flat_values, load_config, yaml_value

    try:
        cfg = load_config(run_dir / run_folder.CONFIG).model_dump(mode="json")
    except ConfigError:
        return "", {}
    flat = dict(flat_values(cfg))
    return str(flat.get("output.name") or ""), {k: yaml_value(v) for k, v in flat.items()
                                                if not k.startswith("output.")}


def differing_keys(summaries: list[RunSummary]) -> list[str]:
    """The config keys whose values are not the same in every run that has a readable config (model.name
    aside: it has a column of its own). The keys most often varied come first: training, then data, then
    the model's parameters, those every run has before another model's own (which any run lacks)."""
    configs = [s.config for s in summaries if s.config]
    keys = list(dict.fromkeys(key for config in configs for key in config))
    differing = [key for key in keys if key != "model.name" and len({config.get(key) for config in configs}) > 1]
    section = {"training": 0, "data": 1}
    return sorted(differing, key=lambda k: (section.get(k.split(".")[0], 2), any(k not in c for c in configs)))


def explained_share(summaries: list[RunSummary], key: str) -> float:
    """How much of the spread in the runs' best validation accuracy `key` accounts for: the share of its
    variance explained by grouping the runs by the key's value, adjusted for the number of values as adjusted
    R² is (epsilon squared: 1 - within-group variance / total variance, each per degree of freedom), so that
    a key with a value per run does not explain everything by construction. 1: runs with the same value score
    the same; 0: no better than grouping at random, or nothing to tell (every run its own value, fewer than
    two runs, or equal accuracies). Runs without a validation result or a readable config are left out."""
    scored = [(s.config.get(key, "-"), s.best_val_accuracy) for s in summaries
              if s.best_val_accuracy is not None and s.config]
    groups: dict[str, list[float]] = {}
    for value, acc in scored:
        groups.setdefault(value, []).append(acc)
    n, k = len(scored), len(groups)
    if k < 2 or k >= n:
        return 0.0
    mean = sum(acc for _, acc in scored) / n
    total = sum((acc - mean) ** 2 for _, acc in scored)
    within = sum((acc - sum(accs) / len(accs)) ** 2 for accs in groups.values() for acc in accs)
    if total < 1e-18:  # equal accuracies, up to float noise
        return 0.0
    return max(0.0, 1 - (within / (n - k)) / (total / (n - 1)))


def keys_by_explanation(summaries: list[RunSummary], keys: list[str]) -> list[tuple[str, float]]:
    """(key, explained_share) of `keys`, the key that best explains the ranking first; ties (0 above all) go
    to the key with fewer distinct values, the simpler explanation, then by name."""
    def distinct(key):
        return len({s.config.get(key, "-") for s in summaries if s.config})
    shares = {key: explained_share(summaries, key) for key in keys}
    return sorted(shares.items(), key=lambda item: (-round(item[1], 9), distinct(item[0]), item[0]))


def labels(summaries: list[RunSummary], limit: int = 60) -> dict[Path, str]:
    """A legend name per run: its config name, then the values in which it differs from the other runs of
    that name (`mlp learning_rate=0.003`); the run's timestamp where two would still read the same."""
    groups: dict[str, list[RunSummary]] = {}
    for s in summaries:
        groups.setdefault(s.name or s.run_dir.name, []).append(s)
    result = {}
    for name, group in groups.items():
        keys = differing_keys(group) if len(group) > 1 else []
        names = short_key_labels(keys, COLUMNS)
        for s in group:
            text = " ".join([name, *(f"{names[k]}={s.config.get(k, '-')}" for k in keys)])
            result[s.run_dir] = text if len(text) <= limit else text[:limit - 1] + "…"
    taken = list(result.values())
    return {run: f"{text} ({run.name.split('-')[0]})" if taken.count(text) > 1 else text
            for run, text in result.items()}


def corruption_notes(summaries: list[RunSummary], by: str) -> list[str]:
    """What to know before reading corrupted accuracies side by side: runs scored on other seeds, data or
    temperature settings (their numbers do not compare), and, ranking by them, the runs never scored."""
    scored = [s for s in summaries if s.scored_with]
    notes = []
    for i, what in enumerate(("corruption seed", "data", "temperature setting")):
        values = {s.scored_with[i] for s in scored}
        if len(values) > 1:
            notes.append(f"the runs' corruptions were scored with another {what} each "
                         f"({', '.join(sorted(map(str, values)))}): their corrupted accuracies do not compare; "
                         f"score them alike with `mnist evaluate RUN --corruptions`")
    if by == "corrupted" and len(scored) < len(summaries):
        notes.append(f"{len(summaries) - len(scored)} of {len(summaries)} runs were never scored under "
                     f"corruptions, and rank last: `mnist evaluate RUN --corruptions` scores one")
    return notes


def rank(summaries: list[RunSummary], by: str = "val") -> list[RunSummary]:
    """Runs by best validation accuracy (best first; or `by` another of RANKINGS), then the runs without that
    number by name. Never by test accuracy: choosing a model on the test split would make its test number an
    optimistic one (corrupted accuracy and ECE are measured on the test split too: they are for looking at
    how runs differ in trust, and the CLI says so)."""
    attribute, higher_better, _ = RANKINGS[by]

    def key(s: RunSummary):
        value = getattr(s, attribute)
        return value is None, -(value or 0) if higher_better else (value or 0), s.run_dir.name
    return sorted(summaries, key=key)


def write_comparison(summaries: list[RunSummary], out_dir: Path, by: str = "val") -> list[Path]:
    """comparison.md (the table) and comparison.png (validation curves of every run with a history)."""
    ranked = rank(summaries, by)
    keys = differing_keys(ranked)
    on_validation = rank(summaries)
    winner = on_validation[0] if on_validation and on_validation[0].best_val_accuracy is not None else None
    ranked_by = "Ranked by best validation accuracy. Best:" if by == "val" else (
        f"Ranked by {RANKINGS[by][2]} (test split, {'higher' if RANKINGS[by][1] else 'lower'} first). Best on "
        f"validation:")
    text = (f"{ranked_by} **{winner.run_dir.name}** ({winner.model}, "
            f"val {winner.best_val_accuracy:.4f}" + (f", test {winner.test_accuracy:.4f}" if winner.test_accuracy
                                                    is not None else "") + ")." if winner else
            "No run with a validation result to rank.")
    if keys:
        text += " The config columns are the keys in which the runs differ."
    sections = [Section("Runs", text=text, columns=[*COLUMNS, *short_key_labels(keys, COLUMNS).values()],
                        rows=[s.cells(keys) for s in ranked])]
    curves = {s.run_dir: s.history for s in ranked if s.history}
    if curves:
        names = labels([s for s in ranked if s.history])
        plots.plot_overlaid_curves({names[run]: history for run, history in curves.items()},
                                   out_dir / "comparison.png", f"{plural(len(curves), 'run')} compared")
        sections.append(Section("Validation curves", image="comparison.png"))
    run_folder.write_text(out_dir / "comparison.md", render_markdown("Run comparison", sections))
    return [out_dir / "comparison.md"] + ([out_dir / "comparison.png"] if curves else [])


def comparison_home(run_dirs: list[Path]) -> Path:
    """Where a comparison of these runs goes when no output dir is given: beside the runs. Runs in one
    `<output dir>/runs/` go to `<output dir>/comparisons/`; others to `comparisons/` in the deepest folder
    that holds them all. Absolute, so that the printed path is right from any folder."""
    parents = [Path(os.path.abspath(run)).parent for run in run_dirs]
    common = Path(os.path.commonpath(parents))
    return (common.parent if common.name == "runs" else common) / "comparisons"


def new_comparison_dir(home: Path) -> Path:
    """A new `<home>/<UTC timestamp>-compare/` folder; an unwritable home is refused with the way out."""
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{home}: cannot write the comparison there ({exc.strerror or exc}); pass "
                          f"--output-dir DIR, a folder you can write to") from None
    return run_folder.create_unique_dir(home, "compare", what="comparison folder")


def find_runs(output_dir: Path) -> list[Path]:
    runs = Path(output_dir) / "runs"
    return sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []
