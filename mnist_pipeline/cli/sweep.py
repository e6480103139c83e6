"""`mnist sweep` (run or continue a sweep) and `mnist sweep report NAME`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import click

from mnist_pipeline.cli.common import OrderedGroup
from mnist_pipeline.errors import ConfigError, Interrupted, PipelineError, plural


@click.group(cls=OrderedGroup, invoke_without_command=True, short_help="Tune a config over a search space with Optuna.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), metavar="FILE",
              help="Base run config that every trial starts from (default: built-in defaults).")
@click.option("--space", "space_path", type=click.Path(dir_okay=False), metavar="FILE",
              help="Search space: config keys and their values (configs/sweeps/*.yaml).")
@click.option("--trials", type=click.IntRange(1, 10_000), help="Trials in the study, in all (default: the space's).")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Trial processes on this machine, sharing its cores.")
@click.option("--storage", metavar="URL", help="Optuna storage shared by every machine (e.g. postgresql://...); "
                                               "default: a journal file in the sweep's folder.")
@click.option("--name", help="Study name and folder (<output dir>/sweeps/NAME); default: <config>-<space>.")
@click.option("--seeds", metavar="S,S,...", help="Train each trial once per seed; the objective is the mean.")
@click.option("--prune/--no-prune", default=True, show_default=True,
              help="Stop trials whose validation curve falls behind the earlier trials' median.")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE", help="Override a base config value.")
@click.option("--data-dir", metavar="DIR", help="Folder with IDX or .npz files.")
@click.option("--device", type=click.Choice(["auto", "cpu", "gpu"]), help="Where trials train.")
@click.option("--output-dir", default="outputs", show_default=True, metavar="DIR", help="Where sweeps/ goes.")
@click.option("--quota", type=int, hidden=True)  # a worker process of --workers: its share of the trials
@click.option("--worker-index", type=int, hidden=True)
@click.pass_context
def sweep(ctx, config_path, space_path, trials, workers, storage, name, seeds, prune, overrides, data_dir, device,
          output_dir, quota, worker_index) -> None:
    """Tune a config over a search space with an Optuna study: each trial trains its own run folder, and the
    best trial is chosen on validation.

    Re-running the same command continues the sweep; other machines join it with the same --storage and --name.
    At the end: trials ranked, best.yaml to re-run, the best trial's test accuracy (measured once), figures,
    report.html, all in <output dir>/sweeps/NAME/.

    Example: mnist sweep --config configs/mlp.yaml --space configs/sweeps/mlp.yaml --trials 30 --workers 2
    """
    if ctx.invoked_subcommand:
        return
    if not space_path:
        raise ConfigError("mnist sweep needs --space FILE (e.g. configs/sweeps/mlp.yaml); see `mnist sweep --help`")
    from mnist_pipeline.sweep import make_sweep

    plan = make_sweep(config_path, space_path, trials, storage, name, seeds, prune, overrides, data_dir, device,
                      output_dir, workers=workers if quota is None else 1)
    if quota is None and plan.trials_before not in (None, plan.trials):
        click.echo(f"sweep {plan.name}: {plural(plan.trials, 'trial')} in all, was {plan.trials_before}")
    if workers > 1 and quota is None:
        _run_workers(plan, workers, _worker_command(ctx.params))
    else:
        _run_here(plan, quota)
    if quota is None:  # the command a user typed (not one of its worker processes) reports
        from mnist_pipeline.sweep import failure_summary

        study = _report(plan)
        failed = failure_summary(study)
        if failed:  # a sweep none of whose trials trained did not succeed, whatever its report says
            raise PipelineError(f"sweep {plan.name}: {failed}")


def _worker_command(params: dict) -> list[str]:
    """This command's options for a worker process (which gets --quota and --worker-index on top)."""
    args = ["sweep"]
    for key, value in params.items():
        option = "--" + key.replace("_path", "").replace("_", "-")
        if key in ("workers", "quota", "worker_index") or value is None:
            continue
        if key == "overrides":
            args += [item for override in value for item in ("--set", override)]
        elif key == "prune":
            args.append("--prune" if value else "--no-prune")
        else:
            args += [option, str(value)]
    return args


def _run_here(sweep, quota) -> None:
    from mnist_pipeline import runtime
    from mnist_pipeline.sweep import open_study, record_sweep, work
    from mnist_pipeline.sweep.optuna_study import claim_sampler_seed, sampler_for

    study = open_study(sweep)
    record_sweep(sweep)  # only now: a storage that does not open leaves no half-made sweep behind
    study.sampler = sampler_for(sweep.space, claim_sampler_seed(study, sweep.sampler_seed))
    _requeue_dead(study)
    try:
        with runtime.StopSignals() as signals:
            work(sweep, study, quota, click.echo, signals.requested)
    except Interrupted:
        stopped = Interrupted(f"{signals.name}: the sweep stopped during a trial, which is re-queued; run the same "
                              f"command again to continue")
        stopped.exit_code = signals.exit_code
        raise stopped from None


def _requeue_dead(study) -> None:
    from mnist_pipeline.sweep import requeue_dead_trials

    requeued = requeue_dead_trials(study)
    if len(requeued) == 1:
        click.echo(f"re-queued trial {requeued[0]}: its process had died")
    elif requeued:
        click.echo(f"re-queued trials {', '.join(map(str, requeued))}: their processes had died")


