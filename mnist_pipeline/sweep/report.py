"""A sweep's report from its study: trials ranked, what pruning saved, best.yaml, the best trial's test accuracy
(measured once), Optuna's figures, report.md and report.html."""

from __future__ import annotations

import os
import statistics
from typing import Any

from mnist_pipeline.config import load_config, to_yaml
from mnist_pipeline.config.space import override
from mnist_pipeline.errors import PipelineError, plural
from mnist_pipeline.reports import run_folder, run_reader
from mnist_pipeline.sweep.labels import short_labels, show_value
from mnist_pipeline.sweep.optuna_study import config_value
from mnist_pipeline.sweep.setup import Sweep

BEST_CONFIG = "best.yaml"
BEST = "best.json"
STATES = {"COMPLETE": "completed", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running",
          "WAITING": "waiting"}  # Optuna's states in the words of run folders' status.json


def trial_rows(sweep: Sweep, study) -> list[dict[str, Any]]:
    """Every trial that ran or waits to, with its state and run folders: completed ones first, ranked by the
    objective, then the rest (pruned, failed, interrupted and re-run, running, waiting) by number. Left out:
    trials that stepped back unrun when another worker took the sweep's last trial (no values, no folder)."""
    trials = [t for t in study.get_trials(deepcopy=False) if "skipped" not in t.user_attrs]
    replaced_by = {t.user_attrs["replaces"]: t.number for t in trials if "replaces" in t.user_attrs}
    rows = [_row(sweep, t, replaced_by.get(t.number)) for t in trials]
    sign = -1 if sweep.space.direction == "maximize" else 1
    return sorted(rows, key=lambda r: (r["state"] != "completed", sign * r["value"] if r["state"] == "completed"
                                       else 0, r["trial"]))


def _row(sweep: Sweep, trial, replaced_by: int | None) -> dict[str, Any]:
    attrs = trial.user_attrs
    recorded = list(attrs.get("runs", []))
    # Folders are found by name too (`<timestamp>-trial-NNNN[-seedS]`): a pruned, failed or interrupted seed's
    # run never reached the trial's list.
    found = sorted(p.name for p in (sweep.folder / "runs").glob(f"*-trial-{trial.number:04d}*"))
    runs = recorded + [name for name in found if name not in recorded]
    state, outcome = STATES.get(trial.state.name, trial.state.name.lower()), attrs.get("outcome")
    if replaced_by is not None:
        state = "interrupted"  # stopped or killed, not the trial's own doing: its values ran again
        outcome = f"{outcome or 'its process died'}; its values re-run as trial {replaced_by}"
    elif "replaces" in attrs:
        outcome = "; ".join(filter(None, [f"the values of interrupted trial {attrs['replaces']} again", outcome]))
    epochs = _epochs(sweep, runs)
    took = trial.duration.total_seconds() if trial.duration else None
    if state in ("interrupted", "running"):  # the trial's clock ran on until a re-run found it dead
        took = sum(epochs["epoch_seconds"]) or None
    return {"trial": trial.number, "state": state, "value": trial.value if state == "completed" else None,
            "std": attrs.get("std"), "params": dict(trial.params), "runs": runs, "outcome": outcome,
            "seconds": took, "replaced_by": replaced_by, **epochs}


def _epochs(sweep: Sweep, runs: list[str]) -> dict[str, Any]:
    """{epochs: trained, planned: configured, epoch_seconds: [...]} over a trial's run folders."""
    trained, planned, seconds = 0, 0, []
    for run in (sweep.folder / "runs" / name for name in runs):
        try:
            history = run_reader.read_history(run) if (run / run_folder.HISTORY).exists() else []
            # every seed's run would have had as many epochs (a pruned trial stops before its other seeds)
            planned = load_config(run / run_folder.CONFIG).training.epochs * len(sweep.seeds or (None,))
        except PipelineError:
            continue  # a damaged run folder (or one on another machine): left out of the counts
        trained += len(history)
        seconds += [row["seconds"] for row in history]
    return {"epochs": trained, "planned": planned, "epoch_seconds": seconds}


