"""A sweep's report from its study: trials ranked, what pruning saved, best.yaml, the best trial's test accuracy
(measured once), Optuna's figures, report.md and report.html."""

from __future__ import annotations

import json
import statistics
import warnings
from typing import Any

from mnist_pipeline.config import load_config, to_yaml
from mnist_pipeline.config.space import override
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.reports import run_files
from mnist_pipeline.reports import run_folder as rf
from mnist_pipeline.sweep.setup import Sweep
from mnist_pipeline.sweep.study import _counted, config_value, show_value

BEST_CONFIG = "best.yaml"
BEST = "best.json"
FIGURES = {  # file -> (heading, Optuna's matplotlib function)
    "optimization_history.png": ("Optimization history", "plot_optimization_history"),
    "param_importances.png": ("Parameter importances", "plot_param_importances"),
    "parallel_coordinate.png": ("Parallel coordinates", "plot_parallel_coordinate"),
    "slice.png": ("Slices", "plot_slice"),
}


def trial_rows(sweep: Sweep, study) -> list[dict[str, Any]]:
    """Every trial (replaced ones left out), best first: completed by the objective, then pruned, then the rest."""
    rows = [{"trial": t.number, "state": t.state.name.lower(), "value": t.value, "std": t.user_attrs.get("std"),
             "params": dict(t.params), "runs": t.user_attrs.get("runs", []), "outcome": t.user_attrs.get("outcome"),
             "seconds": t.duration.total_seconds() if t.duration else None, **_epochs(sweep, t.number)}
            for t in _counted(study.get_trials(deepcopy=False))]
    sign = -1 if sweep.space.direction == "maximize" else 1
    order = {"complete": 0, "pruned": 1}
    return sorted(rows, key=lambda r: (order.get(r["state"], 2), r["value"] is None,
                                       sign * (r["value"] or 0), r["trial"]))


def _epochs(sweep: Sweep, number: int) -> dict[str, Any]:
    """{epochs: trained, planned: configured, epoch_seconds: [...]} over a trial's run folders (pruned and
    failed ones too: they are found by name, `<timestamp>-trial-NNNN[-seedS]`)."""
    trained, planned, seconds = 0, 0, []
    for run in sorted((sweep.folder / "runs").glob(f"*-trial-{number:04d}*")):
        try:
            history = run_files.read_history(run) if (run / rf.HISTORY).exists() else []
            # every seed's run would have had as many epochs (a pruned trial stops before its other seeds)
            planned = load_config(run / rf.CONFIG).training.epochs * len(sweep.seeds or (None,))
        except PipelineError:
            continue  # a damaged run folder: left out of the counts, the report still lists the trial
        trained += len(history)
        seconds += [row["seconds"] for row in history]
    return {"epochs": trained, "planned": planned, "epoch_seconds": seconds}