def _run_workers(sweep, workers: int, command: list[str]) -> None:
    """K copies of this command, each running its share of the trials with its share of the cores. SIGINT and
    SIGTERM go on to the workers (each in its own process group, so a terminal's Ctrl-C reaches them once),
    which re-queue their trials; this process waits for them and says so in one line. A worker's error line
    comes back prefixed by which worker said it."""
    from mnist_pipeline.sweep import counted_trials, open_study, record_sweep

    received: list[int] = []
    processes: list[subprocess.Popen] = []

    def forward(signum, frame) -> None:
        received.append(signum)
        for process in processes:
            if process.poll() is None:
                process.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        study = open_study(sweep)  # created once, before the workers race for it
        record_sweep(sweep)
        _requeue_dead(study)
        left = max(sweep.trials - counted_trials(study), 0)
        threads = max(1, (os.cpu_count() or 1) // workers)
        env = {**os.environ, "TF_NUM_INTRAOP_THREADS": str(threads), "TF_NUM_INTEROP_THREADS": "1",
               "OMP_NUM_THREADS": str(threads)}
        errors: dict[int, list[str]] = {}
        readers = []
        for index in range(workers):
            share = left // workers + (index < left % workers)
            if not share or received:
                continue
            process = subprocess.Popen([sys.executable, "-m", "mnist_pipeline", *command, "--quota", str(share),
                                        "--worker-index", str(index)], env=env, stderr=subprocess.PIPE,
                                       text=True, errors="replace", process_group=0)
            processes.append(process)
            errors[index] = []
            readers.append(threading.Thread(target=_collect, args=(process.stderr, errors[index]), daemon=True))
            readers[-1].start()
        codes = [p.wait() for p in processes]
        for reader in readers:
            reader.join(timeout=10)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if received:
        name = signal.Signals(received[0]).name
        stopped = Interrupted(f"{name}: the sweep stopped; its {plural(len(processes), 'worker')} re-queued the "
                              f"trials they were running; run the same command again to continue")
        stopped.exit_code = 128 + received[0]
        raise stopped
    failures = [(index, code) for index, code in zip(errors, codes, strict=True) if code]
    if failures:
        index, code = failures[0]
        said = [line.removeprefix("error: ") for line in errors[index] if line.strip()]
        died = (f"killed by {signal.Signals(-code).name}" if code < 0 and -code in signal.valid_signals()
                else f"exited with code {code}")
        reason = said[-1] if said else f"{died}; run the same command again to continue (its trial is re-queued)"
        more = f" (and {plural(len(failures) - 1, 'more worker')} failed)" if len(failures) > 1 else ""
        error = PipelineError(f"worker {index}: {reason}{more}")
        error.exit_code = code if code in (1, 2) else 1
        raise error


def _collect(stream, lines: list[str]) -> None:
    """A worker's stderr, line by line (kept, not shown: the parent reports a failing worker's error)."""
    for line in stream:
        lines.append(line.rstrip("\n"))


def _report(sweep, create: bool = True):
    """Write the report from the study (which `sweep report` only reads: `create` False); returns the study."""
    from mnist_pipeline.sweep import open_study, write_report

    study = open_study(sweep, create=create)
    result = write_report(sweep, study)
    _print_summary(sweep, result)
    return study


def _print_summary(sweep, result, shown: int = 10) -> None:
    from mnist_pipeline.sweep import savings_text, short_labels, show_value

    labels = short_labels(sweep.space.params)
    rows = result["rows"]
    click.echo(f"{'trial':>5}  {'state':<11}  {sweep.space.objective:>12}  values")
    for r in rows[:shown]:
        value = "-" if r["value"] is None else f"{r['value']:.4f}"
        outcome = f"  ({r['outcome']})" if r["outcome"] and r["state"] != "completed" else ""
        click.echo(f"{r['trial']:>5}  {r['state']:<11}  {value:>12}  "
                   f"{', '.join(f'{labels[k]}={show_value(v)}' for k, v in r['params'].items())}{outcome}")
    if len(rows) > shown:
        click.echo(f"... and {plural(len(rows) - shown, 'more trial')} in the report")
    if sweep.prune:
        click.echo(f"pruning: {savings_text(result['savings'])}")
    best = result["best"]
    if best:
        click.echo(f"best: trial {best['trial']} ({sweep.space.objective} {best['value']:.4f}; test accuracy "
                   f"{best['test_accuracy']:.4f}, measured once); config: {sweep.folder / 'best.yaml'}")
    click.echo(f"report: {sweep.folder / 'report.html'}")


@sweep.command("report", short_help="Rewrite a sweep's report from its study.")
@click.argument("name")
@click.option("--output-dir", metavar="DIR",
              help="Where sweeps/ is (default: the --output-dir given before `report`, else outputs).")
@click.option("--storage", metavar="URL", help="The study's storage, if not the one the sweep recorded.")
@click.pass_context
def sweep_report(ctx, name, output_dir, storage) -> None:
    """Rewrite a sweep's report (ranked trials, best.yaml, figures, report.html) from its study.

    Example: mnist sweep --output-dir outputs report mlp-mlp
    """
    from mnist_pipeline.sweep import reopen_sweep

    group = ctx.parent.params  # `mnist sweep --output-dir D report NAME`: the group's options, unless given here
    folder = Path(output_dir or group["output_dir"]) / "sweeps" / name
    _report(reopen_sweep(folder, storage or group["storage"]), create=False)