def pruning_savings(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What the pruner saved: the epochs pruned trials did not train, and the time, estimated as what the
    pruned trials would have taken at the mean duration of a complete trial minus what they took. Planned
    epochs count each trial once: not an interrupted trial whose values ran again."""
    counted = [r for r in rows if r["replaced_by"] is None]
    pruned = [r for r in counted if r["state"] == "pruned"]
    complete = [r["seconds"] for r in counted if r["state"] == "completed" and r["seconds"] is not None]
    took = sum(r["seconds"] or 0 for r in pruned)
    saved = max(len(pruned) * statistics.fmean(complete) - took, 0.0) if complete and pruned else 0.0
    return {"pruned": len(pruned), "epochs_saved": sum(r["planned"] - r["epochs"] for r in pruned),
            "epochs_planned": sum(r["planned"] for r in counted), "seconds_saved": saved,
            "seconds_total": sum(r["seconds"] or 0 for r in rows)}


def best_on_test(sweep: Sweep, best: dict[str, Any]) -> dict[str, Any]:
    """The best trial's runs on the test split, computed once: kept in best.json for this trial."""
    from mnist_pipeline.reevaluation import evaluate_run

    path = sweep.folder / BEST
    if path.exists() or path.is_symlink():
        try:
            with_test = run_reader.read_json(path)
        except PipelineError as exc:  # run_reader names a run folder's fix; a sweep's is to measure again
            problem = str(exc).removeprefix(f"{path}: ").split("; ")[0]
            raise PipelineError(f"{path}: {problem}; delete it to measure the best trial's test accuracy again "
                                f"(`mnist sweep report {sweep.name}`)") from None
        if with_test.get("trial") == best["trial"] and with_test.get("test"):
            if not isinstance(with_test.get("test_accuracy"), (int, float)) or isinstance(
                    with_test.get("test_accuracy"), bool):
                raise PipelineError(f"{path}: damaged (no test_accuracy number); delete it to measure the best "
                                    f"trial's test accuracy again (`mnist sweep report {sweep.name}`)")
            return {**with_test, **{k: best[k] for k in best if k not in with_test}}
    tests = [{"run": run, **{k: evaluate_run(sweep.folder / "runs" / run, "test")[k] for k in ("loss", "accuracy")}}
             for run in best["runs"]]
    accuracies = [t["accuracy"] for t in tests]
    with_test = {**best, "test": tests, "test_accuracy": statistics.fmean(accuracies),
                 "test_accuracy_std": statistics.stdev(accuracies) if len(accuracies) > 1 else None}
    run_folder.write_json(path, with_test)
    return with_test


def best_config(sweep: Sweep, best: dict[str, Any]):
    """The base config with the best trial's values, named `<sweep>-best`, with absolute paths (as run folders
    keep them) so that `mnist train --config best.yaml` trains the same from any directory: the data its runs
    read, into the sweep's output dir."""
    data_dir = None
    if best["runs"] and (sweep.folder / "runs" / best["runs"][0] / run_folder.CONFIG).is_file():
        data_dir = load_config(sweep.folder / "runs" / best["runs"][0] / run_folder.CONFIG).data.data_dir
    if data_dir is None:  # the runs are on another machine of the study: the base's, from here
        from mnist_pipeline.runtime import data_dir as used_data_dir

        used = used_data_dir(load_config(sweep.base).data.data_dir)
        data_dir = os.path.abspath(used) if used else None
    return load_config(sweep.base, [override(k, config_value(sweep.space.params[k], v))
                                    for k, v in best["params"].items()],
                       {"output.name": f"{sweep.name}-best", "output.dir": os.path.abspath(sweep.output_dir),
                        "data.data_dir": data_dir})


def write_report(sweep: Sweep, study) -> dict[str, Any]:
    """Ranked trials, best.yaml, best.json (with the best trial's test accuracy, computed once), the figures,
    report.md and report.html in the sweep's folder; returns {rows, best, savings, files}."""
    from mnist_pipeline.reports.sections import Section, render_html, render_markdown
    from mnist_pipeline.sweep.figures import draw_figures

    rows = trial_rows(sweep, study)
    labels = short_labels(sweep.space.params)
    best = rows[0] if rows and rows[0]["state"] == "completed" else None
    sections = [Section("Sweep", columns=["", "value"], rows=[
        ["objective", f"{sweep.space.objective} ({sweep.space.direction}), best epoch of each run; validation only"],
        ["trials", _count_states(rows, sweep.trials)],
        ["parameters", "; ".join(f"{label}: {key}" for key, label in labels.items() if label != key) or "-"],
        ["seeds per trial", ", ".join(map(str, sweep.seeds)) if sweep.seeds else "the base config's"],
        *([["pruning saved", savings_text(pruning_savings(rows))]] if sweep.prune else []),
        ["sampler, pruning", f"{sweep.space.sampler}, {'median pruner' if sweep.prune else 'off'}"]])]
    files = []
    if best:
        best = best_on_test(sweep, best)  # first: a damaged best.json stops the report before it writes anything
        run_folder.write_text(sweep.folder / BEST_CONFIG, to_yaml(best_config(sweep, best)))
        files.append(sweep.folder / BEST_CONFIG)
        spread = f" (sd {best['test_accuracy_std']:.4f})" if best.get("test_accuracy_std") is not None else ""
        sections.append(Section("Best trial", text=(
            f"Trial {best['trial']}: {sweep.space.objective} {best['value']:.4f}; test accuracy "
            f"{best['test_accuracy']:.4f}{spread}, measured once, after the sweep. Re-run it with "
            f"`mnist train --config {sweep.folder / BEST_CONFIG}`.")))
    sections.append(Section(
        "Trials", text="Completed trials ranked by the objective, then every other trial by number; run folders "
                       f"are under {sweep.folder / 'runs'}.",
        columns=["trial", "state", sweep.space.objective, "sd", "seconds", *labels.values(), "run folder",
                 "outcome"],
        rows=[[r["trial"], r["state"], _cell(r["value"]), _cell(r["std"]), _cell(r["seconds"], 1),
               *[show_value(r["params"].get(k, "-")) for k in sweep.space.params], " ".join(r["runs"]) or "-",
               r["outcome"] or ""] for r in rows]))
    for file, (heading, caption) in draw_figures(sweep, study).items():
        sections.append(Section(heading, text=caption, image=file))
        files.append(sweep.folder / file)
    run_folder.write_text(sweep.folder / "report.md", render_markdown(f"Sweep {sweep.name}", sections))
    run_folder.write_text(sweep.folder / "report.html", render_html(f"Sweep {sweep.name}", sections, sweep.folder))
    return {"rows": rows, "best": best, "savings": pruning_savings(rows),
            "files": [*files, sweep.folder / "report.md", sweep.folder / "report.html"]}


def savings_text(saved: dict[str, Any]) -> str:
    return (f"{plural(saved['pruned'], 'trial')} pruned: {saved['epochs_saved']} of "
            f"{plural(saved['epochs_planned'], 'planned epoch')} "
            f"not trained, about {saved['seconds_saved']:.0f} s of trial time saved (trials took "
            f"{saved['seconds_total']:.0f} s in all)")


def _count_states(rows: list[dict[str, Any]], total: int) -> str:
    """`4 of 4: 3 completed, 1 pruned; 1 interrupted and re-run`."""
    counted = [r["state"] for r in rows if r["replaced_by"] is None]
    states = ", ".join(f"{counted.count(s)} {s}" for s in dict.fromkeys(["completed", *STATES.values(), *counted])
                       if s in counted)
    rerun = sum(r["replaced_by"] is not None for r in rows)
    of = f"of {total}" if len(counted) <= total else f"(the sweep now asks for {total})"  # --trials lowered
    return f"{len(counted)} {of}: {states or 'none yet'}" + (f"; {rerun} interrupted and re-run" if rerun else "")


def _cell(value, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