def pruning_savings(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What the pruner saved: the epochs pruned trials did not train, and the time, estimated as what the
    pruned trials would have taken at the mean duration of a complete trial minus what they took."""
    pruned = [r for r in rows if r["state"] == "pruned"]
    complete = [r["seconds"] for r in rows if r["state"] == "complete" and r["seconds"] is not None]
    took = sum(r["seconds"] or 0 for r in pruned)
    saved = max(len(pruned) * statistics.fmean(complete) - took, 0.0) if complete and pruned else 0.0
    return {"pruned": len(pruned), "epochs_saved": sum(r["planned"] - r["epochs"] for r in pruned),
            "epochs_planned": sum(r["planned"] for r in rows), "seconds_saved": saved,
            "seconds_total": sum(r["seconds"] or 0 for r in rows)}


def best_on_test(sweep: Sweep, best: dict[str, Any]) -> dict[str, Any]:
    """The best trial's runs on the test split, computed once: kept in best.json for this trial."""
    from mnist_pipeline.inference import evaluate_run

    path = sweep.folder / BEST
    if path.exists():
        with_test = json.loads(path.read_text())
        if with_test.get("trial") == best["trial"] and with_test.get("test"):
            return with_test
    tests = [{"run": run, **{k: evaluate_run(sweep.folder / "runs" / run, "test")[k] for k in ("loss", "accuracy")}}
             for run in best["runs"]]
    accuracies = [t["accuracy"] for t in tests]
    with_test = {**best, "test": tests, "test_accuracy": statistics.fmean(accuracies),
                 "test_accuracy_std": statistics.stdev(accuracies) if len(accuracies) > 1 else None}
    rf.write_json(path, with_test)
    return with_test


def write_report(sweep: Sweep, study) -> dict[str, Any]:
    """Ranked trials, best.yaml, best.json (with the best trial's test accuracy, computed once), Optuna's
    figures, report.md and report.html in the sweep's folder; returns {rows, best, files}."""
    from mnist_pipeline.reports.document import Section, render_html, render_markdown

    rows = trial_rows(sweep, study)
    best = rows[0] if rows and rows[0]["state"] == "complete" else None
    sections = [Section("Sweep", columns=["", "value"], rows=[
        ["objective", f"{sweep.space.objective} ({sweep.space.direction}), best epoch of each run; validation only"],
        ["trials", _count_states(rows)],
        ["seeds per trial", ", ".join(map(str, sweep.seeds)) if sweep.seeds else "the base config's"],
        ["pruning saved", savings_text(pruning_savings(rows))],
        ["sampler, pruning", f"{sweep.space.sampler}, {'median pruner' if sweep.prune else 'off'}"]])]
    files = []
    if best:
        cfg = load_config(sweep.base, [override(k, config_value(sweep.space.params[k], v))
                                       for k, v in best["params"].items()],
                          {"output.name": f"{sweep.name}-best"})
        rf.write_text(sweep.folder / BEST_CONFIG, to_yaml(cfg))
        best = best_on_test(sweep, best)
        files.append(sweep.folder / BEST_CONFIG)
        spread = f" (sd {best['test_accuracy_std']:.4f})" if best.get("test_accuracy_std") is not None else ""
        sections.append(Section("Best trial", text=(
            f"Trial {best['trial']}: {sweep.space.objective} {best['value']:.4f}; test accuracy "
            f"{best['test_accuracy']:.4f}{spread}, measured once, after the sweep. Re-run it with "
            f"`mnist train --config {sweep.folder / BEST_CONFIG}`.")))
    sections.append(Section("Trials", columns=["trial", "state", sweep.space.objective, "sd", "seconds",
                                               *sweep.space.params, "outcome"],
                            rows=[[r["trial"], r["state"], _cell(r["value"]), _cell(r["std"]), _cell(r["seconds"], 1),
                                   *[show_value(r["params"].get(k, "-")) for k in sweep.space.params],
                                   r["outcome"] or ""] for r in rows]))
    for file, heading in _draw_figures(sweep, study).items():
        sections.append(Section(heading, image=file))
        files.append(sweep.folder / file)
    rf.write_text(sweep.folder / "report.md", render_markdown(f"Sweep {sweep.name}", sections))
    rf.write_text(sweep.folder / "report.html", render_html(f"Sweep {sweep.name}", sections, sweep.folder))
    return {"rows": rows, "best": best, "savings": pruning_savings(rows),
            "files": [*files, sweep.folder / "report.md", sweep.folder / "report.html"]}


def savings_text(saved: dict[str, Any]) -> str:
    return (f"{saved['pruned']} trials pruned: {saved['epochs_saved']} of {saved['epochs_planned']} planned epochs "
            f"not trained, about {saved['seconds_saved']:.0f} s of trial time saved (trials took "
            f"{saved['seconds_total']:.0f} s in all)")


def _count_states(rows: list[dict[str, Any]]) -> str:
    states = [r["state"] for r in rows]
    return ", ".join(f"{states.count(s)} {s}" for s in ("complete", "pruned", "fail", "running", "waiting")
                     if s in states)


def _cell(value, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _draw_figures(sweep: Sweep, study) -> dict[str, str]:
    """Optuna's own figures (matplotlib) as PNG; one that needs more finished trials than there are is skipped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    drawn = {}
    for file, (heading, function) in FIGURES.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib figures experimental; layout notes
            try:
                axes = getattr(optuna_plots, function)(study)
            except (ValueError, RuntimeError, ZeroDivisionError):
                continue  # e.g. importances need two finished trials
            figure = (axes.flat[0] if hasattr(axes, "flat") else axes).get_figure()
            figure.set_size_inches(9, 5)
            figure.tight_layout()
            figure.savefig(sweep.folder / file, dpi=100, bbox_inches="tight")  # legends sit outside the axes
        plt.close(figure)
        drawn[file] = heading
    return drawn
